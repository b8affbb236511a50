"""``python -m convlab train``: configuration, resume and files around the one training loop (:func:`engine.fit`).

The options, the files written and the resume contract are described in :mod:`convlab.cli.options`, which checks every
argument before this module (and torch) is imported. Here the configuration becomes a model, data, an optimizer and
a :class:`~convlab.engine.Sharding` (one process, or one rank under ``torchrun``), :func:`convlab.engine.fit`
trains, and an epoch callback writes ``last.pt``, ``best.pt`` and the metrics after every epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from convlab import distributed as D
from convlab.atomicio import LockBusyError, atomic_write_bytes, file_lock
from convlab.augment import FusedTrainPipeline, PCAColor
from convlab.backbones import load_backbone
from convlab.cli.options import (
    CHECKPOINT_FORMAT,
    METRICS_FORMAT,
    RESUME_KEYS,
    UsageError,
    write_json,
)
from convlab.data import Splits, load_fashion_mnist, load_food, load_image_folder
from convlab.device import resolve_device, use_channels_last
from convlab.engine import (
    Callbacks,
    EpochEnd,
    History,
    Resume,
    evaluate,
    fit,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
)
from convlab.featcache import FeatureCache
from convlab.preprocess import Preprocess, crop_resize, resize_center_crop
from convlab.transfer import Regime, freeze, param_groups, param_summary, split_at

__all__ = ["run_train", "load_splits", "eval_preprocess", "build_model"]


# ============================================================================================ files
_CSV_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def _write_metrics(out: Path, metrics: dict) -> None:
    write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in metrics["epochs"]:
        writer.writerow({k: ("" if isinstance(row[k], float) and math.isnan(row[k]) else row[k]) for k in _CSV_FIELDS})
    (out / "metrics.csv").parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())


# ============================================================================================ data and model
def load_splits(source: str, seed: int, max_per_class: int | None, log=None) -> Splits:
    """``Splits`` for ``--data``; data errors (too few classes, empty class, unreadable file, splits whose classes
    differ) become :class:`UsageError`. Warnings (skipped hidden files) go to ``log`` as notes (default: stderr)."""
    if source == "food":
        return load_food(seed=seed, max_per_class=max_per_class)
    if source == "fashion_mnist":
        n = max_per_class
        return load_fashion_mnist(
            train_per_class=n,
            test_per_class=None if n is None else min(n, 1000),
            val_per_class=500 if n is None else min(n, 500),
            seed=seed,
        )
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


def _read_resume_checkpoint(path: Path) -> dict:
    """``last.pt`` for --resume, or :class:`UsageError` saying why it cannot be continued."""
    fix = f"delete {path.parent} (or choose another --out) to start afresh"
    try:
        ckpt = load_checkpoint(path)
    except Exception as exc:  # truncated, damaged or foreign: say which, without a traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(
            f"--resume: {path} is not a readable checkpoint ({type(exc).__name__}: {first}); {fix}"
        ) from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if found != CHECKPOINT_FORMAT or not {"model", "optimizer", "epoch", "history"} <= set(ckpt):
        raise UsageError(f"--resume: {path} was not written by 'python -m convlab train' (format {found!r}); {fix}")
    return ckpt


def _check_resume_data(ckpt: dict, path: Path, splits, fingerprint: dict, log) -> None:
    """The data of a resumed run must be the data the checkpoint trained on: same classes, same images."""
    fix = "train into another --out, or restore the data"
    old = list(ckpt.get("classes", []))
    if old != list(splits.classes):
        raise UsageError(
            f"--resume: the classes of --data changed since {path} was written ({old} -> {list(splits.classes)}); {fix}"
        )
    saved = ckpt.get("data_fingerprint")
    if saved is None:
        log(f"note: --resume: {path} holds no data fingerprint; cannot check that the images are unchanged")
        return
    changed = [name for name in ("train", "val", "test") if saved.get(name) != fingerprint[name]]
    if changed:
        raise UsageError(
            f"--resume: the images of the {'/'.join(changed)} split changed since {path} was "
            f"written (same classes, other files); {fix}"
        )


def eval_preprocess(spec, source: str, size: int) -> Preprocess:
    """The deterministic eval view: resize + centre crop; small centred Fashion-MNIST is resized whole."""
    return Preprocess.from_spec(spec, size=size, crop=source != "fashion_mnist")


class _Augment:
    """uint8 images (a list of any sizes or a batch) -> one square uint8 batch -> :class:`FusedTrainPipeline`.

    The images are first brought to ``resize x resize`` (shorter side to ``resize``, centre crop; or the whole image
    for ``crop=False``) so that the pipeline's per-sample random resized crop can run on one batch tensor, on
    ``device`` (on a GPU the whole augmentation runs there).
    """

    def __init__(self, pipeline: FusedTrainPipeline, resize: int, crop: bool, device: torch.device):
        self.pipeline, self.resize, self.crop, self.device = pipeline, resize, crop, device

    def __call__(self, images):
        items = list(images) if not isinstance(images, torch.Tensor) else [images] if images.ndim == 3 else images
        out = []
        for im in items:
            im = resize_center_crop(im.to(self.device), self.resize, self.resize if self.crop else None)
            out.append(im.expand(3, -1, -1) if im.shape[0] == 1 else im)
        return self.pipeline(torch.stack(out).contiguous())


def _augmentation(preset: str, spec, prep: Preprocess, generator: torch.Generator, device: torch.device) -> _Augment:
    common = {"size": prep.size, "mean": prep.mean, "std": prep.std, "generator": generator}
    if preset == "light":
        pipe = FusedTrainPipeline(scale=(0.5, 1.0), flip_p=0.5, color_shift=0.05, **common)
    else:
        pipe = FusedTrainPipeline(scale=(0.08, 1.0), flip_p=0.5, color_shift=0.1, pca=PCAColor.imagenet(), **common)
    resize = prep.resize or crop_resize(prep.size, spec)
    return _Augment(pipe, resize, prep.resize is not None, device)


def _regime(name: str, k: int | None, lr: float | None) -> Regime:
    """The :class:`Regime` of ``--regime`` (``--freeze-k`` was checked by
    :func:`convlab.cli.options.check_train_args`)."""
    if name == "freeze_first":
        return Regime.freeze_first(k) if lr is None else Regime.freeze_first(k, lr=lr)
    build = {"head_only": Regime.head_only, "finetune": Regime.finetune, "scratch": Regime.scratch}[name]
    return build() if lr is None else build(lr=lr)


def build_model(backbone: str, weights: str | None, classes, dropout: float | None, seed: int) -> nn.Module:
    """The backbone with a fresh ``len(classes)``-way head; every rank builds the same one (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = load_backbone(backbone, weights=weights)
        model.reset_classifier(len(classes), classes, dropout=dropout)
    return model


def _batchnorms(modules) -> list:
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ============================================================================================ train
def _rng_state(device: torch.device, aug_generator: torch.Generator | None) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if aug_generator is not None:
        state["augment"] = aug_generator.get_state()
    return state


def _set_rng_state(state: dict, device: torch.device, aug_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if aug_generator is not None and "augment" in state:
        aug_generator.set_state(state["augment"])


def _history_from_rows(rows: list[dict], monitor: str, best_epoch: int | None) -> History:
    """The engine's :class:`History` of a checkpoint's per-epoch records (the metrics file's rows)."""
    return History(
        train_loss=[r["train_loss"] for r in rows],
        train_acc=[r["train_acc"] for r in rows],
        val_loss=[r["val_loss"] for r in rows],
        val_acc=[r["val_acc"] for r in rows],
        epoch_time=[r["seconds"] for r in rows],
        monitor=monitor,
        best_epoch=best_epoch,
    )


def run_train(args: argparse.Namespace) -> int:
    """The ``train`` subcommand (single process, or one rank under ``torchrun``); ``args`` passed
    :func:`convlab.cli.options.check_train_args` (``python -m convlab`` checks them before importing this module)."""
    env = D.detect()
    if args.batch_size % env.world_size:
        raise UsageError(
            f"--batch-size {args.batch_size} is the global batch and must be divisible by the number "
            f"of processes ({env.world_size})"
        )
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    regime = _regime(args.regime, args.freeze_k, args.lr)
    out = Path(args.out).expanduser()
    with D.process_group(env, device) as device, contextlib.ExitStack() as held:
        return _train(args, env, device, regime, out, held)


#: the lock file that makes one ``train`` run at a time the writer of an --out folder
TRAIN_LOCK = ".convlab-train.lock"


@contextlib.contextmanager
def _out_lock(out: Path, resume: bool):
    """Hold ``out``'s train lock for the whole run, or :class:`UsageError` if another run holds it. Under the lock,
    --out is checked again for a finished or running run's ``last.pt`` (a run may have written it since the
    arguments were checked). A dead run's lock is free: the kernel released it when the process ended."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(out / TRAIN_LOCK, wait=False):
            if not resume and (out / "last.pt").exists():
                raise UsageError(
                    f"--out {out} already holds a run (last.pt); pass --resume to continue it or choose another --out"
                )
            yield
    except LockBusyError as exc:
        raise UsageError(
            f"--out {out}: another 'python -m convlab train' is writing there ({exc.path.name} is locked); wait for "
            "it to end, or choose another --out"
        ) from None


def _logger(main: bool):
    def log(msg: str) -> None:
        if main:
            tqdm.write(msg, file=sys.stderr if msg.startswith("note") else sys.stdout)

    return log


def _resume_checkpoint(args, env, out: Path, splits, data_fingerprint: dict, log) -> dict | None:
    """--resume: rank 0 reads last.pt and sends it to every rank; checked against the data before any work."""
    if not args.resume:
        return None
    main, ckpt = env.is_main, None
    if main:
        # a run killed while writing left a temporary file beside last.pt / best.pt / metrics.json: remove it
        for stale in out.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
            log(f"note: --resume: removed {stale.name}, a half-written file from the interrupted run")
    if main and (out / "last.pt").exists():
        ckpt = _read_resume_checkpoint(out / "last.pt")
    ckpt = D.broadcast_object(ckpt)
    if ckpt is None:
        log(f"note: --resume: {out / 'last.pt'} does not exist yet; starting from the first epoch")
    else:
        _check_resume_data(ckpt, out / "last.pt", splits, data_fingerprint, log)
    return ckpt


def _run_config(args, model: nn.Module, head_lr: float) -> dict:
    """The settings a run is made with (stored in every checkpoint; :data:`RESUME_KEYS` must match on --resume)."""
    keys = ("regime", "freeze_k", "backbone", "data", "max_per_class", "augment", "epochs", "batch_size")
    config = {key: getattr(args, key) for key in keys}
    config.update(lr=head_lr, input_size=args.input_size, seed=args.seed, dropout=model.head[0].p)
    config.update(bn_stats=args.bn_stats, cache=args.cache)
    return config


def _check_resume_config(ckpt: dict, config: dict, out: Path) -> None:
    old = ckpt.get("config", {})
    changed = [
        f"--{key.replace('_', '-')} {old.get(key)!r} -> {config[key]!r}"
        for key in RESUME_KEYS
        if old.get(key) != config[key]
    ]
    if changed:
        raise UsageError(
            f"--resume: {out / 'last.pt'} was made with other settings ({'; '.join(changed)}); "
            "use the same settings, or another --out for a new run"
        )


@dataclass
class _Feed:
    """What the optimizer sees: cached activations of the frozen part, or images through the whole model."""

    train: object
    val: object
    test: object
    net: nn.Module
    train_tf: object
    eval_tf: object
    aug_gen: torch.Generator | None
    cached: bool


def _feed(args, env, regime: Regime, model: nn.Module, splits, prep: Preprocess, device, log) -> _Feed:
    k = regime.frozen
    use_cache = args.cache and regime.uses_cache and args.augment == "none"
    if args.cache and regime.uses_cache and args.augment != "none":
        log("note: augmentation changes every view of an image, so the frozen stages run in every step (no cache)")
    model.to(device)
    if use_cache:
        with D.main_first(env):
            train, val, test = FeatureCache(args.cache_dir).get_splits(
                model, splits, k, prep, device=device, progress=args.progress and env.local_rank == 0
            )
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
    return _Feed(train, val, test, net, train_tf, eval_tf, aug_gen, use_cache)


def _batchnorm_policy(args, env, device, trainable_stages, feed: _Feed, log):
    """BatchNorm in the trainable stages (frozen stages always keep theirs: ``freeze(..., bn="frozen")``).

    Returns ``(bn_stats, hold)``: the policy in force and the ``after_train_mode`` callback that applies it; under
    ``sync`` the feed's network is converted to SyncBatchNorm.
    """
    trainable_bns = _batchnorms(trainable_stages)
    bn_stats = args.bn_stats if trainable_bns else "none"
    if bn_stats == "auto":
        bn_stats = "sync" if env.distributed and device.type == "cuda" and trainable_bns else "batch"
    if bn_stats == "sync" and device.type != "cuda" and env.distributed:
        raise UsageError("--bn-stats sync: PyTorch's SyncBatchNorm runs on CUDA only; use --bn-stats frozen on the CPU")
    if env.distributed and trainable_bns and bn_stats == "batch":
        log(
            f"note: {len(trainable_bns)} trainable BatchNorm layers use per-process batch statistics "
            f"({args.batch_size // env.world_size} images); results depend on the number of processes. "
            "--bn-stats frozen (or sync on CUDA) makes them match a single process"
        )
    if bn_stats == "sync" and env.distributed:
        feed.net = nn.SyncBatchNorm.convert_sync_batchnorm(feed.net)

    def hold_bn_stats() -> None:
        if bn_stats == "frozen":
            for m in trainable_bns:
                m.eval()

    return bn_stats, hold_bn_stats


@dataclass
class _Progress:
    """Where a run stands: the per-epoch rows so far, the first epoch to train, the resumes, the best epoch."""

    rows: list
    start_epoch: int = 0
    resumed_at: list = field(default_factory=list)
    rng: list | None = None
    best_epoch: int | None = None

    @classmethod
    def of(cls, ckpt: dict | None, model: nn.Module, optimizer, out: Path, log) -> _Progress:
        if ckpt is None:
            return cls([])
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = ckpt["epoch"] + 1
        log(f"resuming after epoch {ckpt['epoch']} of {out / 'last.pt'}")
        resumed_at = list(ckpt.get("resumed_at", [])) + [start]
        history = ckpt["history"]
        return cls(list(history["epochs"]), start, resumed_at, ckpt.get("rng"), history["best_epoch"])


def _seed_streams(progress: _Progress, seed: int, env, device, aug_gen, log) -> None:
    """Random streams: per rank, derived from --seed; restored exactly on resume (same world size)."""
    rng = progress.rng
    if rng is not None and len(rng) == env.world_size:
        _set_rng_state(rng[env.rank], device, aug_gen)
        return
    if rng is not None:
        log(
            f"note: the checkpoint was written by {len(rng)} processes, now {env.world_size}: "
            "dropout and augmentation draw new random streams from here on"
        )
    torch.manual_seed(D.rank_seed(seed, env.rank, "torch") + progress.start_epoch)
    if aug_gen is not None:
        aug_gen.manual_seed(D.rank_seed(seed, env.rank, "augment") + progress.start_epoch)


def _epoch_files(args, env, device, model, out, splits, files: dict, progress: _Progress, metrics: dict, log):
    """The ``on_epoch_end`` callback: every rank hands in its RNG state, rank 0 writes last.pt, best.pt, metrics.

    ``files`` holds what every checkpoint carries besides the epoch (config, classes, data fingerprint).
    """
    rows, monitor, head_lr = progress.rows, metrics["monitor"], metrics["config"]["lr"]

    def on_epoch_end(end: EpochEnd) -> None:
        h = end.history
        rows.append(
            {
                "epoch": end.epoch,
                "train_loss": h.train_loss[-1],
                "train_acc": h.train_acc[-1],
                "val_loss": h.val_loss[-1],
                "val_acc": h.val_acc[-1],
                "lr": head_lr,
                "seconds": h.epoch_time[-1],
            }
        )
        history = {"epochs": rows, "monitor": monitor, "best_epoch": h.best_epoch}
        states = D.gather_objects(_rng_state(device, files["aug_gen"]))  # every rank takes part; rank 0 saves them
        if env.is_main:
            extra = {"format": CHECKPOINT_FORMAT, **files["checkpoint"], "epoch": end.epoch, "history": history}
            extra.update(rng=states, resumed_at=progress.resumed_at, world_size=env.world_size)
            if end.improved:
                save_checkpoint(out / "best.pt", model, None, **extra)
            save_checkpoint(out / "last.pt", model, end.optimizer, **extra)
            metrics.update(epochs=rows, best_epoch=h.best_epoch, resumed_at=progress.resumed_at)
            _write_metrics(out, metrics)
        row = rows[-1]
        log(
            f"epoch {end.epoch + 1}/{args.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}, "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} ({row['seconds']:.1f} s)"
        )

    return on_epoch_end


def _test_best(out: Path, model, feed: _Feed, device, per_rank: int, metrics: dict, log) -> None:
    """The best epoch on the test split, by rank 0 alone (small, and no other rank needs the answer)."""
    if not (out / "best.pt").exists():
        raise RuntimeError(f"{out / 'best.pt'} is missing: no epoch had a finite {metrics['monitor']}")
    best_state = load_checkpoint(out / "best.pt")
    model.load_state_dict(best_state["model"])
    if len(feed.test):
        ev = evaluate(feed.net, feed.test, transform=feed.eval_tf, device=device, batch_size=per_rank)
        metrics["test"] = {
            "loss": ev.loss,
            "accuracy": ev.accuracy,
            "num_samples": ev.num_samples,
            "checkpoint": "best.pt",
            "epoch": best_state["epoch"],
        }
        log(f"test (best epoch {best_state['epoch'] + 1}): loss {ev.loss:.4f} accuracy {ev.accuracy:.3f}")


def _metrics(args, env, device, config, splits, feed: _Feed, bn_stats, trainable: int, monitor: str) -> dict:
    """The metrics file's header (its per-epoch rows and the test result are filled in as the run goes)."""
    return {
        "format": METRICS_FORMAT,
        "config": config,
        "classes": list(splits.classes),
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "world_size": env.world_size,
        "per_process_batch": args.batch_size // env.world_size,
        "device": device.type,
        "cached": feed.cached,
        "bn_stats": bn_stats,
        "trainable_params": trainable,
        "monitor": monitor,
        "best_epoch": None,
        "epochs": [],
        "resumed_at": [],
        "test": None,
        "finished": False,
    }


def _train(args, env, device, regime, out: Path, held: contextlib.ExitStack) -> int:
    main, log = env.is_main, _logger(env.is_main)
    splits = load_splits(args.data, args.seed, args.max_per_class, log)
    if len(splits.train) == 0:
        raise UsageError(f"--data {args.data}: the training split is empty")
    data_fingerprint = {name: getattr(splits, name).fingerprint() for name in ("train", "val", "test")}
    if main:  # from here until the run ends, no other train run may write --out (released when `held` closes)
        held.enter_context(_out_lock(out, args.resume))
    ckpt = _resume_checkpoint(args, env, out, splits, data_fingerprint, log)

    model = build_model(args.backbone, regime.weights, splits.classes, args.dropout, args.seed)
    freeze(model, regime.frozen, bn=regime.bn)
    prep = eval_preprocess(model.spec, args.data, args.input_size)
    head_lr = regime.lr if regime.lr is not None else 1e-3
    config = _run_config(args, model, head_lr)
    if ckpt is not None:
        _check_resume_config(ckpt, config, out)

    feed = _feed(args, env, regime, model, splits, prep, device, log)
    bn_stats, hold_bn_stats = _batchnorm_policy(args, env, device, list(model.stages)[regime.frozen :], feed, log)
    channels_last = use_channels_last(None, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer("adamw", param_groups(model, head_lr, regime.backbone_lr_scale), head_lr)
    ddp = feed.net
    if env.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            feed.net, device_ids=[device.index] if device.type == "cuda" else None
        )
    monitor = "val_loss" if len(feed.val) else "train_loss"
    progress = _Progress.of(ckpt, model, optimizer, out, log)  # read and checked above, before any work
    _seed_streams(progress, args.seed, env, device, feed.aug_gen, log)

    sampler = torch.utils.data.DistributedSampler(
        feed.train, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=args.seed, drop_last=False
    )
    per_rank = args.batch_size // env.world_size
    summary = param_summary(model)
    metrics = _metrics(args, env, device, config, splits, feed, bn_stats, summary.trainable, monitor)
    log(
        f"{args.regime} {args.backbone} on {args.data}: {len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test images, {len(splits.classes)} classes; {summary.trainable:,} trainable parameters; "
        f"{env.world_size} process(es) x {per_rank} = batch {args.batch_size}; {device}"
        + (", cached" if feed.cached else "")
    )
    files = {"aug_gen": feed.aug_gen, "checkpoint": {"config": config, "classes": list(splits.classes)}}
    files["checkpoint"]["data_fingerprint"] = data_fingerprint
    on_epoch_end = _epoch_files(args, env, device, model, out, splits, files, progress, metrics, log)
    best_epoch = progress.best_epoch
    if progress.start_epoch < args.epochs:
        # the one training loop; seed=None: the random streams set above (or restored) are used as they are
        best_epoch = fit(
            feed.net,
            feed.train,
            feed.val if len(feed.val) else None,
            epochs=args.epochs,
            batch_size=per_rank,
            optimizer=optimizer,
            transform=feed.train_tf,
            val_transform=feed.eval_tf,
            seed=None,
            device=device,
            channels_last=channels_last,
            progress=args.progress and main,
            resume=Resume(progress.start_epoch, _history_from_rows(progress.rows, monitor, progress.best_epoch)),
            callbacks=Callbacks(on_epoch_end=on_epoch_end, after_train_mode=hold_bn_stats),
            sharding=D.sharding(env, sampler, device, train_module=ddp),
        ).best_epoch
    if main:
        _test_best(out, model, feed, device, per_rank, metrics, log)
        metrics.update(epochs=progress.rows, best_epoch=best_epoch, resumed_at=progress.resumed_at, finished=True)
        _write_metrics(out, metrics)
        log(f"wrote {out / 'metrics.json'}, {out / 'metrics.csv'}, {out / 'best.pt'}, {out / 'last.pt'}")
    D.barrier()
    return 0
