"""Notebook 02 (little data: a new head on a frozen backbone): the head-training exercise and the quiz.

The check runs the learner's ``train_head`` on the notebook's real data: the frozen MobileNetV2 features of the
little-data Fashion-MNIST set (:data:`LITTLE`: 10 training images per class, 32 px, seed 0) and scores the trained
head on 500 test images against the reference loop on the same features. The learner's code gets copies of the
cached features (a function that changes them in place cannot poison later checks), and the head is scored on the
test images in a fresh random order (a head that replays the cached test labels scores at chance).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from convlab.exercises.core import Exercise, Question, Quiz, expect, expect_near_reference, learner_code

__all__ = ["LITTLE", "TRAIN_HEAD", "QUIZ", "train_head_reference", "little_features"]

#: The notebook's little-data setting (its configuration cell uses the same values).
LITTLE = {"per_class": 10, "test_per_class": 50, "input_size": 32, "seed": 0, "backbone": "mobilenet_v2"}
MARGIN = 0.05  # a head may lose this much test accuracy against the reference (500 test images: sem ~ 0.02)


def little_features() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train_x (100, 1280), train_y (100,), test_x (500, 1280), test_y (500,))``: frozen pooled features (fresh
    copies of the memoised extraction: changing them changes nothing for the next caller)."""
    return tuple(t.clone() for t in _little_features())


@functools.lru_cache(maxsize=1)
def _little_features() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from convlab.backbones import load_backbone
    from convlab.data import load_fashion_mnist
    from convlab.featcache import extract_features
    from convlab.transfer import Preprocess

    model = load_backbone(LITTLE["backbone"])
    splits = load_fashion_mnist(
        train_per_class=LITTLE["per_class"],
        val_per_class=2,
        test_per_class=LITTLE["test_per_class"],
        seed=LITTLE["seed"],
    )
    prep = Preprocess.from_spec(model.spec, size=LITTLE["input_size"], crop=False)
    train = extract_features(model, splits.train, "all", prep, device="cpu")
    test = extract_features(model, splits.test, "all", prep, device="cpu")
    return train.features, train.labels, test.features, test.labels


def train_head_reference(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> nn.Linear:
    """A softmax head (one ``nn.Linear``) trained with AdamW and cross-entropy on ``(N, D)`` features."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(features.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def _accuracy(head, x, y) -> float:
    with torch.no_grad():
        logits = head(x)
    expect(
        isinstance(logits, torch.Tensor) and tuple(logits.shape) == (len(y), 10),
        f"the head must map ({len(y)}, {x.shape[1]}) features to ({len(y)}, 10) logits, got "
        f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}",
    )
    return float((logits.argmax(1) == y).double().mean())


@functools.lru_cache(maxsize=1)
def _reference_accuracy() -> float:
    train_x, train_y, test_x, test_y = little_features()
    return _accuracy(train_head_reference(train_x, train_y, 10), test_x, test_y)


def _test_train_head(train_head) -> None:
    train_x, train_y, test_x, test_y = little_features()
    head = train_head(train_x, train_y, 10)
    expect(
        isinstance(head, nn.Module),
        f"return the trained head (an nn.Module such as nn.Linear), got {type(head).__name__}",
    )
    head.eval()
    order = torch.randperm(len(test_y))  # a fresh order: the head sees only features, never where the labels are
    acc, ref = _accuracy(learner_code(head), test_x[order], test_y[order]), _reference_accuracy()
    expect(acc > 0.3, f"test accuracy {acc:.3f} is near chance (0.1 for 10 classes): is the head trained at all?")
    expect_near_reference(acc, ref, MARGIN, "the 500 test images", "Train longer, or with a larger learning rate.")


TRAIN_HEAD = Exercise(
    name="train_head",
    test=_test_train_head,
    reference=train_head_reference,
    hints=[
        "The head is one nn.Linear(D, num_classes); train it like any model: for each epoch, shuffle, cut into "
        "mini-batches, compute the cross-entropy of the logits, backpropagate, step. The features never change.",
        "The API: torch.randperm for a shuffled order (with a torch.Generator for repeatability); "
        "torch.nn.functional.cross_entropy takes logits and integer labels; torch.optim.AdamW over the head's "
        "parameters, with zero_grad, backward and step per batch. About 100 epochs of 4 batches suit 100 images.",
    ],
    skill="a softmax head trained on cached features with a plain PyTorch loop",
    handle="nb02.TRAIN_HEAD",
)

QUIZ = Quiz(
    "Quiz: little data, a new head on frozen features",
    {
        "q1": Question(
            "Why can a feature cache not serve *randomly augmented* training images?",
            options={
                "a": "augmented images are too large to store",
                "b": "the cache holds one fixed view per image, so a random augmentation would be drawn once and "
                "replayed every epoch: the head would never see a new view",
                "c": "augmentation changes the labels",
                "d": "BatchNorm cannot process augmented images",
            },
            answer="b",
            why="A cache is valid only for a fixed function of a fixed input. Real on-the-fly augmentation needs a "
            "backbone pass per image per epoch; a cache can at most hold a few augmented copies drawn once.",
            wrong={
                "a": "size is not the problem: an augmented view has the same shape as the clean one.",
                "c": "label-preserving augmentation keeps the label; the problem is the replay of one draw.",
                "d": "BatchNorm in eval mode handles any input; the problem is that the cached view is fixed.",
            },
        ),
        "q2": Question(
            "You set `requires_grad=False` on every backbone parameter and call `model.train()`. What happens to the "
            "BatchNorm running means and variances during training?",
            options={
                "a": "nothing: frozen is frozen",
                "b": "they are replaced step by step by statistics of your batches",
                "c": "they are reset to zero and one",
            },
            answer="b",
            why="Running statistics are buffers, not parameters: in train() mode BatchNorm updates them from every "
            "batch, whatever requires_grad says. Keep frozen stages in eval mode (convlab's bn='frozen').",
            wrong={
                "a": "requires_grad only concerns gradients; BatchNorm's buffers are updated in the forward pass "
                "in train().",
                "c": "they are not reset; they drift towards your batches' statistics.",
            },
        ),
        "q3": Question(
            "A new head on MobileNetV2's 1280-d pooled features for 10 classes: how many trainable parameters?",
            answer=12810,
            tolerance=0,
            why="1280 x 10 weights + 10 biases = 12,810; the 2.2 M backbone parameters stay frozen.",
            wrong={
                "low": "count the weights (1280 x 10) and the biases (10).",
                "high": "only the head trains: 1280 x 10 + 10.",
            },
        ),
        "q4": Question(
            "The stage probe above found that on Fashion-MNIST with 10 images per class an earlier stage's features "
            "beat the last stage's. Which move does that suggest for little data far from ImageNet?",
            options={
                "a": "fine-tune the whole network on the 100 images",
                "b": "a linear head on an earlier stage's pooled features (CS231n's fourth case)",
                "c": "train the network from scratch",
            },
            answer="b",
            why="Late stages are specific to ImageNet's classes (Yosinski et al. 2014); with little data you cannot "
            "re-learn them, but you can read out the more generic features of an earlier stage.",
            wrong={
                "a": "100 images cannot re-learn 2.2 M weights: the run's fine-tune-all row at 10/class shows it.",
                "c": "from scratch needs far more data than fine-tuning; 100 images are hopeless.",
            },
        ),
        "q5": Question(
            (
                "From your run: what test accuracy did your `train_head` reach with 10 images per class (the line "
                "printed under it)? (3 decimals)"
            ),
            answer=None,
            measured="acc10",
            tolerance=0.0015,
            why=(
                "That number, with its standard error printed beside it, is your head's honest score on 10 images "
                "per class."
            ),
            wrong={
                "low": "read the line printed under your head's check.",
                "high": "read the line printed under your head's check.",
            },
        ),
        "q6": Question(
            "A head scores 0.70 on 500 test images. What is the standard error of that accuracy? (3 decimals)",
            answer=0.0205,
            tolerance=0.001,
            why=(
                "sqrt(p (1 - p) / n) = sqrt(0.7 x 0.3 / 500) = 0.0205: differences of a point or two between heads "
                "are within the noise of 500 images."
            ),
            wrong={
                "low": "sqrt(0.7 x 0.3 / 500): divide by n inside the root.",
                "high": "sqrt(0.7 x 0.3 / 500).",
            },
        ),
        "q7": Question(
            ("Why does a head on cached features train in seconds where fine-tuning takes minutes on the same images?"),
            options={
                "a": "the cached features are smaller images",
                "b": (
                    "the backbone runs once per image, and no gradient flows through it: each step trains one "
                    "linear layer"
                ),
                "c": "the head uses a larger learning rate",
            },
            answer="b",
            why=(
                "Almost all the compute of a step is the backbone's forward and backward pass; the cache pays the "
                "forward once and the frozen backbone needs no backward."
            ),
            wrong={
                "a": ("the features are vectors (1280 numbers), not images, and the saving is the skipped backbone."),
                "c": "the learning rate changes how far a step goes, not what a step costs.",
            },
        ),
        "q8": Question(
            (
                "A feature cache must be keyed by everything that changes its content. Which change does NOT need "
                "a new cache?"
            ),
            options={
                "a": "the input size",
                "b": "the head's learning rate",
                "c": "the normalisation (mean and std)",
                "d": "the backbone's weights",
            },
            answer="b",
            why=(
                "The cache holds the backbone's outputs: anything before or inside the backbone changes them; the "
                "head's training settings do not."
            ),
            wrong={
                "a": "another size gives other activations.",
                "c": "other inputs, other features.",
                "d": "other weights, other features.",
            },
        ),
    },
    research=[
        (
            "Train your head on the stage probe's best earlier stage instead of the last one: how much does the "
            "test accuracy at 10 images per class change, with its standard error?"
        ),
        (
            "Fit scikit-learn's LogisticRegression on the same cached features: the same accuracy as your loop? "
            "how long does each take?"
        ),
    ],
)
