"""``python -m convlab train`` and ``python -m convlab evaluate``: the course's experiments without a notebook.

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
import csv
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from convlab.data import Splits

__all__ = [
    "UsageError",
    "REGIMES",
    "AUGMENTS",
    "BN_STATS",
    "add_train_arguments",
    "add_evaluate_arguments",
    "check_train_args",
    "check_evaluate_args",
    "check_writable_folder",
    "check_checkpoint_file",
    "run_train",
    "run_evaluate",
]

REGIMES = ("head_only", "freeze_first", "finetune", "scratch")
AUGMENTS = ("none", "light", "strong")
BN_STATS = ("auto", "batch", "frozen", "sync")
BACKBONE_NAMES = ("mobilenet_v2", "efficientnet_lite0")
CHECKPOINT_FORMAT = "convlab.train/1"
METRICS_FORMAT = "convlab.train.metrics/1"
#: Test hook: after this many optimizer steps in this process, the process kills itself with SIGKILL (no clean-up,
#: no ``finally``), as an out-of-memory killer or a pre-empted machine would. Used by the resume tests.
FAIL_AFTER_STEPS_ENV = "CONVLAB_FAIL_AFTER_STEPS"
#: Settings that must not change when a run is resumed (``--epochs`` may grow; device and progress may differ).
_RESUME_KEYS = ("regime", "freeze_k", "backbone", "data", "max_per_class", "augment", "batch_size", "lr",
                "input_size", "seed", "dropout", "bn_stats", "cache")


class UsageError(Exception):
    """A bad argument found after parsing (e.g. an empty data folder); the CLI prints it and exits with 2."""


# ============================================================================================ arguments
def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return value


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


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's options (see ``python -m convlab train --help``)."""
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics and checkpoints")
    p.add_argument("--regime", choices=REGIMES, default="head_only", help="what trains (default: head_only)")
    p.add_argument("--freeze-k", type=_int_at_least(0), metavar="K",
                   help="with --regime freeze_first: freeze the first K of the 7 stages (0..7)")
    p.add_argument("--backbone", choices=BACKBONE_NAMES, default="mobilenet_v2")
    p.add_argument("--data", type=_data_source, default="food", metavar="{food,fashion_mnist,PATH}",
                   help="a course data set, or a folder PATH/<class>/<image> (default: food)")
    p.add_argument("--max-per-class", type=_int_at_least(1), metavar="N",
                   help="fewer images for quick runs: food: N photos per class before splitting; fashion_mnist: "
                        "N train, min(N, 500) val and min(N, 1000) test images per class; a folder: at most N "
                        "per class in each split")
    p.add_argument("--augment", choices=AUGMENTS, default="none",
                   help="training augmentation (convlab.augment.FusedTrainPipeline): light = crops of 50-100%% "
                        "of the image, mirror, small colour shift; strong = crops of 8-100%%, mirror, colour "
                        "shift, AlexNet PCA colour. Any augmentation trains without the feature cache")
    p.add_argument("--epochs", type=_int_at_least(1), default=5)
    p.add_argument("--batch-size", type=_int_at_least(1), default=32,
                   help="GLOBAL batch: under torchrun each of N processes takes batch-size / N (default: 32)")
    p.add_argument("--lr", type=_positive_float, help="head learning rate (default: the regime's own, see Regime)")
    p.add_argument("--input-size", type=_int_at_least(32), default=224, metavar="PX",
                   help="network input side; images are resized to 256/224 of it and centre-cropped (default: 224)")
    p.add_argument("--dropout", type=_probability, help="dropout before the new classifier (default: the backbone's)")
    p.add_argument("--bn-stats", choices=BN_STATS, default="auto",
                   help="BatchNorm in TRAINABLE stages: batch = batch statistics (per process under torchrun); "
                        "frozen = running statistics, affine weights still train; sync = SyncBatchNorm over the "
                        "global batch (CUDA); auto = sync on CUDA under torchrun, else batch. Frozen stages always "
                        "keep their statistics")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="never train on cached activations of the frozen stages")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: CONVLAB_HOME/features)")
    p.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda}")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="data split, initialisation, shuffling (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (starts afresh if there is none)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """The ``evaluate`` subcommand's options."""
    p.add_argument("--checkpoint", action="append", required=True, metavar="FILE",
                   help="a checkpoint written by train (best.pt or last.pt); repeat for an ensemble")
    p.add_argument("--ten-crop", action="store_true", help="average the 10 crops of torchvision's TenCrop")
    p.add_argument("--data", type=_data_source, metavar="{food,fashion_mnist,PATH}",
                   help="default: the data the (first) checkpoint was trained on, with its seed and size")
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
    import tempfile

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
    import zipfile

    if not path.is_file():
        raise UsageError(f"{option} {path}: expected a checkpoint file, got {'a folder' if path.is_dir() else 'nothing'}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UsageError(f"{option} {path}: not a readable checkpoint (truncated or damaged: {exc}); {fix}") from None
    if bad is not None:
        raise UsageError(f"{option} {path}: not a readable checkpoint (member {bad} is damaged); {fix}")


def _uses_cache(args: argparse.Namespace) -> bool:
    """Whether ``train`` will cache frozen activations (mirrors ``Regime.uses_cache``, without importing torch)."""
    frozen = {"head_only": 7, "freeze_first": args.freeze_k or 0}.get(args.regime, 0)
    return args.cache and args.augment == "none" and frozen > 0


def _check_home() -> Path:
    from convlab.assets import convlab_home

    home = convlab_home()
    if home.exists() and not home.is_dir():
        raise UsageError(f"CONVLAB_HOME {home}: expected a folder for the asset and feature caches, got a file; "
                         "point CONVLAB_HOME at a folder or unset it")
    return home


def check_train_args(args: argparse.Namespace) -> None:
    """Every argument of ``train`` that can be checked before any work: settings, --out, --cache-dir,
    CONVLAB_HOME, and the checkpoint that --resume would continue. Raises :class:`UsageError`."""
    world = os.environ.get("WORLD_SIZE", "1") or "1"
    if world.isdigit() and int(world) > 0 and args.batch_size % int(world):
        raise UsageError(f"--batch-size {args.batch_size} is the global batch and must be divisible by the number "
                         f"of processes ({world})")
    if args.regime == "freeze_first":
        if args.freeze_k is None or not 0 <= args.freeze_k <= 7:
            raise UsageError(f"--regime freeze_first needs --freeze-k K with K in 0..7, got {args.freeze_k}")
    elif args.freeze_k is not None:
        raise UsageError(f"--freeze-k applies to --regime freeze_first only (got --regime {args.regime})")
    out = check_writable_folder("--out", args.out, "choose a folder you can write to")
    last = out / "last.pt"
    if last.exists() and not args.resume:
        raise UsageError(f"--out {out} already holds a run (last.pt); pass --resume to continue it or choose "
                         "another --out")
    if args.resume and last.exists():
        check_checkpoint_file("--resume:", last, f"delete {out} (or choose another --out) to start afresh")
    home = _check_home()
    if args.cache_dir is not None:
        check_writable_folder("--cache-dir", args.cache_dir, "choose a folder you can write to, or pass --no-cache")
    elif _uses_cache(args):
        check_writable_folder("CONVLAB_HOME", home / "features",
                              "pass --cache-dir DIR (a folder you can write to) or --no-cache")


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
            raise UsageError(f"--json {target}: {probe} is a file, so no report can be written under it; "
                             "choose a file in a folder you can write to")
        check_writable_folder("--json", target.parent, "choose a file in a folder you can write to")
    _check_home()


# ============================================================================================ files
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    from convlab.engine import atomic_write

    atomic_write(path, lambda f: f.write(data))


def _plain(value):
    """JSON-safe: NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_CSV_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def _write_metrics(out: Path, metrics: dict) -> None:
    _atomic_write_bytes(out / "metrics.json", (json.dumps(_plain(metrics), indent=2) + "\n").encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in metrics["epochs"]:
        writer.writerow({k: ("" if isinstance(row[k], float) and math.isnan(row[k]) else row[k]) for k in _CSV_FIELDS})
    _atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())


# ============================================================================================ data and model
def load_splits(source: str, seed: int, max_per_class: int | None, log=None) -> Splits:
    """``Splits`` for ``--data``; data errors (too few classes, empty class, unreadable file, splits whose classes
    differ) become :class:`UsageError`. Warnings (skipped hidden files) go to ``log`` as notes (default: stderr)."""
    import warnings

    from convlab.data import load_fashion_mnist, load_food, load_image_folder

    if source == "food":
        return load_food(seed=seed, max_per_class=max_per_class)
    if source == "fashion_mnist":
        n = max_per_class
        return load_fashion_mnist(train_per_class=n, test_per_class=None if n is None else min(n, 1000),
                                  val_per_class=500 if n is None else min(n, 500), seed=seed)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            splits = load_image_folder(source, seed=seed)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--data {source}: {exc}") from None
    for w in caught:
        message = f"note: --data: {w.message}"
        if log is not None:
            log(message)
        else:
            print(message, file=sys.stderr)
    if max_per_class is not None:
        for name in ("train", "val", "test"):
            part = getattr(splits, name)
            if len(part):
                setattr(splits, name, part.per_class(max_per_class, seed=seed))
    return splits


def _read_resume_checkpoint(path: Path, load_checkpoint) -> dict:
    """``last.pt`` for --resume, or :class:`UsageError` saying why it cannot be continued."""
    fix = f"delete {path.parent} (or choose another --out) to start afresh"
    try:
        ckpt = load_checkpoint(path)
    except Exception as exc:  # truncated, damaged or foreign: say which, without a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"--resume: {path} is not a readable checkpoint ({type(exc).__name__}: {first}); {fix}") \
            from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if found != CHECKPOINT_FORMAT or not {"model", "optimizer", "epoch", "history"} <= set(ckpt):
        raise UsageError(f"--resume: {path} was not written by 'python -m convlab train' (format {found!r}); {fix}")
    return ckpt


def _check_resume_data(ckpt: dict, path: Path, splits, fingerprint: dict, log) -> None:
    """The data of a resumed run must be the data the checkpoint trained on: same classes, same images."""
    fix = "train into another --out, or restore the data"
    old = list(ckpt.get("classes", []))
    if old != list(splits.classes):
        raise UsageError(f"--resume: the classes of --data changed since {path} was written ({old} -> "
                         f"{list(splits.classes)}); {fix}")
    saved = ckpt.get("data_fingerprint")
    if saved is None:
        log(f"note: --resume: {path} predates data fingerprints; cannot check that the images are unchanged")
        return
    changed = [name for name in ("train", "val", "test") if saved.get(name) != fingerprint[name]]
    if changed:
        raise UsageError(f"--resume: the images of the {'/'.join(changed)} split changed since {path} was "
                         f"written (same classes, other files); {fix}")


def _preprocess(spec, source: str, size: int):
    """The deterministic eval view: resize + centre crop; small centred Fashion-MNIST is resized whole."""
    from convlab.transfer import Preprocess

    return Preprocess.from_spec(spec, size=size, crop=source != "fashion_mnist")


class _Augment:
    """uint8 images (a list of any sizes or a batch) -> one square uint8 batch -> :class:`FusedTrainPipeline`.

    The images are first brought to ``resize x resize`` (shorter side to ``resize``, centre crop; or the whole image
    for ``crop=False``) so that the pipeline's per-sample random resized crop can run on one batch tensor, on
    ``device`` (on a GPU the whole augmentation runs there).
    """

    def __init__(self, pipeline, resize: int, crop: bool, device):
        self.pipeline, self.resize, self.crop, self.device = pipeline, resize, crop, device

    def __call__(self, images):
        from torchvision.transforms.v2 import functional as F

        import torch

        items = list(images) if not isinstance(images, torch.Tensor) else [images] if images.ndim == 3 else images
        out = []
        for im in items:
            im = im.to(self.device)
            if self.crop:
                im = F.center_crop(F.resize(im, [self.resize], antialias=True), [self.resize, self.resize])
            else:
                im = F.resize(im, [self.resize, self.resize], antialias=True)
            out.append(im.expand(3, -1, -1) if im.shape[0] == 1 else im)
        return self.pipeline(torch.stack(out).contiguous())


def _augmentation(preset: str, spec, prep, generator, device):
    from convlab.augment import FusedTrainPipeline, PCAColor

    common = dict(size=prep.size, mean=prep.mean, std=prep.std, generator=generator)
    if preset == "light":
        pipe = FusedTrainPipeline(scale=(0.5, 1.0), flip_p=0.5, color_shift=0.05, **common)
    else:
        pipe = FusedTrainPipeline(scale=(0.08, 1.0), flip_p=0.5, color_shift=0.1, pca=PCAColor.imagenet(), **common)
    resize = prep.resize or round(prep.size * spec.resize_size / spec.input_size)
    return _Augment(pipe, resize, prep.resize is not None, device)


def _regime(name: str, k: int | None, lr: float | None):
    from convlab.transfer import Regime

    if name == "freeze_first":
        if k is None or not 0 <= k <= 7:
            raise UsageError(f"--regime freeze_first needs --freeze-k K with K in 0..7, got {k}")
        return Regime.freeze_first(k) if lr is None else Regime.freeze_first(k, lr=lr)
    if k is not None:
        raise UsageError(f"--freeze-k applies to --regime freeze_first only (got --regime {name})")
    build = {"head_only": Regime.head_only, "finetune": Regime.finetune, "scratch": Regime.scratch}[name]
    return build() if lr is None else build(lr=lr)


def _build_model(backbone: str, weights, classes, dropout, seed: int):
    """The backbone with a fresh ``len(classes)``-way head; every rank builds the same one (seeded)."""
    import torch

    from convlab.backbones import load_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = load_backbone(backbone, weights=weights)
        model.reset_classifier(len(classes), classes, dropout=dropout)
    return model


def _batchnorms(modules) -> list:
    from torch import nn

    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ============================================================================================ train
@dataclass
class _RunState:
    history: dict
    start_epoch: int
    resumed_at: list
    rng: list | None


def _fresh_history(monitor: str) -> dict:
    return {"epochs": [], "monitor": monitor, "best_epoch": None}


def _rng_state(device, aug_generator) -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if aug_generator is not None:
        state["augment"] = aug_generator.get_state()
    return state


def _set_rng_state(state: dict, device, aug_generator) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if aug_generator is not None and "augment" in state:
        aug_generator.set_state(state["augment"])


def _better(value: float, best: float | None, monitor: str) -> bool:
    if math.isnan(value):
        return False
    return best is None or (value > best if monitor == "val_acc" else value < best)


def run_train(args: argparse.Namespace) -> int:
    """The ``train`` subcommand (single process, or one rank under ``torchrun``)."""
    check_train_args(args)  # before the imports below (torch: seconds) and before any data is read

    from convlab import distributed as D
    from convlab.device import resolve_device

    env = D.detect()
    if args.batch_size % env.world_size:
        raise UsageError(f"--batch-size {args.batch_size} is the global batch and must be divisible by the number "
                         f"of processes ({env.world_size})")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    regime = _regime(args.regime, args.freeze_k, args.lr)
    out = Path(args.out).expanduser()
    with D.process_group(env, device) as device:
        return _train(args, env, device, regime, out)


def _train(args, env, device, regime, out: Path) -> int:
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    from convlab import distributed as D
    from convlab.engine import evaluate, load_checkpoint, make_optimizer, save_checkpoint
    from convlab.featcache import FeatureCache
    from convlab.transfer import freeze, param_groups, param_summary, split_at

    main = env.is_main

    def log(msg: str) -> None:
        if main:
            tqdm.write(msg, file=sys.stderr if msg.startswith("note") else sys.stdout)

    splits = load_splits(args.data, args.seed, args.max_per_class, log)
    if len(splits.train) == 0:
        raise UsageError(f"--data {args.data}: the training split is empty")
    data_fingerprint = {name: getattr(splits, name).fingerprint() for name in ("train", "val", "test")}

    # --- resume: rank 0 reads last.pt and sends it to every rank; checked against the data before any work
    ckpt = None
    if args.resume:
        if main:
            # a run killed while writing left a temporary file beside last.pt / best.pt / metrics.json: remove it
            for stale in out.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
                log(f"note: --resume: removed {stale.name}, a half-written file from the interrupted run")
        if main and (out / "last.pt").exists():
            ckpt = _read_resume_checkpoint(out / "last.pt", load_checkpoint)
        ckpt = D.broadcast_object(ckpt)
        if ckpt is None:
            log(f"note: --resume: {out / 'last.pt'} does not exist yet; starting from the first epoch")
        else:
            _check_resume_data(ckpt, out / "last.pt", splits, data_fingerprint, log)

    model = _build_model(args.backbone, regime.weights, splits.classes, args.dropout, args.seed)
    freeze(model, regime.frozen, bn=regime.bn)
    prep = _preprocess(model.spec, args.data, args.input_size)
    k = regime.frozen
    trainable_stages = list(model.stages)[k:]
    head_lr = regime.lr if regime.lr is not None else 1e-3
    config = {
        "regime": args.regime, "freeze_k": args.freeze_k, "backbone": args.backbone, "data": args.data,
        "max_per_class": args.max_per_class, "augment": args.augment, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": head_lr, "input_size": args.input_size, "seed": args.seed,
        "dropout": model.head[0].p, "bn_stats": args.bn_stats, "cache": args.cache,
    }
    if ckpt is not None:
        old = ckpt.get("config", {})
        changed = [f"--{key.replace('_', '-')} {old.get(key)!r} -> {config[key]!r}" for key in _RESUME_KEYS
                   if old.get(key) != config[key]]
        if changed:
            raise UsageError(f"--resume: {out / 'last.pt'} was made with other settings ({'; '.join(changed)}); "
                             "use the same settings, or another --out for a new run")

    # --- what the optimizer sees: cached activations of the frozen part, or images through the whole model
    use_cache = args.cache and regime.uses_cache and args.augment == "none"
    if args.cache and regime.uses_cache and args.augment != "none":
        log("note: augmentation changes every view of an image, so the frozen stages run in every step (no cache)")
    model.to(device)
    if use_cache:
        with D.main_first(env):
            train, val, test = FeatureCache(args.cache_dir).get_splits(
                model, splits, k, prep, device=device, progress=args.progress and env.local_rank == 0)
        net = split_at(model, k)[1]
        train_tf = eval_tf = None
    else:
        train, val, test, net = splits.train, splits.val, splits.test, model
        eval_tf = prep
    aug_gen = None
    if args.augment != "none":
        aug_gen = torch.Generator().manual_seed(D.rank_seed(args.seed, env.rank, "augment"))
        train_tf = _augmentation(args.augment, model.spec, prep, aug_gen, device)
    elif not use_cache:
        train_tf = prep

    # --- BatchNorm in the trainable stages (frozen stages always keep theirs: freeze(..., bn="frozen"))
    trainable_bns = _batchnorms(trainable_stages)
    bn_stats = args.bn_stats if trainable_bns else "none"
    if bn_stats == "auto":
        bn_stats = "sync" if env.distributed and device.type == "cuda" and trainable_bns else "batch"
    if bn_stats == "sync" and device.type != "cuda" and env.distributed:
        raise UsageError("--bn-stats sync: PyTorch's SyncBatchNorm runs on CUDA only; use --bn-stats frozen on the CPU")
    if env.distributed and trainable_bns and bn_stats == "batch":
        log(f"note: {len(trainable_bns)} trainable BatchNorm layers use per-process batch statistics "
            f"({args.batch_size // env.world_size} images); results depend on the number of processes. "
            "--bn-stats frozen (or sync on CUDA) makes them match a single process")
    if bn_stats == "sync" and env.distributed:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)

    def hold_bn_stats() -> None:
        if bn_stats == "frozen":
            for m in trainable_bns:
                m.eval()

    channels_last = device.type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, head_lr, regime.backbone_lr_scale)
    optimizer = make_optimizer("adamw", groups, head_lr, None, 0.9)
    loss_fn = nn.CrossEntropyLoss()
    if env.distributed:
        ddp = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp = net

    monitor = "val_loss" if len(val) else "train_loss"
    state = _RunState(_fresh_history(monitor), 0, [], None)

    if ckpt is not None:  # read and checked above, before any work
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = _RunState(ckpt["history"], ckpt["epoch"] + 1, list(ckpt.get("resumed_at", [])) + [ckpt["epoch"] + 1],
                          ckpt.get("rng"))
        log(f"resuming after epoch {ckpt['epoch']} of {out / 'last.pt'}")

    # --- random streams: per rank, derived from --seed; restored exactly on resume (same world size)
    if state.rng is not None and len(state.rng) == env.world_size:
        _set_rng_state(state.rng[env.rank], device, aug_gen)
    else:
        if state.rng is not None:
            log(f"note: the checkpoint was written by {len(state.rng)} processes, now {env.world_size}: "
                "dropout and augmentation draw new random streams from here on")
        torch.manual_seed(D.rank_seed(args.seed, env.rank, "torch") + state.start_epoch)
        if aug_gen is not None:
            aug_gen.manual_seed(D.rank_seed(args.seed, env.rank, "augment") + state.start_epoch)

    sampler = torch.utils.data.DistributedSampler(train, num_replicas=env.world_size, rank=env.rank,
                                                  shuffle=True, seed=args.seed, drop_last=False)
    per_rank = args.batch_size // env.world_size
    steps_per_epoch = math.ceil(sampler.num_samples / per_rank)
    fail_after = int(os.environ.get(FAIL_AFTER_STEPS_ENV, "0") or 0)
    steps_done = 0
    summary = param_summary(model)
    metrics = {
        "format": METRICS_FORMAT, "config": config, "classes": list(splits.classes),
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "world_size": env.world_size, "per_process_batch": per_rank, "device": device.type,
        "cached": use_cache, "bn_stats": bn_stats, "trainable_params": summary.trainable,
        "monitor": monitor, "best_epoch": None, "epochs": [], "resumed_at": [], "test": None, "finished": False,
    }
    log(f"{args.regime} {args.backbone} on {args.data}: {len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test images, {len(splits.classes)} classes; {summary.trainable:,} trainable parameters; "
        f"{env.world_size} process(es) x {per_rank} = batch {args.batch_size}; {device}"
        + (", cached" if use_cache else ""))

    history = state.history
    rows = history["epochs"]
    best = None
    for row in rows:
        if _better(row[monitor], best, monitor):
            best = row[monitor]
    epoch_bar = tqdm(range(state.start_epoch, args.epochs), desc="epochs", disable=not (args.progress and main),
                     initial=state.start_epoch, total=args.epochs)
    for epoch in epoch_bar:
        t0 = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False, disable=not (args.progress and main))

        def on_step() -> None:
            nonlocal steps_done
            steps_done += 1
            bar.update(1)
            if fail_after and steps_done >= fail_after:
                os.kill(os.getpid(), signal.SIGKILL)

        loss_sum, correct, seen = D.train_epoch(
            ddp, train, D.epoch_order(sampler, epoch), batch_size=per_rank, optimizer=optimizer, loss_fn=loss_fn,
            device=device, transform=train_tf, channels_last=channels_last, after_train_mode=hold_bn_stats,
            on_step=on_step)
        bar.close()
        if len(val):
            val_loss, val_acc, _ = D.evaluate_shards(net, val, env, batch_size=per_rank, loss_fn=loss_fn, device=device,
                                                     transform=eval_tf, channels_last=channels_last)
        else:
            val_loss = val_acc = float("nan")
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_loss": val_loss,
               "val_acc": val_acc, "lr": head_lr, "seconds": time.perf_counter() - t0}
        rows.append(row)
        improved = _better(row[monitor], best, monitor)
        if improved:
            best, history["best_epoch"] = row[monitor], epoch
        rng = D.gather_objects(_rng_state(device, aug_gen))  # every rank takes part; rank 0 saves them
        if main:
            extra = {"format": CHECKPOINT_FORMAT, "config": config, "classes": list(splits.classes),
                     "data_fingerprint": data_fingerprint, "epoch": epoch,
                     "history": history, "rng": rng, "resumed_at": state.resumed_at, "world_size": env.world_size}
            if improved:
                save_checkpoint(out / "best.pt", model, None, **extra)
            save_checkpoint(out / "last.pt", model, optimizer, **extra)
            metrics.update(epochs=rows, best_epoch=history["best_epoch"], resumed_at=state.resumed_at)
            _write_metrics(out, metrics)
        epoch_bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", val_acc=f"{val_acc:.3f}")
        log(f"epoch {epoch + 1}/{args.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}, "
            f"val loss {val_loss:.4f} acc {val_acc:.3f} ({row['seconds']:.1f} s)")
    epoch_bar.close()

    # --- the best epoch on the test split, by rank 0 alone (small, and no other rank needs the answer)
    if main:
        if not (out / "best.pt").exists():
            raise RuntimeError(f"{out / 'best.pt'} is missing: no epoch had a finite {monitor}")
        best_state = load_checkpoint(out / "best.pt")
        model.load_state_dict(best_state["model"])
        if len(test):
            ev = evaluate(net, test, transform=eval_tf, device=device, batch_size=per_rank)
            metrics["test"] = {"loss": ev.loss, "accuracy": ev.accuracy, "num_samples": ev.num_samples,
                               "checkpoint": "best.pt", "epoch": best_state["epoch"]}
            log(f"test (best epoch {best_state['epoch'] + 1}): loss {ev.loss:.4f} accuracy {ev.accuracy:.3f}")
        metrics.update(epochs=rows, best_epoch=history["best_epoch"], resumed_at=state.resumed_at, finished=True)
        _write_metrics(out, metrics)
        log(f"wrote {out / 'metrics.json'}, {out / 'metrics.csv'}, {out / 'best.pt'}, {out / 'last.pt'}")
    D.barrier()
    return 0


# ============================================================================================ evaluate
def _model_from_checkpoint(path: str, device):
    """A Backbone rebuilt from a train checkpoint (architecture from its config; no pretrained weights needed)."""
    import torch

    from convlab.engine import load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--checkpoint: no such file: {path}")
    try:
        ckpt = load_checkpoint(p)
    except Exception as exc:  # a truncated or foreign file: say which, without a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"--checkpoint {path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if found != CHECKPOINT_FORMAT:
        raise UsageError(f"--checkpoint {path}: not written by 'python -m convlab train' (format {found!r})")
    cfg = ckpt["config"]
    model = _build_model(cfg["backbone"], None, ckpt["classes"], cfg["dropout"], 0)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    if device.type == "cpu":  # faster oneDNN convolutions; predict_views and evaluate follow the weights' format
        model.to(memory_format=torch.channels_last)
    return model, ckpt


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` subcommand: accuracy of each checkpoint and of their ensemble, centre crop or 10-crop."""
    check_evaluate_args(args)

    import torch

    from convlab.device import resolve_device
    from convlab.ensemble import Ensemble
    from convlab.tta import ViewSet, predict_views, prepare_images

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    loaded = [_model_from_checkpoint(p, device) for p in args.checkpoint]
    configs = [ckpt["config"] for _, ckpt in loaded]
    sizes = {c["input_size"] for c in configs}
    if len(sizes) > 1:
        raise UsageError(f"--checkpoint: the models were trained at different input sizes {sorted(sizes)}")
    first = configs[0]
    source = args.data or first["data"]
    seed = first["seed"] if args.seed is None else args.seed
    max_per_class = first["max_per_class"] if args.max_per_class is None and args.data is None else args.max_per_class
    splits = load_splits(source, seed, max_per_class)
    data = getattr(splits, args.split)
    if len(data) == 0:
        raise UsageError(f"--split {args.split}: no images in that split of {source}")
    for (model, _), path in zip(loaded, args.checkpoint):
        if tuple(model.categories) != tuple(splits.classes):
            raise UsageError(f"--checkpoint {path}: its classes {list(model.categories)} differ from the data's "
                             f"{list(splits.classes)} (same classes in the same order are needed)")
    if any((c["data"], c["seed"]) != (source, seed) for c in configs):
        print(f"note: a checkpoint was trained on other data or another split seed than --data {source} --seed "
              f"{seed}; its {args.split} images may include its training images", file=sys.stderr)

    models = [m for m, _ in loaded]
    if len(models) > 1:
        try:
            Ensemble(models)  # checks that every member has the same classes in the same order
        except ValueError as exc:
            raise UsageError(f"--checkpoint: {exc}") from None
    size = first["input_size"]
    prep = _preprocess(models[0].spec, source, size)
    views = None
    if args.ten_crop:
        resize = prep.resize or round(size * models[0].spec.resize_size / models[0].spec.input_size)
        photos = prepare_images([im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in data.images], resize)
        views = ViewSet.ten_crop(size)
    member_probs = []
    with torch.inference_mode():
        for model in models:
            if views is not None:
                probs = predict_views(model, photos, views)  # the measured default chunk for the device
            else:
                fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
                probs = torch.cat([
                    model(prep(list(data.images[i:i + args.batch_size])).to(device, memory_format=fmt)).softmax(1)
                    for i in range(0, len(data), args.batch_size)])
            member_probs.append(probs.float().cpu())
    # The ensemble is convlab.ensemble.Ensemble's equal-weight mean of the members' probabilities (per view, then
    # over views), computed from the member outputs above instead of running every member a second time.
    named = list(zip(args.checkpoint, member_probs))
    if len(models) > 1:
        named.append((f"ensemble of {len(models)}", torch.stack(member_probs).mean(0)))
    labels = data.labels
    results = []
    for name, probs in named:
        results.append({"model": str(name), "views": "10-crop" if views is not None else "centre",
                        "accuracy": float((probs.argmax(1) == labels).float().mean()),
                        "loss": float(-probs.clamp_min(1e-12).log().gather(1, labels[:, None]).mean()),
                        "num_samples": len(data)})
    width = max(len(r["model"]) for r in results)
    print(f"{'model'.ljust(width)}  views    accuracy  loss    ({args.split} split of {source}, {len(data)} images)")
    for r in results:
        print(f"{r['model'].ljust(width)}  {r['views']:<7}  {r['accuracy']:.4f}    {r['loss']:.4f}")
    if args.json:
        _atomic_write_bytes(Path(args.json), (json.dumps(_plain({"split": args.split, "data": source, "seed": seed,
                                                                  "results": results}), indent=2) + "\n").encode())
    return 0
