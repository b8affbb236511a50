"""A class on one JupyterHub, for real: ``python -m convlab hub`` on 127.0.0.1, a teacher and three learners logged in
through the login page in headless Chromium (Debian's, through Playwright, as in ``tests/test_browser.py``).

One story, in order: the hub starts and makes the class folder and roster; everyone logs in and gets a server of
their own; the teacher sees the solutions and the slides and releases notebook 00 as an assignment through nbgrader's
formgrader; each learner opens their own copy of notebook 00, runs it (its exercises unsolved) and adds a line of
their own, all at once; one learner fetches and submits the assignment; the teacher collects, autogrades and exports
the grades; the hub stops (and its servers with it) and starts again; every learner logs in again and finds their
work as they left it; idle servers are stopped by the culler. CI runs this with the browser tests, with no network
but loopback (``bash .ci/offline``). A failure keeps the hub's log and each page's screenshot and console in
``test-artifacts/hub/`` (git-ignored).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from convlab.course_open import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "hub"
CHROMIUM = os.environ.get("CONVLAB_CHROMIUM", "/usr/bin/chromium")
LEARNERS = ("ana", "ben", "cleo")
TEACHER = "prof"
NOTEBOOK = "00_start_here"
_REQUIRED = os.environ.get("CONVLAB_REQUIRE_BROWSER") == "1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not _REQUIRED and not Path(CHROMIUM).exists(),
        reason=f"needs Debian's chromium at {CHROMIUM} (.ci/install installs it)",
    ),
]

#: the current notebook's kernel is connected and idle, and every code cell has run
_ALL_RAN = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    if (!kernel || kernel.connectionStatus !== 'connected' || kernel.status !== 'idle') return false;
    const cells = panel.content.model.cells;
    let code = 0, ran = 0;
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type === 'code') { code++; if (cell.executionCount !== null) ran++; }
    }
    return code > 0 && ran === code;
}"""
_KERNEL_READY = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""
#: a POST from the page with its own session (the XSRF cookie as header), as JupyterLab's extensions send it
_POST = """async ([url, body]) => {
    const m = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
    const r = await fetch(url, {method: 'POST', credentials: 'same-origin', body: JSON.stringify(body || {}),
        headers: {'X-XSRFToken': m ? decodeURIComponent(m[1]) : '', 'Content-Type': 'application/json'}});
    return {status: r.status, text: await r.text()};
}"""


class Hub:
    """``python -m convlab hub`` as a subprocess, started and stopped by the test; an observer service's token (added
    to the class's own jupyterhub_config.py, as a teacher would add a service) reads the users' servers."""

    def __init__(self, class_dir: Path, port: int):
        self.class_dir, self.port = class_dir, port
        self.url = f"http://127.0.0.1:{port}"
        self.token = secrets.token_hex(16)
        self.log = class_dir.parent / "hub.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *options: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.pop("OMP_WAIT_POLICY", None)  # the hub sets it for the servers itself
        env.pop("CONVLAB_SHARED_KERNELS", None)
        cmd = [sys.executable, "-m", "convlab", "hub", "--class-dir", str(self.class_dir), "--port", str(self.port)]
        # window.jupyterapp: the test asks the page whether the notebook's kernel is connected and its cells ran
        cmd += [*options, "--", "--Spawner.args=--LabApp.expose_app_in_browser=True"]
        with open(self.log, "ab") as log:
            log.write(f"\n==== {' '.join(cmd)}\n".encode())
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the hub exited with status {self.proc.returncode}:\n{self.tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/hub/api", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"the hub did not answer on {self.url} within 120 s:\n{self.tail()}")

    def add_observer(self) -> None:
        config = self.class_dir / "hub" / "jupyterhub_config.py"
        config.write_text(
            config.read_text()
            + f'\nc.JupyterHub.services.append({{"name": "observer", "api_token": "{self.token}"}})\n'
            + 'c.JupyterHub.load_roles.append({"name": "observer", "scopes": ["list:users", "read:servers"], '
            + '"services": ["observer"]})\n'
        )

    def running(self) -> set[str]:
        """The users whose server is running (ready), from the hub's REST API."""
        request = urllib.request.Request(f"{self.url}/hub/api/users", headers={"Authorization": f"token {self.token}"})
        users = json.loads(urllib.request.urlopen(request, timeout=10).read())
        return {u["name"] for u in users if any(s.get("ready") for s in (u.get("servers") or {}).values())}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # JupyterHub stops its servers and the proxy, then exits
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the hub did not stop within 90 s of SIGTERM:\n{self.tail()}") from None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "(no log)"


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        yield b
        b.close()


class Person:
    """One user in a browser context of their own (their own cookies), with what their page said."""

    def __init__(self, browser, hub: Hub, name: str, password: str):
        self.name, self.hub = name, hub
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(120_000)  # the hub's pages on 2 cores shared with other work
        self.page = self.context.new_page()
        self.lines: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))
        self.page.on("request", self._request)
        self.password = password

    def _request(self, r) -> None:
        if not r.url.startswith((self.hub.url, "data:", "blob:", "about:")):
            self.outside.append(r.url)

    @property
    def server(self) -> str:
        return f"{self.hub.url}/user/{self.name}"

    def log_in(self) -> None:
        """Fill in the hub's login page; the hub then starts the user's server (awaited in :meth:`wait_for_lab`)."""
        self.page.goto(f"{self.hub.url}/hub/login", wait_until="domcontentloaded")
        self.page.fill("#username_input", self.name)
        self.page.fill("#password_input", self.password)
        self.page.click("#login_submit", no_wait_after=True)

    def wait_for_lab(self) -> None:
        # generous: four servers and four JupyterLab pages start at once, on 2 cores that other work may share
        self.page.wait_for_url(f"{self.server}/lab**", timeout=300_000)
        self.page.wait_for_selector(".jp-LabShell", timeout=300_000)

    def open(self, path: str) -> None:
        self.page.goto(f"{self.server}/lab/tree/{path}", wait_until="domcontentloaded")
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        self.page.wait_for_function(_KERNEL_READY, timeout=180_000)

    def post(self, path: str, body: dict | None = None) -> dict:
        answer = self.page.evaluate(_POST, [f"{self.server}/{path}", body])
        status, text = answer["status"], answer["text"]
        assert status == 200, f"{self.name}: POST {path} answered {status}: {text[-2000:]}"
        return json.loads(text)

    def keep(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        try:
            self.page.screenshot(path=str(where / f"{self.name}.png"), full_page=True)
        except Exception as exc:  # a crashed page still leaves its console
            (where / f"{self.name}.png.error.txt").write_text(repr(exc))
        (where / f"{self.name}.console.log").write_text("\n".join(self.lines) + "\n")

    def close(self) -> None:
        self.context.close()


def _run_all(person: Person) -> None:
    """Run > Run All Cells, as a learner does (the learner copy's unsolved checks fail; Run All goes on past them)."""
    page = person.page
    page.click(".jp-NotebookPanel .jp-Cell >> nth=0")
    page.keyboard.press("Escape")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _add_own_line(person: Person, text: str) -> None:
    """A new cell at the end with the learner's own line, run (Ctrl+Enter), then File > Save (Ctrl+S)."""
    page = person.page
    page.evaluate(
        "() => { const nb = window.jupyterapp.shell.currentWidget.content;"
        " nb.activeCellIndex = nb.model.cells.length - 1; nb.mode = 'command'; }"
    )
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(text)
    page.keyboard.press("Control+Enter")
    page.wait_for_function(_ALL_RAN, timeout=60_000)
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")


def _saved(path: Path, text: str) -> bool:
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    ran = all(c["execution_count"] is not None for c in code)
    return ran and any("".join(c["source"]).strip() == text for c in code)


def _wait(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(1)


def test_a_class_on_one_hub(tmp_path, browser):
    class_dir = tmp_path / "class"
    hub = Hub(class_dir, free_port())
    people: list[Person] = []
    try:
        _the_class(hub, class_dir, browser, people)
    except BaseException:
        where = ARTIFACTS
        shutil.rmtree(where, ignore_errors=True)
        for person in people:
            person.keep(where)
        where.mkdir(parents=True, exist_ok=True)
        if hub.log.exists():
            shutil.copy(hub.log, where / "hub.log")
        print(f"hub log, screenshots and consoles kept in {where}")
        raise
    finally:
        for person in people:
            person.close()
        hub.stop()


def _the_class(hub: Hub, class_dir: Path, browser, people: list[Person]) -> None:
    # 1. the first start makes the class folder and the roster
    hub.start("--learners", ",".join(LEARNERS), "--teacher", TEACHER, "--cull-idle", "0")
    with (class_dir / "roster.csv").open(newline="") as f:
        roster = {row["user"]: row for row in csv.DictReader(f)}
    assert set(roster) == {TEACHER, *LEARNERS} and roster[TEACHER]["role"] == "teacher"
    assert oct((class_dir / "roster.csv").stat().st_mode & 0o777) == "0o600"
    hub.stop()
    hub.add_observer()
    hub.start("--cull-idle", "0")

    # 2. everyone logs in at once; the hub starts a server for each
    teacher = Person(browser, hub, TEACHER, roster[TEACHER]["password"])
    learners = [Person(browser, hub, name, roster[name]["password"]) for name in LEARNERS]
    people.extend([teacher, *learners])
    wrong = Person(browser, hub, "ana", "not-her-password")
    people.append(wrong)
    wrong.log_in()
    wrong.page.wait_for_selector("text=Invalid username or password", timeout=60_000)
    for person in (teacher, *learners):
        person.log_in()
    for person in (teacher, *learners):
        person.wait_for_lab()
    assert hub.running() == {TEACHER, *LEARNERS}

    # 3. the teacher: the solutions, the slides, and notebook 00 released as an assignment
    course = class_dir / "home" / TEACHER / "course"
    solutions = course / "source" / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    assert "### BEGIN SOLUTION" in solutions.read_text()
    teacher.open(f"course/source/{NOTEBOOK}/{NOTEBOOK}.ipynb")
    teacher.page.wait_for_selector(".jp-NotebookPanel .cm-content:has-text('BEGIN SOLUTION')", state="attached")
    slides = "course/source/02_transfer_small_data/02_transfer_small_data.ipynb"
    teacher.page.goto(f"{teacher.server}/rise/{slides}", wait_until="domcontentloaded")
    teacher.page.wait_for_function(
        "() => document.querySelectorAll('.reveal .slides > section').length >= 3", timeout=120_000
    )
    teacher.page.goto(f"{teacher.server}/lab", wait_until="domcontentloaded")
    for step in ("assign", "release"):
        result = teacher.post(f"formgrader/api/assignment/{NOTEBOOK}/{step}")
        assert result["success"], f"formgrader {step}: {result.get('error') or result}"
    assert (class_dir / "exchange" / "convlab" / "outbound" / NOTEBOOK / f"{NOTEBOOK}.ipynb").exists()

    # 4. each learner runs their own copy of notebook 00, all at once, and adds a line of their own
    for person in learners:
        copy = class_dir / "home" / person.name / "course" / f"{NOTEBOOK}.ipynb"
        assert "### BEGIN SOLUTION" not in copy.read_text(), "a learner's copy must not hold the solutions"
        person.open(f"course/{NOTEBOOK}.ipynb")
        _run_all(person)
    for person in learners:
        person.page.wait_for_function(_ALL_RAN, timeout=300_000)
        _add_own_line(person, f"# {person.name} was here")
    for person in learners:
        copy = class_dir / "home" / person.name / "course" / f"{NOTEBOOK}.ipynb"
        mine = f"# {person.name} was here"
        _wait(f"{person.name}'s notebook saved with every cell run", lambda c=copy, m=mine: _saved(c, m), 60)
        cells = json.loads(copy.read_text())["cells"]
        outputs = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
        assert "torch threads: 1 (" in outputs and "shared by 4 kernels" in outputs, outputs[-2000:]

    # 5. one learner fetches and submits through nbgrader's assignment list (what its Assignments panel sends)
    ana = learners[0]
    ana.post("assignments/fetch", {"course_id": "convlab", "assignment_id": NOTEBOOK})
    assert (class_dir / "home" / "ana" / NOTEBOOK / f"{NOTEBOOK}.ipynb").exists()
    submitted = ana.post("assignments/submit", {"course_id": "convlab", "assignment_id": NOTEBOOK})
    assert submitted["success"], submitted
    assert any(a["status"] == "submitted" for a in submitted["value"]), submitted

    # 6. the teacher collects and autogrades through the formgrader, then exports the grades in a terminal
    result = teacher.post(f"formgrader/api/assignment/{NOTEBOOK}/collect")
    assert result["success"], result
    assert (course / "submitted" / "ana" / NOTEBOOK / f"{NOTEBOOK}.ipynb").exists()
    result = teacher.post(f"formgrader/api/submission/{NOTEBOOK}/ana/autograde")
    assert result["success"], result.get("error") or result
    assert (course / "autograded" / "ana" / NOTEBOOK / f"{NOTEBOOK}.ipynb").exists()
    env = dict(
        os.environ,
        HOME=str(class_dir / "home" / TEACHER),
        JUPYTERHUB_USER=TEACHER,
        CONVLAB_HUB_ROLE="teacher",
        JUPYTER_CONFIG_PATH=str(class_dir / "hub" / "jupyter"),
    )
    export = subprocess.run(
        [sys.executable, "-m", "nbgrader", "export"], cwd=course, env=env, capture_output=True, text=True, timeout=300
    )
    assert export.returncode == 0, export.stderr[-3000:]
    with (course / "grades.csv").open(newline="") as f:
        grades = [row for row in csv.DictReader(f) if row["student_id"] == "ana"]
    assert [g["assignment"] for g in grades] == [NOTEBOOK] and float(grades[0]["max_score"]) >= 1, grades

    # 7. the hub restarts (its servers stop with it); everyone's work is still there, and idle servers are culled
    for person in people:
        person.close()
    people.clear()
    hub.stop()
    assert not _listening(hub.port)
    hub.start("--cull-idle", "30")
    assert hub.running() == set()
    for name in LEARNERS:
        person = Person(browser, hub, name, roster[name]["password"])
        people.append(person)
        person.log_in()
    for person in people:
        person.wait_for_lab()
        person.open(f"course/{NOTEBOOK}.ipynb")
        person.page.wait_for_selector(
            f".jp-NotebookPanel .cm-content:has-text('{person.name} was here')", state="attached", timeout=60_000
        )
        assert person.page.locator(".jp-NotebookPanel .jp-OutputArea-output").count() > 0
        assert _saved(class_dir / "home" / person.name / "course" / f"{NOTEBOOK}.ipynb", f"# {person.name} was here")
        assert not person.outside, f"{person.name}'s page reached beyond the hub: {person.outside}"
    assert hub.running() == set(LEARNERS)
    for person in people:
        person.close()
    people.clear()
    _wait("the idle culler stopping every idle server", lambda: not hub.running(), 240)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
