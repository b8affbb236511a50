"""Notebook 01 (open-source weights): measure published weights' top-1 and top-5 accuracy yourself, load
MobileNetV2's weights by hand, swap in a 3-way classifier; a quiz on provenance, ``weights_only`` and preprocessing.

The checks compare the learner's model with convlab's loader (:func:`convlab.load_backbone`, the oracle) on the 20
labelled ImageNet photos, and run the new head on real food photos. Expensive loads are memoised on first use, not
at import.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from convlab.backbones import Backbone
from convlab.exercises.core import Exercise, Question, Quiz, expect

__all__ = [
    "LOAD_WEIGHTS",
    "NEW_HEAD",
    "TOP_K_ACCURACY",
    "QUIZ",
    "load_mobilenet_v2_reference",
    "replace_classifier_reference",
    "top_k_accuracy_reference",
]


# ------------------------------------------------------------------------------------------------ references
def load_mobilenet_v2_reference(weights_path: str) -> nn.Module:
    """torchvision's MobileNetV2 with the ImageNet weights in ``weights_path``, in eval mode:
    ``(B, 3, 224, 224)`` normalised images -> ``(B, 1000)`` logits."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()  # the architecture, randomly initialised (weights=None is the default)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)  # tensors only: no code runs on load
    model.load_state_dict(state)  # strict: every name and shape must match
    return model.eval()


def replace_classifier_reference(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace MobileNetV2's last layer (``model.classifier[1]``, ``Linear(1280, 1000)``) by a fresh
    ``Linear(1280, num_classes)``; every other weight is kept. Returns ``model``."""
    model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


def top_k_accuracy_reference(model: nn.Module, images: list[torch.Tensor], labels: torch.Tensor, k: int) -> float:
    """The fraction of ``images`` (uint8 ``(3, H, W)`` photos of any sizes) whose true class (``labels``, ``(N,)``)
    is among the ``k`` classes the convlab backbone ``model`` finds most likely, through its spec's preprocessing."""
    model.eval()  # BatchNorm on its running statistics, Dropout off: the published model's behaviour
    with torch.inference_mode():
        logits = model(model.spec.preprocess(images))
    top = logits.topk(k, dim=1).indices  # (N, k)
    return float((top == labels.view(-1, 1)).any(dim=1).double().mean())


# ------------------------------------------------------------------------------------------------ real data
N_IMAGENET = 10  # of the 20 labelled ImageNet photos (every other one): enough to catch a wrong load, and fast
N_FOOD = 4


@functools.lru_cache(maxsize=1)
def _imagenet_oracle() -> tuple[torch.Tensor, torch.Tensor]:
    """``N_IMAGENET`` ImageNet samples preprocessed as MobileNetV2 expects, and convlab's loader's logits on them."""
    import convlab

    model = convlab.load_backbone("mobilenet_v2")
    samples = convlab.imagenet_samples()
    x = model.spec.preprocess(list(samples.images[::2][:N_IMAGENET]))
    with torch.inference_mode():
        return x, model(x)


@functools.lru_cache(maxsize=1)
def _food_batch() -> torch.Tensor:
    """``N_FOOD`` real food photos (one file per class and more, in name order), preprocessed for MobileNetV2."""
    import convlab
    from convlab.assets import fetch
    from convlab.data import decode_image_file

    folder = fetch("food_photos")
    paths = [sorted(folder.glob(f"{letter}*.jpeg"))[0] for letter in "EDP"]  # fruits, vegetables, marine fish
    paths += sorted(folder.glob("E*.jpeg"))[1 : 1 + N_FOOD - len(paths)]
    return convlab.BACKBONES["mobilenet_v2"].preprocess([decode_image_file(p) for p in paths])


def _weights_path() -> str:
    from convlab.assets import asset_path

    return str(asset_path("mobilenet_v2"))


# ------------------------------------------------------------------------------------------------ tests
def _test_load_weights(load_mobilenet_v2) -> None:
    model = load_mobilenet_v2(_weights_path())
    expect(isinstance(model, nn.Module), f"return the model (an nn.Module), got {type(model).__name__}")
    expect(
        not model.training,
        "the model is in training mode: Dropout drops features and BatchNorm uses the "
        "batch's statistics; return model.eval() for predictions",
    )
    x, oracle = _imagenet_oracle()
    with torch.inference_mode():
        logits = model(x)
    expect(
        isinstance(logits, torch.Tensor) and logits.shape == oracle.shape,
        f"on {N_IMAGENET} photos the model should give ({N_IMAGENET}, 1000) logits, "
        f"got {getattr(logits, 'shape', type(logits))}",
    )
    differ = int((logits.argmax(1) != oracle.argmax(1)).sum())
    expect(
        differ == 0,
        f"the top-1 class differs from convlab's loader on {differ} of {N_IMAGENET} ImageNet photos: "
        "are the trained weights loaded (load_state_dict), or is the model still randomly initialised?",
    )
    expect(
        torch.allclose(logits, oracle, atol=1e-3),
        "same top-1 classes but different logits: load every "
        "tensor of the state dict (strict=True, the default) and do not change the model afterwards",
    )


def _test_new_head(replace_classifier) -> None:
    base = load_mobilenet_v2_reference(_weights_path())
    before = {k: v.clone() for k, v in base.state_dict().items() if not k.startswith("classifier.1.")}
    model = replace_classifier(copy.deepcopy(base), 3)
    expect(isinstance(model, nn.Module), f"return the model (an nn.Module), got {type(model).__name__}")
    model.eval()
    with torch.inference_mode():
        logits = model(_food_batch())
    expect(
        isinstance(logits, torch.Tensor) and tuple(logits.shape) == (N_FOOD, 3),
        f"on {N_FOOD} food photos the model should give ({N_FOOD}, 3) logits, "
        f"got {tuple(getattr(logits, 'shape', ()))}",
    )
    last = model.classifier[-1] if isinstance(getattr(model, "classifier", None), nn.Sequential) else None
    expect(
        isinstance(last, nn.Linear) and last.in_features == 1280 and last.out_features == 3,
        "replace the last layer of model.classifier by nn.Linear(1280, 3): keep the Dropout before it",
    )
    kept = model.state_dict()
    changed = [k for k, v in before.items() if k not in kept or not torch.equal(kept[k], v)]
    expect(
        not changed,
        f"only the last layer should change, but {changed[:3]} changed too: do not rebuild or "
        "re-initialise the backbone",
    )


def _test_top_k_accuracy(top_k_accuracy) -> None:
    from convlab.backbones import load_backbone
    from convlab.data import imagenet_samples

    samples = imagenet_samples()
    # a shuffled order (the accuracy must come from the photos), and the check's own seed for the calls below: a model
    # left in train mode drops units at random, so unseeded it can score eval mode's accuracy on 20 photos by chance
    order = torch.randperm(len(samples.labels), generator=torch.Generator().manual_seed(0))
    images, labels = [samples.images[i] for i in order.tolist()], samples.labels[order].clone()
    model = load_backbone("mobilenet_v2").train()  # as a training loop would leave it
    with torch.random.fork_rng():
        torch.manual_seed(0)
        got = top_k_accuracy(model, images, labels, 1)
    expect(
        isinstance(got, (float, int)) or (isinstance(got, torch.Tensor) and got.numel() == 1),
        f"return the accuracy as a number (a float in [0, 1]), got {type(got).__name__}",
    )
    oracle = load_backbone("mobilenet_v2").eval()
    for k in (1, 5):
        predictions = Backbone.predict(oracle, images, k=k)
        want = sum(int(y) in p.indices for p, y in zip(predictions, labels.tolist())) / len(labels)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            got = float(top_k_accuracy(model, images, labels, k))
        if abs(got - want * len(labels)) < 1e-9 and got > 1:
            expect(False, "return a fraction of the photos (right / total), not a count")
        expect(
            abs(got - want) < 1e-9,
            f"top-{k} accuracy {got:.3f} on the 20 labelled ImageNet photos; the published weights reach {want:.3f}: "
            "put the model in eval mode (it arrives in train mode), preprocess with model.spec.preprocess, and "
            f"count a photo as right when its label is among the {k} largest logits",
        )


LOAD_WEIGHTS = Exercise(
    name="load_mobilenet_v2",
    test=_test_load_weights,
    reference=load_mobilenet_v2_reference,
    hints=[
        "Published weights are a *state dict*: parameter names -> tensors. Build the same architecture (random "
        "weights), read the file safely, copy the tensors in, and switch to evaluation mode.",
        "The API: torchvision.models.mobilenet_v2() builds the architecture; torch.load(..., map_location='cpu', "
        "weights_only=True) reads a state dict without running pickled code; Module.load_state_dict copies it in; "
        "Module.eval() switches BatchNorm and Dropout to inference.",
    ],
    skill="loading published weights by hand, safely (weights_only=True), checked against an oracle",
    handle="nb01.LOAD_WEIGHTS",
)

NEW_HEAD = Exercise(
    name="replace_classifier",
    test=_test_new_head,
    reference=replace_classifier_reference,
    hints=[
        "Print the model: its `classifier` is `Sequential(Dropout, Linear(1280, 1000))`. Only that Linear knows "
        "about ImageNet's 1000 classes; replace it, keep everything else.",
        "The API: a Sequential can be indexed and assigned like a list; a Linear layer's input width is its "
        ".in_features; torch.nn.Linear(in_features, out_features) makes the new layer.",
    ],
    skill="turning an ImageNet classifier into a num_classes-way one (the first step of transfer learning)",
    handle="nb01.NEW_HEAD",
)

TOP_K_ACCURACY = Exercise(
    name="top_k_accuracy",
    test=_test_top_k_accuracy,
    reference=top_k_accuracy_reference,
    forbidden=[Backbone.predict],  # convlab's own top-k: the exercise asks for the measurement itself
    hints=[
        "Measure, do not eyeball: prepare the photos exactly as the weights expect (the spec knows how), run the "
        "model as published (inference behaviour, no gradients), and count a photo as right when its label is "
        "among the k most likely classes.",
        "The API: model.eval(); model.spec.preprocess(list_of_photos) gives a normalised batch; torch.no_grad() "
        "or torch.inference_mode(); logits.topk(k, dim=1).indices is (N, k); compare with labels.view(-1, 1) and "
        "reduce with .any(dim=1), then take the mean.",
    ],
    skill="measuring published weights' top-1 and top-5 accuracy on labelled photos, as the spec says to feed them",
    handle="nb01.TOP_K_ACCURACY",
)

QUIZ = Quiz(
    "Quiz: open-source weights",
    {
        "q1": Question(
            "What does `torch.load(path, weights_only=True)` protect you from?",
            "b",
            "A .pth file is a pickle, and unpickling can call any function; `weights_only=True` only rebuilds "
            "tensors and plain containers. It does not check *which* tensors you got: that is the sha256's job.",
            options={
                "a": "a truncated or swapped weights file",
                "b": "code that runs while the file is unpickled",
                "c": "feeding images with the wrong preprocessing",
            },
            wrong={
                "a": "a truncated or swapped file of tensors loads fine with weights_only; the sha256 check "
                "catches it.",
                "c": "preprocessing is the spec's business (mean, std, resize, crop), not the loader's.",
            },
        ),
        "q2": Question(
            "With the backbone frozen, how many parameters does the new 3-way head `Linear(1280, 3)` train?",
            3843,
            "3 x 1280 weights + 3 biases = 3,843: about 0.1 % of MobileNetV2's 3.5 million.",
            wrong={"low": "count the biases too (one per class).", "high": "only the new Linear layer trains."},
        ),
        "q3": Question(
            "You feed MobileNetV2 photos scaled to [0, 1] but not normalised with its mean and std. What happens?",
            "c",
            "Nothing crashes: the shapes are right. The network sees inputs unlike its training data and its "
            "predictions get silently worse. Always use the weights' own preprocessing (the spec, or torchvision's "
            "`weights.transforms()`).",
            options={
                "a": "an error about the input's range",
                "b": "the same predictions: BatchNorm renormalises",
                "c": "no error, but worse predictions",
            },
            wrong={
                "a": "PyTorch does not know what range the weights expect; nothing checks it.",
                "b": "in eval mode BatchNorm uses the running statistics of ImageNet-normalised inputs; it does "
                "not adapt to yours.",
            },
        ),
        "q4": Question(
            "Why must the model be in `eval()` mode to reproduce convlab's ImageNet predictions?",
            "a",
            "In training mode Dropout zeroes features at random and BatchNorm normalises with the batch's own "
            "statistics, so the same photo gets different logits in different batches.",
            options={
                "a": "Dropout and BatchNorm behave differently in training mode",
                "b": "eval() loads the pretrained weights",
                "c": "eval() turns off gradients",
            },
            wrong={
                "b": "load_state_dict loads the weights; eval() only switches layer behaviour.",
                "c": "that is torch.no_grad() / torch.inference_mode(); eval() does not touch autograd.",
            },
        ),
        "q5": Question(
            (
                "From your run: what percentage of the whole model's parameters does the new head hold (printed in "
                "section 5)? (2 decimals)"
            ),
            answer=None,
            measured="head_percent",
            tolerance=0.005,
            rel_tolerance=0.02,
            why=(
                "A new head is a tiny part of the model: with the backbone frozen, almost nothing is trained, "
                "which is why little data suffices."
            ),
            wrong={
                "low": "divide the head's count by the whole model's and multiply by 100.",
                "high": "the head is Linear(1280, 3): a few thousand of about 2.2 million.",
            },
        ),
        "q6": Question(
            "After `replace_classifier(net, 3)`, which of MobileNetV2's weights are still the published ones?",
            options={
                "a": "only the first layer",
                "b": "all but the last Linear layer",
                "c": "none: a new head resets the network",
            },
            answer="b",
            why=(
                "Only `classifier[1]` is new (random); every convolution and BatchNorm keeps its ImageNet weights, "
                "which is the point of transfer."
            ),
            wrong={
                "a": "every stage keeps its weights, not only the first.",
                "c": "replacing one module leaves the others untouched.",
            },
        ),
        "q7": Question(
            "Why take the input size, mean and std from the weights' spec rather than choosing your own?",
            options={
                "a": "the spec's values are faster to compute",
                "b": (
                    "the weights were trained on inputs prepared one exact way; another input distribution "
                    "shifts every activation"
                ),
                "c": "other values raise an error",
            },
            answer="b",
            why=(
                "A network is a function of the inputs it was trained on: the spec (like torchvision's "
                "`transforms` and timm's `pretrained_cfg`) records how to prepare them."
            ),
            wrong={
                "a": "speed is not the reason; matching the training inputs is.",
                "c": "nothing checks it: wrong preprocessing fails silently, with worse predictions.",
            },
        ),
        "q8": Question(
            ("A checkpoint's keys all start with `module.` and `load_state_dict` fails on them. The likeliest cause?"),
            options={
                "a": "the file is corrupt",
                "b": "it belongs to another architecture",
                "c": "it was saved from a model wrapped in DataParallel or DistributedDataParallel",
            },
            answer="c",
            why=("The wrappers hold the model as `.module`; strip the prefix (or save `model.module.state_dict()`)."),
            wrong={
                "a": (
                    "a corrupt file fails to load at all, or fails its hash; consistent prefixes point to a wrapper."
                ),
                "b": "another architecture gives different names and shapes, not one common prefix.",
            },
        ),
        "q9": Question(
            "`load_state_dict(sd, strict=False)` returns the missing and unexpected keys. Why read them?",
            options={
                "a": "strict=False is slower",
                "b": "they are always empty",
                "c": ("a silent mismatch leaves layers at random initialisation: the model loads but predicts badly"),
            },
            answer="c",
            why=(
                "strict=False is for the keys you mean to skip (e.g. a replaced head); anything else listed there "
                "is a bug waiting to show up as poor accuracy."
            ),
            wrong={
                "a": "speed is the same.",
                "b": "with a replaced head they list at least the head's weight and bias.",
            },
        ),
    },
    research=[
        (
            "Load `efficientnet_lite0` instead of MobileNetV2: how many parameters, and how do its top-5 guesses "
            "on the food photos compare?"
        ),
        (
            "Read torchvision's weights metadata (`torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2.meta`): "
            "which recipe trained them and what accuracy is claimed?"
        ),
    ],
)
