"""``python -m convlab open``: answers ``--help`` without loading torch, keeps a learner's copies, and serves
JupyterLab on the loopback interface with news and update checks off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import convlab_netguard
import pytest

from convlab.course_open import (
    LAB_EXTENSIONS,
    OFFLINE_LAB_OPTIONS,
    choose_port,
    free_port,
    lab_command,
    lab_extension_problems,
)
from convlab.exercises import STUB, course_notebooks, make_course_folder
from convlab.slides import slides_server_options

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("OMP_WAIT_POLICY", None)  # the test workers set it (share_cores_plugin): `convlab open` must set it itself
    return env


def test_open_help_answers_without_loading_torch():
    result = subprocess.run(
        [sys.executable, "-m", "convlab", "open", "--help"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert result.returncode == 0 and "--teacher" in result.stdout and "--no-browser" in result.stdout
    probe = "import sys, convlab.__main__, convlab.course_open; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), timeout=120)
    assert loaded.stdout.strip() == "False", "the command line must not import torch before it needs it"


@pytest.mark.parametrize("port", ["70000", "abc"])
def test_bad_port_is_refused_with_status_2(tmp_path, port):
    result = subprocess.run(
        [sys.executable, "-m", "convlab", "open", "--dir", str(tmp_path), "--port", port],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.strip().endswith(f"expected an integer 1..65535, got '{port}'")
    assert "Traceback" not in result.stderr and not (tmp_path / "00_start_here.ipynb").exists()


def test_course_folder_writes_missing_copies_and_keeps_the_learners(tmp_path):
    first = make_course_folder(tmp_path / "course")
    assert [p.name for p in first.written if p.suffix == ".ipynb"] == [p.name for p in NOTEBOOKS] and not first.kept
    assert (tmp_path / "course" / "figures").is_dir()
    edited, removed = [p for p in first.written if p.suffix == ".ipynb"][:2]
    edited.write_text(edited.read_text().replace(STUB.split("(")[0], "return 42  # mine"))
    removed.unlink()
    figure = next((tmp_path / "course" / "figures").iterdir())
    figure.write_bytes(b"mine")
    second = make_course_folder(tmp_path / "course")
    assert [p.name for p in second.written] == [removed.name], "only the missing copy is written again"
    assert second.kept == sorted([edited, figure]) and second.backups is None
    assert "return 42  # mine" in edited.read_text() and figure.read_bytes() == b"mine"
    assert STUB.split("(")[0] in removed.read_text() and "### BEGIN SOLUTION" not in removed.read_text()
    with pytest.raises(ValueError, match="outside the course notebooks"):
        make_course_folder(course_notebooks())


def test_lab_command_is_loopback_offline_and_passes_options_on(tmp_path):
    cmd = lab_command(tmp_path, 8890, False, ["--ServerApp.token=x"], tmp_path / "settings")
    assert cmd[1:3] == ["-m", "jupyterlab"] and "--ServerApp.ip=127.0.0.1" in cmd and "--no-browser" in cmd
    assert "--LabApp.news_url=None" in cmd and "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate" in cmd
    assert "--LabApp.extension_manager=readonly" in OFFLINE_LAB_OPTIONS and set(OFFLINE_LAB_OPTIONS) <= set(cmd)
    assert "--ServerApp.port=8890" in cmd and "--ServerApp.port_retries=0" in cmd and cmd[-1] == "--ServerApp.token=x"
    assert set(slides_server_options()) <= set(cmd), "the slides page gets its own lab extensions"


def test_a_port_in_use_is_refused_with_a_sentence_and_the_default_moves(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "convlab", "open", "--dir", str(tmp_path / "course"), "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == (
            f"python -m convlab open: error: --port {port}: expected a free port, got one in use on 127.0.0.1 "
            "(another JupyterLab?); stop what uses it, or choose another --port"
        )
        assert not (tmp_path / "course").exists(), "refused before writing anything"
        moved = choose_port(None, first=port)
        assert moved != port and choose_port(moved) == moved


def test_missing_or_disabled_lab_extensions_are_named_with_their_fix(tmp_path):
    assert lab_extension_problems() == [], "this environment serves the lab without the course's extensions"
    missing = lab_extension_problems(paths=[tmp_path / "labextensions"], config_paths=[])
    assert len(missing) == len(LAB_EXTENSIONS)
    for (what, name, package), said in zip(LAB_EXTENSIONS, missing):
        assert f"without the {what} extension ({name} is not installed" in said
        assert said.endswith(f"{sys.executable} -m pip install {package}")
    (tmp_path / "config" / "labconfig").mkdir(parents=True)
    (tmp_path / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"jupyterlab-rise": True}})
    )
    (disabled,) = lab_extension_problems(config_paths=[tmp_path / "config"])
    assert "slides extension (jupyterlab-rise is disabled)" in disabled and "labextension enable" in disabled


@pytest.mark.slow
def test_open_serves_the_lab_page_on_loopback(tmp_path):
    port, token = free_port(), "convlab-test-token"
    env = dict(
        _env(),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
    )
    env.pop("JUPYTER_PATH", None)
    env[convlab_netguard.LOG_ENV] = str(tmp_path / "netguard.log")  # the lab's refused network calls, counted
    log = tmp_path / "open.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "convlab",
                "open",
                "--dir",
                str(tmp_path / "course"),
                "--port",
                str(port),
                "--no-browser",
                "--",
                f"--IdentityProvider.token={token}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and page is None:
            try:
                page = urllib.request.urlopen(f"{base}/lab?token={token}", timeout=5).read().decode()
            except OSError:
                assert proc.poll() is None, f"convlab open exited early:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        assert page is not None, f"no lab page on {base}:\n{log.read_text()[-3000:]}"
        assert "JupyterLab" in page
        contents = json.loads(urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10).read())
        assert {p.name for p in NOTEBOOKS} <= {item["name"] for item in contents["content"]}
        notification = json.loads(
            urllib.request.urlopen(
                f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}", timeout=10
            ).read()
        )
        assert notification["settings"]["fetchNews"] == "false" and notification["settings"]["checkForUpdates"] is False
        # the lab (execv'd in place of `convlab open`, same pid) hands its kernels sleeping OpenMP waits
        lab_env = dict(
            kv.split("=", 1) for kv in Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in kv
        )
        assert lab_env.get("OMP_WAIT_POLICY") == "PASSIVE"
        said = log.read_text()
        assert f"at http://127.0.0.1:{port}/lab" in said and "warning:" not in said, said
        # what the extension manager's panel asks when opened and searched: the lab must not ask a package index
        statuses = []
        for query in ("", "widgets"):
            try:
                url = f"{base}/lab/api/extensions?query={query}&page=1&per_page=30&token={token}"
                statuses.append(urllib.request.urlopen(url, timeout=30).status)
            except urllib.error.HTTPError as err:  # a listing that tried the network fails: counted below
                statuses.append(err.code)
        guard = convlab_netguard.read_log(tmp_path / "netguard.log")
        assert proc.pid in guard.installed, "the network guard must run in the lab server (sitecustomize)"
        assert guard.blocked == [], f"the lab tried to reach the network: {guard.blocked}"
        assert statuses == [200, 200]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
