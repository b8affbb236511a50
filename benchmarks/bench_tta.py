"""Test-time multi-crop and ensembles: convlab vs torchvision's TenCrop, chunk sizes, vmap vs loop.

Everything runs side by side in one process with interleaved repeats; we report medians.

    python benchmarks/bench_tta.py            # full run: batch 32, 3 repeats
    python benchmarks/bench_tta.py --quick    # smoke test: batch 8, 1 repeat, writes results/tta_cpu_quick.json
    python benchmarks/bench_tta.py --device cuda   # writes results/tta_cuda.json

Data: the first 32 training photos of ``load_food()`` (172x307), shorter side resized to 256 as uint8,
so the batch is (32, 3, 256, 456); model: mobilenet_v2 with its real ImageNet weights, eval mode.

Cases
- ``crops``: building the 10 crops of the batch only. convlab ``crop_views`` (tensor slices of the batch) vs
  torchvision ``TenCrop`` on PIL images (one call per image; with and without ``PILToTensor`` + stack) and
  ``v2.TenCrop`` on the batch tensor. Acceptance: convlab >= 3x faster than ``TenCrop`` on PIL, like for like
  (both end with one fresh uint8 tensor); also reported: convlab into a reused buffer, as ``predict_views``
  does, against ``TenCrop``'s PIL crops alone.
  Crop building is memory-bound: on an oversubscribed machine OpenMP stalls inflate torch's multi-threaded
  copies, so compare with ``--threads 1`` as well.
- ``inference``: like for like, 10-crop against ten single-crop evaluations of the same photos at the *same*
  batch per forward pass, for every batch ``b`` in 1, 2, 4, 8, 16, 32, both sides building their crops from the
  uint8 batch and normalising them inside the timing: ``1 centre crop, forwards of b`` (a slice, normalise,
  channels_last, forward; a model already in channels_last) and ``10-crop predict_views, forwards of b``
  (``chunk_size=b``; it converts the model's weights in every call). The best batch of each side is measured, not
  assumed. Acceptance (``acceptance.tencrop_vs_10_single_same_best_batch``): 10-crop time <= 1.05x ten times the
  single crop's, both at the single crop's best batch; ``results.tencrop_vs_10_single_by_batch`` has every batch
  and ``results.tencrop_best_vs_10_single_best`` each side at its own best. Peak memory per case is the peak RSS
  above the start of the case (Linux ``VmHWM`` after reset; CUDA: ``max_memory_allocated``).
- ``dense``: VGG's dense evaluation (``dense_predict``: the whole image and its mirror through the fully
  convolutional net, no crops) on the 4:3 centre of the photos (ImageNet's usual shape) at shorter side
  Q = 224 and 256, forwards of 2, 4, 8 images, against 10-crop at its
  best batch; and how well its predictions agree with 10-crop's (top-1 agreement, mean total-variation distance of
  the probabilities; the single centre crop's shown for scale). Acceptance (``acceptance.dense_vs_tencrop``):
  dense at Q = 224, its best batch, <= 0.3x 10-crop's time.
- ``ensemble``: 3 mobilenet_v2 members, the centre crops of the batch: ``Ensemble`` loop vs vmap.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable

import torch
from harness import results_path, run_cases, table, write_results
from torchvision.transforms import v2

from convlab.backbones import load_backbone
from convlab.data import load_food
from convlab.ensemble import Ensemble
from convlab.tta import ViewSet, crop_views, default_chunk_size, dense_predict, predict_views, prepare_images


def _agreement(probs: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Top-1 agreement and the mean total-variation distance (half the L1 distance) between two (B, K) probabilities."""
    return {
        "top1": float((probs.argmax(-1) == ref.argmax(-1)).float().mean()),
        "tv": float(0.5 * (probs - ref).abs().sum(-1).mean()),
    }


def _vs(ref: str, res: dict[str, dict[str, float]]) -> dict:
    """:func:`harness.table`'s arguments for a time column relative to the case ``ref``."""
    return {"compare": ("time vs ref", lambda v: v["median_ms"] / res[ref]["median_ms"]), "note": f"(ref = {ref})"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="batch 16, 1 repeat, fewer chunk sizes")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    dev = args.device
    batch, repeats = (8, 1) if args.quick else (32, 3)
    chunk = default_chunk_size(dev)

    photos = load_food().train.images[:batch]
    src = prepare_images(photos, 256)
    assert isinstance(src, torch.Tensor), "the training photos share one size"
    pils = [v2.ToPILImage()(im) for im in src]
    model = load_backbone("mobilenet_v2", device=dev)
    mean, std = model.spec.mean, model.spec.std
    ten = ViewSet.ten_crop(224)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    to_tensor = v2.PILToTensor()
    report = {
        "device": dev,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "source_shape": list(src.shape),
        "repeats": repeats,
        "default_chunk_size": chunk,
        "load_average_at_start": list(os.getloadavg()),
        "results": {},
        "acceptance": {},
    }
    if dev == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    md: list[str] = []

    def say(text: str) -> None:  # each table as soon as it is measured (a full run takes minutes)
        md.append(text)
        print(text, flush=True)

    say(
        f"## Multi-crop and ensemble benchmark ({dev}, {torch.get_num_threads()} threads, batch {batch}, "
        f"medians of {repeats} interleaved repeats, load average at start {os.getloadavg()[0]:.2f})"
    )

    # ---- building crops only (CPU: PIL is a CPU library). A fresh (B, 10, 3, 224, 224) uint8 result is 96 MB at
    # B = 64: glibc maps it fresh each call (page faults); predict_views reuses its buffer, hence the out= row.
    crop_buf = torch.empty(batch, len(ten), 3, 224, 224, dtype=torch.uint8)
    crops = {
        "torchvision TenCrop (PIL, per image)": lambda: [v2.TenCrop(224)(p) for p in pils],
        "torchvision TenCrop (PIL) + PILToTensor + stack": lambda: torch.stack(
            [torch.stack([to_tensor(c) for c in v2.TenCrop(224)(p)]) for p in pils]
        ),
        "torchvision v2 TenCrop (batch tensor) + stack": lambda: torch.stack(v2.TenCrop(224)(src), 1),
        "convlab crop_views (batch tensor)": lambda: crop_views(src, ten),
        "convlab crop_views (batch tensor, out= reused buffer)": lambda: crop_views(src, ten, out=crop_buf),
    }
    r = report["results"]["crops"] = run_cases(crops, max(3, repeats), batch, "cpu")
    say(table(f"building the 10 crops of {batch} photos (uint8)", r, **_vs("torchvision TenCrop (PIL, per image)", r)))
    # Acceptance, like for like: both sides end with the crops as one uint8 tensor in a fresh allocation.
    like = (
        r["torchvision TenCrop (PIL) + PILToTensor + stack"]["median_ms"]
        / r["convlab crop_views (batch tensor)"]["median_ms"]
    )
    report["acceptance"]["crops_vs_pil_tencrop"] = {"speedup": like, "target": 3.0, "pass": like >= 3.0}
    # Context, not a target: predict_views's own case (crops into its reused buffer) against TenCrop's PIL crops
    # alone, which are not yet a tensor a model could take.
    report["results"]["crops_reused_buffer_vs_pil_crops_only"] = (
        r["torchvision TenCrop (PIL, per image)"]["median_ms"]
        / r["convlab crop_views (batch tensor, out= reused buffer)"]["median_ms"]
    )

    # ---- inference, like for like: 10-crop against ten single-crop evaluations of the same photos, both sides in
    # forwards of the same batch b (crop building and normalisation included), for every b in the sweep.
    # The single-crop side gets the fastest set-up too: a copy of the model converted to channels_last once (on the
    # CPU), while predict_views converts `model` for every call and pays for it.
    srcd = src.to(dev)
    fmt = torch.channels_last if dev == "cpu" else torch.contiguous_format
    base = load_backbone("mobilenet_v2", device=dev).to(memory_format=fmt)
    sizes = (2, 4, 8) if args.quick else (1, 2, 4, 8, 16, 32)
    H, W = srcd.shape[-2:]
    top, left = int(round((H - 224) / 2.0)), int(round((W - 224) / 2.0))

    def single_crop(b: int) -> None:
        """Centre crops of all photos, built from the uint8 batch and normalised, in forwards of b images."""
        for i in range(0, batch, b):
            base(norm(srcd[i : i + b, :, top : top + 224, left : left + 224]).contiguous(memory_format=fmt))

    with torch.inference_mode():
        inf: dict[str, Callable[[], object]] = {}
        for b in sizes:
            if b <= batch:
                inf[f"1 centre crop, forwards of {b}"] = lambda b=b: single_crop(b)
            inf[f"10-crop predict_views, forwards of {b}"] = lambda b=b: predict_views(model, srcd, ten, chunk_size=b)
        r = report["results"]["inference"] = run_cases(inf, repeats, batch, dev, memory=True)
    ms = {k: v["median_ms"] for k, v in r.items()}
    single = {b: ms[f"1 centre crop, forwards of {b}"] for b in sizes if b <= batch}
    tencrop = {b: ms[f"10-crop predict_views, forwards of {b}"] for b in sizes}
    b1, b10 = min(single, key=single.get), min(tencrop, key=tencrop.get)
    same = {str(b): tencrop[b] / (10 * single[b]) for b in single}
    report["results"]["tencrop_vs_10_single_by_batch"] = same
    report["results"]["best_batch"] = {"single_crop": b1, "tencrop": b10}
    say(
        table(
            f"10-crop vs 1 centre crop, mobilenet_v2, {batch} photos, by forward batch",
            r,
            **_vs(f"1 centre crop, forwards of {b1}", r),
        )
    )
    say(
        "\n10-crop time / (10 x single-crop time) at the same forward batch: "
        + ", ".join(f"b={b}: {v:.2f}x" for b, v in same.items())
    )
    say(f"\nbest forward batch: single crop {b1}, 10-crop {b10} (default_chunk_size: {chunk})")
    ratio = same[str(b1)]
    report["acceptance"]["tencrop_vs_10_single_same_best_batch"] = {
        "ratio": ratio,
        "batch": b1,
        "target": 1.05,
        "pass": ratio <= 1.05,
    }
    report["results"]["tencrop_best_vs_10_single_best"] = tencrop[b10] / (10 * single[b1])

    # ---- dense evaluation (VGG): the whole image and its mirror, no crops. Cost against 10-crop at their best
    # batch sizes, and agreement of the predictions (top-1 and the mean total-variation distance of the
    # probabilities) on the same photos; the single centre crop's agreement is shown for scale.
    # On the 4:3 centre of the photos (ImageNet's usual shape, and notebook 09's): dense evaluation's cost grows with
    # the image's width, 10-crop's does not (two 4:3 images at Q = 224 are 0.27x ten 224 crops' pixels; two 16:9
    # ones 0.36x).
    W43 = round(H * 4 / 3)
    srcd43 = srcd[..., (W - W43) // 2 : (W - W43) // 2 + W43].contiguous()
    scales = (224,) if args.quick else (224, 256)
    dense_sizes = (2, 4) if args.quick else (2, 4, 8)
    with torch.inference_mode():
        den: dict[str, Callable[[], object]] = {}
        for q in scales:
            for c in dense_sizes:
                den[f"dense Q={q} + mirror, forwards of {c}"] = lambda q=q, c=c: dense_predict(
                    model, srcd43, None if q == H else q, chunk_size=c
                )
        den[f"10-crop predict_views, forwards of {b10}"] = lambda: predict_views(model, srcd43, ten, chunk_size=b10)
        rd = report["results"]["dense"] = run_cases(den, repeats, batch, dev, memory=True)
        ref_p = predict_views(model, srcd43, ten, chunk_size=b10)
        centre_p = predict_views(model, srcd43, ViewSet.center(224), chunk_size=b1)
        agree = {"single centre crop": _agreement(centre_p, ref_p)}
        for q in scales:
            agree[f"dense Q={q} + mirror"] = _agreement(dense_predict(model, srcd43, None if q == H else q), ref_p)
    t10 = rd[f"10-crop predict_views, forwards of {b10}"]["median_ms"]
    dense_cost = {}
    for q in scales:
        best = min(dense_sizes, key=lambda c: rd[f"dense Q={q} + mirror, forwards of {c}"]["median_ms"])
        dense_cost[str(q)] = {
            "best_batch": best,
            "ratio": rd[f"dense Q={q} + mirror, forwards of {best}"]["median_ms"] / t10,
        }
    report["results"]["dense_vs_tencrop"] = {"cost": dense_cost, "agreement": agree, "photos": batch, "image": [H, W43]}
    say(
        table(
            f"dense evaluation vs 10-crop, mobilenet_v2, {batch} photos, 4:3 centre ({H}x{W43})",
            rd,
            **_vs(f"10-crop predict_views, forwards of {b10}", rd),
        )
    )
    say("\n| predictions vs 10-crop | top-1 agreement | mean TV distance |\n|---|---:|---:|")
    for k, v in agree.items():
        say(f"| {k} | {v['top1']:.1%} | {v['tv']:.3f} |")
    q0 = str(scales[0])
    report["acceptance"]["dense_vs_tencrop"] = {
        "ratio": dense_cost[q0]["ratio"],
        "scale": scales[0],
        "target": 0.3,
        "pass": dense_cost[q0]["ratio"] <= 0.3,
    }

    # ---- ensemble of 3 mobilenet_v2: loop vs vmap over members
    center = norm(v2.CenterCrop(224)(srcd)).contiguous(memory_format=fmt)
    members = [model] + [load_backbone("mobilenet_v2", device=dev) for _ in range(2)]
    loop, vmap = Ensemble(members, strategy="loop"), Ensemble(members, strategy="vmap")
    auto = Ensemble(members, strategy="auto")
    with torch.inference_mode():
        ens = {"ensemble of 3, loop": lambda: loop(center), "ensemble of 3, vmap": lambda: vmap(center)}
        r = report["results"]["ensemble"] = run_cases(ens, repeats, batch, dev, memory=True)
        auto(center)
    report["results"]["ensemble_auto_decision"] = auto.strategy_[str(center.device)]
    say(table(f"ensemble of 3 mobilenet_v2, centre crops of {batch} photos", r, **_vs("ensemble of 3, loop", r)))
    say(f"\n`strategy='auto'` chose: {auto.strategy_[str(center.device)]}")

    say("\n### acceptance\n")
    for k, v in report["acceptance"].items():
        figures = ", ".join(f"{a}={b:.3g}" for a, b in v.items() if a != "pass")
        say(f"- {k}: {'PASS' if v['pass'] else 'FAIL'} ({figures})")
    write_results(results_path("tta", dev, args.quick), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
