"""``python -m convlab study NAME``: run one of the course's studies at a scale, resumable, into one JSON file.

Each study is a list of training runs; the record (:class:`convlab.studyrun.StudyRecord`) is rewritten after each
run, so the same command started again after an interruption skips what it already has, and the same command
started in a second process shares the remaining runs with the first. The notebooks read the
stored full-scale files from ``notebooks/results/``.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

__all__ = ["STUDIES", "add_study_arguments", "run_study"]

#: name -> (module with ``KEY``, ``STUDY_SCALES`` or ``SCALES``, ``config(scale)`` and ``run(scale, record)``,
#: what it measures)
STUDIES = {
    "augmentation": (
        "convlab.augregimes",
        "each geometric augmentation in a model that overfits and one that underfits",
    ),
    "size-axis": ("convlab.sizeaxis", "transfer regimes against training-set size on Fashion-MNIST"),
    "colour": ("convlab.colourstudy", "colour augmentation against a test set under another illumination"),
    "ensembles": ("convlab.ensemblestudy", "ensembles against 10-crop and dense evaluation, at equal forward passes"),
    "learning-curves": (
        "convlab.learningcurves",
        "hand-engineered features against learned ones over training-set size, with the crossover",
    ),
}


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(STUDIES), help="; ".join(f"{k}: {v[1]}" for k, v in STUDIES.items()))
    p.add_argument("--scale", default="small", help="small (minutes) or full (hours on a CPU; default: small)")
    p.add_argument("--out", help="the JSON file (default: NAME_SCALE.json in the current folder)")
    p.add_argument("--threads", type=int, help="torch threads (default: convlab's thread policy)")


def run_study(args: argparse.Namespace) -> int:
    from convlab.cli.options import UsageError

    module = importlib.import_module(STUDIES[args.name][0])
    scales = getattr(module, "STUDY_SCALES", module.SCALES)
    if args.scale not in scales:
        raise UsageError(f"--scale: expected one of {sorted(scales)}, got {args.scale!r}")
    out = Path(args.out or f"{args.name.replace('-', '_')}_{args.scale}.json").expanduser()
    if out.is_dir():
        raise UsageError(f"--out: expected a file path, got the folder {out}")
    if args.threads is not None and not 1 <= args.threads <= 256:
        raise UsageError(f"--threads: expected 1-256, got {args.threads}")
    from convlab.studyrun import StudyRecord
    from convlab.threads import THREADS_ENV, apply_thread_policy

    apply_thread_policy(None if args.threads is None else {**os.environ, THREADS_ENV: str(args.threads)})
    try:
        compatible = getattr(module, "compatible", None)
        with StudyRecord(out, module.KEY, module.config(args.scale), args.name, compatible) as record:
            module.run(args.scale, record, progress=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {out}")
    return 0
