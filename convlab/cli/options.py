"""``python -m convlab train`` and ``evaluate``: their options and every check that needs no torch.

``train`` runs one transfer-learning regime (:class:`convlab.transfer.Regime`) on one data set and writes, under
``--out``::

    metrics.json   config, one record per epoch, best epoch, test result (rewritten atomically after each epoch)
    metrics.csv    the per-epoch records as a table
    last.pt        checkpoint after every epoch: model, optimizer, epoch, history, RNG states of every rank
    best.pt        the epoch with the lowest validation loss (train loss without a validation set)

Every file is written to a temporary name and renamed into place, so an interrupted run leaves the previous
version, never half a file. ``--resume`` continues from ``last.pt``: model, optimizer, history and each rank's
random state are restored and training goes on with the next epoch, so the run ends with the same files (and,
on the same machine, the same numbers) as one that was never interrupted.

The same command runs data-parallel under ``torchrun`` (see :mod:`convlab.distributed`). ``--batch-size`` is the
*global* batch: each of the N processes takes ``batch_size / N`` images per step, and DDP averages the gradients,
so the optimizer sees the same mean-loss gradient as a single process with that batch. Only rank 0 logs and
writes files; it alone reads a checkpoint and sends it to the others, so nodes need no shared disk.

Before any work (and before torch is imported) :func:`check_train_args` checks every path: ``--out``,
``--cache-dir`` and ``CONVLAB_HOME`` must be (or become) folders this process can write in, and the ``last.pt``
that ``--resume`` would continue must be a complete file. After the data are read, and before any model is built
or feature extracted, a resumed checkpoint must match them: the same classes and, through the per-split
fingerprints stored in every checkpoint, the same images.

``evaluate`` rebuilds models from checkpoints (no pretrained weights needed), optionally with 10-crop test-time
augmentation and as an ensemble (class orders must match), on the test split the checkpoints were trained with.
Bad arguments raise :class:`UsageError`; ``python -m convlab`` prints it as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

from convlab.arguments import number_in
from convlab.assets import convlab_home
from convlab.atomicio import atomic_write_bytes
from convlab.weights import WEIGHTS

__all__ = [
    "UsageError",
    "REGIMES",
    "AUGMENTS",
    "BN_STATS",
    "BACKBONE_NAMES",
    "CHECKPOINT_FORMAT",
    "METRICS_FORMAT",
    "RESUME_KEYS",
    "add_train_arguments",
    "add_evaluate_arguments",
    "check_train_args",
    "check_evaluate_args",
    "check_writable_folder",
    "check_checkpoint_file",
    "uses_cache",
    "write_json",
    "plain",
]

REGIMES = ("head_only", "freeze_first", "finetune", "scratch")
AUGMENTS = ("none", "light", "strong")
BN_STATS = ("auto", "batch", "frozen", "sync")
#: ``--backbone`` choices: every backbone of ``convlab.backbones.BACKBONES`` is built from the weights record of the
#: same name, so the names come from the records here, without importing torch.
BACKBONE_NAMES = tuple(WEIGHTS)
CHECKPOINT_FORMAT = "convlab.train/1"
METRICS_FORMAT = "convlab.train.metrics/1"
#: Settings that must not change when a run is resumed (``--epochs`` may grow; device and progress may differ).
RESUME_KEYS = (
    "regime",
    "freeze_k",
    "backbone",
    "data",
    "max_per_class",
    "augment",
    "batch_size",
    "lr",
    "input_size",
    "seed",
    "dropout",
    "bn_stats",
    "cache",
)


class UsageError(Exception):
    """A bad argument found after parsing (e.g. an empty data folder); the CLI prints it and exits with 2."""


# ============================================================================================ arguments
def _int_at_least(lo: int):
    return number_in(int, lo, expected=f"an integer >= {lo}")


_positive_float = number_in(float, 0.0, low_open=True, expected="a positive number")
_probability = number_in(float, 0.0, 1.0, high_open=True, expected="a probability in [0, 1)")


def _data_source(text: str) -> str:
    """``food``, ``fashion_mnist`` or an existing folder (checked here, so a typo fails before any work)."""
    if text in ("food", "fashion_mnist"):
        return text
    path = Path(text).expanduser()
    expected = "expected 'food', 'fashion_mnist' or a folder of class folders"
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{expected}; no such folder: {text}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{expected}; not a folder: {text}")
    return str(path.resolve())


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda"):
        return text
    raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu' or 'cuda', got {text!r}")


def _stages_help() -> str:
    """``"7 stages (0..7)"``, or each backbone's count where they differ (each weights record has its own)."""
    counts = {name: record.num_stages for name, record in WEIGHTS.items()}
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"{n} stages (0..{n})"
    return "stages of --backbone (" + ", ".join(f"{name}: 0..{n}" for name, n in counts.items()) + ")"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's options (see ``python -m convlab train --help``)."""
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics and checkpoints")
    p.add_argument("--regime", choices=REGIMES, default="head_only", help="what trains (default: head_only)")
    p.add_argument(
        "--freeze-k",
        type=_int_at_least(0),
        metavar="K",
        help=f"with --regime freeze_first: freeze the first K of the {_stages_help()}",
    )
    p.add_argument("--backbone", choices=BACKBONE_NAMES, default="mobilenet_v2")
    p.add_argument(
        "--data",
        type=_data_source,
        default="food",
        metavar="{food,fashion_mnist,PATH}",
        help="a course data set, or a folder PATH/<class>/<image> (default: food)",
    )
    p.add_argument(
        "--max-per-class",
        type=_int_at_least(1),
        metavar="N",
        help="fewer images for quick runs: food: N photos per class before splitting; fashion_mnist: "
        "N train, min(N, 500) val and min(N, 1000) test images per class; a folder: at most N "
        "per class in each split",
    )
    p.add_argument(
        "--augment",
        choices=AUGMENTS,
        default="none",
        help="training augmentation (convlab.augment.FusedTrainPipeline): light = crops of 50-100%% "
        "of the image, mirror, small colour shift; strong = crops of 8-100%%, mirror, colour "
        "shift, AlexNet PCA colour. Any augmentation trains without the feature cache",
    )
    p.add_argument("--epochs", type=_int_at_least(1), default=5)
    p.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=32,
        help="GLOBAL batch: under torchrun each of N processes takes batch-size / N (default: 32)",
    )
    p.add_argument("--lr", type=_positive_float, help="head learning rate (default: the regime's own, see Regime)")
    p.add_argument(
        "--input-size",
        type=_int_at_least(32),
        default=224,
        metavar="PX",
        help="network input side; images are resized to 256/224 of it and centre-cropped (default: 224)",
    )
    p.add_argument("--dropout", type=_probability, help="dropout before the new classifier (default: the backbone's)")
    p.add_argument(
        "--bn-stats",
        choices=BN_STATS,
        default="auto",
        help="BatchNorm in TRAINABLE stages: batch = batch statistics (per process under torchrun); "
        "frozen = running statistics, affine weights still train; sync = SyncBatchNorm over the "
        "global batch (CUDA); auto = sync on CUDA under torchrun, else batch. Frozen stages always "
        "keep their statistics",
    )
    p.add_argument(
        "--no-cache", dest="cache", action="store_false", help="never train on cached activations of the frozen stages"
    )
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: CONVLAB_HOME/features)")
    p.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda}")
    p.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="data split, initialisation, shuffling (default: 0)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (starts afresh if there is none)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's options."""
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="FILE",
        help="a checkpoint written by train (best.pt or last.pt); repeat for an ensemble",
    )
    p.add_argument("--ten-crop", action="store_true", help="average the 10 crops of torchvision's TenCrop")
    p.add_argument(
        "--data",
        type=_data_source,
        metavar="{food,fashion_mnist,PATH}",
        help="default: the data the (first) checkpoint was trained on, with its seed and size",
    )
    p.add_argument("--max-per-class", type=_int_at_least(1), metavar="N", help="default: the checkpoint's")
    p.add_argument("--seed", type=_int_at_least(0), help="data split seed (default: the checkpoint's)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--batch-size", type=_int_at_least(1), default=32)
    p.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda}")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


# ============================================================================================ pre-flight checks
# Everything a user can get wrong about paths is checked here, with the standard library only, before torch is
# imported (seconds) and before any data is decoded or features extracted: a typo costs a fraction of a second,
# not a failed run after an epoch.
def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: really tried (``os.access`` says yes to root on a read-only
    mount), with a temporary file that is gone again when this returns."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".convlab-probe-"):
            return True
    except OSError:
        return False


def check_writable_folder(option: str, path: str | os.PathLike, fix: str) -> Path:
    """``path`` is, or can be made into, a folder this process can write in; else :class:`UsageError` naming
    ``option`` and ending with ``fix`` (what to do). Nothing is created."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: expected a folder, got a file; {fix}")
    probe = _nearest_existing(path)
    if not probe.is_dir():
        raise UsageError(f"{option} {path}: {probe} is a file, so no folder can be made under it; {fix}")
    if not _can_create_in(probe):
        raise UsageError(f"{option} {path}: no permission to write in {probe}; {fix}")
    return path


def check_checkpoint_file(option: str, path: Path, fix: str) -> None:
    """``path`` is a complete ``torch.save`` file. torch.save writes a zip archive with a CRC per member, so a
    truncated or damaged file is found here without torch (and without loading the weights)."""
    if not path.is_file():
        got = "a folder" if path.is_dir() else "nothing"
        raise UsageError(f"{option} {path}: expected a checkpoint file, got {got}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UsageError(f"{option} {path}: not a readable checkpoint (truncated or damaged: {exc}); {fix}") from None
    if bad is not None:
        raise UsageError(f"{option} {path}: not a readable checkpoint (member {bad} is damaged); {fix}")


def uses_cache(args: argparse.Namespace) -> bool:
    """Whether ``train`` will cache frozen activations (mirrors ``Regime.uses_cache``, without importing torch)."""
    every_stage = WEIGHTS[args.backbone].num_stages
    frozen = {"head_only": every_stage, "freeze_first": args.freeze_k or 0}.get(args.regime, 0)
    return args.cache and args.augment == "none" and frozen > 0


def _check_home() -> Path:
    home = convlab_home()
    if home.exists() and not home.is_dir():
        raise UsageError(
            f"CONVLAB_HOME {home}: expected a folder for the asset and feature caches, got a file; "
            "point CONVLAB_HOME at a folder or unset it"
        )
    return home


def check_train_args(args: argparse.Namespace) -> None:
    """Every argument of ``train`` that can be checked before any work: settings, --out, --cache-dir,
    CONVLAB_HOME, and the checkpoint that --resume would continue. Raises :class:`UsageError`."""
    world = os.environ.get("WORLD_SIZE", "1") or "1"
    if world.isdigit() and int(world) > 0 and args.batch_size % int(world):
        raise UsageError(
            f"--batch-size {args.batch_size} is the global batch and must be divisible by the number "
            f"of processes ({world})"
        )
    if args.regime == "freeze_first":
        n = WEIGHTS[args.backbone].num_stages  # the chosen backbone's stages
        if args.freeze_k is None or not 0 <= args.freeze_k <= n:
            raise UsageError(f"--regime freeze_first needs --freeze-k K with K in 0..{n}, got {args.freeze_k}")
    elif args.freeze_k is not None:
        raise UsageError(f"--freeze-k applies to --regime freeze_first only (got --regime {args.regime})")
    out = check_writable_folder("--out", args.out, "choose a folder you can write to")
    last = out / "last.pt"
    if last.exists() and not args.resume:
        raise UsageError(
            f"--out {out} already holds a run (last.pt); pass --resume to continue it or choose another --out"
        )
    if args.resume and last.exists():
        check_checkpoint_file("--resume:", last, f"delete {out} (or choose another --out) to start afresh")
    home = _check_home()
    if args.cache_dir is not None:
        check_writable_folder("--cache-dir", args.cache_dir, "choose a folder you can write to, or pass --no-cache")
    elif uses_cache(args):
        check_writable_folder(
            "CONVLAB_HOME", home / "features", "pass --cache-dir DIR (a folder you can write to) or --no-cache"
        )


def check_evaluate_args(args: argparse.Namespace) -> None:
    """``evaluate``'s paths, before any work: the checkpoints are complete files, --json can be written."""
    for path in args.checkpoint:
        if not Path(path).exists():
            raise UsageError(f"--checkpoint: no such file: {path}")
        check_checkpoint_file("--checkpoint", Path(path), "pass a best.pt or last.pt written by train")
    if args.json is not None:
        target = Path(args.json).expanduser()
        if target.is_dir():
            raise UsageError(f"--json {target}: expected a file name, got a folder")
        probe = _nearest_existing(target.parent)
        if not probe.is_dir():
            raise UsageError(
                f"--json {target}: {probe} is a file, so no report can be written under it; "
                "choose a file in a folder you can write to"
            )
        check_writable_folder("--json", target.parent, "choose a file in a folder you can write to")
    _check_home()


# ============================================================================================ files
def plain(value):
    """JSON-safe: NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_json(path: Path, obj) -> None:
    """``obj`` as indented strict JSON (:func:`plain`), written atomically; the folder is made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(plain(obj), indent=2) + "\n").encode())
