"""``python -m convlab open``: open the course in JupyterLab, the learner's own copies by default.

The learner view keeps the notebooks *with the solutions removed* in a writable folder outside the repository
(default ``~/convlab-course``, or ``$CONVLAB_COURSE_DIR``). Opening writes only what is missing there: a copy the
learner has edited is never overwritten (delete it to get a fresh one). ``--teacher`` opens the solutions in the
repository's ``notebooks/``. JupyterLab starts on the loopback interface with its news and update checks off;
extra JupyterLab options go after ``--``. Nothing is installed or fetched: run ``bash .ci/install`` once before.

This module imports only the standard library at the top, so ``python -m convlab open --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_COURSE_DIR",
    "course_notebooks",
    "sync_learner_folder",
    "lab_command",
    "add_open_arguments",
    "run_open",
    "main",
]

DEFAULT_COURSE_DIR = Path("~/convlab-course")
_SUPPORT_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "*.ipynb", "__pycache__")


def course_notebooks() -> Path:
    """The repository's ``notebooks/`` (the teacher's versions, with solutions)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


@dataclass
class SyncReport:
    """What :func:`sync_learner_folder` did: copies ``written`` now, copies ``kept`` as the learner left them."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def sync_learner_folder(dest: str | os.PathLike, src: str | os.PathLike | None = None) -> SyncReport:
    """Write the learner copy of every course notebook missing from ``dest``, and the files the notebooks read
    beside them (``figures/``, results, the slides' ``*.css``); keep everything already there. Returns what was
    written and kept."""
    from convlab.exercises.copies import write_learner_copies

    src = Path(src) if src is not None else course_notebooks()
    dest = Path(dest).expanduser()
    if dest.resolve() == src.resolve():
        raise ValueError(f"dest: the learner folder must not be the course's own notebooks/ ({src})")
    names = sorted(p.name for p in src.glob("[0-9][0-9]_*.ipynb"))
    existing = {n for n in names if (dest / n).exists()}
    written = write_learner_copies(src, dest, overwrite=False)
    for item in src.iterdir():  # support files, missing ones only (never over a learner's file)
        if item.suffix == ".css" and item.is_file() and not (dest / item.name).exists():
            shutil.copy2(item, dest / item.name)  # the slides' style (convlab.slides)
        if item.is_dir() and item.name not in (".ipynb_checkpoints", "__pycache__"):
            shutil.copytree(
                item,
                dest / item.name,
                ignore=_SUPPORT_IGNORE,
                dirs_exist_ok=True,
                copy_function=lambda s, d: None if Path(d).exists() else shutil.copy2(s, d),
            )
    return SyncReport(dest, written, [dest / n for n in sorted(existing)])


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
    """The JupyterLab command line: loopback only, news and update checks off, ``extra`` options last."""
    cmd = [
        python,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if settings_dir is not None:
        cmd.append(f"--LabApp.user_settings_dir={settings_dir}")
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
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
    parser.add_argument("--port", type=_port, default=None, help="JupyterLab's port (default: 8888 or the next free)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser; print the address")
    parser.add_argument(
        "lab_args", nargs="*", metavar="-- JUPYTERLAB_OPTION", help="options passed on to JupyterLab, after --"
    )


def _port(text: str) -> int:
    """argparse type for --port: an integer 1..65535 (argparse turns the error into one line and exit status 2)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected an integer 1..65535, got {text!r}")
    return port


def run_open(args: argparse.Namespace) -> int:
    if args.teacher:
        root = course_notebooks()
        settings = None  # the teacher's own JupyterLab settings
        print(f"teacher view: the solutions in {root}")
    else:
        folder = args.dir or Path(os.environ.get("CONVLAB_COURSE_DIR") or DEFAULT_COURSE_DIR)
        try:
            report = sync_learner_folder(folder)
        except (OSError, ValueError) as exc:
            print(f"python -m convlab open: error: {exc}", file=sys.stderr)
            return 2
        root = report.folder
        settings = root / ".jupyter" / "lab" / "user-settings"
        print(
            f"your course folder: {root}\n  new copies: {len(report.written)}; kept as you left them: "
            f"{len(report.kept)} (delete one to get a fresh copy)"
        )
    if settings is not None:
        _quiet_settings(settings)
    cmd = lab_command(root, args.port, not args.no_browser, args.lab_args, settings)
    # Kernels inherit this environment: OpenMP threads that wait sleep instead of spinning (read when a kernel's
    # OpenMP runtime starts, so it must be set here, not in a notebook); see convlab.threads. A teacher's own
    # setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print("starting JupyterLab (Ctrl-C to stop); next time just run: python -m convlab open", flush=True)
    os.chdir(root)
    os.execv(cmd[0], cmd)  # JupyterLab replaces this process: Ctrl-C and signals go straight to it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convlab open", description=__doc__.split("\n\n")[0])
    add_open_arguments(parser)
    return run_open(parser.parse_args(argv))
