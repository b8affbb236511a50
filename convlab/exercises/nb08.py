"""Exercises and quiz of notebook 08 (data vs hand-engineering).

- :data:`HAND_BASELINE` (main exercise): a hand-engineered baseline in plain numpy/scikit-learn: features of the
  learner's choice (colour histograms, HOG) + logistic regression, trained on 20 food photos per class; the check
  scores its predictions on the real test photos, handed over in a fresh random order (a function that returns the
  stored test labels scores at chance), against the reference's accuracy (within a margin).
- :data:`FOOD_FEATURES`: features of the learner's own design for the food photos, one row per photo; the check fits
  a standardised logistic regression on them for three draws of 20 photos per class and passes when they beat the
  colour histogram alone on the real test photos by :data:`MIN_GAIN`. The notebook then runs them in its learning
  curve.
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
    "FOOD_FEATURES",
    "QUIZ",
    "reference_hand_baseline",
    "reference_food_features",
    "MIN_GAIN",
    "FEATURE_SEEDS",
    "N_PER_CLASS",
    "MARGIN",
]

N_PER_CLASS = 20  # training photos per class in the check
MARGIN = 0.10  # accepted shortfall against the reference's test accuracy (about 5 of 48 photos)
FEATURE_SEEDS = (0, 1, 2)  # the draws of training photos on which food_features is checked
MIN_GAIN = 0.04  # how much food_features must beat the colour histogram by (mean accuracy over the draws: 2 photos)


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


def reference_food_features(images) -> torch.Tensor:
    """Hue, saturation and value histograms (16 bins each), the mean colour of a 4 x 4 grid over the centre square
    (where the colours sit), a histogram of uniform local binary patterns (texture) and HOG on a 32 px square
    (coarse shape), one row per photo.

    images: a list of uint8 ``(3, H, W)`` photos of any sizes. Returns float32 ``(B, 48 + 48 + 10 + 324)``.
    """
    from skimage.feature import local_binary_pattern

    from convlab.handfeatures import color_histogram, hog_features
    from convlab.preprocess import fit_size

    rows = []
    for image in images:
        square = fit_size(image, (64, 64))  # shorter side to 64 px, centre crop
        layout = torch.nn.functional.adaptive_avg_pool2d(square[None].float() / 255, 4).flatten()
        gray = (square.float() * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).round().to(torch.uint8)
        codes = local_binary_pattern(gray.numpy(), 8, 1, "uniform").astype(np.int64).ravel()  # 0..9
        texture = torch.from_numpy(np.bincount(codes, minlength=10) / codes.size).float()
        shape = hog_features(image, size=32)  # edge orientations on a coarse 32 px square
        rows.append(torch.cat([color_histogram(image, 16, "hsv"), layout, texture, shape]))
    return torch.stack(rows)


def _linear_accuracy(train_features, train_labels, test_features, test_labels) -> float:
    """Standardise -> logistic regression (C = 0.1), as :class:`convlab.handfeatures.FeatureClassifier` fits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(train_features, np.asarray(train_labels))
    return float((clf.predict(test_features) == np.asarray(test_labels)).mean())


@functools.lru_cache(maxsize=1)
def _food_draws():
    """The check's three draws of 20 training photos per class, and the test photos."""
    from convlab.data import load_food

    food = load_food()
    draws = [food.train.per_class(N_PER_CLASS, seed=s) for s in FEATURE_SEEDS]
    return [(list(d.images), d.labels.clone()) for d in draws], list(food.test.images), food.test.labels.clone()


@functools.lru_cache(maxsize=1)
def _colour_accuracy() -> float:
    """The colour histogram's mean test accuracy over the check's draws: the bar that the learner's features clear."""
    from convlab.handfeatures import color_histogram

    draws, te_x, te_y = _food_draws()
    test = color_histogram(te_x).numpy()
    return float(np.mean([_linear_accuracy(color_histogram(x).numpy(), y, test, te_y) for x, y in draws]))


def _feature_rows(food_features, images, what: str) -> np.ndarray:
    out = food_features(list(images))
    expect(
        isinstance(out, torch.Tensor | np.ndarray),
        f"return a tensor (or array) of features, one row per photo, got {type(out).__name__}",
    )
    out = torch.as_tensor(np.asarray(out)).float()
    expect(
        out.ndim == 2 and out.shape[0] == len(images),
        f"return a (B, D) tensor: one row per photo ({len(images)} {what}), got shape {tuple(out.shape)}",
    )
    expect(bool(torch.isfinite(out).all()), f"the features of the {what} hold nan or inf: guard every division")
    return out.numpy()


def _test_food_features(food_features) -> None:
    draws, te_x, te_y = _food_draws()
    test = _feature_rows(food_features, te_x, "test photos")
    alone = _feature_rows(food_features, te_x[:1], "photo")
    expect(
        np.allclose(alone[0], test[0], atol=1e-5),
        "the first test photo's features differ when it comes alone: each row must depend on its own photo only "
        "(no statistics over the list; standardising is the classifier's job)",
    )
    accs = []
    for x, y in draws:
        train = _feature_rows(food_features, x, "training photos")
        expect(
            train.shape[1] == test.shape[1],
            f"every photo needs the same number of features: {train.shape[1]} for the training photos, "
            f"{test.shape[1]} for the test photos (photos differ in size: resize or pool to a fixed grid)",
        )
        accs.append(_linear_accuracy(train, y, test, te_y))
    acc, colour = float(np.mean(accs)), _colour_accuracy()
    expect(
        acc >= colour + MIN_GAIN,
        f"your features score {acc:.3f} on the 48 test photos (mean of {len(draws)} draws), the colour histogram "
        f"alone {colour:.3f}: beat it by at least {MIN_GAIN:.3f}. What do the photos show besides their colours?",
    )


FOOD_FEATURES = Exercise(
    name="food_features",
    test=_test_food_features,
    reference=reference_food_features,
    hints=[
        "The colour histogram already says which colours occur. Add what it cannot see: where in the frame the "
        "colours sit (a coarse grid of mean colours over a square crop), how pure they are (saturation), and the "
        "texture of the surface (how the gray level changes between neighbouring pixels). Make every photo give the "
        "same number of values.",
        "convlab.preprocess.fit_size(image, (64, 64)) squares a photo; torch.nn.functional.adaptive_avg_pool2d pools "
        "it to a fixed grid; hf.color_histogram(image, bins, 'hsv') counts hue, saturation and value; "
        "skimage.feature.local_binary_pattern(gray_uint8, 8, 1, 'uniform') gives a texture code per pixel (count them "
        "with np.bincount); hf.hog_features gives edge orientations. torch.cat joins the blocks of one photo, "
        "torch.stack the photos.",
    ],
    skill="hand-engineering features that encode what you know about the photos",
    handle="nb08.FOOD_FEATURES",
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
                "From your run: at 20 photos per class on the last seed, which share of the test photos did "
                "hand_baseline classify correctly in the learning curve (printed above)? (3 decimals)"
            ),
            answer=None,
            measured="hand_acc",
            tolerance=0.0015,
            why=(
                "Read beside the learned features' accuracy at the same size, that is the gap that knowledge put "
                "in by hand leaves."
            ),
            wrong={
                "low": "the last line printed under the food photos' crossovers.",
                "high": "the last line printed under the food photos' crossovers.",
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
        "q10": Question(
            "At 100 images per class a CNN minus HOG gap is +0.4 points, 95% interval [-0.3, +1.1] over 5 paired "
            "seeds. What does the course's rule call it?",
            options={
                "a": "shown better: the mean gap is positive",
                "b": "a tie: the interval includes 0, so these runs cannot tell the two methods apart",
                "c": "shown worse: the interval reaches below 0",
            },
            answer="b",
            why=(
                "A verdict needs the interval of the paired differences to exclude 0; here it does not, so the line "
                "says tie, and a crossover drawn there would be drawn in noise."
            ),
            wrong={
                "a": "a positive mean with an interval that includes 0 is what chance alone often gives.",
                "c": "the interval includes both signs: neither direction is shown.",
            },
        ),
    },
    research=[
        (
            "Drop one block of your food_features at a time: without which block does the gap to the colour "
            "histogram shrink most, and at which sizes does its interval still exclude 0?"
        ),
        (
            "At which training-set size do frozen ImageNet features stop beating your hand baseline on "
            "Fashion-MNIST, if ever?"
        ),
    ],
)
