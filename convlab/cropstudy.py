"""Notebook 09's live experiment: crop-trained members, every test view once, and ensembles vs crops at equal compute.

The members are pretrained backbones (frozen) with a new linear head trained on the features of *random crops*
of the training photos, the way AlexNet, GoogLeNet and ResNet trained, so the ten test crops are views the head
has seen kinds of (a head trained on centre crops only sees corner crops as something new; what 10-crop does to
such members is measured by :mod:`convlab.ensemblestudy`, on a test set that can resolve it).

Because the backbone is frozen, each architecture's features of every view are computed once
(:func:`view_features`, :func:`crop_features`), and any member's logits for any view are one matrix product
(:func:`member_logits`). Timing uses real, whole models (:func:`member_models`, :func:`time_configurations`).
The random training crops are :func:`convlab.augment.random_crop_batch`'s.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from convlab.engine import fit
from convlab.tta import ViewSet, dense_predict, predict_views

__all__ = [
    "center_aspect",
    "prepare_photos",
    "crop_features",
    "view_features",
    "dense_features",
    "train_head",
    "Member",
    "train_members",
    "member_logits",
    "member_models",
    "time_configurations",
    "PUBLISHED",
    "plot_accuracy_cost",
]


def center_aspect(image: Tensor, ratio: float = 4 / 3) -> Tensor:
    """The centre region of a ``(C, H, W)`` image with width / height at most ``ratio`` (a view, no copy)."""
    H, W = image.shape[-2:]
    w = min(W, int(round(H * ratio)))
    left = (W - w) // 2
    return image[..., :, left : left + w]


def prepare_photos(images: Sequence[Tensor], resize: int, ratio: float = 4 / 3) -> Tensor:
    """Centre region of aspect ``ratio``, shorter side -> ``resize``: uint8 ``(B, C, resize, round(resize*ratio))``."""
    from torchvision.transforms.v2 import functional as TF

    out = [TF.resize(center_aspect(im, ratio).contiguous(), [resize], antialias=True) for im in images]
    shapes = {tuple(o.shape) for o in out}
    if len(shapes) != 1:  # photos of other aspects: crop to the smallest common size
        h, w = min(s[1] for s in shapes), min(s[2] for s in shapes)
        out = [TF.center_crop(o, [h, w]) for o in out]
    return torch.stack(out)


class _Pooled(nn.Module):
    """A backbone's pooled features as its "logits", so the tta functions return features."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone, self.spec = backbone, backbone.spec

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)


def _progress(it, total: int, desc: str, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False)


def _batched(fn, x: Tensor, batch: int, desc: str, progress: bool) -> Tensor:
    """``fn`` on ``x`` in chunks of ``batch`` along dim 0 (a progress bar if asked), the results concatenated."""
    starts = range(0, len(x), batch)
    return torch.cat([fn(x[i : i + batch]) for i in _progress(starts, math.ceil(len(x) / batch), desc, progress)])


def view_features(
    backbone: nn.Module,
    photos: Tensor,
    views: ViewSet,
    *,
    batch: int = 8,
    progress: bool = False,
    desc: str = "view features",
) -> Tensor:
    """Pooled features of every view of every photo: uint8 ``(B, C, H, W)`` -> ``(B, V, D)``."""
    pooled = _Pooled(backbone)
    return _batched(lambda p: predict_views(pooled, p, views, average="none"), photos, batch, desc, progress)


def crop_features(
    backbone: nn.Module, crops: Tensor, *, batch: int = 8, progress: bool = False, desc: str = "training-crop features"
) -> Tensor:
    """Pooled features of ready-made crops: uint8 ``(B, R, C, h, w)`` -> ``(B, R, D)``."""
    B, R = crops.shape[:2]
    pooled = _Pooled(backbone)
    views = ViewSet.center(tuple(crops.shape[-2:]))
    flat = _batched(
        lambda c: predict_views(pooled, c, views, average="none")[:, 0], crops.flatten(0, 1), batch, desc, progress
    )
    return flat.view(B, R, -1)


def dense_features(
    backbone: nn.Module,
    photos: Tensor,
    resize: int,
    *,
    batch: int = 8,
    progress: bool = False,
    desc: str = "dense features",
) -> Tensor:
    """Features of the whole photo at shorter side ``resize`` and of its mirror: ``(B, 2, D)``."""
    pooled = _Pooled(backbone)
    return _batched(lambda p: dense_predict(pooled, p, resize, average="none"), photos, batch, desc, progress)


def train_head(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    epochs: int = 30,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Linear:
    """A linear head on fixed features ``(n, D)`` -> ``nn.Linear(D, num_classes)``, trained on the CPU by
    :func:`convlab.engine.fit` (AdamW, cross-entropy, batch order and initialisation drawn with ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(features.shape[1], num_classes)
    fit(
        head,
        TensorDataset(features, labels),
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        device="cpu",
        progress=False,
    )
    return head.eval()


@dataclass
class Member:
    """One ensemble member: a frozen backbone ``arch`` with a head trained at ``seed`` on random-crop features."""

    arch: str
    seed: int
    head: nn.Linear
    train_s: float

    @property
    def name(self) -> str:
        return f"{self.arch} seed {self.seed}"


def train_members(
    plan: Sequence[tuple[str, int]],
    train_feats: Mapping[str, Tensor],
    labels: Tensor,
    num_classes: int,
    *,
    crops_per_member: int | None = None,
    epochs: int = 30,
) -> list[Member]:
    """Train a head per ``(arch, seed)`` of ``plan`` on ``train_feats[arch]`` ``(N, R, D)``.

    Each member uses ``crops_per_member`` of the ``R`` random crops of every photo (chosen with its seed; default
    all), so members of one architecture differ in their crops as well as in their initialisation and order.
    """
    members = []
    for arch, seed in plan:
        feats = train_feats[arch]
        N, R, D = feats.shape
        k = R if crops_per_member is None else min(crops_per_member, R)
        pick = torch.randperm(R, generator=torch.Generator().manual_seed(1000 + seed))[:k]
        t = time.perf_counter()
        head = train_head(
            feats[:, pick].reshape(N * k, D), labels.repeat_interleave(k), num_classes, epochs=epochs, seed=seed
        )
        members.append(Member(arch, seed, head, time.perf_counter() - t))
    return members


@torch.no_grad()
def member_logits(members: Sequence[Member], feats: Mapping[str, Tensor]) -> Tensor:
    """Logits of every member on features ``feats[arch]`` ``(N, V, D)``: ``(M, N, V, K)``."""
    return torch.stack([m.head(feats[m.arch]) for m in members])


def member_models(members: Sequence[Member], backbones: Mapping[str, nn.Module]) -> list[nn.Module]:
    """Whole models (a copy of the backbone with the member's head) for timing: each runs its own forward pass,
    as GoogLeNet's independently trained members did."""
    models = []
    for m in members:
        model = copy.deepcopy(backbones[m.arch])
        model.head = nn.Sequential(copy.deepcopy(m.head))
        models.append(model.eval())
    return models


def time_configurations(
    configs: Mapping[str, Callable[[Tensor], Tensor]], photos: Tensor, *, repeats: int = 5, progress: bool = False
) -> list[dict]:
    """Median wall time per photo of each ``name -> fn(photos)`` over ``repeats`` interleaved runs.

    Each repeat runs every configuration once, in a rotated order, so a burst of load on a shared machine hits
    all of them alike; one warm-up run of each is left out. Rows: ``config``, ``ms_per_image`` (median),
    ``ms_min``, ``ms_max`` (over the repeats), ``repeats``, ``ms_each`` (every repeat, in order: repeat ``r``
    of two configurations ran back to back, see :func:`convlab.verdicts.cost_ratio`).
    """
    names = list(configs)
    for name in names:  # warm-up: first-call costs (allocator, channels_last conversion) stay out
        configs[name](photos[:2])
    times = {n: [] for n in names}
    for r in _progress(range(repeats), repeats, "timing repeats", progress):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            configs[name](photos)
            times[name].append(1000 * (time.perf_counter() - t) / len(photos))
    return [
        {
            "config": n,
            "ms_per_image": statistics.median(times[n]),
            "ms_min": min(times[n]),
            "ms_max": max(times[n]),
            "repeats": repeats,
            "ms_each": times[n],
        }
        for n in names
    ]


#: Published results this notebook's measurements are compared with (ImageNet; error rates in %).
PUBLISHED = (
    {
        "source": "He et al. 2016, ResNet-50 (authors' model README)",
        "setting": "1 crop -> 10 crops",
        "metric": "top-1 error",
        "before": 24.7,
        "after": 22.9,
    },
    {
        "source": "Szegedy et al. 2015, GoogLeNet Table 3",
        "setting": "1 model: 1 crop -> 10 crops",
        "metric": "top-5 error",
        "before": 10.07,
        "after": 9.15,
    },
    {
        "source": "Szegedy et al. 2015, GoogLeNet Table 3",
        "setting": "1 crop: 1 model -> 7 models",
        "metric": "top-5 error",
        "before": 10.07,
        "after": 8.09,
    },
    {
        "source": "Krizhevsky et al. 2012, AlexNet",
        "setting": "1 CNN -> 5 CNNs",
        "metric": "top-5 error",
        "before": 18.2,
        "after": 16.4,
    },
    {
        "source": "Simonyan & Zisserman 2015, VGG sec. 4.3 / Table 5",
        "setting": "dense -> 150 crops (multi-crop slightly better, about 0.2 points top-1; dense + crops best)",
        "metric": "top-1 error",
        "before": None,
        "after": None,
    },
)


def plot_accuracy_cost(rows: Sequence[Mapping], title: str = "accuracy vs measured cost"):
    """Accuracy (mean ± sd over seeds, rows' ``acc_mean``/``acc_sd``) against median ms per photo (``ms_per_image``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        kind = "o" if "model" in r["config"] and "x 1 crop" in r["config"] else ("s" if "dense" in r["config"] else "^")
        ax.errorbar(r["ms_per_image"], 100 * r["acc_mean"], yerr=100 * r["acc_sd"], fmt=kind, capsize=3)
        ax.annotate(
            r["config"], (r["ms_per_image"], 100 * r["acc_mean"]), textcoords="offset points", xytext=(5, 3), fontsize=7
        )
    ax.set_xscale("log")
    ax.set_xlabel("median time per photo (ms, 1 thread)")
    ax.set_ylabel("top-1 accuracy (%), mean ± sd over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
