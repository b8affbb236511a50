"""Benchmark the feature cache on the real food photos (``load_food()``, seed 0: 142 train / 47 val images).

(a) head only, E epochs: recomputing the frozen backbone every epoch (train + val) vs extracting the pooled
    features once into a fresh cache and training the head on them. The cache cannot beat E x (it still runs the
    backbone once per image); the overhead is hashing, writing and reading the cache and the head's own training.
(b) partial freezing, first K stages frozen: running them in every step vs caching their output (the boundary
    cache) and training only the later stages + head.
(c) channels_last vs contiguous memory format on this CPU (inference throughput and a training step).
(d) the acceptance run: head only on 5 seeded splits (seeds 0..4, all reported), cold cache, end to end.
(e) extraction time per image by forward batch size (why the cache's CPU default is 8).

Writes ``benchmarks/results/transfer_<device>.json`` and prints a markdown table. ``--quick`` shrinks everything.
Timings are wall-clock on a shared machine: other processes on the same cores inflate them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import results_path, timed, write_results

from convlab.backbones import load_backbone
from convlab.data import load_food
from convlab.device import resolve_device
from convlab.engine import fit
from convlab.featcache import FeatureCache
from convlab.transfer import Preprocess, Regime, freeze, param_summary, run_regime, split_at


def _fresh(backbone: str, classes, k: int, device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_backbone(backbone, num_classes=len(classes), categories=classes, device=device)
    return freeze(model, k)


def bench_cache(splits, backbone, k, epochs, device, batch_size, lr, backbone_lr_scale=1.0, warm=True) -> dict:
    """Train with the first ``k`` stages frozen for ``epochs`` epochs, uncached vs with a cold boundary cache."""
    from convlab.transfer import param_groups

    prep = Preprocess.from_spec(load_backbone(backbone).spec)

    def uncached():
        model = _fresh(backbone, splits.classes, k, device)
        groups = param_groups(model, lr, backbone_lr_scale)
        return fit(
            model,
            splits.train,
            splits.val,
            epochs=epochs,
            lr=lr,
            param_groups=groups,
            batch_size=batch_size,
            transform=prep,
            device=device,
            progress=False,
        )

    def cached(root, epochs=epochs):
        model = _fresh(backbone, splits.classes, k, device)
        groups = param_groups(model, lr, backbone_lr_scale)
        cache = FeatureCache(root)
        t0 = time.perf_counter()
        # Same forward batch size as the uncached run, so that the ratio measures caching alone; (e) shows what
        # the smaller default extraction batch adds on a CPU.
        train = cache.get(model, splits.train, k, prep, batch_size=batch_size, device=device, progress=False)
        val = cache.get(model, splits.val, k, prep, batch_size=batch_size, device=device, progress=False)
        extract = time.perf_counter() - t0
        history = fit(
            split_at(model, k)[1],
            train,
            val,
            epochs=epochs,
            lr=lr,
            param_groups=groups,
            batch_size=batch_size,
            device=device,
            progress=False,
        )
        return extract, history, train

    with tempfile.TemporaryDirectory() as warmup:
        # Untimed: oneDNN builds its kernels per input shape on first use; whichever path ran first would pay.
        cached(warmup, epochs=1)
    with tempfile.TemporaryDirectory() as root:
        t_cached, (t_extract, h_cached, feats) = timed(lambda: cached(root), device)
        t_warm = timed(lambda: cached(root), device)[0] if warm else None  # a rerun: served from disk
        cache_mb = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) / 2**20
    t_uncached, h_uncached = timed(uncached, device)
    model = _fresh(backbone, splits.classes, k, device)
    return {
        "frozen_stages": k,
        "epochs": epochs,
        "images_per_epoch": len(splits.train) + len(splits.val),
        "trainable_params": param_summary(model).trainable,
        "uncached_s": t_uncached,
        "cached_cold_s": t_cached,
        "cached_extract_s": t_extract,
        "cached_warm_s": t_warm,
        "speedup_cold": t_uncached / t_cached,
        "speedup_warm": t_uncached / t_warm if warm else None,
        "cache_shape": list(feats.features.shape[1:]),
        "cache_mb": cache_mb,
        "final_val_acc_uncached": h_uncached.val_acc[-1],
        "final_val_acc_cached": h_cached.val_acc[-1],
    }


def bench_channels_last(backbone, device, batch: int, repeats: int) -> dict:
    """Inference images/s and a training step (head + last stages) in both memory formats, interleaved."""
    model = load_backbone(backbone, num_classes=3, device=device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    times = {"inference": {True: [], False: []}, "train_step": {True: [], False: []}}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for _ in range(repeats + 1):  # the first round warms up oneDNN's kernels and is dropped
        for cl in (False, True):
            fmt = torch.channels_last if cl else torch.contiguous_format
            model.to(memory_format=fmt)
            xx = x.contiguous(memory_format=fmt)
            model.eval()
            with torch.inference_mode():  # called at once: binding this round's tensor changes nothing
                times["inference"][cl].append(timed(lambda xx=xx: model(xx), device)[0])
            model.train()

            def step(xx=xx) -> None:
                loss = torch.nn.functional.cross_entropy(model(xx), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

            times["train_step"][cl].append(timed(step, device)[0])
    out = {"batch": batch}
    for what, d in times.items():
        contiguous, cl = statistics.median(d[False][1:]), statistics.median(d[True][1:])
        out[what] = {"contiguous_s": contiguous, "channels_last_s": cl, "speedup": contiguous / cl}
    return out


def bench_extraction_batch(splits, backbone, device, sizes, rounds: int) -> dict:
    """ms per image of pooled-feature extraction (preprocessing included) by forward batch size, interleaved."""
    from convlab.featcache import extract_features

    model = load_backbone(backbone, device=device)
    images = splits.train.subset(range(min(64, len(splits.train))))
    times = {b: [] for b in sizes}
    extract_features(model, images.subset(range(4)), 7, batch_size=4, device=device)  # warm-up
    for _ in range(rounds):
        for b in sizes:
            t, _ = timed(lambda b=b: extract_features(model, images, 7, batch_size=b, device=device), device)
            times[b].append(t / len(images) * 1000)
    return {"images": len(images), "ms_per_image": {str(b): min(v) for b, v in times.items()}}


def bench_five_splits(backbone, epochs, device, seeds, per_class=None) -> dict:
    """Head only on seeds 0..4 (every seed reported; none is chosen), with a cold cache shared by the splits."""
    accs, times = [], []
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        for seed in seeds:
            t, splits = timed(lambda seed=seed: load_food(seed=seed, max_per_class=per_class), device)
            result = run_regime(
                Regime.head_only(),
                splits,
                backbone,
                epochs=epochs,
                seed=seed,
                device=device,
                cache_dir=root,
                progress=False,
            )
            accs.append(result.row.test_acc)
            times.append({"seed": seed, "load_s": t, "extract_s": result.row.extract_s, "train_s": result.row.train_s})
        total = time.perf_counter() - t0
    return {
        "seeds": list(seeds),
        "test_acc": accs,
        "mean_test_acc": statistics.mean(accs),
        "std_test_acc": statistics.pstdev(accs),
        "epochs": epochs,
        "total_s": total,
        "per_seed": times,
    }


def _fmt(value, spec, suffix=""):
    return "-" if value is None else format(value, spec) + suffix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (a smoke run)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=10, help="head-only epochs for (a) and (d)")
    parser.add_argument("--freeze", type=int, default=4, help="frozen stages K for (b)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    epochs_a = 3 if quick else args.epochs
    epochs_b = 2 if quick else 3
    per_class = 20 if quick else None  # --quick: 60 of the 237 photos

    splits = load_food(seed=0, max_per_class=per_class)
    results = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "device": str(device),
            "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "load_avg_at_start": os.getloadavg(),
        },
        "backbone": args.backbone,
        "quick": quick,
        "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }
    print(f"(c) channels_last on {device} ...", file=sys.stderr)
    results["channels_last"] = bench_channels_last(
        args.backbone, device, batch=8 if quick else 32, repeats=1 if quick else 3
    )
    print(f"(a) head only, {epochs_a} epochs ...", file=sys.stderr)
    results["head_only"] = bench_cache(splits, args.backbone, 7, epochs_a, device, batch_size=16, lr=3e-3)
    print(f"(b) first {args.freeze} stages frozen, {epochs_b} epochs ...", file=sys.stderr)
    results["partial"] = bench_cache(
        splits, args.backbone, args.freeze, epochs_b, device, batch_size=16, lr=1e-3, backbone_lr_scale=0.3, warm=False
    )
    print("(e) extraction batch size ...", file=sys.stderr)
    results["extraction_batch"] = bench_extraction_batch(
        splits, args.backbone, device, (4, 8, 16, 64), 1 if quick else 2
    )
    print("(d) head only on 5 splits ...", file=sys.stderr)
    results["five_splits"] = bench_five_splits(args.backbone, args.epochs, device, range(2 if quick else 5), per_class)
    results["machine"]["load_avg_at_end"] = os.getloadavg()

    out = write_results(args.out or results_path("transfer", device.type, quick), results)

    a, b, c, d = results["head_only"], results["partial"], results["channels_last"], results["five_splits"]
    e = results["extraction_batch"]
    print(
        f"\n{args.backbone} on {device}, {results['data']['train']} train + {results['data']['val']} val food photos, "
        f"load average {results['machine']['load_avg_at_start'][0]:.1f} at start\n"
    )
    print(
        "| what | epochs | uncached s | cached (cold) s | of which extraction s | cached (warm) s | "
        "speed-up cold | speed-up warm |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("(a) head only", a), (f"(b) first {args.freeze} stages frozen", b)):
        print(
            f"| {name} | {r['epochs']} | {r['uncached_s']:.1f} | {r['cached_cold_s']:.1f} | "
            f"{r['cached_extract_s']:.1f} | "
            f"{_fmt(r['cached_warm_s'], '.2f')} | {r['speedup_cold']:.2f}x | {_fmt(r['speedup_warm'], '.1f', 'x')} |"
        )
    print(
        f"\n(c) channels_last speed-up, batch {c['batch']}: inference {c['inference']['speedup']:.2f}x, "
        f"training step {c['train_step']['speedup']:.2f}x"
    )
    print(
        f"(e) extraction ms/image by forward batch size ({e['images']} photos): "
        + ", ".join(f"{b}: {v:.1f}" for b, v in e["ms_per_image"].items())
    )
    print(
        f"(d) head only, {d['epochs']} epochs, seeds {d['seeds']}: test accuracy "
        + ", ".join(f"{x:.3f}" for x in d["test_acc"])
        + f"; mean {d['mean_test_acc']:.3f} (sd {d['std_test_acc']:.3f}); all splits end to end {d['total_s']:.1f} s"
    )
    print(f"\n(written to {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
