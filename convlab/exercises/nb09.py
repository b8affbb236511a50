"""Exercises and quiz of notebook 09 (ensembles and multi-crop).

- :data:`TEN_CROP` (main exercise): ``ten_crop_predict(model, images, size)``, the mean of the softmax over the
  ten views (four corners, centre, and the same of the mirrored image).
- :data:`AVERAGE` (main exercise): ``average_predictions(logits, members, views)``, the mean softmax over chosen
  members and views of cached logits ``(M, N, V, K)``: the notebook computes its crop and ensemble tables with it.
- :data:`QUIZ`.

Both checks run the learner's function on real food photos with the pretrained MobileNetV2 (and EfficientNet-Lite0
as a second member for the averaging) and compare with the plain-PyTorch references below within float tolerance.
Importing this module is cheap: photos and weights load on the first check (memoised).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from convlab.exercises.core import Exercise, Question, Quiz, expect

__all__ = [
    "TEN_CROP",
    "AVERAGE",
    "QUIZ",
    "reference_ten_crop_predict",
    "reference_average_predictions",
    "check_photos",
    "check_logits",
]

_CROP, _RESIZE, _PHOTOS = 112, 128, 4


def reference_ten_crop_predict(model: nn.Module, images: Tensor, size: int) -> Tensor:
    """Mean softmax over torchvision's ten crops: normalised float ``(B, 3, H, W)`` -> ``(B, K)`` probabilities."""
    from torchvision.transforms.v2 import functional as TF

    with torch.no_grad():
        probs = [model(view).softmax(dim=-1) for view in TF.ten_crop(images, [size, size])]
    return torch.stack(probs).mean(dim=0)


def reference_average_predictions(logits: Tensor, members, views) -> Tensor:
    """Mean softmax over the chosen members and views: logits ``(M, N, V, K)``, index sequences -> ``(N, K)``."""
    chosen = logits[list(members)][:, :, list(views)]  # (m, N, v, K)
    return chosen.softmax(dim=-1).mean(dim=(0, 2))


@functools.lru_cache(maxsize=1)
def check_photos() -> Tensor:
    """Normalised float ``(4, 3, 128, 170)``: 4 food test photos (4:3 centre, shorter side 128), ImageNet stats."""
    from convlab.cropstudy import prepare_photos
    from convlab.data import load_food
    from convlab.preprocess import IMAGENET_MEAN, IMAGENET_STD

    food = load_food()
    photos = prepare_photos(list(food.test.images[:_PHOTOS]), _RESIZE).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (photos - mean) / std


@functools.lru_cache(maxsize=1)
def _check_logits() -> Tensor:
    from convlab.cropstudy import prepare_photos
    from convlab.data import load_food
    from convlab.tta import ViewSet, predict_views

    photos = prepare_photos(list(load_food().test.images[:_PHOTOS]), _RESIZE)
    views = ViewSet.ten_crop(_CROP)
    return torch.stack(
        [predict_views(_model(a), photos, views, average="none") for a in ("mobilenet_v2", "efficientnet_lite0")]
    )


def check_logits() -> Tensor:
    """Real cached logits ``(2, 4, 10, 1000)``: MobileNetV2 and EfficientNet-Lite0 (two members, each with its own
    input normalisation) on the ten views of 4 food test photos; a fresh copy of a memoised tensor."""
    return _check_logits().clone()


@functools.lru_cache(maxsize=2)
def _model(name: str) -> nn.Module:
    from convlab.backbones import load_backbone

    return load_backbone(name).eval()


def _probs_ok(got, want: Tensor, what: str) -> None:
    expect(isinstance(got, Tensor), f"{what} should return a tensor, got {type(got).__name__}")
    expect(
        tuple(got.shape) == tuple(want.shape),
        f"{what} should return (B, K) = {tuple(want.shape)}, got {tuple(got.shape)}",
    )
    got = got.detach().float()
    expect(
        torch.allclose(got.sum(-1), torch.ones(len(got)), atol=1e-4),
        f"{what}: each row should be probabilities summing to 1 (softmax over the classes, dim -1, then the mean)",
    )


def _test_ten_crop(ten_crop_predict) -> None:
    x, model = check_photos(), _model("mobilenet_v2")
    want = reference_ten_crop_predict(model, x, _CROP)
    got = ten_crop_predict(model, x.clone(), _CROP)
    _probs_ok(got, want, "ten_crop_predict")
    from torchvision.transforms.v2 import functional as TF

    with torch.no_grad():
        logit_mean = torch.stack([model(v) for v in TF.ten_crop(x, [_CROP, _CROP])]).mean(0).softmax(-1)
        centre = model(TF.center_crop(x, [_CROP, _CROP])).softmax(-1)
    expect(
        not torch.allclose(got.float(), logit_mean, atol=1e-5),
        "that is the softmax of the mean logits: take each view's softmax first, then the mean over the ten",
    )
    expect(not torch.allclose(got.float(), centre, atol=1e-5), "that is the centre crop alone: average all ten views")
    err = (got.float() - want).abs().max().item()
    expect(
        err < 1e-4,
        f"differs from the reference by up to {err:.2g} on real photos: the ten views are the four "
        "corners and the centre of the image, then the same five of the mirrored image",
    )


def _test_average(average_predictions) -> None:
    logits = check_logits()
    M, N, V, K = logits.shape
    cases = [
        ("both members, all ten views", [0, 1], list(range(V))),
        ("member 1 alone, the centre view (index 4)", [1], [4]),
        ("member 0 on the centre view and its mirror (views 4 and 9)", (0,), (4, 9)),
        ("both members on the five unmirrored views, given as ranges", range(M), range(5)),
    ]
    for what, members, views in cases:
        want = reference_average_predictions(logits, members, views)
        got = average_predictions(logits.clone(), members, views)
        _probs_ok(got, want, f"average_predictions ({what})")
        if len(list(members)) * len(list(views)) > 1:
            logit_mean = logits[list(members)][:, :, list(views)].mean(dim=(0, 2)).softmax(-1)
            expect(
                not torch.allclose(got.float(), logit_mean, atol=1e-5),
                "that is the softmax of the mean logits: take the softmax of every (member, view) first, then the mean",
            )
        err = (got.float() - want).abs().max().item()
        expect(
            err < 1e-5,
            f"for {what} it differs from the reference by up to {err:.2g}: average the softmax probabilities of "
            "exactly the members and views asked for (logits[members] along dim 0, views along dim 2)",
        )
    swapped = logits.flip(0)  # the members in the other order: member 0 is now EfficientNet-Lite0
    got = average_predictions(swapped, [0], [4])
    expect(
        isinstance(got, Tensor) and torch.allclose(got.float(), swapped[0, :, 4].softmax(-1), atol=1e-5),
        "one member on one view should give that member's softmax on that view: index the logits you are given",
    )


TEN_CROP = Exercise(
    name="ten_crop_predict",
    test=_test_ten_crop,
    reference=reference_ten_crop_predict,
    hints=[
        "Cut the ten views (4 corners + centre, and the same of the left-right mirrored image), run the model on "
        "each, turn each output into probabilities, and average the ten.",
        "The API: torchvision.transforms.v2.functional.ten_crop returns a tuple of ten (B, 3, size, size) batches; "
        "Tensor.softmax(dim=-1) turns logits into probabilities; torch.stack and .mean(dim=0) average; "
        "torch.no_grad() skips autograd.",
    ],
    skill="10-crop test-time augmentation",
    handle="nb09.TEN_CROP",
)

AVERAGE = Exercise(
    name="average_predictions",
    test=_test_average,
    reference=reference_average_predictions,
    hints=[
        "Pick the chosen members (dimension 0) and the chosen views (dimension 2) of the cached logits, turn every "
        "(member, view) pair's logits into probabilities over the K classes, then average over members and views.",
        "The API: logits[list(members)] keeps the chosen members, [:, :, list(views)] the chosen views; "
        "Tensor.softmax(dim=-1) per row of K logits; .mean(dim=(0, 2)) averages members and views at once.",
    ],
    skill="averaging an ensemble's probabilities over members and test-time views",
    handle="nb09.AVERAGE",
)


QUIZ = Quiz(
    "Quiz: ensembles and multi-crop",
    {
        "q1": Question(
            "An ensemble of 5 models, each evaluated with 10-crop: how many forward passes per test photo?",
            answer=50,
            tolerance=0,
            why="Cost is models x views: every member sees every view (GoogLeNet: 7 x 144 = 1008).",
            wrong={
                "low": "Every one of the 5 members runs on every one of the 10 views.",
                "high": "Count models x views, once each.",
            },
        ),
        "q2": Question(
            "When is 10-crop most likely to *lower* accuracy?",
            answer="b",
            options={
                "a": "when the test set is large",
                "b": "when the model was trained on centre crops only, so corner crops are views it never saw",
                "c": "when the model was trained with random crops and flips",
                "d": "when the softmax is averaged instead of the logits",
            },
            why="Test-time views should come from the training distribution; random-crop training makes corners "
            "familiar.",
            wrong={
                "a": "A larger test set measures the effect more precisely; it does not change its sign.",
                "c": "That is the setting where 10-crop is expected to help (AlexNet, GoogLeNet, ResNet).",
                "d": "Both averages usually behave alike; the mean of softmaxes is the classic choice.",
            },
        ),
        "q3": Question(
            "GoogLeNet (Table 3, top-5 error): 1 model 1 crop 10.07%, 1 model 10 crops 9.15%, 7 models 1 crop 8.09%. "
            "Which bought more accuracy per forward pass there?",
            answer="a",
            options={
                "a": "the ensemble: 7 passes gave a larger drop than 10 crops' 10 passes",
                "b": "10 crops: views are cheaper than models",
                "c": "they were equal",
            },
            why="At lower compute the 7 independently trained models beat 10 crops of one: diverse errors average out. "
            "(Training 7 models cost 7 runs, though.)",
            wrong={
                "b": "At test time a view costs one forward pass, just like a member.",
                "c": "10.07 -> 8.09 with 7 passes vs 10.07 -> 9.15 with 10.",
            },
        ),
        "q4": Question(
            "VGG's dense evaluation runs the whole image and its mirror once. For a 4:3 image whose shorter side "
            "equals the crop size, what fraction of 10-crop's pixels is that? (2 decimals)",
            answer=0.27,
            tolerance=0.01,
            why="2 images x (4/3) crop^2 pixels against 10 x crop^2: 2 x 1.333 / 10 = 0.27; no overlapping crops.",
            wrong={
                "low": "Count both the image and its mirror, each 4/3 of a crop.",
                "high": "10-crop runs ten crops; dense runs two (wider) images.",
            },
        ),
        "q5": Question(
            (
                "Your `ten_crop_predict` averaged ten views of every evaluation photo for one member: which "
                "fraction of those photos did it classify correctly in your run? (3 decimals)"
            ),
            answer=None,
            measured="ten_crop_acc",
            tolerance=0.0015,
            why="That number was computed by your function on whole models: the crop table's cached-feature path "
            "must give the same accuracy.",
            wrong={
                "low": "the fraction of photos whose ten-view averaged prediction was right (the line printed above).",
                "high": "the fraction of photos whose ten-view averaged prediction was right (the line printed above).",
            },
        ),
        "q6": Question(
            "Why average the members' softmax probabilities rather than take a majority vote of their top-1?",
            options={
                "a": "votes are slower",
                "b": "the two always agree",
                "c": (
                    "probabilities keep each member's confidence; a vote discards it and ties often with few members"
                ),
            },
            answer="c",
            why="A confident member can outweigh two unsure ones; with 2 or 4 members a vote also ties often.",
            wrong={
                "a": "both are cheap.",
                "b": "they differ whenever confidences differ.",
            },
        ),
        "q7": Question(
            "Members that differ only in their random seed still help as an ensemble. Why?",
            options={
                "a": "they do not help",
                "b": (
                    "different initialisations and data orders end in different solutions whose errors are "
                    "partly independent"
                ),
                "c": "the seed changes the architecture",
            },
            answer="b",
            why=("Partly independent errors cancel in the average; the more diverse the members, the larger the gain."),
            wrong={
                "a": "seed ensembles are a standard, measured gain.",
                "c": "the architecture is the same.",
            },
        ),
        "q8": Question(
            "Which cost of 10-crop does a benchmark table hide and a deployed service pays?",
            options={
                "a": "none",
                "b": "every request costs 10 forward passes: latency and compute, forever",
                "c": "training time",
            },
            answer="b",
            why=(
                "Test-time augmentation multiplies inference cost; a benchmark counts accuracy once, a service "
                "pays per photo."
            ),
            wrong={
                "a": "10 passes cost about 10 times one.",
                "c": "10-crop changes nothing in training.",
            },
        ),
        "q9": Question(
            "Which are the ten views of 10-crop?",
            options={
                "a": "ten random crops",
                "b": "ten scales of the whole image",
                "c": "the four corners and the centre, each also mirrored",
            },
            answer="c",
            why="AlexNet's test-time recipe: 5 crops and their mirrors, predictions averaged.",
            wrong={
                "a": "the views are fixed, not random.",
                "b": "the crops have one size; the scale is fixed.",
            },
        ),
        "q10": Question(
            "`average_predictions(logits, members=[0, 1, 2], views=range(10))` on cached logits (M, N, V, K): how "
            "many softmax vectors does it average for each photo?",
            answer=30,
            tolerance=0,
            why="Every chosen member on every chosen view: 3 x 10 = 30 probability vectors, each of equal weight.",
            wrong={
                "low": "Count (member, view) pairs, not members or views alone.",
                "high": "Only the chosen members and views count, not all M or V.",
            },
        ),
    },
    research=[
        (
            "Distil the ensemble into one model (train a student on the members' averaged probabilities): how much "
            "of the gain survives at one model's cost?"
        ),
        "Compare 10-crop with testing at several input sizes: which buys more accuracy per forward pass here?",
        (
            "The stored study's members differ in their initial weights, batch order and augmentation draws but share "
            "their training images: would members trained on different bootstrap samples of the data gain more?"
        ),
    ],
)
