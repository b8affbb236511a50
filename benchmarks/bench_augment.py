"""Augmentation throughput: convlab vs torchvision v2 (per image, PIL and tensor) vs Albumentations.

Everything runs side by side in one process with interleaved repeats; we report medians.

    python benchmarks/bench_augment.py            # full run (~2 min on 2 CPU cores)
    python benchmarks/bench_augment.py --quick    # a few repeats, for a smoke test
    python benchmarks/bench_augment.py --device cuda   # GPU throughput of convlab (writes augment_cuda.json)

Cases
- ``pipeline@224``: random-resized-crop 256->224 + mirror + RGB shift + normalise, batch of 64 uint8
  photos (64, 3, 256, 256) -> float (64, 3, 224, 224). ``pipeline@32``: the same at 32 px (CIFAR-style
  RRC 32->32), batches of 256.
- ``copy``: one pass copying the same batch into a reused float buffer: the physical reference.
- ``pca``: AlexNet PCA colour on (64, 3, 224, 224) uint8: convlab, a per-image numpy version of the
  same formula, and Albumentations ``FancyPCA`` (per-image PCA: other semantics, shown for cost).
- ``widget``: time for one slider move to re-render the preview (encode the PNG), at default size.
- ``all_cores@224`` / ``all_cores@32``: equal resources on every core of the machine. convlab's fused pipeline
  with one torch thread per core, against Albumentations and torchvision v2 each in a ``DataLoader`` with one
  worker per core (what a user would run on all cores), over the same 8 batches, collation and the transfer of
  each batch back to the training process included. Per core (``threads=1``) every contender has one thread in
  one process.

Albumentations is a benchmark-only dependency (``pip install albumentations``); cases skip without it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision.transforms import v2

from convlab.augment import IMAGENET_MEAN, IMAGENET_STD, FusedTrainPipeline, PCAColor
from convlab.augment.pca import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS

try:
    import albumentations as A
    import cv2
except ImportError:  # benchmark-only dependency
    A = None
    cv2 = None

RESULTS = Path(__file__).parent / "results"
SHIFT = 0.1  # RGB shift magnitude, [0, 1] units


def photo_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8 crops of scikit-image's bundled photos at random positions and scales."""
    import skimage.data
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    photos = [torch.from_numpy(np.ascontiguousarray(f())).permute(2, 0, 1)
              for f in (skimage.data.chelsea, skimage.data.coffee, skimage.data.astronaut, skimage.data.rocket)]
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        p = photos[i % len(photos)]
        s = int(torch.randint(min(p.shape[1:]) // 2, min(p.shape[1:]) + 1, (1,), generator=g))
        t = int(torch.randint(0, p.shape[1] - s + 1, (1,), generator=g))
        left = int(torch.randint(0, p.shape[2] - s + 1, (1,), generator=g))
        out[i] = F.interpolate(p[None, :, t:t + s, left:left + s], size=(size, size), mode="bilinear",
                               antialias=True)[0]
    return out


# ----------------------------------------------------------------------------- competitors
def make_cases(x: torch.Tensor, size: int, device: str) -> dict[str, Callable[[], object]]:
    n = x.shape[0]
    cases: dict[str, Callable[[], object]] = {}

    xd = x.to(device)
    out = torch.empty(n, 3, size, size, device=device)
    fused = FusedTrainPipeline(size, color_shift=SHIFT, generator=torch.Generator().manual_seed(0))
    cases["convlab fused (batched)"] = lambda: fused(xd, out=out)
    if device != "cpu":
        def sync(f):
            return lambda: (f(), torch.cuda.synchronize())
        cases = {k: sync(f) for k, f in cases.items()}
        ref = torch.empty(n, 3, size, size, device=device)
        cases["copy into reused buffer (reference)"] = sync(lambda: ref.copy_(xd[:, :, :size, :size]))
        return cases
    for method in ("loop", "matmul"):
        p = FusedTrainPipeline(size, color_shift=SHIFT, method=method, generator=torch.Generator().manual_seed(0))
        cases[f"convlab fused, method={method}"] = (lambda p=p: p(x, out=out))

    def shift_rgb(img: torch.Tensor) -> torch.Tensor:
        return img + torch.empty(3, 1, 1).uniform_(-SHIFT, SHIFT)

    tail = [v2.ToDtype(torch.float32, scale=True), v2.Lambda(shift_rgb), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    tv_tensor = v2.Compose([v2.RandomResizedCrop(size, antialias=False), v2.RandomHorizontalFlip(), *tail])
    cases["torchvision v2 per image (tensor)"] = lambda: torch.stack([tv_tensor(img) for img in x])

    pils = [v2.functional.to_pil_image(img) for img in x]
    tv_pil = v2.Compose([v2.RandomResizedCrop(size, antialias=False), v2.RandomHorizontalFlip(), v2.PILToTensor(),
                         *tail])
    cases["torchvision v2 per image (PIL)"] = lambda: torch.stack([tv_pil(img) for img in pils])

    if A is not None:
        hwc = [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in x]
        s = int(SHIFT * 255)
        alb = A.Compose([A.RandomResizedCrop(size=(size, size)), A.HorizontalFlip(),
                         A.RGBShift(r_shift_limit=s, g_shift_limit=s, b_shift_limit=s, p=1.0),
                         A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
        buf = np.empty((n, size, size, 3), np.float32)

        def albument() -> torch.Tensor:
            for i, img in enumerate(hwc):
                buf[i] = alb(image=img)["image"]
            return torch.from_numpy(buf).permute(0, 3, 1, 2)  # a channels_last view: no extra copy

        cases["Albumentations per image"] = albument

    ref = torch.empty(n, 3, size, size)
    cases["copy into reused buffer (reference)"] = lambda: ref.copy_(x[:, :, :size, :size])
    return cases


def pca_cases(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    cases: dict[str, Callable[[], object]] = {}
    pca = PCAColor.imagenet(generator=torch.Generator().manual_seed(0))
    xf = x.float() / 255
    cases["convlab PCAColor (batched, uint8)"] = lambda: pca(x)
    cases["convlab PCAColor (batched, float)"] = lambda: pca(xf)
    lam, vec = IMAGENET_EIGENVALUES.numpy(), IMAGENET_EIGENVECTORS.numpy()
    hwc = [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in x]
    rng = np.random.default_rng(0)

    def numpy_alexnet() -> list[np.ndarray]:
        res = []
        for img in hwc:
            off = vec @ (rng.normal(0, 0.1, 3) * lam) * 255.0
            res.append(np.clip(img + off.astype(np.float32), 0, 255).astype(np.uint8))
        return res

    cases["numpy per image (same AlexNet formula)"] = numpy_alexnet
    if A is not None:
        fancy = A.FancyPCA(alpha=0.1, p=1.0)
        cases["Albumentations FancyPCA per image (per-image PCA)"] = lambda: [fancy(image=i)["image"] for i in hwc]
    return cases


def widget_case() -> dict[str, Callable[[], object]]:
    try:
        from convlab.widgets import augmentation_preview
    except ImportError:
        return {}
    import skimage.data

    photo = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).contiguous()
    cases = {}
    for name in ("RandomRotation", "RandomElasticWarp", "RandomResizedCrop", "PCAColor"):
        prev = augmentation_preview(photo, name)
        cases[f"widget re-render: {name}"] = prev.update
    return cases


# ----------------------------------------------------------------------------- all cores
class _PerImage(torch.utils.data.Dataset):
    """The benchmark's source images, ``repeat`` times over, through a per-image transform (for a DataLoader)."""

    def __init__(self, images: list, transform: Callable, repeat: int):
        self.images, self.transform, self.repeat = images, transform, repeat

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, i: int):
        return self.transform(self.images[i % len(self.images)])


def all_core_cases(x: torch.Tensor, size: int, batches: int, workers: int) -> dict[str, Callable[[], object]]:
    """One epoch of ``batches`` batches of ``len(x)`` images per case, on ``workers`` cores each."""
    n = x.shape[0]
    cases: dict[str, Callable[[], object]] = {}
    out = torch.empty(n, 3, size, size)
    fused = FusedTrainPipeline(size, color_shift=SHIFT, generator=torch.Generator().manual_seed(0))

    def convlab_epoch() -> None:
        for _ in range(batches):
            fused(x, out=out)

    cases[f"convlab fused, {workers} threads"] = convlab_epoch

    def loader_case(images: list, transform: Callable) -> Callable[[], object]:
        loader = torch.utils.data.DataLoader(_PerImage(images, transform, batches), batch_size=n,
                                             num_workers=workers, persistent_workers=True, prefetch_factor=2)

        def epoch() -> None:
            for _ in loader:
                pass
        return epoch

    def shift_rgb(img: torch.Tensor) -> torch.Tensor:
        return img + torch.empty(3, 1, 1).uniform_(-SHIFT, SHIFT)

    tail = [v2.ToDtype(torch.float32, scale=True), v2.Lambda(shift_rgb), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    tv = v2.Compose([v2.RandomResizedCrop(size, antialias=False), v2.RandomHorizontalFlip(), *tail])
    cases[f"torchvision v2 (tensor), DataLoader {workers} workers"] = loader_case(list(x), tv)
    if A is not None:
        s = int(SHIFT * 255)
        alb = A.Compose([A.RandomResizedCrop(size=(size, size)), A.HorizontalFlip(),
                         A.RGBShift(r_shift_limit=s, g_shift_limit=s, b_shift_limit=s, p=1.0),
                         A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
        hwc = [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in x]
        cases[f"Albumentations, DataLoader {workers} workers"] = loader_case(hwc, _AlbumentationsToTensor(alb))
    return cases


class _AlbumentationsToTensor:
    """Albumentations on an HWC uint8 array -> CHW float tensor (a picklable callable for DataLoader workers)."""

    def __init__(self, compose):
        self.compose = compose

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.compose(image=img)["image"]).permute(2, 0, 1)


# ----------------------------------------------------------------------------- timing
def run(cases: dict[str, Callable[[], object]], repeats: int, items: int) -> dict[str, dict[str, float]]:
    for f in cases.values():  # warm-up (allocator, lazy init)
        f()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved: every case sees the same machine state
        for k, f in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: {"median_ms": 1e3 * statistics.median(v), "items_per_s": items / statistics.median(v)}
            for k, v in times.items()}


def table(title: str, res: dict[str, dict[str, float]], unit: str = "img/s", ref: str | None = None) -> str:
    lines = [f"\n### {title}", "", f"| case | median ms | {unit} |" + (" vs best other |" if ref else ""),
             "|---|---:|---:|" + ("---:|" if ref else "")]
    others = [v["items_per_s"] for k, v in res.items() if not k.startswith(("convlab", "copy"))]
    best = max(others) if others else None
    for k, v in res.items():
        row = f"| {k} | {v['median_ms']:.2f} | {v['items_per_s']:,.0f} |"
        if ref:
            row += f" {v['items_per_s'] / best:.2f}x |" if best else " |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 11")
    ap.add_argument("--threads", default="2,1", help="comma-separated torch thread counts to run (CPU)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    repeats = 3 if args.quick else 11
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [torch.get_num_threads()]
    big, small = photo_batch(64, 256), photo_batch(256, 32, seed=1)
    report = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
              "albumentations": getattr(A, "__version__", None), "repeats": repeats, "results": {}}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    md = [f"## Augmentation benchmark ({args.device}, medians of {repeats} interleaved repeats)"]
    for nt in threads:
        torch.set_num_threads(nt)
        if cv2 is not None:
            cv2.setNumThreads(nt)
        key = f"threads={nt}"
        r = report["results"][key] = {}
        r["pipeline@224"] = run(make_cases(big, 224, args.device), repeats, 64)
        md.append(table(f"pipeline 256->224, batch 64, {key}", r["pipeline@224"], ref="x"))
        r["pipeline@32"] = run(make_cases(small, 32, args.device), repeats, 256)
        md.append(table(f"pipeline 32->32, batch 256, {key}", r["pipeline@32"], ref="x"))
        if args.device == "cpu":
            pca_batch = big[:, :, :224, :224].contiguous()
            r["pca"] = run(pca_cases(pca_batch), repeats, 64)
            md.append(table(f"PCA colour, batch 64 at 224, {key}", r["pca"]))
    if args.device == "cpu":
        import os

        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(cores)
        if cv2 is not None:
            cv2.setNumThreads(1)  # inside each DataLoader worker: one thread per process, one process per core
        batches = 2 if args.quick else 8
        for size, src in (("224", big), ("32", small)):
            key = f"all_cores@{size}"
            res = run(all_core_cases(src, int(size), batches, cores), max(3, repeats // 2), batches * len(src))
            report["results"][key] = {"cores": cores, "batches": batches, "cases": res}
            md.append(table(f"all {cores} cores, {batches} batches of {len(src)} at {size} px", res, ref="x"))
        torch.set_num_threads(threads[0])
        w = run(widget_case(), max(3, repeats // 3), 1)
        report["results"]["widget"] = w
        md.append(table("widget slider move -> re-render", w, unit="renders/s"))
    text = "\n".join(md)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"augment_{args.device}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
