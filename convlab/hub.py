"""``python -m convlab hub``: a whole class on one machine, with JupyterHub.

One command makes (or reuses) a *class folder* and starts a real JupyterHub on the loopback interface, behind
``configurable-http-proxy`` (the npm package that ``bash .ci/install`` installs under ``$CONVLAB_HOME/npm``)::

    <class>/roster.csv        who may log in: user, password, role (made once, kept; readable by its owner only)
    <class>/home/<user>/      each user's home and server root (a learner's copies in course/, fetched assignments)
    <class>/home/<teacher>/course/   the teacher's nbgrader course: source/<notebook>/ holds each notebook with its
                                     solutions (one assignment per notebook), which also present as slides
    <class>/exchange/         nbgrader's exchange: release, fetch, submit and collect go through it
    <class>/hub/              JupyterHub's state (database, cookie secret), its config file and the servers' shared
                              Jupyter config (nbgrader's course id and exchange, JupyterLab's news and update checks)

Each learner gets a server of their own (:class:`convlab.hub_config.ClassSpawner`) that, before every start, writes
the learner copies missing from ``course/`` (the learner's edits are never overwritten: the machinery of
``python -m convlab open``). Every server's kernels share the cores fairly without any setting by the teacher:
``CONVLAB_SHARED_KERNELS`` is the number of seats (the roster's accounts, or ``--seats``) and
``OMP_WAIT_POLICY=PASSIVE`` (see :mod:`convlab.threads`). ``jupyterhub-idle-culler`` stops servers idle for
``--cull-idle`` seconds. The roster's login (:class:`convlab.hub_config.RosterAuthenticator`) suits a seminar room;
``<class>/hub/jupyterhub_config.py`` (written once, then the teacher's) shows the lines that switch to the
institution's login.

Every server runs as the same system user (the one who started the hub): the learners are separated by their
folders, not by the operating system, as befits one trusted room. Give each learner a system account (JupyterHub's
``LocalProcessSpawner``) or a container for more.

This module imports only the standard library and convlab's course modules, so ``--help`` answers at once; the
JupyterHub classes live in :mod:`convlab.hub_config`, which only the hub process imports.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convlab.arguments import number_in
from convlab.course_open import free_port, port_argument
from convlab.exercises.copies import course_notebooks
from convlab.slides import SLIDES_SERVER_SETTINGS

__all__ = [
    "DEFAULT_CLASS_DIR",
    "COURSE_ID",
    "ClassFolder",
    "Account",
    "read_roster",
    "make_roster",
    "teacher_course",
    "proxy_command",
    "prepare_class",
    "add_hub_arguments",
    "run_hub",
]

DEFAULT_CLASS_DIR = Path("~/convlab-class")
#: nbgrader's course id for the whole class (the exchange keeps one folder per course)
COURSE_ID = "convlab"
_USER = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SUPPORT_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")


@dataclass(frozen=True)
class Account:
    """One line of the roster."""

    name: str
    password: str
    role: str  # "learner" or "teacher"


@dataclass(frozen=True)
class ClassFolder:
    """Where a class keeps everything (see the module docstring)."""

    root: Path

    @property
    def roster(self) -> Path:
        return self.root / "roster.csv"

    @property
    def state(self) -> Path:
        return self.root / "hub"

    @property
    def jupyter_config(self) -> Path:
        """The Jupyter config folder every server reads (``JUPYTER_CONFIG_PATH``)."""
        return self.state / "jupyter"

    @property
    def hub_config(self) -> Path:
        return self.state / "jupyterhub_config.py"

    @property
    def settings(self) -> Path:
        """This start's settings (ports, seats, culling), written by the command and read by the hub's config."""
        return self.state / "settings.json"

    @property
    def exchange(self) -> Path:
        return self.root / "exchange"

    def home(self, user: str) -> Path:
        return self.root / "home" / user


def read_roster(path: str | os.PathLike) -> dict[str, Account]:
    """The accounts in a roster file (CSV with the header ``user,password,role``), by name."""
    path = Path(path)
    accounts: dict[str, Account] = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            name, password, role = ((row.get(k) or "").strip() for k in ("user", "password", "role"))
            if not _USER.fullmatch(name) or not password or role not in ("learner", "teacher"):
                raise ValueError(
                    f"{path}, line {line}: expected 'user,password,role' with a lower-case user name, a password and "
                    f"the role learner or teacher, got {row}"
                )
            accounts[name] = Account(name, password, role)
    if sum(a.role == "teacher" for a in accounts.values()) != 1:
        raise ValueError(f"{path}: expected exactly one account with the role teacher")
    return accounts


def _learner_names(learners: str) -> list[str]:
    """``"30"`` -> learner01..learner30; ``"ana,ben"`` -> those names."""
    if learners.strip().isdigit():
        n = int(learners)
        if not 0 < n < 1000:
            raise ValueError(f"--learners: expected a number 1..999 or a list of names, got {learners!r}")
        return [f"learner{i:0{max(2, len(str(n)))}d}" for i in range(1, n + 1)]
    names = [n.strip() for n in learners.split(",") if n.strip()]
    bad = [n for n in names if not _USER.fullmatch(n)]
    if bad or not names:
        raise ValueError(
            f"--learners: expected a number or comma-separated lower-case names (a-z, 0-9, _ and -), got {learners!r}"
        )
    return names


def make_roster(path: str | os.PathLike, learners: str | None, teacher: str) -> dict[str, Account]:
    """The class roster at ``path``: kept as it is when it exists (learners named in ``learners`` and missing from it
    are added, each with a new password), else made for ``learners`` (default 8) and ``teacher``. Passwords are
    random and the file is readable by its owner only."""
    path = Path(path)
    if not _USER.fullmatch(teacher):
        raise ValueError(f"--teacher: expected a lower-case user name (a-z, 0-9, _ and -), got {teacher!r}")
    accounts = read_roster(path) if path.exists() else {}
    if not accounts:
        accounts[teacher] = Account(teacher, secrets.token_urlsafe(9), "teacher")
    wanted = _learner_names(learners) if learners is not None else ([] if len(accounts) > 1 else _learner_names("8"))
    clash = [n for n in wanted if n in accounts and accounts[n].role == "teacher"]
    if clash:
        raise ValueError(f"--learners: expected names other than the teacher's, got {clash}")
    added = [n for n in wanted if n not in accounts]
    if added or not path.exists():
        for name in added:
            accounts[name] = Account(name, secrets.token_urlsafe(6), "learner")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["user", "password", "role"])
            writer.writerows([a.name, a.password, a.role] for a in accounts.values())
        os.replace(tmp, path)
    return accounts


def teacher_course(course: str | os.PathLike, src: str | os.PathLike | None = None) -> list[Path]:
    """The teacher's nbgrader course folder: ``source/<notebook>/`` holds each course notebook with its solutions
    and the files it reads (``figures/``, ``results/``, the slides' ``*.css``). Writes only what is missing; returns
    the notebooks written."""
    src = Path(src) if src is not None else course_notebooks()
    course = Path(course)
    written = []
    for nb in sorted(src.glob("[0-9][0-9]_*.ipynb")):
        folder = course / "source" / nb.stem
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / nb.name).exists():
            shutil.copy2(nb, folder / nb.name)
            written.append(folder / nb.name)
        for item in src.iterdir():
            if item.name in ("rise.css", f"{nb.stem}.css") and not (folder / item.name).exists():
                shutil.copy2(item, folder / item.name)  # the slides' style (convlab.slides)
            if item.is_dir() and item.name not in (".ipynb_checkpoints", "__pycache__"):
                shutil.copytree(
                    item,
                    folder / item.name,
                    ignore=_SUPPORT_IGNORE,
                    dirs_exist_ok=True,
                    copy_function=lambda s, d: None if Path(d).exists() else shutil.copy2(s, d),
                )
    return written


def proxy_command() -> str:
    """The ``configurable-http-proxy`` executable: the one ``.ci/install`` put under ``$CONVLAB_HOME/npm``, else the
    one on ``PATH``."""
    from convlab.assets import convlab_home

    local = convlab_home() / "npm" / "node_modules" / ".bin" / "configurable-http-proxy"
    found = str(local) if local.exists() else shutil.which("configurable-http-proxy")
    if found is None:
        raise FileNotFoundError(
            f"configurable-http-proxy: expected it in {local.parent} or on PATH, got neither; install it with "
            "bash .ci/install (or: npm install --prefix $CONVLAB_HOME/npm configurable-http-proxy@5)"
        )
    return found


_NBGRADER_CONFIG = '''\
"""nbgrader for every server of this class (written by python -m convlab hub at each start)."""
import os

c = get_config()
c.CourseDirectory.course_id = {course_id!r}
c.Exchange.root = {exchange!r}
if os.environ.get("CONVLAB_HUB_ROLE") == "teacher":
    c.CourseDirectory.root = {course!r}
    c.Execute.timeout = 600  # seconds per cell when autograding
else:
    # every server runs as the same system user: a submission is named after the hub's user, not the system's
    c.CourseDirectory.student_id = os.environ.get("JUPYTERHUB_USER", "*")
'''

_SERVER_CONFIG = """\
# JupyterLab for every server of this class (written by python -m convlab hub at each start): no news, no update
# checks, and the slides page with its own lab extensions (convlab.slides.SLIDES_SERVER_SETTINGS)
c = get_config()
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.RiseApp.labextensions_path = {labextensions_path!r}
c.RiseApp.labextensions_url = {labextensions_url!r}
"""

_HUB_CONFIG = '''\
"""JupyterHub for a ConvLab class (written once by python -m convlab hub; yours to edit, it is never rewritten).

The institution's login instead of the class roster: install its authenticator and set it after configure(), e.g.
    c.JupyterHub.authenticator_class = "generic-oauth"     # pip install oauthenticator; or "github", "google", ...
    c.GenericOAuthenticator.client_id = "..."; c.GenericOAuthenticator.client_secret = "..."
    c.GenericOAuthenticator.oauth_callback_url = "https://<hub address>/hub/oauth_callback"
    c.Authenticator.allowed_users = {{...}}; c.Authenticator.admin_users = {{"<teacher's login>"}}
or  c.JupyterHub.authenticator_class = "ldapauthenticator.LDAPAuthenticator"  # pip jupyterhub-ldapauthenticator
    c.LDAPAuthenticator.server_address = "ldap.example.org"; ...
and set ClassSpawner.teacher to the teacher's login name. Serving beyond loopback also needs
c.JupyterHub.bind_url (with https, or behind the institution's proxy).
"""
from convlab.hub_config import configure

configure(c, {settings!r})
'''


def prepare_class(
    root: str | os.PathLike,
    learners: str | None,
    teacher: str,
    port: int,
    seats: int | None,
    cull_idle: int,
) -> tuple[ClassFolder, dict[str, Account]]:
    """Make (or reuse) the class folder and write this start's settings; returns it and its roster."""
    from convlab.assets import convlab_home

    folder = ClassFolder(Path(root).expanduser().resolve())
    accounts = make_roster(folder.roster, learners, teacher)
    the_teacher = next(a.name for a in accounts.values() if a.role == "teacher")
    for path in (folder.state, folder.jupyter_config):
        path.mkdir(parents=True, exist_ok=True)
    folder.exchange.mkdir(exist_ok=True)
    folder.exchange.chmod(0o1777)  # nbgrader's exchange: everyone writes, nobody removes another's files
    course = folder.home(the_teacher) / "course"
    (folder.jupyter_config / "nbgrader_config.py").write_text(
        _NBGRADER_CONFIG.format(course_id=COURSE_ID, exchange=str(folder.exchange), course=str(course))
    )
    (folder.jupyter_config / "jupyter_server_config.py").write_text(_SERVER_CONFIG.format(**SLIDES_SERVER_SETTINGS))
    settings = {
        "class_dir": str(folder.root),
        "teacher": the_teacher,
        "port": port,
        "hub_port": free_port(),
        "proxy_api_port": free_port(),
        "seats": seats or len(accounts),
        "cull_idle": cull_idle,
        "proxy": proxy_command(),
        "convlab_home": str(convlab_home().expanduser().resolve()),
    }
    folder.settings.write_text(json.dumps(settings, indent=1) + "\n")
    if not folder.hub_config.exists():
        folder.hub_config.write_text(_HUB_CONFIG.format(settings=str(folder.settings)))
    return folder, accounts


_non_negative = number_in(int, 0, expected="a whole number of seconds >= 0")
_positive = number_in(int, 1, expected="a positive integer")


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--class-dir",
        type=Path,
        default=None,
        help=f"the class folder (default: $CONVLAB_CLASS_DIR or {DEFAULT_CLASS_DIR}); made on the first start",
    )
    parser.add_argument(
        "--learners",
        default=None,
        help="learner accounts to add to the roster: a number (learner01, learner02, ...) or names 'ana,ben'; "
        "the first start makes 8 when not given; existing accounts and passwords are kept",
    )
    parser.add_argument("--teacher", default="teacher", help="the teacher's account name (default: teacher)")
    parser.add_argument("--port", type=port_argument, default=8000, help="the hub's port on 127.0.0.1 (default: 8000)")
    parser.add_argument(
        "--seats",
        type=_positive,
        default=None,
        help="kernels that share the cores (CONVLAB_SHARED_KERNELS of every server; default: the roster's accounts)",
    )
    parser.add_argument(
        "--cull-idle",
        type=_non_negative,
        default=3600,
        help="stop a server idle for this many seconds (jupyterhub-idle-culler; 0: never; default: 3600)",
    )
    parser.add_argument(
        "hub_args", nargs="*", metavar="-- JUPYTERHUB_OPTION", help="options passed on to JupyterHub, after --"
    )


def run_hub(args: argparse.Namespace) -> int:
    root = args.class_dir or Path(os.environ.get("CONVLAB_CLASS_DIR") or DEFAULT_CLASS_DIR)
    try:
        folder, accounts = prepare_class(root, args.learners, args.teacher, args.port, args.seats, args.cull_idle)
    except (OSError, ValueError) as exc:
        print(f"python -m convlab hub: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    teacher = next(a.name for a in accounts.values() if a.role == "teacher")
    settings = json.loads(folder.settings.read_text())
    print(
        f"class folder: {folder.root}\n"
        f"  {len(accounts) - 1} learners and the teacher {teacher!r}; their passwords: {folder.roster}\n"
        f"  kernels share the cores as {settings['seats']} seats (CONVLAB_SHARED_KERNELS); "
        f"{f'idle servers stop after {args.cull_idle} s' if args.cull_idle else 'idle servers are never stopped'}\n"
        f"  nbgrader: the teacher's course is {folder.home(teacher) / 'course'}, the exchange {folder.exchange}\n"
        f"starting JupyterHub on http://127.0.0.1:{args.port}/ (Ctrl-C to stop; the servers stop with it)",
        flush=True,
    )
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(folder.hub_config), *args.hub_args]
    os.chdir(folder.state)
    os.execv(cmd[0], cmd)  # JupyterHub replaces this process: Ctrl-C and signals go straight to it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convlab hub", description=__doc__.split("\n\n")[0])
    add_hub_arguments(parser)
    return run_hub(parser.parse_args(argv))
