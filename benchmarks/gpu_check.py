"""A short throughput check for when a GPU machine is lent (a few minutes): images per second for

(a) head only with the feature cache: extracting the pooled features once, then training the head on them;
(b) partial fine-tuning (first 4 stages frozen, frozen BatchNorm there), a training step through the model;
(c) full fine-tuning (every stage trains), fp32 and, on CUDA, bfloat16 autocast;
(d) batched augmentation on the device: ``FusedTrainPipeline`` on uint8 batches already on the GPU;
(e) 10-crop inference: ``predict_views`` with ``ViewSet.ten_crop`` (images per second, 10 crops each).

Synthetic uint8 photos and randomly initialised backbones (``weights=None``): throughput does not depend on the
pixel or weight values, and a lent machine has neither the course's cache nor a network. Every timed block runs
warm-up steps first and synchronises the device before reading the clock.

    python benchmarks/gpu_check.py            # on the GPU machine: benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --quick    # tiny sizes, any device (a smoke test on the CPU)
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout, too

from harness import RESULTS, seconds_per_call, timed, write_results

from convlab.augment import FusedTrainPipeline
from convlab.backbones import load_backbone
from convlab.data import ImageSet
from convlab.device import resolve_device
from convlab.engine import fit
from convlab.featcache import FeatureCache
from convlab.transfer import Preprocess, freeze, param_groups
from convlab.tta import ViewSet, default_chunk_size, predict_views

FULL = {
    "images": 1024,
    "side": 256,
    "size": 224,
    "batch": 128,
    "steps": 20,
    "warmup": 5,
    "head_epochs": 20,
    "tta_images": 256,
}
QUICK = {"images": 16, "side": 72, "size": 64, "batch": 4, "steps": 2, "warmup": 1, "head_epochs": 2, "tta_images": 4}


def _photos(n: int, side: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


def _model(k: int, device: torch.device, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    model = load_backbone("mobilenet_v2", weights=None, num_classes=classes).to(device)
    freeze(model, k)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def bench_head_cached(cfg: dict, device: torch.device) -> dict:
    """(a) extraction of pooled features into a fresh cache, then head-only training epochs on them."""
    photos = _photos(cfg["images"], cfg["side"])
    labels = torch.arange(cfg["images"]) % 10
    data = ImageSet(photos, labels, [f"c{i}" for i in range(10)])
    model = _model(7, device)
    prep = Preprocess(size=cfg["size"], resize=cfg["side"])
    with tempfile.TemporaryDirectory() as root:
        cache = FeatureCache(root, verify="size")
        extract_s, feats = timed(
            lambda: cache.get(model, data, 7, prep, device=device, progress=False, batch_size=cfg["batch"]), device
        )
        head_s, _ = timed(
            lambda: fit(
                model.head, feats, epochs=cfg["head_epochs"], batch_size=cfg["batch"], device=device, progress=False
            ),
            device,
        )
    return {
        "images": len(data),
        "input": cfg["size"],
        "extract_items_per_s": len(data) / extract_s,
        "head_epochs": cfg["head_epochs"],
        "head_train_items_per_s": len(data) * cfg["head_epochs"] / head_s,
        "note": "extraction includes hashing and writing the cache files",
    }


def _train_step_rate(k: int, cfg: dict, device: torch.device, amp: bool) -> float:
    model = _model(k, device)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.1), lr=1e-3)
    fmt = torch.channels_last
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (cfg["batch"],), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return cfg["batch"] / seconds_per_call(step, device, cfg["steps"], cfg["warmup"])


def bench_train(cfg: dict, device: torch.device) -> dict:
    """(b) partial (first 4 stages frozen) and (c) full fine-tuning: training images per second."""
    out = {"batch": cfg["batch"], "input": cfg["size"], "memory_format": "channels_last"}
    for name, k in (("partial_k4", 4), ("full", 0)):
        out[f"{name}_fp32_items_per_s"] = _train_step_rate(k, cfg, device, amp=False)
        if device.type == "cuda":
            out[f"{name}_bf16_autocast_items_per_s"] = _train_step_rate(k, cfg, device, amp=True)
    return out


def bench_augment(cfg: dict, device: torch.device) -> dict:
    """(d) FusedTrainPipeline on uint8 batches that already live on ``device`` (matmul resize on GPUs)."""
    batch = _photos(cfg["batch"] * 2, cfg["side"]).to(device)
    pipe = FusedTrainPipeline(size=cfg["size"], generator=torch.Generator().manual_seed(0))
    out = torch.empty(len(batch), 3, cfg["size"], cfg["size"], device=device)
    rate = len(batch) / seconds_per_call(lambda: pipe(batch, out=out), device, cfg["steps"] * 5, cfg["warmup"])
    return {
        "batch": len(batch),
        "source": cfg["side"],
        "output": cfg["size"],
        "method": pipe._resolve(device),
        "items_per_s": rate,
    }


def bench_ten_crop(cfg: dict, device: torch.device) -> dict:
    """(e) 10-crop inference of whole batches of photos, at the device's default chunk and a sweep of chunk sizes
    (the measurement that should set ``convlab.tta.CUDA_CHUNK_SIZE``)."""
    model = _model(7, device).eval()
    photos = _photos(cfg["tta_images"], cfg["side"]).to(device)
    views = ViewSet.ten_crop(cfg["size"])
    steps = max(1, cfg["steps"] // 5)
    sweep = {}
    for chunk in sorted({4, 16, 64, 256, 1024, default_chunk_size(device)}):
        if chunk <= len(photos) * len(views):
            sec = seconds_per_call(
                lambda c=chunk: predict_views(model, photos, views, chunk_size=c), device, steps, cfg["warmup"]
            )
            sweep[str(chunk)] = len(photos) * len(views) / sec
    default = default_chunk_size(device)
    crops_per_s = sweep[str(default)] if str(default) in sweep else max(sweep.values())
    return {
        "images": len(photos),
        "crops_per_image": len(views),
        "input": cfg["size"],
        "default_chunk": default,
        "items_per_s": crops_per_s / len(views),
        "crops_per_s": crops_per_s,
        "crops_per_s_by_chunk": sweep,
        "fastest_chunk": int(max(sweep, key=sweep.get)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test that runs on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/gpu_check[_quick].json)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.quick:
        print("note: no CUDA device here; running the --quick version", file=sys.stderr)
        args.quick = True
    cfg = QUICK if args.quick else FULL
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    results = {}
    for name, fn in (
        ("head_only_cached", bench_head_cached),
        ("fine_tune", bench_train),
        ("fused_augment", bench_augment),
        ("ten_crop", bench_ten_crop),
    ):
        t = time.perf_counter()
        results[name] = fn(cfg, device)
        results[name]["seconds"] = time.perf_counter() - t
        print(
            f"{name}: "
            + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in results[name].items()),
            flush=True,
        )
    report = {
        "device": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()})"
        ),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "config": cfg,
        "cpu_threads": torch.get_num_threads(),
        "total_seconds": time.perf_counter() - t0,
        "results": results,
        "model": "mobilenet_v2, random init (weights do not change the speed)",
        "tf32": device.type == "cuda",
    }
    out = Path(args.out) if args.out else RESULTS / ("gpu_check_quick.json" if args.quick else "gpu_check.json")
    write_results(out, report)
    print(f"({report['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
