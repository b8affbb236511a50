"""Exercises and quiz of notebook 08 (data vs hand-engineering).

- :data:`HAND_BASELINE` (main exercise): a hand-engineered baseline in plain numpy/scikit-learn: features of the
  learner's choice (colour histograms, HOG) + logistic regression, trained on 20 food photos per class; the check
  scores its predictions on the real test photos, handed over in a fresh random order (a function that returns the
  stored test labels scores at chance), against the reference's accuracy (within a margin).
- :data:`CHANNEL_HISTOGRAM` (kata): a per-channel colour histogram.
- :data:`QUIZ`.

Importing this module is cheap: photos load on the first check (memoised).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from convlab.exercises.core import Exercise, Question, Quiz, expect, expect_near_reference

__all__ = [
    "HAND_BASELINE",
    "CHANNEL_HISTOGRAM",
    "QUIZ",
    "reference_hand_baseline",
    "reference_channel_histogram",
    "N_PER_CLASS",
    "MARGIN",
]

N_PER_CLASS = 20  # training photos per class in the check
MARGIN = 0.10  # accepted shortfall against the reference's test accuracy (about 5 of 48 photos)


def reference_hand_baseline(train_images, train_labels, test_images) -> torch.Tensor:
    """Colour histogram (8 bins per channel, joint) + HOG (64 px grayscale) -> standardise -> logistic regression.

    train_images, test_images: lists of uint8 ``(3, H, W)`` photos; train_labels: ``(n,)`` ints.
    Returns the predicted class of every test photo, ``(m,)`` int64.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from convlab.handfeatures import hand_features

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(hand_features(list(train_images)).numpy(), np.asarray(train_labels))
    return torch.as_tensor(clf.predict(hand_features(list(test_images)).numpy()), dtype=torch.long)


@functools.lru_cache(maxsize=1)
def _food_task():
    from convlab.data import load_food

    food = load_food()
    train = food.train.per_class(N_PER_CLASS, seed=0)
    return list(train.images), train.labels.clone(), list(food.test.images), food.test.labels.clone()


@functools.lru_cache(maxsize=1)
def _reference_accuracy() -> float:
    tr_x, tr_y, te_x, te_y = _food_task()
    return float((reference_hand_baseline(tr_x, tr_y, te_x) == te_y).float().mean())


def _test_hand_baseline(hand_baseline) -> None:
    tr_x, tr_y, te_x, te_y = _food_task()
    order = torch.randperm(len(te_y)).tolist()  # a fresh order: predictions must come from the photos themselves
    te_x, te_y = [te_x[i] for i in order], te_y[order]
    pred = hand_baseline(list(tr_x), tr_y.clone(), te_x)
    expect(
        pred is not None and hasattr(pred, "__len__"),
        f"return the predicted class of every test photo (a tensor or array), got {type(pred).__name__}",
    )
    pred = torch.as_tensor(np.asarray(pred)).long().flatten()
    expect(len(pred) == len(te_y), f"return one prediction per test photo ({len(te_y)}), got {len(pred)}")
    acc, ref = float((pred == te_y).float().mean()), _reference_accuracy()
    majority = float(torch.bincount(te_y).max()) / len(te_y)
    expect(
        acc > majority + 0.1,
        f"test accuracy {acc:.3f} is no better than always answering the commonest class "
        f"({majority:.3f}): are the features informative, and the labels passed to fit?",
    )
    expect_near_reference(acc, ref, MARGIN, "the real test photos", "Standardise the features; add HOG or colour.")


HAND_BASELINE = Exercise(
    name="hand_baseline",
    test=_test_hand_baseline,
    reference=reference_hand_baseline,
    hints=[
        "Turn every photo into a fixed-length vector of numbers you chose (how much of each colour; which way the "
        "edges point), standardise each number over the training photos, and fit a linear classifier.",
        "Features: convlab.handfeatures has colour histograms and HOG (or compute your own with numpy or "
        "scikit-image), one row per photo; torch.cat joins feature blocks. Classifier: scikit-learn's "
        "StandardScaler and LogisticRegression (a small C regularises; raise max_iter if it warns), chained with "
        "make_pipeline; fit on the training rows, predict the test rows.",
    ],
    skill="a hand-engineered baseline on real photos",
    handle="nb08.HAND_BASELINE",
)


def reference_channel_histogram(image: torch.Tensor, bins: int = 4) -> torch.Tensor:
    """uint8 ``(3, H, W)`` -> ``(3 * bins,)``: R's bins, then G's, then B's, each channel's part summing to 1."""
    idx = (image.long() * bins) // 256
    counts = torch.stack([torch.bincount(idx[c].flatten(), minlength=bins) for c in range(3)]).float()
    return (counts / counts.sum(1, keepdim=True)).flatten()


def _test_channel_histogram(channel_histogram) -> None:
    img = torch.zeros(3, 4, 4, dtype=torch.uint8)
    img[0, :2] = 255
    img[1] = 100
    h = channel_histogram(img, bins=4)
    expect(
        isinstance(h, torch.Tensor) and tuple(h.shape) == (12,),
        "return a tensor of 3 * bins numbers: R's bins, then G's, then B's",
    )
    expect(torch.allclose(h.float().view(3, 4).sum(1), torch.ones(3)), "normalise each channel's counts to sum to 1")
    expect(
        torch.allclose(h.float(), torch.tensor([0.5, 0, 0, 0.5, 0, 1, 0, 0, 1, 0, 0, 0])),
        "0..63 is bin 0, 64..127 bin 1, ..., 192..255 bin 3",
    )
    photo = _food_task()[0][0]
    got = channel_histogram(photo, bins=8)
    expect(
        torch.allclose(got.float(), reference_channel_histogram(photo, 8), atol=1e-6),
        "wrong on a real food photo with bins=8: bin of a pixel value v is v * bins // 256",
    )
    expect(
        torch.allclose(channel_histogram(photo.flip(-1), bins=8).float(), got.float(), atol=1e-6),
        "a histogram only counts: a mirror must not change it",
    )


CHANNEL_HISTOGRAM = Exercise(
    name="channel_histogram",
    test=_test_channel_histogram,
    reference=reference_channel_histogram,
    hints=[
        "Count, per channel, how many pixels fall in each of `bins` equal ranges of 0..255; divide by the pixel count.",
        "A pixel value v in 0..255 falls in bin v * bins // 256 (integer arithmetic: convert from uint8 first). "
        "torch.bincount counts how often each bin occurs (minlength fixes the length); do it per channel.",
    ],
    skill="a colour histogram feature",
    handle="nb08.CHANNEL_HISTOGRAM",
)


QUIZ = Quiz(
    "Quiz: data vs hand-engineering",
    {
        "q1": Question(
            "With 5 training photos per class of food, which method is most likely to be most accurate?",
            answer="c",
            options={
                "a": "a small CNN trained from scratch",
                "b": "colour histogram + linear",
                "c": "frozen ImageNet features + a linear head",
            },
            why="Pretrained features bring the most knowledge (1.2M labelled photos); with 5 photos per class the data "
            "cannot supply it.",
            wrong={
                "a": "A CNN from scratch must learn everything from 15 photos.",
                "b": "Hand features help, but encode far less than ImageNet features.",
            },
        ),
        "q2": Question(
            "A joint colour histogram of a photo does not change when you...",
            answer="a",
            options={
                "a": "mirror the photo, or shuffle its pixels in any way",
                "b": "brighten the photo",
                "c": "swap its red and blue channels",
            },
            why="A histogram only counts colours; where they are does not matter.",
            wrong={"b": "Brightening moves pixels to other bins.", "c": "Swapping channels moves counts between bins."},
        ),
        "q3": Question(
            "A test set has 48 photos. How many percentage points of accuracy is one photo? (2 decimals)",
            answer=2.08,
            tolerance=0.01,
            why="1 / 48 = 2.08%: differences of a photo or two are noise; hence the seeds and the intervals.",
            wrong={"low": "Divide 100 by 48.", "high": "Divide 100 by 48."},
        ),
        "q4": Question(
            "The CNN from scratch overtakes HOG + linear at n images per class. If you improve the hand features, "
            "where does the crossover move?",
            answer="b",
            options={
                "a": "to smaller n",
                "b": "to larger n: the CNN needs more data to catch up with a stronger baseline",
                "c": "nowhere: the crossover depends only on the CNN",
            },
            why="A better baseline raises the bar the learned model must clear, so it needs more data to do it.",
            wrong={
                "a": "A stronger baseline is harder to overtake, not easier.",
                "c": "A crossover is where two curves meet: moving either moves it.",
            },
        ),
        "q5": Question(
            (
                "From your run: trained on the last seed's photos, which share of the test photos did your "
                "hand-engineered baseline classify correctly (printed above)? (3 decimals)"
            ),
            answer=None,
            measured="hand_acc",
            tolerance=0.0015,
            why=(
                "Read beside the learned features' accuracy at the same size, that is the gap that knowledge put "
                "in by hand leaves."
            ),
            wrong={
                "low": "the last line printed under your hand_baseline's check.",
                "high": "the last line printed under your hand_baseline's check.",
            },
        ),
        "q6": Question(
            "What does HOG describe?",
            options={
                "a": "the orientations of edges in small cells, normalised over blocks: shape, not colour",
                "b": "the colour distribution",
                "c": "filters learned from the data",
            },
            answer="a",
            why=(
                "Dalal and Triggs (2005): gradient orientation histograms per cell; robust to lighting, blind to "
                "colour."
            ),
            wrong={
                "b": "that is a colour histogram.",
                "c": "HOG's filters are fixed by hand (image gradients).",
            },
        ),
        "q7": Question(
            "Why standardise hand features before a logistic regression?",
            options={
                "a": "it adds information",
                "b": "scikit-learn refuses unscaled features",
                "c": (
                    "features on different scales are regularised and optimised unequally; standardising puts "
                    "them on one footing"
                ),
            },
            answer="c",
            why=(
                "L2 regularisation penalises all weights alike, so a feature measured in large units gets a small "
                "weight cheaply: scale decides, not usefulness."
            ),
            wrong={
                "a": "a linear rescaling adds nothing; it changes how the fit treats each feature.",
                "b": "it accepts them, and fits worse.",
            },
        ),
        "q8": Question(
            "Why does every point of the learning curves get several seeds?",
            options={
                "a": "seeds change the test set",
                "b": (
                    "with few photos per class, which photos are drawn moves accuracy by more than many "
                    "differences between methods"
                ),
                "c": "to use the cores",
            },
            answer="b",
            why=(
                "The spread over seeds is the yardstick for a difference: without it, one lucky draw decides the "
                "verdict."
            ),
            wrong={
                "a": "the test set is fixed; the training draw changes.",
                "c": "seeds are about evidence, not speed.",
            },
        ),
        "q9": Question(
            "In 2012, how did the best hand-engineered ImageNet entry compare with AlexNet (top-5 error)?",
            options={
                "a": "about 26% against AlexNet's 15%",
                "b": "about equal",
                "c": "better than AlexNet",
            },
            answer="a",
            why=(
                "Fisher vectors on SIFT reached 26.2% top-5 error, AlexNet 15.3%: with 1.2 M images, learned "
                "features won by a wide margin."
            ),
            wrong={
                "b": "the gap was about 11 points.",
                "c": "AlexNet won that year's challenge.",
            },
        ),
    },
    research=[
        (
            "Add a third hand feature (e.g. local binary patterns from scikit-image) to your baseline: does the "
            "crossover with the CNN move, and by how much?"
        ),
        (
            "At which training-set size do frozen ImageNet features stop beating your hand baseline on "
            "Fashion-MNIST, if ever?"
        ),
    ],
)
