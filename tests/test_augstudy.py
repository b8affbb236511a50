"""The with/without augmentation study: re-splitting, augmented views, determinism, honest verdicts."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from convlab import augment as aug
from convlab.augstudy import AugmentationStudy, SplitResult, augmentation_study, augmented_features, resplit
from convlab.backbones import load_backbone
from convlab.data import ImageSet, Splits, _stratified_split
from convlab.transfer import Preprocess


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits() -> Splits:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 36, 44 + i % 2), dtype=torch.uint8, generator=g) for i in range(15)]
    full = ImageSet(images, [i % 3 for i in range(15)], ("a", "b", "c"), [f"img{i:02d}" for i in range(15)])
    train, val, test = (full.subset(idx) for idx in _stratified_split(full.labels, (0.6, 0.2, 0.2), 0))
    return Splits(train, val, test, full.classes, 0)


def test_resplit_equals_splitting_the_pool_with_that_seed(splits):
    again = resplit(splits, 0)
    assert again.train.ids == splits.train.ids and again.test.ids == splits.test.ids
    other = resplit(splits, 1)
    assert sorted(other.train.ids + other.val.ids + other.test.ids) == [f"img{i:02d}" for i in range(15)]
    assert other.train.ids != splits.train.ids
    for s in (other.train, other.test):
        for i, im, y in zip(s.ids, s.images, s.labels):
            assert int(y) == int(i[3:]) % 3 and im.shape[-2] == 36


def test_resplit_rejects_duplicate_ids(splits):
    dup = Splits(splits.train, splits.train, splits.test, splits.classes, 0)
    with pytest.raises(ValueError, match="unique"):
        resplit(dup, 1)


def test_augmented_views_are_seeded_and_differ_from_each_other(splits):
    model = load_backbone("mobilenet_v2", num_classes=3)
    prep = Preprocess(size=32, resize=36)
    flip = aug.RandomResizedCrop(32, scale=(0.3, 1.0))
    a = augmented_features(model, splits.train.images, flip, prep, copies=2, seed=0, device="cpu")
    b = augmented_features(model, splits.train.images, flip, prep, copies=2, seed=0, device="cpu")
    assert a.shape == (2, len(splits.train), 1280)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])
    with pytest.raises(TypeError, match="uint8"):
        augmented_features(model, splits.train.images, lambda x: x.float(), prep, device="cpu")
    with pytest.raises(ValueError, match="smaller than"):
        augmented_features(model, splits.train.images, aug.RandomCrop(16), prep, device="cpu")


def test_colour_only_views_keep_the_eval_view_geometry(splits):
    model = load_backbone("mobilenet_v2", num_classes=3)
    prep = Preprocess(size=32, resize=36)
    same = augmented_features(model, splits.train.images[:4], v2.Identity(), prep, copies=1, device="cpu")[0]
    from convlab.featcache import extract_features

    clean = extract_features(model, ImageSet(splits.train.images[:4], [0] * 4, ("a",)), "all", prep, device="cpu")
    torch.testing.assert_close(same, clean.features, atol=1e-4, rtol=1e-3)


def test_study_runs_both_conditions_with_equal_steps(splits):
    color = aug.RandomColorShift(0.1)
    st = augmentation_study(splits, color, (0, 1), size=32, copies=2, epochs=2, device="cpu")
    assert [r.split_seed for r in st.rows] == [0, 1]
    assert st.epochs_without == 2 * (2 + 1) and st.forward_passes == 15 + 2 * len({i for s in (0, 1) for i in resplit(splits, s).train.ids})
    for r in st.rows:
        assert r.train_views_with == 3 * r.train_images and 0 <= r.acc_with <= 1 and r.gain == r.acc_with - r.acc_without
    again = augmentation_study(splits, color, (0, 1), size=32, copies=2, epochs=2, device="cpu")
    assert [r.acc_with for r in again.rows] == [r.acc_with for r in st.rows]


def _study(pairs):
    rows = [SplitResult(i, 100, 500, 50, a, b, b - a) for i, (a, b) in enumerate(pairs)]
    return AugmentationStudy(rows, "x", "m", 32, 4, 1, 5, 0)


def test_verdict_says_when_the_difference_is_noise():
    assert "cannot tell" in _study([(0.80, 0.82), (0.90, 0.88), (0.70, 0.74)]).verdict()
    assert "exceeds the spread" in _study([(0.80, 0.90), (0.81, 0.92), (0.79, 0.90)]).verdict()
    assert "several" in _study([(0.8, 0.9)]).verdict()
