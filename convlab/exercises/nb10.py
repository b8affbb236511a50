"""Notebook 10 (the capstone): the whole pipeline, built by the learner, tested on photos no notebook has shown.

The data are the food photos of :data:`convlab.data.HELD_OUT_GROUPS` (:func:`convlab.data.load_held_out_food`):
six groups that notebooks 00-09 never load. The pipeline is the course's practice in four functions, each an
exercise whose check runs the learner's code on these photos (training and validation splits only: the test
split is the held-out test set, which only the notebook's last section reads):

- ``PLAN``: ``plan_transfer(train_labels, probe, compute) -> (regime, k)``: the regime and k from the data set's
  size (its smallest class) and its similarity to ImageNet (stage-probe accuracies), as notebook 04 decides.
- ``AUGMENT``: ``augment(photos, size, n_views, generator)``: random square crops, mirrored half the time, with a
  colour shift per view; checked on a coordinate-ramp photo (an oracle for where each crop came from, and
  whether it was mirrored) and on the real photos.
- ``FIT_HEAD``: ``fit_head(train_x, train_y, val_x, val_y, num_classes, epochs, seed) -> (head, val_history)``:
  the training loop with model selection: the head of the epoch with the best validation accuracy.
- ``PREDICT``: ``predict(embed, heads, photos, size)``: 10-crop (and an ensemble of heads) at test time, the
  backbone run once per view and shared by the heads.

:func:`run_pipeline` runs a pipeline (the learner's functions, or the references) over seeds and measures its
accuracy on the held-out test set and its cost; :class:`FrozenFeatures` is the frozen backbone front that every
pipeline shares (it counts forward passes).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from convlab.exercises.core import Exercise, Question, Quiz, expect, learner_code
from convlab.exercises.nb04 import REGIMES, SCENARIOS, Scenario, choose_regime_reference

__all__ = [
    "CAPSTONE",
    "CapstoneData",
    "capstone_data",
    "FrozenFeatures",
    "probe_accuracies",
    "plan_transfer_reference",
    "augment_reference",
    "fit_head_reference",
    "predict_reference",
    "centre_augment",
    "centre_predict",
    "PipelineResult",
    "run_pipeline",
    "PLAN",
    "AUGMENT",
    "FIT_HEAD",
    "PREDICT",
    "QUIZ",
]

#: The capstone's fixed settings (its configuration cell uses the same values): photos cut to their 4:3 centre,
#: shorter side ``resize``; crops of side ``crop``. The backbones were published at 224 px; 128 px keeps the notebook
#: near a minute on 2 CPU cores (192 px costs 2.25x as much, and scored a few points higher on the 31 validation
#: photos: within their noise). The photos' margins around a centre crop are even, so the ten views are symmetric
#: to the pixel.
CAPSTONE = {"backbone": "mobilenet_v2", "crop": 128, "resize": 144, "aspect": 4 / 3, "probe_draws": (0, 1, 2)}


# --------------------------------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class CapstoneData:
    """The capstone's photos as uint8 ``(N, 3, 144, 190)`` batches (their 4:3 centre, shorter side ``resize``, the
    width trimmed so that its margin around a centre crop is even) with their labels."""

    classes: tuple[str, ...]
    train_photos: Tensor
    train_labels: Tensor
    val_photos: Tensor
    val_labels: Tensor
    test_photos: Tensor
    test_labels: Tensor

    def clone(self) -> CapstoneData:
        """A copy whose tensors belong to the caller (changing them changes nothing for the next caller)."""
        return CapstoneData(self.classes, *(getattr(self, f).clone() for f in _TENSORS))


_TENSORS = ("train_photos", "train_labels", "val_photos", "val_labels", "test_photos", "test_labels")


def capstone_data() -> CapstoneData:
    """The held-out food photos, prepared once per process (a fresh copy on every call)."""
    return _capstone_data().clone()


@functools.lru_cache(maxsize=1)
def _capstone_data() -> CapstoneData:
    from convlab.cropstudy import prepare_photos
    from convlab.data import load_held_out_food

    splits = load_held_out_food()

    def prep(images: list[Tensor]) -> Tensor:
        photos = prepare_photos(images, CAPSTONE["resize"], CAPSTONE["aspect"])
        extra = (photos.shape[-1] - CAPSTONE["crop"]) % 2  # an odd margin would make 10-crop's centre asymmetric
        return photos[..., : photos.shape[-1] - extra].contiguous()

    return CapstoneData(
        splits.classes,
        prep(list(splits.train.images)),
        splits.train.labels.clone(),
        prep(list(splits.val.images)),
        splits.val.labels.clone(),
        prep(list(splits.test.images)),
        splits.test.labels.clone(),
    )


@functools.lru_cache(maxsize=1)
def _backbone() -> nn.Module:
    from convlab.backbones import load_backbone

    return load_backbone(CAPSTONE["backbone"]).eval()


class FrozenFeatures:
    """The frozen first ``k`` stages of a backbone with global average pooling: uint8 crops -> features.

    ``embed(crops)`` takes uint8 ``(n, 3, h, w)`` crops, normalises them with the backbone's mean and std and
    returns ``(n, D)`` float features (no gradient: the backbone is frozen). ``crops_asked`` counts the crops the
    pipeline asked for (its cost in forward passes); with ``memo=True`` a batch of crops seen before is answered
    from memory (the backbone is frozen, so its features of the same pixels never change), and ``crops_run``
    counts those actually run.
    """

    def __init__(self, backbone: nn.Module, k: int, *, batch: int = 32, memo: bool = False):
        front, _ = backbone.split_at(k)
        if backbone.resolve_k(k) < len(backbone.stages):
            front = nn.Sequential(front, backbone.pool)
        self.front = front.eval()
        self.mean = torch.tensor(backbone.spec.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(backbone.spec.std).view(1, 3, 1, 1)
        self.batch, self.memo = batch, {} if memo else None
        self.crops_asked = self.crops_run = 0

    def __call__(self, crops: Tensor) -> Tensor:
        if not isinstance(crops, Tensor) or crops.dtype != torch.uint8 or crops.ndim != 4 or crops.shape[1] != 3:
            what = f"{crops.dtype} {tuple(crops.shape)}" if isinstance(crops, Tensor) else type(crops).__name__
            raise ValueError(f"crops: expected uint8 (n, 3, h, w) crops, got {what}")
        self.crops_asked += len(crops)
        key = None
        if self.memo is not None:
            key = (tuple(crops.shape), hashlib.sha1(crops.contiguous().numpy().tobytes()).hexdigest())
            if key in self.memo:
                return self.memo[key].clone()
        self.crops_run += len(crops)
        parts = []
        with torch.no_grad():
            for start in range(0, len(crops), self.batch):
                x = (crops[start : start + self.batch].float() / 255 - self.mean) / self.std
                parts.append(self.front(x.contiguous(memory_format=torch.channels_last)).flatten(1))
        out = torch.cat(parts) if parts else torch.empty(0, 0)
        if key is not None:
            self.memo[key] = out.clone()
        return out


def _centre(photos: Tensor, size: int) -> Tensor:
    """The centre ``size`` x ``size`` crop of uint8 ``(N, 3, H, W)`` photos."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(photos, [size, size])


# --------------------------------------------------------------------------------------------- 1. the plan
def probe_accuracies(data: CapstoneData | None = None) -> dict[str, float]:
    """``{stage: mean validation accuracy}`` of a linear probe on each stage's pooled features (notebook 02's
    similarity measure, :mod:`convlab.similarity`): probes trained on the training photos' centre crops (the smallest
    class's count per class, three draws), scored on the validation photos' centre crops. Memoised for the
    capstone's own data; a line per stage as it goes."""
    if data is None:
        return dict(_probe_accuracies())
    return _probe(data)


@functools.lru_cache(maxsize=1)
def _probe_accuracies() -> tuple[tuple[str, float], ...]:
    return tuple(_probe(_capstone_data()).items())


def _probe(data: CapstoneData, progress: bool = True) -> dict[str, float]:
    from convlab.data import ImageSet
    from convlab.preprocess import Preprocess
    from convlab.similarity import fit_linear_probe, stage_features

    model, crop = _backbone(), CAPSTONE["crop"]
    prep = Preprocess.from_spec(model.spec, size=crop, crop=False)
    train = stage_features(model, _centre(data.train_photos, crop), prep)
    val = stage_features(model, _centre(data.val_photos, crop), prep)
    labels = ImageSet(list(data.train_photos), data.train_labels, data.classes)
    per_class = int(torch.bincount(data.train_labels).min())
    draws = [torch.tensor([int(i) for i in labels.per_class(per_class, seed=s).ids]) for s in CAPSTONE["probe_draws"]]
    out = {}
    for stage in train:
        accs = []
        for pick in draws:
            probe = fit_linear_probe(train[stage][pick], data.train_labels[pick], len(data.classes))
            with torch.no_grad():
                accs.append(float((probe(val[stage]).argmax(1) == data.val_labels).double().mean()))
        out[stage] = sum(accs) / len(accs)
        if progress:
            print(f"  probe on {stage}: validation accuracy {out[stage]:.3f} (mean of {len(draws)} draws)", flush=True)
    return out


def plan_transfer_reference(train_labels: Tensor, probe: Mapping[str, float], compute: str) -> tuple[str, int]:
    """``(regime, k)`` from the smallest class's count, the probe (close to ImageNet when the last stage's probe is
    at least as good as every earlier stage's) and the compute (``"cpu"`` or ``"gpu"``): notebook 04's rule, with a
    far data set's head on the stage whose probe is best."""
    per_class = int(torch.bincount(train_labels).min())
    stages = list(probe)
    last = probe[stages[-1]]
    close = all(last >= probe[s] for s in stages[:-1])
    regime, k = choose_regime_reference(Scenario("", per_class, "close" if close else "far", compute))
    if regime == "head" and not close:
        k = _best_k(probe)
    return regime, k


_STAGES = (
    "stem",
    "stage1",
    "stage2",
    "stage3",
    "stage4",
    "stage5",
    "conv_head",
)  # MobileNetV2's, as the probe names them
_CLOSE = dict(zip(_STAGES, (0.35, 0.45, 0.55, 0.62, 0.7, 0.78, 0.84)))
_FAR = dict(zip(_STAGES, (0.4, 0.5, 0.6, 0.68, 0.72, 0.66, 0.6)))


def _plan_cases() -> list[tuple[str, Tensor, dict[str, float], str, tuple[tuple[str, tuple[int, ...]], ...], str]]:
    """(name, train labels, probe, compute, accepted (regime, ks), why) for notebook 04's scenarios, one with
    unequal classes, and the capstone's own data with its measured probe."""
    cases = []
    for answer in SCENARIOS:
        s = answer.scenario
        labels = torch.arange(3).repeat_interleave(s.per_class)
        probe = _CLOSE if s.similarity == "close" else _FAR
        cases.append((s.name, labels, probe, s.compute, answer.accept, answer.why))
    unequal = torch.cat([torch.zeros(3000), torch.ones(20), torch.full((3000,), 2)]).long()
    cases.append(
        (
            "3,000 / 20 / 3,000 photos per class, close, GPU",
            unequal,
            _CLOSE,
            "gpu",
            (("head", (7,)),),
            "the smallest class decides: 20 photos of one class cannot re-learn millions of weights, whatever the "
            "others have (torch.bincount(train_labels).min()); a head on the last stage.",
        )
    )
    data, probe = _capstone_data(), probe_accuracies()
    close = all(probe[list(probe)[-1]] >= v for v in probe.values())
    cases.append(
        (
            "the capstone's photos, on this CPU",
            data.train_labels.clone(),
            probe,
            "cpu",
            (("head", (7,)),) if close else (("head", tuple(sorted({4, 5, 6, _best_k(probe)}))),),
            "about 10 photos in the smallest class is little data: a head only, on the last stage when its probe is "
            "the best (close to ImageNet), else on the earlier stage whose probe is best.",
        )
    )
    return cases


def _best_k(probe: Mapping[str, float]) -> int:
    stages = list(probe)
    return stages.index(max(stages, key=lambda s: probe[s])) + 1


def _test_plan(plan_transfer) -> None:
    wrong = []
    cases = _plan_cases()
    for name, labels, probe, compute, accept, why in cases:
        got = plan_transfer(labels, dict(probe), compute)
        expect(
            isinstance(got, tuple) and len(got) == 2 and got[0] in REGIMES and isinstance(got[1], int),
            f"return a (regime, k) tuple with regime in {REGIMES} and k an int, got {got!r}",
        )
        if not any(got[0] == regime and got[1] in ks for regime, ks in accept):
            wrong.append(f"- {name}: you chose {got}; {why}")
    expect(not wrong, f"{len(wrong)} of {len(cases)} data sets planned differently:\n" + "\n".join(wrong))


PLAN = Exercise(
    name="plan_transfer",
    test=_test_plan,
    reference=plan_transfer_reference,
    hints=[
        "Measure the data set first: its size is the count of its smallest class (a classifier is only as good as "
        "its rarest class), its similarity is whether the last stage's probe beats every earlier one. Then decide "
        "as notebook 04 did: size first, then similarity, then compute.",
        "torch.bincount(train_labels).min() counts the smallest class; list(probe) gives the stages in order, "
        "probe[stage] its accuracy. Little data (<= 30 per class): ('head', 7) when close, else ('head', k) with k "
        "the best probe's stage number; lots of data on a GPU: ('full', 0); otherwise a head or the last stages.",
    ],
    skill="planning the transfer from the data set's measured size and similarity",
    handle="nb10.PLAN",
)


# --------------------------------------------------------------------------------------------- 2. augmentation
def augment_reference(photos: Tensor, size: int, n_views: int, generator: torch.Generator) -> Tensor:
    """``n_views`` random views of each uint8 photo ``(N, 3, H, W)`` -> uint8 ``(N, n_views, 3, size, size)``: a
    square of side uniform in ``[size, min(H, W)]`` at a uniform place, resized to ``size``, mirrored with
    probability 0.5, each channel shifted by a uniform offset in ``[-0.1, 0.1]`` x 255 (rounded, saturated).

    The crop and mirror are notebook 09's :func:`convlab.augment.random_crop_batch`, one view at a time so that
    each view's colour shift is drawn right after its crop."""
    from convlab.augment import random_crop_batch

    N, C = photos.shape[:2]
    out = torch.empty(N, n_views, C, size, size, dtype=torch.uint8)
    for b in range(N):
        for r in range(n_views):
            x = random_crop_batch(photos[b : b + 1], size, 1, generator)[0, 0]
            shift = torch.empty(3, 1, 1).uniform_(-0.1, 0.1, generator=generator) * 255
            out[b, r] = (x.float() + shift).round().clamp(0, 255).to(torch.uint8)
    return out


def _ramp(h: int = 96, w: int = 128) -> Tensor:
    """A coordinate photo: red rises left to right (40..215), green top to bottom, blue a constant 128."""
    x = torch.linspace(40, 215, w).view(1, w).expand(h, w)
    y = torch.linspace(40, 215, h).view(h, 1).expand(h, w)
    return torch.stack([x, y, torch.full((h, w), 128.0)]).round().to(torch.uint8)


def _test_augment(augment) -> None:
    size, n_views = 48, 64
    ramps = torch.stack([_ramp(), _ramp()])
    out = augment(ramps.clone(), size, n_views, torch.Generator().manual_seed(0))
    expect(
        isinstance(out, Tensor) and out.dtype == torch.uint8 and tuple(out.shape) == (2, n_views, 3, size, size),
        f"return uint8 views of shape (N, n_views, 3, size, size) = (2, {n_views}, 3, {size}, {size}), got "
        + (f"{out.dtype} {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__),
    )
    again = augment(ramps.clone(), size, n_views, torch.Generator().manual_seed(0))
    expect(
        isinstance(again, Tensor) and torch.equal(out, again),
        "two calls with generators seeded alike gave different views: draw every random number with the "
        "`generator` argument (torch.randint(..., generator=generator), torch.rand(..., generator=generator))",
    )
    views = out.flatten(0, 1).float()  # (2 * n_views, 3, size, size)
    red = views[:, 0].mean(1)  # (V, size): red along x, averaged over rows
    slope = red[:, -1] - red[:, 0]
    mirrored = float((slope < 0).float().mean())
    expect(
        0.3 <= mirrored <= 0.7,
        f"{mirrored:.0%} of the views are mirrored (red falls from left to right on this ramp photo); mirror each "
        "view with probability 0.5, independently",
    )
    green = views[:, 1].mean(2)
    expect(
        bool((green[:, -1] > green[:, 0]).all()),
        "some views are upside down or rotated (green must still rise from top to bottom): food photos are taken "
        "upright, so mirror left-right only",
    )
    width = slope.abs() * 127 / 175 + 1  # how many of the photo's 128 columns the view spans (red: 175 levels)
    expect(
        float(width.min()) >= 0.8 * size and float(width.max()) <= 1.05 * 96,
        f"a view spans {width.min():.0f} to {width.max():.0f} pixels of the 128-wide photo; crop squares of side "
        f"from `size` ({size}) to the photo's height (96), then resize them to `size`",
    )
    expect(
        float(width.std()) > 4,
        "every view covers the same width of the photo: draw the square's side at random for each view",
    )
    lefts = views[:, 0, :, 0].mean(1)
    expect(float(lefts.std()) > 4, "every view starts at the same place: draw each crop's position at random")
    blue = views[:, 2].mean((1, 2)) - 128
    expect(
        float(blue.std()) > 4 and float(blue.abs().max()) <= 0.12 * 255,
        f"the blue channel (a constant 128 in the photo) moved by {blue.abs().max():.0f} levels at most, with sd "
        f"{blue.std():.1f}: shift each view's channels by a random offset of up to 0.1 x 255, one per view and channel",
    )
    data = _capstone_data()
    photos = data.train_photos[:6].clone()
    real = augment(photos, CAPSTONE["crop"], 2, torch.Generator().manual_seed(1))
    expect(
        isinstance(real, Tensor) and tuple(real.shape) == (6, 2, 3, CAPSTONE["crop"], CAPSTONE["crop"]),
        f"on six food photos: expected (6, 2, 3, {CAPSTONE['crop']}, {CAPSTONE['crop']}), got "
        + (f"{tuple(real.shape)}" if isinstance(real, Tensor) else type(real).__name__),
    )
    drift = (real.float().mean((1, 3, 4)) - photos.float().mean((2, 3))).abs().max()
    expect(
        float(drift) < 60,
        f"a photo's mean colour moved by {drift:.0f} levels in its views: augmentation must keep the photo "
        "recognisable (the label stays true)",
    )


AUGMENT = Exercise(
    name="augment",
    test=_test_augment,
    reference=augment_reference,
    hints=[
        "Per photo and view: draw a square (its side between `size` and the photo's shorter side, its corner "
        "anywhere it fits), cut it out, resize it to size x size, mirror it with probability 0.5, and add a random "
        "offset to each colour channel. Every draw uses `generator`.",
        "The API: torch.randint(low, high, (1,), generator=generator) for the side and the corner; "
        "torchvision.transforms.v2.functional.resize(x, [size, size], antialias=True); x.flip(-1) mirrors; "
        "torch.empty(3, 1, 1).uniform_(-0.1, 0.1, generator=generator) * 255 per channel, then round, clamp(0, 255) "
        "and .to(torch.uint8). Stack into (N, n_views, 3, size, size).",
    ],
    skill="an augmentation pipeline: random crops, mirroring and colour shifts, reproducible from one generator",
    handle="nb10.AUGMENT",
    forbidden=(),
)


# --------------------------------------------------------------------------------------------- 3. training loop
def fit_head_reference(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    num_classes: int,
    epochs: int = 30,
    seed: int = 0,
) -> tuple[nn.Linear, list[float]]:
    """A linear head on features ``(n, D)`` (AdamW, cross-entropy, mini-batches of 32 in a seeded order), scored on
    the validation features after every epoch; returns the head of the best epoch (the first, on ties) and the
    validation accuracy of every epoch."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(train_x.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-3)
    history, best, best_state = [], -1.0, None
    for _ in range(epochs):
        head.train()
        order = torch.randperm(len(train_y), generator=gen)
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            loss = nn.functional.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            acc = float((head(val_x).argmax(1) == val_y).double().mean())
        history.append(acc)
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head.eval(), history


@functools.lru_cache(maxsize=1)
def _check_features() -> dict[str, Tensor]:
    """Features for the checks (reference views of the training photos; centre crops of training and validation
    photos): the test photos are never read."""
    data, crop = _capstone_data(), CAPSTONE["crop"]
    embed = FrozenFeatures(_backbone(), 7)
    views = augment_reference(data.train_photos, crop, 2, torch.Generator().manual_seed(0))
    return {
        "views": embed(views.flatten(0, 1)).view(len(views), 2, -1),
        "train_centre": embed(_centre(data.train_photos, crop)),
        "val_centre": embed(_centre(data.val_photos, crop)),
    }


def _fit_split() -> tuple[Tensor, Tensor]:
    """Indices of the training photos the check trains on (2 of every 3 per class) and validates on (the rest)."""
    labels = _capstone_data().train_labels
    fit, val = [], []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        fit.append(idx[torch.arange(len(idx)) % 3 != 2])
        val.append(idx[torch.arange(len(idx)) % 3 == 2])
    return torch.cat(fit), torch.cat(val)


def _check_head_inputs(seed: int = 0) -> tuple:
    f, data = _check_features(), _capstone_data()
    fit, val = _fit_split()
    views = f["views"][fit]
    train_x = views.flatten(0, 1).clone()
    train_y = data.train_labels[fit].repeat_interleave(views.shape[1])
    return train_x, train_y, f["train_centre"][val].clone(), data.train_labels[val].clone()


@functools.lru_cache(maxsize=1)
def _reference_holdout_accuracy() -> float:
    head, _ = fit_head_reference(*_check_head_inputs(), len(_capstone_data().classes), 30, 0)
    with torch.no_grad():
        return float((head(_check_features()["val_centre"]).argmax(1) == _capstone_data().val_labels).double().mean())


def _test_fit_head(fit_head) -> None:
    epochs, k = 30, len(_capstone_data().classes)
    train_x, train_y, val_x, val_y = _check_head_inputs()
    got = fit_head(train_x, train_y, val_x, val_y, k, epochs, 0)
    expect(
        isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], nn.Module),
        f"return (head, val_history): the trained head (an nn.Module) and the list of validation accuracies, got "
        f"{type(got).__name__}",
    )
    head, history = got
    expect(
        isinstance(history, (list, tuple)) and len(history) == epochs and all(0 <= float(a) <= 1 for a in history),
        f"val_history: expected {epochs} validation accuracies in [0, 1], one per epoch, got {history!r:.80}",
    )
    head.eval()
    head = learner_code(head)
    with torch.no_grad():
        logits = head(val_x)
    expect(
        isinstance(logits, Tensor) and tuple(logits.shape) == (len(val_y), k),
        f"the head must map ({len(val_y)}, {val_x.shape[1]}) features to ({len(val_y)}, {k}) logits",
    )
    acc = float((logits.argmax(1) == val_y).double().mean())
    expect(
        abs(acc - max(float(a) for a in history)) < 1e-6,
        f"the head you returned scores {acc:.3f} on the validation features, but the best epoch in val_history "
        f"scored {max(history):.3f}: keep a copy of the best epoch's weights (copy.deepcopy or a state_dict clone) "
        "and return that head",
    )
    again = fit_head(*_check_head_inputs(), k, epochs, 0)
    expect(
        isinstance(again, tuple) and list(map(float, again[1])) == list(map(float, history)),
        "the same seed gave another val_history: seed the initialisation (torch.manual_seed(seed) before "
        "nn.Linear) and the batch order (a torch.Generator seeded with `seed`)",
    )
    with torch.no_grad():
        unseen = float((head(_check_features()["val_centre"]).argmax(1) == _capstone_data().val_labels).double().mean())
    ref = _reference_holdout_accuracy()
    expect(
        unseen >= ref - 0.1,
        f"accuracy {unseen:.3f} on the validation photos (which your function never saw); the reference reaches "
        f"{ref:.3f} (accepted: {ref - 0.1:.3f} or more). Train with AdamW at about 3e-3 for every epoch, in "
        "mini-batches of a shuffled order.",
    )


FIT_HEAD = Exercise(
    name="fit_head",
    test=_test_fit_head,
    reference=fit_head_reference,
    hints=[
        "The loop of notebook 02 plus model selection: after every epoch, score the head on the validation "
        "features and remember its weights if it is the best so far; at the end, load the best weights back. "
        "Return the head and the list of validation accuracies.",
        "torch.manual_seed(seed) before nn.Linear(D, num_classes); torch.randperm(n, generator=g) with "
        "g = torch.Generator().manual_seed(seed) for each epoch's order; AdamW(lr=3e-3); head.eval() and "
        "torch.no_grad() to score; {k: v.clone() for k, v in head.state_dict().items()} keeps a copy, "
        "head.load_state_dict(copy) restores it.",
    ],
    skill="a training loop that picks its epoch on validation data, never on the test set",
    handle="nb10.FIT_HEAD",
    forbidden=(),
)


# --------------------------------------------------------------------------------------------- 4. test time
def predict_reference(
    embed: Callable[[Tensor], Tensor], heads: Sequence[nn.Module], photos: Tensor, size: int
) -> Tensor:
    """Mean softmax over the ten views of each uint8 photo ``(N, 3, H, W)`` (four corners and the centre, and their
    mirrors) and over ``heads``: ``embed`` runs once per view (``10 N`` crops), every head reads the same features."""
    from torchvision.transforms.v2 import functional as TF

    views = torch.stack(TF.ten_crop(photos, [size, size]), 1)  # (N, 10, 3, size, size)
    feats = embed(views.flatten(0, 1))
    with torch.no_grad():
        probs = torch.stack([h(feats).softmax(-1) for h in heads])  # (M, 10 N, K)
    return probs.view(len(heads), len(photos), 10, -1).mean((0, 2))


@functools.lru_cache(maxsize=1)
def _check_heads() -> tuple[nn.Module, ...]:
    f, labels = _check_features(), _capstone_data().train_labels
    x, y = f["views"].flatten(0, 1), labels.repeat_interleave(f["views"].shape[1])
    k = len(_capstone_data().classes)
    return tuple(fit_head_reference(x, y, f["val_centre"], _capstone_data().val_labels, k, 15, s)[0] for s in (0, 1))


def _test_predict(predict) -> None:
    data, size = _capstone_data(), CAPSTONE["crop"]
    photos = data.val_photos[:8].clone()
    heads = _check_heads()
    embed = FrozenFeatures(_backbone(), 7)
    want = predict_reference(FrozenFeatures(_backbone(), 7), heads, photos, size)
    got = predict(embed, list(heads), photos, size)
    expect(
        isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape),
        f"return (N, K) = {tuple(want.shape)} probabilities, got "
        + (f"{tuple(got.shape)}" if isinstance(got, Tensor) else type(got).__name__),
    )
    expect(
        embed.crops_asked == 10 * len(photos),
        f"the backbone ran on {embed.crops_asked} crops for {len(photos)} photos and {len(heads)} heads; 10 per "
        "photo suffice: embed the ten views once and let every head read the same features",
    )
    got = got.detach().float()
    expect(
        torch.allclose(got.sum(-1), torch.ones(len(photos)), atol=1e-4),
        "each row must be probabilities summing to 1: take each head's softmax on each view, then the mean",
    )
    err = float((got - want).abs().max())
    expect(
        err < 1e-4,
        f"your probabilities differ from the reference's by up to {err:.4f}: use the ten views of 10-crop (the "
        "four corners and the centre, and the same five of the mirrored photo), average the softmax (not the "
        "logits) over views and heads",
    )


PREDICT = Exercise(
    name="predict",
    test=_test_predict,
    reference=predict_reference,
    hints=[
        "Cut the ten views of every photo, turn all of them into features with one call of embed (the backbone is "
        "the expensive part, and it is the same for every head), then average every head's softmax over the views "
        "and over the heads.",
        "torchvision.transforms.v2.functional.ten_crop(photos, [size, size]) returns the ten (N, 3, size, size) "
        "views; torch.stack(views, 1).flatten(0, 1) makes one batch of 10 N crops; embed(crops) -> (10 N, D); "
        "head(feats).softmax(-1) per head; .view(N, 10, K).mean(1) averages the views of each photo.",
    ],
    skill="10-crop and an ensemble of heads at test time, paying one backbone pass per view",
    handle="nb10.PREDICT",
    forbidden=(),
)


# --------------------------------------------------------------------------------------------- the pipeline
def centre_augment(photos: Tensor, size: int, n_views: int, generator: torch.Generator) -> Tensor:
    """No augmentation: the centre crop of each photo, ``n_views`` times (the plain pipeline's training views)."""
    return _centre(photos, size).unsqueeze(1).expand(-1, n_views, -1, -1, -1).clone()


def centre_predict(embed: Callable[[Tensor], Tensor], heads: Sequence[nn.Module], photos: Tensor, size: int) -> Tensor:
    """One view at test time: the centre crop, the heads' softmax averaged (the plain pipeline's prediction)."""
    feats = embed(_centre(photos, size))
    with torch.no_grad():
        return torch.stack([h(feats).softmax(-1) for h in heads]).mean(0)


@dataclass
class PipelineResult:
    """One pipeline over seeds: held-out test accuracy per seed, and its cost."""

    name: str
    plan: tuple[str, int]
    seeds: tuple[int, ...]
    test_acc: list[float] = field(default_factory=list)
    best_val_acc: list[float] = field(default_factory=list)
    histories: list[list[float]] = field(default_factory=list)
    train_s: list[float] = field(default_factory=list)
    train_forwards: float = 0.0  # backbone passes per training photo (features computed once: epochs are free)
    test_forwards: float = 0.0  # backbone passes per test photo
    test_ms: float = 0.0  # wall time per test photo, the first seed's (features of later seeds come from memory)

    def row(self) -> dict:
        """A table row: accuracy mean ± sd over seeds, and the costs."""
        import statistics

        sd = statistics.stdev(self.test_acc) if len(self.test_acc) > 1 else 0.0
        return {
            "pipeline": self.name,
            "plan": f"{self.plan[0]}, k={self.plan[1]}",
            "test acc": f"{statistics.fmean(self.test_acc):.3f} ± {sd:.3f}",
            "train s (per seed)": round(statistics.fmean(self.train_s), 1),
            "passes / train photo": self.train_forwards,
            "passes / test photo": self.test_forwards,
            "ms / test photo": round(self.test_ms, 1),
        }


_TEST_CHUNK = 8  # test photos per call of predict: a progress bar moves while 10-crop runs


def _bar(items: range, desc: str, progress: bool):
    """``items`` with a progress bar when ``progress`` (tqdm's; closed when done)."""
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


def run_pipeline(
    name: str,
    data: CapstoneData,
    plan: tuple[str, int],
    augment: Callable,
    fit_head: Callable,
    predict: Callable,
    *,
    seeds: Sequence[int],
    train_views: int,
    epochs: int,
    members: int = 1,
    backbone: nn.Module | None = None,
    progress: bool = True,
) -> PipelineResult:
    """Train and test a pipeline once per seed on the capstone's data; the test photos are read only to score.

    Per seed: ``train_views`` views of every training photo from ``augment`` (drawn with the seed), their features
    from the frozen first ``k`` stages (``plan``), ``members`` heads from ``fit_head`` (seeds ``seed * 100 + m``,
    each picking its epoch on the validation photos' centre crops), then ``predict`` on the test photos (8 at a
    time, so that a progress bar can move; the first seed's time is the one reported). A plan
    other than a head on frozen features is refused: fine-tuning does not fit this notebook's CPU budget.
    """
    regime, k = plan
    if regime != "head":
        raise ValueError(
            f"plan: this notebook trains heads on frozen features (regime 'head'), got {plan!r}; fine-tuning runs in "
            "notebook 04"
        )
    model = _backbone() if backbone is None else backbone
    size = CAPSTONE["crop"]
    result = PipelineResult(name, (regime, k), tuple(seeds))
    embed = FrozenFeatures(model, k)
    test_embed = FrozenFeatures(model, k, memo=True)
    val_x = embed(_centre(data.val_photos, size))
    n_classes = len(data.classes)
    for i, seed in enumerate(seeds):
        t = time.perf_counter()
        asked = embed.crops_asked
        views = augment(data.train_photos, size, train_views, torch.Generator().manual_seed(seed))
        flat = views.flatten(0, 1)
        feats = torch.cat(
            [embed(flat[j : j + 64]) for j in _bar(range(0, len(flat), 64), f"{name}, seed {seed}: views", progress)]
        )
        result.train_forwards = (embed.crops_asked - asked) / len(data.train_photos)
        x, y = feats, data.train_labels.repeat_interleave(train_views)
        heads = []
        for m in range(members):
            head, history = fit_head(x, y, val_x, data.val_labels, n_classes, epochs, seed * 100 + m)
            heads.append(head.eval())
            result.histories.append([float(a) for a in history])
            result.best_val_acc.append(max(float(a) for a in history))
        result.train_s.append(time.perf_counter() - t)
        if progress:
            print(
                f"  {name}, seed {seed}: {len(views) * train_views} training views embedded and {members} head(s) "
                f"trained in {result.train_s[-1]:.1f} s",
                flush=True,
            )
        t, asked = time.perf_counter(), test_embed.crops_asked
        photos = data.test_photos
        chunks = _bar(range(0, len(photos), _TEST_CHUNK), f"{name}, seed {seed}: test photos", progress and i == 0)
        probs = torch.cat([predict(test_embed, heads, photos[j : j + _TEST_CHUNK], size) for j in chunks])
        if i == 0:
            result.test_ms = 1000 * (time.perf_counter() - t) / len(data.test_photos)
            result.test_forwards = (test_embed.crops_asked - asked) / len(data.test_photos)
        result.test_acc.append(float((probs.argmax(-1) == data.test_labels).double().mean()))
        if progress:
            print(f"  {name}, seed {seed}: held-out test accuracy {result.test_acc[-1]:.3f}", flush=True)
    return result


# --------------------------------------------------------------------------------------------- the quiz
QUIZ = Quiz(
    "Quiz: the whole pipeline",
    {
        "q1": Question(
            "From your run: your pipeline's held-out test accuracy, the mean over the seeds (3 decimals)?",
            answer=None,
            measured="capstone_acc",
            tolerance=0.002,
            why="The one number this notebook reads from the held-out photos, after every choice was made.",
            wrong={"low": "read the mean from the comparison table.", "high": "read the mean from the table."},
        ),
        "q2": Question(
            "From your run: how many backbone forward passes did your pipeline's test step ask for per test photo?",
            answer=None,
            measured="test_passes",
            why="10-crop runs the backbone once per view; an ensemble of heads on one frozen backbone adds no pass.",
            wrong={"low": "count every view of every photo.", "high": "the heads share the views' features."},
        ),
        "q3": Question(
            "Why does this notebook read the held-out test photos only once, in its last section?",
            options={
                "a": "they take long to load",
                "b": "every choice made while looking at them (the epoch, the views, the threshold) fits the pipeline "
                "to those photos, and their accuracy then overstates the accuracy on new photos",
                "c": "nbgrader requires it",
            },
            answer="b",
            why="Choices are made on validation data; a test set looked at repeatedly becomes another validation set.",
            wrong={
                "a": "they load in a second; the reason is statistical.",
                "c": "the reason holds without any grader: it is about what the number estimates.",
            },
        ),
        "q4": Question(
            "Your classes hold 60, 35, 33, 25 and 12 training photos. Which count should choose the transfer regime?",
            options={"a": "the mean, 33", "b": "the total, 165", "c": "the smallest class, 12"},
            answer="c",
            why="The rarest class is the one a fine-tuned backbone would overfit first: plan for 12 per class.",
            wrong={
                "a": "the mean hides the class that decides the risk of overfitting.",
                "b": "the total counts photos the rare class does not have.",
            },
        ),
        "q5": Question(
            "A frozen backbone, 4 augmented views per training photo, 30 epochs of the head: how many backbone "
            "forward passes per training photo does training cost?",
            answer=4,
            why="The views' features are computed once and reused by every epoch: 4 passes, whatever the epochs.",
            wrong={
                "low": "each view is one pass.",
                "high": "epochs reuse the cached features; they cost no backbone pass.",
            },
        ),
        "q6": Question(
            "Your `fit_head` returns the head of the epoch with the best validation accuracy. What does that buy?",
            options={
                "a": "a free accuracy gain on the test set, always",
                "b": "early stopping without guessing the number of epochs, decided on data the head never trained "
                "on (the best validation score itself is optimistic: it was selected)",
                "c": "faster training",
            },
            answer="b",
            why="Model selection on validation data; the test set stays out of it, so its accuracy stays honest.",
            wrong={
                "a": "selection can pick a lucky epoch; the held-out test tells whether it generalises.",
                "c": "every epoch still runs; only the choice changes.",
            },
        ),
        "q7": Question(
            "Over 3 seeds, your pipeline minus the reference gives a 95% interval of [-2.1, +3.4] points on the "
            "held-out photos. What do you report?",
            options={
                "a": "mine is better: its mean is higher",
                "b": "a tie: with these photos and seeds the two cannot be told apart",
                "c": "the reference is better",
            },
            answer="b",
            why="The course's one verdict rule: shown only when the paired interval excludes zero.",
            wrong={
                "a": "a higher mean inside an interval that includes zero is noise.",
                "c": "the interval includes zero in both directions.",
            },
        ),
        "q8": Question(
            "Why test the pipeline on food groups that no earlier notebook used?",
            options={
                "a": "the course's choices (crop size, epochs, views) were tuned while looking at fruits, vegetables "
                "and fish; new groups show whether the recipe, not just its tuning, carries over",
                "b": "the new groups are easier",
                "c": "the old photos are too few",
            },
            answer="a",
            why="A recipe is only as good as its result on data that played no part in shaping it.",
            wrong={
                "b": "nothing says so: spices, legumes, cereals and seeds look alike, and may be harder.",
                "c": "the course's groups hold more photos than these.",
            },
        ),
        "q9": Question(
            "A service must answer within one backbone pass per photo. Which part of your pipeline do you keep?",
            options={
                "a": "nothing: without 10-crop the pipeline is worthless",
                "b": "the augmentation-trained head on the centre crop: training-time tricks cost nothing at test "
                "time, 10-crop costs 10 passes",
                "c": "10-crop on a smaller crop",
            },
            answer="b",
            why="Augmentation is paid once, in training; test-time views are paid on every request.",
            wrong={
                "a": "the comparison table shows what the plain pipeline and the single view reach.",
                "c": "ten views are ten passes at any size, and smaller crops lose accuracy.",
            },
        ),
    },
    research=[
        "Train an ensemble of 3 heads per seed (`MEMBERS = 3`): does it beat one head with 10-crop at the same "
        "number of backbone passes on these photos?",
        "Replace MobileNetV2 by EfficientNet-Lite0 in the configuration: does the plan change, and does the held-out "
        "accuracy?",
        "Run the pipeline on a folder of your own photos (`convlab.load_image_folder`): which choices of this "
        "notebook would you revisit first?",
    ],
)
