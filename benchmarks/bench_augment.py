"""Augmentation throughput at equal resources: convlab vs torchvision v2 (tensor, PIL) vs Albumentations.

Everything runs side by side in one process with interleaved repeats; we report medians.

    python benchmarks/bench_augment.py            # full run
    python benchmarks/bench_augment.py --quick    # a few repeats, for a smoke test (writes augment_cpu_quick.json)
    python benchmarks/bench_augment.py --device cuda   # GPU throughput of convlab (writes augment_cuda.json)

Two equal-resource settings, each at 224 px and at 32 px:

- ``per_core``: every contender on 1 thread in 1 process (torch, OpenCV), what one ``DataLoader`` worker has.
- ``all_cores``: every core of the machine. convlab's fused pipeline with one torch thread per core, against
  Albumentations and torchvision v2 each in a ``DataLoader`` with one worker per core (what a user would run on all
  cores), over the same batches, collation and the transfer of each batch to the training process included.

Cases: ``pipeline@224``: random-resized-crop 256->224 + mirror + RGB shift + normalise, a batch of 64 uint8 photos
(64, 3, 256, 256) -> float (64, 3, 224, 224); ``pipeline@32``: the same at 32 px (CIFAR-style RRC 32->32), batches
of 256. The photos are stored once, HWC (as PIL and OpenCV decode them): Albumentations reads the HWC arrays,
convlab the same bytes as a (B, 3, H, W) channels_last view (``torch.from_numpy(hwc).permute(2, 0, 1)`` stacked)
and writes a channels_last float batch (what Albumentations returns, and what convolutions on a CPU want);
torchvision gets the (3, H, W) tensors it expects. Also shown, per core: convlab with a CHW source and output,
``copy`` (one pass copying the batch into a reused float buffer, the physical reference) and ``pca``: AlexNet PCA
colour on (64, 3, 224, 224) uint8: convlab, a per-image numpy version of the same formula, and Albumentations
``FancyPCA`` (per-image PCA: other semantics, shown for cost); ``widget``: one slider move re-rendering a preview.

Headline ratios (``ratios`` in the JSON, also printed): convlab's img/s over the fastest other contender's, per
setting and size; ``acceptance`` holds the targets (1.5x at 224 px, 5x at 32 px, in both settings).
Albumentations is a benchmark-only dependency (``pip install albumentations``); its cases skip without it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable

import numpy as np
import torch
from harness import THROUGHPUT, results_path, run_cases, table, write_results
from torchvision.transforms import v2

from convlab.augment import IMAGENET_MEAN, IMAGENET_STD, FusedTrainPipeline, PCAColor
from convlab.augment.pca import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS

try:
    import albumentations as A
    import cv2
except ImportError:  # benchmark-only dependency
    A = None
    cv2 = None

SHIFT = 0.1  # RGB shift magnitude, [0, 1] units


def photo_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8 crops of scikit-image's bundled photos at random positions and scales."""
    import skimage.data
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    photos = [
        torch.from_numpy(np.ascontiguousarray(f())).permute(2, 0, 1)
        for f in (skimage.data.chelsea, skimage.data.coffee, skimage.data.astronaut, skimage.data.rocket)
    ]
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        p = photos[i % len(photos)]
        s = int(torch.randint(min(p.shape[1:]) // 2, min(p.shape[1:]) + 1, (1,), generator=g))
        t = int(torch.randint(0, p.shape[1] - s + 1, (1,), generator=g))
        left = int(torch.randint(0, p.shape[2] - s + 1, (1,), generator=g))
        out[i] = F.interpolate(
            p[None, :, t : t + s, left : left + s], size=(size, size), mode="bilinear", antialias=True
        )[0]
    return out


# ----------------------------------------------------------------------------- competitors
def _hwc(x: torch.Tensor) -> torch.Tensor:
    """The batch stored HWC, as decoded photos are; returned as its (B, 3, H, W) channels_last view."""
    return x.contiguous(memory_format=torch.channels_last)


def _tv_transform(size: int, pil: bool = False) -> v2.Compose:
    def shift_rgb(img: torch.Tensor) -> torch.Tensor:
        return img + torch.empty(3, 1, 1).uniform_(-SHIFT, SHIFT)

    # (PIL always resizes with antialiasing: saying so keeps torchvision from warning that the flag is ignored)
    head = [v2.RandomResizedCrop(size, antialias=pil), v2.RandomHorizontalFlip()] + ([v2.PILToTensor()] if pil else [])
    return v2.Compose(
        head + [v2.ToDtype(torch.float32, scale=True), v2.Lambda(shift_rgb), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def _albumentations(size: int):
    s = int(SHIFT * 255)
    return A.Compose(
        [
            A.RandomResizedCrop(size=(size, size)),
            A.HorizontalFlip(),
            A.RGBShift(r_shift_limit=s, g_shift_limit=s, b_shift_limit=s, p=1.0),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


def make_cases(x: torch.Tensor, size: int, device: str) -> dict[str, Callable[[], object]]:
    """One batch per call: ``x`` is the CHW uint8 batch; each contender reads it in its own storage (see above)."""
    n = x.shape[0]
    cases: dict[str, Callable[[], object]] = {}
    fused = FusedTrainPipeline(size, color_shift=SHIFT, channels_last=True, generator=torch.Generator().manual_seed(0))
    if device != "cpu":
        xd = x.to(device)
        out = torch.empty(n, 3, size, size, device=device)
        ref = torch.empty(n, 3, size, size, device=device)

        return {  # run_cases synchronises the device around each call
            "convlab fused": lambda: fused(xd, out=out),
            "copy into reused buffer (reference)": lambda: ref.copy_(xd[:, :, :size, :size]),
        }
    hwc = _hwc(x)
    out_cl = torch.empty(n, 3, size, size).contiguous(memory_format=torch.channels_last)
    cases["convlab fused"] = lambda: fused(hwc, out=out_cl)
    out = torch.empty(n, 3, size, size)
    chw = FusedTrainPipeline(size, color_shift=SHIFT, generator=torch.Generator().manual_seed(0))
    cases["convlab fused, CHW source and output"] = lambda: chw(x, out=out)

    tv_tensor = _tv_transform(size)
    cases["torchvision v2 per image (tensor)"] = lambda: torch.stack([tv_tensor(img) for img in x])
    pils = [v2.functional.to_pil_image(img) for img in x]
    tv_pil = _tv_transform(size, pil=True)
    cases["torchvision v2 per image (PIL)"] = lambda: torch.stack([tv_pil(img) for img in pils])

    if A is not None:
        arrays = [img.numpy() for img in hwc.permute(0, 2, 3, 1)]  # HWC views of the same bytes, no copy
        alb = _albumentations(size)
        buf = np.empty((n, size, size, 3), np.float32)

        def albument() -> torch.Tensor:
            for i, img in enumerate(arrays):
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
    hwc = _hwc(x)
    out = torch.empty(n, 3, size, size).contiguous(memory_format=torch.channels_last)
    fused = FusedTrainPipeline(size, color_shift=SHIFT, channels_last=True, generator=torch.Generator().manual_seed(0))

    def convlab_epoch() -> None:
        for _ in range(batches):
            fused(hwc, out=out)

    cases[f"convlab fused, {workers} threads"] = convlab_epoch

    def loader_case(images: list, transform: Callable) -> Callable[[], object]:
        loader = torch.utils.data.DataLoader(
            _PerImage(images, transform, batches),
            batch_size=n,
            num_workers=workers,
            persistent_workers=True,
            prefetch_factor=2,
        )

        def epoch() -> None:
            for _ in loader:
                pass

        return epoch

    cases[f"torchvision v2 (tensor), DataLoader {workers} workers"] = loader_case(list(x), _tv_transform(size))
    if A is not None:
        arrays = [img.numpy() for img in hwc.permute(0, 2, 3, 1)]
        cases[f"Albumentations, DataLoader {workers} workers"] = loader_case(
            arrays, _AlbumentationsToTensor(_albumentations(size))
        )
    return cases


class _AlbumentationsToTensor:
    """Albumentations on an HWC uint8 array -> CHW float tensor (a picklable callable for DataLoader workers)."""

    def __init__(self, compose):
        self.compose = compose

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.compose(image=img)["image"]).permute(2, 0, 1)


# ----------------------------------------------------------------------------- comparisons
def _others(res: dict[str, dict[str, float]]) -> dict[str, float]:
    """The contenders other than convlab and the copy reference, by throughput."""
    return {k: v[THROUGHPUT] for k, v in res.items() if not k.startswith(("convlab", "copy"))}


def _vs_best_other(res: dict[str, dict[str, float]]):
    """A :func:`harness.table` column: each case's throughput over the fastest other contender's."""
    best = max(_others(res).values(), default=None)
    return ("vs best other", lambda v: v[THROUGHPUT] / best if best else None)


def headline(res: dict[str, dict[str, float]], convlab: str) -> dict[str, object]:
    """convlab's throughput over the fastest other contender's (not convlab, not the copy reference)."""
    others = _others(res)
    best = max(others, key=others.get)
    return {
        "convlab": convlab,
        f"convlab_{THROUGHPUT}": res[convlab][THROUGHPUT],
        "best_other": best,
        f"best_other_{THROUGHPUT}": others[best],
        "ratio": res[convlab][THROUGHPUT] / others[best],
    }


#: The acceptance targets: convlab's throughput over the fastest other contender's, at 224 and at 32 px.
TARGETS = {"224": 1.5, "32": 5.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="3 repeats and 2 batches per epoch instead of 11 and 8")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    repeats = 3 if args.quick else 11
    big, small = photo_batch(64, 256), photo_batch(256, 32, seed=1)
    sizes = (("224", big), ("32", small))
    cores = len(os.sched_getaffinity(0))
    report = {
        "device": args.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "albumentations": getattr(A, "__version__", None),
        "cores": cores,
        "repeats": repeats,
        "load_average_at_start": list(os.getloadavg()),
        "results": {},
        "ratios": {},
        "acceptance": {},
    }
    md = [
        f"## Augmentation benchmark ({args.device}, medians of {repeats} interleaved repeats, "
        f"load average at start {os.getloadavg()[0]:.2f})"
    ]
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
        r = report["results"]["cuda"] = {}
        for size, src in sizes:
            r[f"pipeline@{size}"] = run_cases(make_cases(src, int(size), "cuda"), repeats, len(src), "cuda")
            md.append(table(f"pipeline at {size} px, batch {len(src)}, cuda", r[f"pipeline@{size}"]))
    else:
        # per core: one thread, one process, for every contender
        torch.set_num_threads(1)
        if cv2 is not None:
            cv2.setNumThreads(1)
        r = report["results"]["per_core"] = {}
        for size, src in sizes:
            key = f"pipeline@{size}"
            r[key] = run_cases(make_cases(src, int(size), "cpu"), repeats, len(src))
            report["ratios"][f"per_core@{size}"] = headline(r[key], "convlab fused")
            title = f"per core (1 thread, 1 process each): {size} px, batch {len(src)}"
            md.append(table(title, r[key], compare=_vs_best_other(r[key])))
        r["pca"] = run_cases(pca_cases(big[:, :, :224, :224].contiguous()), repeats, 64)
        md.append(table("per core: PCA colour, batch 64 at 224", r["pca"]))
        # all cores: convlab's threads against DataLoader workers, one per core
        torch.set_num_threads(cores)
        batches = 2 if args.quick else 8
        for size, src in sizes:
            key = f"all_cores@{size}"
            res = run_cases(all_core_cases(src, int(size), batches, cores), max(3, repeats // 2), batches * len(src))
            report["results"][key] = {"cores": cores, "batches": batches, "cases": res}
            report["ratios"][key] = headline(res, f"convlab fused, {cores} threads")
            title = f"all {cores} cores: {batches} batches of {len(src)} at {size} px"
            md.append(table(title, res, compare=_vs_best_other(res)))
        w = run_cases(widget_case(), max(3, repeats // 3), 1)
        report["results"]["widget"] = w
        md.append(table(f"widget slider move -> re-render ({cores} threads)", w, unit="renders/s"))
        for key, h in report["ratios"].items():
            target = TARGETS[key.split("@")[1]]
            report["acceptance"][key] = {"ratio": h["ratio"], "target": target, "pass": h["ratio"] >= target}
        md.append("\n### equal-resource ratios (convlab img/s / fastest other's)\n")
        for key, h in report["ratios"].items():
            acc = report["acceptance"][key]
            md.append(
                f"- ratios.{key}: {h['ratio']:.2f}x vs {h['best_other']} "
                f"({'PASS' if acc['pass'] else 'FAIL'}, target {acc['target']}x)"
            )
    print("\n".join(md))
    write_results(results_path("augment", args.device, args.quick), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
