"""Command line: ``python -m convlab fetch|assets|learner-copies|open|explore|hub|study|train|evaluate``.

``train`` and ``evaluate`` are described and checked in :mod:`convlab.cli.options` and run by
:mod:`convlab.cli.train` and :mod:`convlab.cli.evaluate`; ``torchrun ... -m convlab train`` runs ``train``
data-parallel (see :mod:`convlab.distributed`). A user's mistake (a bad argument, an unusable path or data
folder, a damaged checkpoint) ends in one line on stderr saying what to do, and exit status 2; the paths are checked
before torch is imported, so a typo is answered in well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from convlab.assets import ASSETS, AssetNotFoundError, IntegrityError, fetch, status_table
from convlab.cli.options import (
    UsageError,
    add_evaluate_arguments,
    add_train_arguments,
    check_evaluate_args,
    check_train_args,
    check_writable_folder,
)
from convlab.course_open import add_open_arguments, run_open
from convlab.display import Table
from convlab.exercises.copies import check_course_folder, course_notebooks, make_course_folder
from convlab.explore_open import add_explore_arguments, run_explore
from convlab.hub import add_hub_arguments, run_hub

__all__ = ["main"]


def _print_table(names: list[str], failed: frozenset[str] = frozenset()) -> None:
    """One row per asset; ``ok`` is ``yes`` only for files present and not among those that just ``failed``
    (``status_table`` sees that the files exist, not whether they passed their hash check)."""
    rows = status_table(names)
    header = ("asset", "kind", "MB", "licence", "ok", "came from", "where")

    def ok(r) -> str:
        return "FAILED" if r.name in failed else "yes" if r.present else "NO"

    cells = [(r.name, r.kind, f"{r.size_mb:.1f}", r.licence, ok(r), r.source, r.path) for r in rows]
    print(Table([dict(zip(header, row)) for row in cells], columns=header))


def _cmd_fetch(args: argparse.Namespace) -> int:
    names = args.names or list(ASSETS)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        print(f"error: unknown asset(s) {unknown}; known: {sorted(ASSETS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        try:
            fetch(name, force=args.force, allow_network=False if args.offline else None, progress=True)
        except (AssetNotFoundError, IntegrityError) as exc:
            failed.append(name)
            print(f"\nerror: {exc}", file=sys.stderr)
    print()
    _print_table(names, frozenset(failed))
    return 1 if failed else 0


def _cmd_list(args: argparse.Namespace) -> int:
    for asset in ASSETS.values():
        print(f"{asset.name:18s} {asset.kind:8s} {asset.size / 1e6:7.1f} MB  {asset.licence}")
        print(f"{'':18s} sha256 {asset.sha256}")
        print(f"{'':18s} {asset.provenance}")
    return 0


def _cmd_learner_copies(args: argparse.Namespace) -> int:
    src = Path(args.src).expanduser() if args.src is not None else course_notebooks()
    if not src.is_dir():
        where = "--src" if args.src is not None else "--src (default: the notebooks beside the package)"
        raise UsageError(f"{where}: no such folder: {src}; pass --src with the folder of the course notebooks")
    check_writable_folder("--out", args.out, "choose a folder you can write to")
    try:
        check_course_folder(args.out, src)
    except ValueError as exc:
        raise UsageError(f"--out {exc}") from None
    try:
        report = make_course_folder(args.out, src, fresh=args.fresh)
    except ValueError as exc:
        raise UsageError(f"--src {src}: {exc}") from None
    for path in report.written:
        print(path)
    if report.backups is not None:
        print(
            f"note: moved {len(report.moved)} file(s) that differed from a fresh copy to {report.backups}",
            file=sys.stderr,
        )
    if report.kept:
        names = ", ".join(str(p.relative_to(report.folder)) for p in report.kept[:3])
        more = f" and {len(report.kept) - 3} more" if len(report.kept) > 3 else ""
        print(
            f"note: kept {len(report.kept)} file(s) in {report.folder} that differ from a fresh copy (your edits): "
            f"{names}{more}; --fresh moves them to {report.folder / 'backups'} and writes fresh copies",
            file=sys.stderr,
        )
    return 0


class _Parser(argparse.ArgumentParser):
    """``one_line=True`` (train, evaluate): an error is one line naming the option, not the whole usage text."""

    one_line = False

    def error(self, message: str):
        if not self.one_line:
            super().error(message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The two imports below are the only ones inside functions: torch (seconds to import) is loaded only after the
# arguments passed their checks, so a typo is answered at once.
def _cmd_train(args: argparse.Namespace) -> int:
    check_train_args(args)
    from convlab.cli.train import run_train

    return run_train(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    check_evaluate_args(args)
    from convlab.cli.evaluate import run_evaluate

    return run_evaluate(args)


def _cmd_study(args: argparse.Namespace) -> int:
    from convlab.cli.study import run_study

    return run_study(args)


def _cli_error(prog: str, exc: BaseException) -> int:
    """One line on stderr (with the rank under torchrun, where every process reports for itself)."""
    rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""
    message = " ".join(str(exc).split("\n"))  # one line, whatever the exception's text
    print(f"{rank}{prog}: error: {message}", file=sys.stderr)
    return 2


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, run by ``func(args)``."""
    p = sub.add_parser(name, help=help_, description=description)
    p.set_defaults(func=func)
    return p


# train and evaluate: (name, run, arguments, help, description)
_HEADLESS = (
    (
        "train",
        _cmd_train,
        add_train_arguments,
        "train one transfer-learning regime headless (also under torchrun)",
        "Train one regime; writes metrics.json/.csv, best.pt and last.pt to --out.",
    ),
    (
        "evaluate",
        _cmd_evaluate,
        add_evaluate_arguments,
        "accuracy of saved checkpoints, optionally 10-crop and as an ensemble",
        "Evaluate train checkpoints on their test split; several make an ensemble.",
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m convlab", description="ConvLab course toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "fetch", _cmd_fetch, "get weights and data sets into the cache, hash-checked")
    p.add_argument("names", nargs="*", help=f"assets to fetch (default: all of {', '.join(ASSETS)})")
    p.add_argument(
        "--force", action="store_true", help="replace cached files that fail their sha256 check (keeps the good ones)"
    )
    p.add_argument("--offline", action="store_true", help="never try online sources")
    _command(sub, "assets", _cmd_list, "list the known assets with licence, hash and provenance")
    p = _command(
        sub, "learner-copies", _cmd_learner_copies, "write the notebooks with exercise solutions replaced by stubs"
    )
    p.add_argument(
        "--src",
        help="folder of the course notebooks (default: the repository's notebooks/, found from the package's location)",
    )
    p.add_argument(
        "--out",
        default="learner_notebooks",
        help="where to write the copies, outside notebooks/ (default: learner_notebooks); copies there that differ "
        "from a fresh one (your edits) are kept",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="replace copies that differ from a fresh one, after moving them to OUT/backups/<date-time>/",
    )
    p = _command(
        sub,
        "open",
        run_open,
        "open the course in JupyterLab: your copies (solutions removed), or --teacher",
        "Open the course in JupyterLab: your own copies in ~/convlab-course (only missing notebooks are written "
        "there), or the solutions with --teacher. Options after -- go to JupyterLab.",
    )
    add_open_arguments(p)
    from convlab.cli.study import add_study_arguments

    p = _command(
        sub,
        "study",
        _cmd_study,
        "run one of the course's studies (resumable; writes one JSON)",
        "Run a study at a scale; started again, it skips the runs its JSON already has.",
    )
    add_study_arguments(p)
    p = _command(
        sub,
        "explore",
        run_explore,
        "the augmentation explorer as a web page: your photos, a chain of augmentations, the code to copy",
        "Serve the augmentation explorer on 127.0.0.1 (Voila, with a token; nothing is fetched from the internet) "
        "and open it in the browser: the course's photos, scikit-image's and your own (--photos, or upload them "
        "in the page), every augmentation of the course with sliders, a chain of them on a grid of seeded draws, "
        "the code for convlab and torchvision v2, and the photo set's PCA colour axes.",
    )
    add_explore_arguments(p)
    p = _command(
        sub,
        "hub",
        run_hub,
        "start JupyterHub for a class on this machine: logins, a server and learner copies each, nbgrader",
        "Start JupyterHub on 127.0.0.1 for a class: each learner logs in (roster.csv in the class folder) and gets a "
        "server of their own with their own copies of the notebooks (never overwritten); kernels share the cores "
        "fairly; the teacher's account holds the solutions, the slides and the nbgrader course; idle servers are "
        "stopped. Options after -- go to JupyterHub.",
    )
    add_hub_arguments(p)
    for name, func, add_arguments, help_, description in _HEADLESS:
        p = _command(sub, name, func, help_, description)
        p.one_line = True
        add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        return _cli_error(f"{parser.prog} {args.command}", exc)
    except (AssetNotFoundError, IntegrityError) as exc:
        if args.command not in ("train", "evaluate"):
            raise
        _cli_error(f"{parser.prog} {args.command}", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
