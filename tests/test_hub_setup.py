"""``python -m convlab hub`` without starting a hub: its help, the roster, the class folder, the teacher's course, the
JupyterHub configuration it writes, and the Zero to JupyterHub values in ``deploy/``. The hub itself, with a real
browser, is ``tests/test_hub.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convlab.exercises import STUB
from convlab.hub import ClassFolder, make_roster, prepare_class, read_roster, teacher_course
from convlab.slides import SLIDES_SERVER_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_hub_help_documents_it_without_loading_torch():
    result = subprocess.run(
        [sys.executable, "-m", "convlab", "hub", "--help"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert result.returncode == 0, result.stderr
    for option in ("--class-dir", "--learners", "--teacher", "--port", "--seats", "--cull-idle"):
        assert option in result.stdout
    probe = "import sys, convlab.__main__, convlab.hub; print('torch' in sys.modules, 'jupyterhub' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), timeout=120)
    assert loaded.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--learners", "Ana Lopez"], "--learners: expected a number or comma-separated lower-case names"),
        (["--learners", "0"], "--learners: expected a number 1..999"),
        (["--teacher", "Prof"], "--teacher: expected a lower-case user name"),
    ],
)
def test_bad_class_is_refused_in_one_line_and_writes_nothing(tmp_path, args, message):
    folder = tmp_path / "class"
    result = subprocess.run(
        [sys.executable, "-m", "convlab", "hub", "--class-dir", str(folder), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not folder.exists()


def test_roster_is_made_once_kept_and_extended(tmp_path):
    roster = tmp_path / "roster.csv"
    first = make_roster(roster, "3", "teacher")
    assert list(first) == ["teacher", "learner01", "learner02", "learner03"]
    assert oct(roster.stat().st_mode & 0o777) == "0o600"
    assert len({a.password for a in first.values()}) == 4
    again = make_roster(roster, None, "teacher")
    assert again == first == read_roster(roster)
    more = make_roster(roster, "ana,learner02", "teacher")
    assert list(more) == [*first, "ana"] and all(more[n] == first[n] for n in first)
    with pytest.raises(ValueError, match="expected names other than the teacher's"):
        make_roster(roster, "teacher", "teacher")


def test_a_damaged_roster_is_refused_with_its_line(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text("user,password,role\nteacher,x,teacher\nana,,learner\n")
    with pytest.raises(ValueError, match=r"roster.csv, line 3: expected 'user,password,role'"):
        read_roster(roster)
    roster.write_text("user,password,role\nana,x,learner\n")
    with pytest.raises(ValueError, match="exactly one account with the role teacher"):
        read_roster(roster)


def test_teacher_course_holds_the_solutions_one_assignment_per_notebook_and_keeps_edits(tmp_path):
    course = tmp_path / "course"
    written = teacher_course(course)
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    for nb in NOTEBOOKS:
        folder = course / "source" / nb.stem
        assert (folder / nb.name).read_text() == nb.read_text()  # the solutions and nbgrader's marks, as committed
        assert (folder / "figures").is_dir() and (folder / "rise.css").is_file()
    edited = course / "source" / NOTEBOOKS[0].stem / NOTEBOOKS[0].name
    edited.write_text("{}")
    assert teacher_course(course) == [] and edited.read_text() == "{}"


def test_class_folder_and_hub_config(tmp_path):
    jupyterhub = pytest.importorskip("jupyterhub") if not os.environ.get("CI") else __import__("jupyterhub")
    assert jupyterhub
    from traitlets.config import Config, PyFileConfigLoader

    from convlab.hub_config import ClassSpawner, RosterAuthenticator, configure

    folder, accounts = prepare_class(tmp_path / "class", "ana,ben", "prof", 8123, None, 600)
    assert folder == ClassFolder((tmp_path / "class").resolve()) and set(accounts) == {"prof", "ana", "ben"}
    assert oct(folder.exchange.stat().st_mode & 0o7777) == "0o1777"
    settings = json.loads(folder.settings.read_text())
    assert settings["seats"] == 3 and settings["teacher"] == "prof" and settings["port"] == 8123
    server = PyFileConfigLoader("jupyter_server_config.py", path=str(folder.jupyter_config)).load_config()
    assert server.RiseApp.labextensions_path == SLIDES_SERVER_SETTINGS["labextensions_path"]
    assert server.RiseApp.labextensions_url == SLIDES_SERVER_SETTINGS["labextensions_url"]
    nbgrader = (folder.jupyter_config / "nbgrader_config.py").read_text()
    assert str(folder.exchange) in nbgrader and str(folder.home("prof") / "course") in nbgrader
    hub_config = folder.hub_config.read_text()
    folder.hub_config.write_text(hub_config + "# the teacher's own line\n")
    prepare_class(tmp_path / "class", None, "prof", 8124, 10, 0)  # a later start: the config file is the teacher's
    assert folder.hub_config.read_text().endswith("# the teacher's own line\n")
    assert json.loads(folder.settings.read_text())["seats"] == 10

    c = Config()
    configure(c, folder.settings)
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8124"
    assert c.JupyterHub.authenticator_class is RosterAuthenticator and c.JupyterHub.spawner_class is ClassSpawner
    assert c.ClassSpawner.seats == 10 and c.Authenticator.admin_users == {"prof"}
    assert "services" not in c.JupyterHub  # --cull-idle 0: no culler
    configure(c, _with(folder.settings, cull_idle=900))
    (culler,) = c.JupyterHub.services
    assert culler["name"] == "idle-culler" and "--timeout=900" in culler["command"]


def _with(settings: Path, **changes) -> Path:
    data = json.loads(settings.read_text())
    data.update(changes)
    settings.write_text(json.dumps(data))
    return settings


def test_spawner_writes_a_learners_copies_and_the_teachers_course(tmp_path):
    if not os.environ.get("CI"):
        pytest.importorskip("jupyterhub")
    from convlab.hub_config import ClassSpawner

    folder, _ = prepare_class(tmp_path / "class", "ana", "prof", 8125, None, 0)

    class User:
        def __init__(self, name):
            self.name = name
            self.url = f"/user/{name}/"

    def spawner(name: str) -> ClassSpawner:
        s = ClassSpawner(class_dir=str(folder.root), teacher="prof", seats=2, convlab_home="/nowhere")
        s.user = User(name)
        return s

    learner, teacher = spawner("ana"), spawner("prof")
    learner.prepare_home()
    teacher.prepare_home()
    copy = folder.home("ana") / "course" / NOTEBOOKS[0].name
    stub = STUB.split("(")[0]  # the stub's start: the notebook's JSON escapes its quotes
    assert stub in copy.read_text() and "### BEGIN SOLUTION" not in copy.read_text()
    assert (folder.home("ana") / "course" / "rise.css").is_file()
    copy.write_text(copy.read_text().replace(stub, "return 42  # mine"))
    learner.prepare_home()  # the next start: the learner's edit stays
    assert "return 42  # mine" in copy.read_text()
    assert (
        "### BEGIN SOLUTION"
        in (folder.home("prof") / "course" / "source" / NOTEBOOKS[0].stem / NOTEBOOKS[0].name).read_text()
    )
    assert learner.role == "learner" and teacher.role == "teacher"


def test_zero_to_jupyterhub_values_name_the_class_set_up():
    import yaml

    values = yaml.safe_load((ROOT / "deploy" / "zero-to-jupyterhub.yaml").read_text())
    # a login named explicitly (the chart's default lets any password in), and the slides page's settings in the image
    assert values["hub"]["config"]["JupyterHub"]["authenticator_class"] not in ("", "dummy", "null")
    single = values["singleuser"]
    assert single["image"]["name"] and single["image"]["tag"]
    assert single["cpu"]["limit"] >= single["cpu"]["guarantee"] > 0
    assert single["memory"]["limit"] and single["memory"]["guarantee"]
    assert single["extraEnv"]["OMP_WAIT_POLICY"] == "PASSIVE"
    (volume,) = single["storage"]["extraVolumes"]
    (mount,) = single["storage"]["extraVolumeMounts"]
    assert mount["name"] == volume["name"] and mount["mountPath"] == "/srv/nbgrader/exchange"
    assert "/srv/nbgrader/exchange" in (ROOT / "deploy" / "nbgrader_config.py").read_text()
    assert values["cull"]["enabled"] is True
    hook = single["lifecycleHooks"]["postStart"]["exec"]["command"]
    assert hook[:2] == ["python", "-c"]
    compile(hook[2], "postStart", "exec")  # the hook's program is Python, and it names functions that exist
    assert "teacher_course" in hook[2] and "make_course_folder" in hook[2]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "python -m convlab fetch" in dockerfile and "deploy/nbgrader_config.py" in dockerfile
    assert "SLIDES_SERVER_SETTINGS" in dockerfile
