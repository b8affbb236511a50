"""``python -m convlab open``: open the course in JupyterLab, the learner's own copies by default.

The learner view keeps the notebooks *with the solutions removed* in a writable folder outside the repository
(default ``~/convlab-course``, or ``$CONVLAB_COURSE_DIR``; never inside ``notebooks/``), made by
:func:`convlab.exercises.make_course_folder`: opening writes only what is missing there, and a copy the learner has
edited is never overwritten (delete it to get a fresh one). ``--teacher`` opens the solutions in the repository's
``notebooks/``. JupyterLab starts on the loopback interface, on the port given with ``--port`` (refused if in use)
or the first free one from 8888 (printed), with its news, update checks and package-index listing off, so it makes
no network call; ``open`` warns, with the fix, when the widget, slides or nbgrader extensions are not installed
where this Python's JupyterLab looks. Extra JupyterLab options go after ``--``. Nothing is installed or fetched:
run ``bash .ci/install`` once before.

This module imports only the standard library at the top, so ``python -m convlab open --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from convlab.arguments import number_in

__all__ = [
    "port_argument",
    "DEFAULT_COURSE_DIR",
    "OFFLINE_LAB_OPTIONS",
    "LAB_EXTENSIONS",
    "lab_extension_problems",
    "choose_port",
    "free_port",
    "lab_command",
    "add_open_arguments",
    "run_open",
    "main",
]

DEFAULT_COURSE_DIR = Path("~/convlab-course")
DEFAULT_PORT = 8888
#: JupyterLab options that keep the course off the network: no news, no update checks, and the read-only extension
#: manager (it lists what is installed; the default one asks a package index whenever its panel lists extensions).
#: ``lab_command`` uses them, and so do the tests' own JupyterLab servers.
OFFLINE_LAB_OPTIONS = (
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--LabApp.extension_manager=readonly",
)
#: The lab extensions the course needs: (what they show, the extension's name, the pip package that installs it).
#: Without the first, every live preview prints as ``VBox(children=...)`` text.
LAB_EXTENSIONS = (
    ("widget", "@jupyter-widgets/jupyterlab-manager", "jupyterlab_widgets"),
    ("slides", "jupyterlab-rise", "jupyterlab-rise"),
    ("nbgrader", "@jupyter/nbgrader", "nbgrader"),
)


def _quiet_settings(settings_dir: Path) -> None:
    """JupyterLab user settings for the course: no news, no update checks (written only if missing)."""
    notification = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    if not notification.exists():
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}, indent=2) + "\n")


def lab_command(
    root: Path,
    port: int | None,
    browser: bool,
    extra: Sequence[str],
    settings_dir: Path | None,
    python: str = sys.executable,
) -> list[str]:
    """The JupyterLab command line: loopback only, off the network (:data:`OFFLINE_LAB_OPTIONS`), the slides page
    with its own lab extensions (:func:`convlab.slides.slides_server_options`), on exactly ``port`` if given (no
    moving to the next port), ``extra`` options last."""
    from convlab.slides import slides_server_options

    cmd = [python, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1", *OFFLINE_LAB_OPTIONS]
    cmd += slides_server_options()
    if settings_dir is not None:
        cmd.append(f"--LabApp.user_settings_dir={settings_dir}")
    if port is not None:
        cmd += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if not browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root; JupyterLab refuses otherwise
    return cmd + list(extra)


def add_open_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher",
        action="store_true",
        help="open the solutions in the repository's notebooks/ instead of your copies",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"your course folder (default: $CONVLAB_COURSE_DIR or {DEFAULT_COURSE_DIR})",
    )
    parser.add_argument(
        "--port",
        type=port_argument,
        default=None,
        help=f"JupyterLab's port; refused if in use (default: {DEFAULT_PORT} or the next free one, printed)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser; print the address")
    parser.add_argument(
        "lab_args", nargs="*", metavar="-- JUPYTERLAB_OPTION", help="options passed on to JupyterLab, after --"
    )


#: argparse type for --port: an integer 1..65535
port_argument = number_in(int, 1, 65535, expected="an integer 1..65535")


def _port_is_free(port: int) -> bool:
    """Whether JupyterLab could listen on 127.0.0.1:``port`` now (probed as it binds: with ``SO_REUSEADDR``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that no one listens on now (the kernel's choice), for a server started right after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_port(requested: int | None, first: int = DEFAULT_PORT, tries: int = 50) -> int:
    """The port to serve on: ``requested`` if it is free (ValueError in one sentence if it is in use: a teacher
    who told the class an address must not find the lab elsewhere), else the first free one of ``first`` and the
    ``tries - 1`` after it."""
    if requested is not None:
        if not _port_is_free(requested):
            raise ValueError(
                f"--port {requested}: expected a free port, got one in use on 127.0.0.1 (another JupyterLab?); stop "
                "what uses it, or choose another --port"
            )
        return requested
    for port in range(first, min(first + tries, 65536)):
        if _port_is_free(port):
            return port
    raise ValueError(f"--port: no free port in {first}..{first + tries - 1}; choose one with --port")


def lab_extension_problems(
    paths: Sequence[str | os.PathLike] | None = None, config_paths: Sequence[str | os.PathLike] | None = None
) -> list[str]:
    """One sentence per extension of :data:`LAB_EXTENSIONS` that the lab started by this Python would not load:
    not installed in its ``labextensions`` folders (``paths``, default ``jupyter_path("labextensions")``: this
    Python's prefix, the user's and the system's folders, ``JUPYTER_PATH``), or disabled in a ``page_config.json``
    of its configuration folders (``config_paths``, default ``jupyter_config_path()``). A virtual environment on
    another Python sees the packages of the Python it was made from but not their lab extensions."""
    from jupyter_core.paths import jupyter_config_path, jupyter_path

    paths = [Path(p) for p in (jupyter_path("labextensions") if paths is None else paths)]
    config_paths = [Path(p) for p in (jupyter_config_path() if config_paths is None else config_paths)]
    disabled: set[str] = set()
    for folder in config_paths:
        try:
            found = json.loads((folder / "labconfig" / "page_config.json").read_text()).get("disabledExtensions", {})
        except (OSError, ValueError, AttributeError):
            continue
        disabled |= {k for k, v in found.items() if v} if isinstance(found, dict) else set(map(str, found))
    problems = []
    for what, name, package in LAB_EXTENSIONS:
        if not any((folder / name / "package.json").is_file() for folder in paths):
            problems.append(
                f"JupyterLab will start without the {what} extension ({name} is not installed for {sys.executable}); "
                f"install it with: {sys.executable} -m pip install {package}"
            )
        elif name in disabled:
            problems.append(
                f"JupyterLab will start without the {what} extension ({name} is disabled); enable it with: "
                f"{sys.executable} -m jupyter labextension enable {name}"
            )
    return problems


def run_open(args: argparse.Namespace) -> int:
    from convlab.exercises.copies import course_notebooks, make_course_folder

    chosen = any(a.startswith(("--ServerApp.port=", "--port=")) for a in args.lab_args)  # the teacher's own option
    try:
        port = None if chosen else choose_port(args.port)
    except ValueError as exc:
        print(f"python -m convlab open: error: {exc}", file=sys.stderr)
        return 2
    if args.teacher:
        root = course_notebooks()
        settings = None  # the teacher's own JupyterLab settings
        print(f"teacher view: the solutions in {root}")
    else:
        folder = args.dir or Path(os.environ.get("CONVLAB_COURSE_DIR") or DEFAULT_COURSE_DIR)
        try:
            report = make_course_folder(folder)
        except ValueError as exc:  # inside the course's notebooks/
            print(f"python -m convlab open: error: --dir {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"python -m convlab open: error: --dir {folder}: {exc}", file=sys.stderr)
            return 2
        root = report.folder
        settings = root / ".jupyter" / "lab" / "user-settings"
        notebooks = [p for p in report.written if p.suffix == ".ipynb"]
        edited = [p for p in report.kept if p.suffix == ".ipynb"]
        print(
            f"your course folder: {root}\n  new copies: {len(notebooks)}; copies you changed, kept as you left "
            f"them: {len(edited)} (delete one to get a fresh copy)"
        )
    if settings is not None:
        _quiet_settings(settings)
    for problem in lab_extension_problems():
        print(f"warning: {problem}", file=sys.stderr)
    cmd = lab_command(root, port, not args.no_browser, args.lab_args, settings)
    # Kernels inherit this environment: OpenMP threads that wait sleep instead of spinning (read when a kernel's
    # OpenMP runtime starts, so it must be set here, not in a notebook); see convlab.threads. A teacher's own
    # setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    where = f" at http://127.0.0.1:{port}/lab (its address with the login token follows)" if port else ""
    print(f"starting JupyterLab{where}; Ctrl-C stops it; next time just run: python -m convlab open", flush=True)
    os.chdir(root)
    os.execv(cmd[0], cmd)  # JupyterLab replaces this process: Ctrl-C and signals go straight to it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convlab open", description=__doc__.split("\n\n")[0])
    add_open_arguments(parser)
    return run_open(parser.parse_args(argv))
