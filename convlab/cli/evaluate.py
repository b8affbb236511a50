"""``python -m convlab evaluate``: checkpoints of ``train`` on a split, centre crop or 10-crop, and as an ensemble.

Models are rebuilt from the checkpoints alone (architecture from their config, no pretrained weights needed), on
the split the (first) checkpoint was trained with unless ``--data``/``--seed`` say otherwise; class orders must
match. The options are described in :mod:`convlab.cli.options`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from convlab.cli.options import CHECKPOINT_FORMAT, UsageError, write_json
from convlab.cli.train import build_model, eval_preprocess, load_splits
from convlab.device import resolve_device, use_channels_last
from convlab.engine import Feed, eval_epoch, load_checkpoint
from convlab.ensemble import Ensemble
from convlab.preprocess import crop_resize
from convlab.tta import ViewSet, predict_views, prepare_images

__all__ = ["run_evaluate"]


def _softmax_into(parts: list[torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """An ``on_batch`` for :func:`convlab.engine.eval_epoch` that keeps each batch's class probabilities."""
    return lambda logits, labels: parts.append(logits.softmax(1))


def _model_from_checkpoint(path: str, device):
    """A Backbone rebuilt from a train checkpoint (architecture from its config; no pretrained weights needed)."""
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
    model = build_model(cfg["backbone"], None, ckpt["classes"], cfg["dropout"], 0)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    if use_channels_last(None, device):  # predict_views and the evaluation loop follow the weights' format
        model.to(memory_format=torch.channels_last)
    return model, ckpt


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` subcommand: accuracy of each checkpoint and of their ensemble, centre crop or 10-crop.

    ``args`` passed :func:`convlab.cli.options.check_evaluate_args` (``python -m convlab`` checks them first).
    """
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
            raise UsageError(
                f"--checkpoint {path}: its classes {list(model.categories)} differ from the data's "
                f"{list(splits.classes)} (same classes in the same order are needed)"
            )
    if any((c["data"], c["seed"]) != (source, seed) for c in configs):
        print(
            f"note: a checkpoint was trained on other data or another split seed than --data {source} --seed "
            f"{seed}; its {args.split} images may include its training images",
            file=sys.stderr,
        )

    models = [m for m, _ in loaded]
    ensemble = None
    if len(models) > 1:
        try:
            ensemble = Ensemble(models)  # checks that every member has the same classes in the same order
        except ValueError as exc:
            raise UsageError(f"--checkpoint: {exc}") from None
    size = first["input_size"]
    prep = eval_preprocess(models[0].spec, source, size)
    views = None
    if args.ten_crop:
        resize = prep.resize or crop_resize(size, models[0].spec)
        photos = prepare_images([im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in data.images], resize)
        views = ViewSet.ten_crop(size)
    member_probs = []
    for model in models:
        if views is not None:
            with torch.inference_mode():
                probs = predict_views(model, photos, views)  # the measured default chunk for the device
        else:  # the engine's evaluation loop, keeping each batch's class probabilities
            parts: list[torch.Tensor] = []
            feed = Feed(data, args.batch_size, device, prep, channels_last=use_channels_last(None, device))
            keep = _softmax_into(parts)
            eval_epoch(model, feed, torch.arange(len(data)), loss_fn=nn.CrossEntropyLoss(), on_batch=keep)
            probs = torch.cat(parts)
        member_probs.append(probs.float().cpu())
    # The ensemble's probabilities come from the member outputs above (Ensemble.combine: its weighted mean),
    # instead of running every member a second time.
    named = list(zip(args.checkpoint, member_probs))
    if ensemble is not None:
        named.append((f"ensemble of {len(models)}", ensemble.combine(torch.stack(member_probs))))
    labels = data.labels
    results = []
    for name, probs in named:
        results.append(
            {
                "model": str(name),
                "views": "10-crop" if views is not None else "centre",
                "accuracy": int((probs.argmax(1) == labels).sum()) / len(labels),  # as convlab.engine.evaluate
                "loss": float(-probs.clamp_min(1e-12).log().gather(1, labels[:, None]).mean()),
                "num_samples": len(data),
            }
        )
    width = max(len(r["model"]) for r in results)
    print(f"{'model'.ljust(width)}  views    accuracy  loss    ({args.split} split of {source}, {len(data)} images)")
    for r in results:
        print(f"{r['model'].ljust(width)}  {r['views']:<7}  {r['accuracy']:.4f}    {r['loss']:.4f}")
    if args.json:
        write_json(Path(args.json), {"split": args.split, "data": source, "seed": seed, "results": results})
    return 0
