"""Hand-engineered features: documented shapes and invariances; the methods fit, score and plug into the curve."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from convlab.cnnclassifiers import SmallCNNClassifier
from convlab.data import ImageSet, Splits
from convlab.handfeatures import (
    FeatureClassifier,
    FrozenBackboneClassifier,
    HandFeatureClassifier,
    color_histogram,
    hand_features,
    hog_dim,
    hog_features,
)
from convlab.learningcurves import learning_curve
from convlab.smallcnn import SmallCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int = 4, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("space, dim", [("rgb", 512), ("hsv", 24)])
def test_color_histogram_shape_and_l1_norm(space, dim):
    x = _images()
    h = color_histogram(x, bins=8, space=space)
    assert h.shape == (4, dim) and h.dtype == torch.float32
    assert torch.allclose(h.sum(1), torch.ones(4))  # one L1 norm over the whole vector (HSV: each channel 1/3)
    assert color_histogram(x[0], space=space).shape == (dim,)


@pytest.mark.parametrize("space", ["rgb", "hsv"])
def test_color_histogram_ignores_where_pixels_are(space):
    x = _images(2)
    h = color_histogram(x, space=space)
    assert torch.equal(color_histogram(x.flip(-1), space=space), h)  # horizontal flip
    perm = torch.randperm(48 * 64, generator=torch.Generator().manual_seed(1))
    shuffled = x.flatten(2)[:, :, perm].reshape(x.shape)
    assert torch.equal(color_histogram(shuffled, space=space), h)  # any permutation of the pixels


def test_color_histogram_joint_rgb_cell_index():
    im = torch.zeros(3, 4, 4, dtype=torch.uint8)
    im[0] = 255  # pure red: r bin 7, g bin 0, b bin 0 -> (7 * 8 + 0) * 8 + 0
    h = color_histogram(im)
    assert h[7 * 64] == 1 and h.sum() == 1


def test_hog_shape_and_no_flip_invariance():
    assert hog_dim() == 7 * 7 * 2 * 2 * 9 == 1764
    x = _images(3, 50, 70)
    f = hog_features(x)
    assert f.shape == (3, 1764) and hog_features(x[0], size=32).shape == (hog_dim(32),)
    # an image with a diagonal edge: HOG sees the orientation, so the mirror image differs
    im = torch.zeros(3, 64, 64, dtype=torch.uint8)
    im[:, torch.triu_indices(64, 64)[0], torch.triu_indices(64, 64)[1]] = 255
    assert not torch.allclose(hog_features(im), hog_features(im.flip(-1)))
    assert hand_features(x, ("color", "hsv", "hog")).shape == (3, 512 + 24 + 1764)


def test_color_histogram_is_nearly_invariant_to_resizing():
    import skimage.data
    import torch.nn.functional as F

    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None]  # a real photo, 512 x 512
    half = F.interpolate(photo.float(), scale_factor=0.5, mode="area").round().byte()
    h, h_half = color_histogram(photo), color_histogram(half)
    other = color_histogram(torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1)[None])
    # L1 distance: resizing moves little mass between bins, a different photo moves most of it
    assert (h - h_half).abs().sum() < 0.1 < (h - other).abs().sum()


def test_hog_is_robust_to_brightness_but_not_to_its_gradients():
    import skimage.data

    gray = torch.from_numpy(skimage.data.camera())[None].expand(3, -1, -1)[:, ::4, ::4].contiguous()  # 128 x 128
    dim = (gray.float() * 0.6).round().byte()  # darker: every gradient scaled by 0.6, block norms cancel it
    f, f_dim = hog_features(gray), hog_features(dim)
    assert torch.nn.functional.cosine_similarity(f, f_dim, dim=0) > 0.98  # (measured 0.987; transposed: 0.60)
    assert torch.nn.functional.cosine_similarity(f, hog_features(gray.transpose(1, 2).contiguous()), dim=0) < 0.9


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="images\\[0\\]"):
        color_histogram(torch.zeros(1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="space"):
        color_histogram(_images(1), space="lab")
    with pytest.raises(ValueError, match="kinds"):
        hand_features(_images(1), ("sift",))
    with pytest.raises(RuntimeError, match="call fit"):
        HandFeatureClassifier().score(None)


def _toy_splits(n_per_class: int = 12) -> Splits:
    """Two separable classes: reddish squares vs bluish stripes, with noise."""
    g = torch.Generator().manual_seed(0)
    images, labels = [], []
    for i in range(2 * n_per_class):
        c = i % 2
        im = torch.randint(0, 80, (3, 40, 40), generator=g)
        if c == 0:
            im[0] += 150
            im[:, 10:30, 10:30] += 60
        else:
            im[2] += 150
            im[:, :, ::6] += 90
        images.append(im.clamp(0, 255).to(torch.uint8))
        labels.append(c)
    full = ImageSet(images, labels, ("red", "blue"))
    idx = torch.arange(len(labels))
    return Splits(
        full.subset(idx[: 2 * n_per_class - 8]), full.subset(idx[-8:-4]), full.subset(idx[-4:]), full.classes, 0
    )


def test_small_cnn_shapes_and_fit_is_seeded():
    assert SmallCNN(5)(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    splits = _toy_splits()
    a = SmallCNNClassifier(size=16, pad=2, steps=4, batch_size=8, width=4).fit(splits.train, seed=1)
    b = SmallCNNClassifier(size=16, pad=2, steps=4, batch_size=8, width=4).fit(splits.train, seed=1)
    for pa, pb in zip(a.model_.parameters(), b.model_.parameters()):
        assert torch.equal(pa, pb)
    assert a.predict(splits.test).shape == (4,)


class _TinyBackbone(torch.nn.Module):
    """The part of the Backbone interface FrozenBackboneClassifier uses: ``spec.preprocess``, ``forward_features``."""

    def __init__(self):
        super().__init__()
        self.spec = SimpleNamespace(preprocess=lambda ims: torch.stack([im.float() / 255 for im in ims]))
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward_features(self, x):
        return self.conv(x).mean((2, 3))


def test_learning_curve_rows_and_feature_reuse():
    splits = _toy_splits()
    frozen = FrozenBackboneClassifier(_TinyBackbone(), batch_size=16)
    methods = {
        "hand": HandFeatureClassifier(("color", "hog"), size=32),
        "cnn": SmallCNNClassifier(size=16, pad=2, steps=2, width=4),
        "frozen": frozen,
    }
    rows = learning_curve(methods, splits, sizes_per_class=(2, 4, 6, 8), seeds=(0,))
    assert [(r["method"], r["n_per_class"]) for r in rows[:3]] == [("hand", 2), ("cnn", 2), ("frozen", 2)]
    assert len(rows) == 12 and all(0 <= r["accuracy"] <= 1 for r in rows)
    assert [r["n_train"] for r in rows if r["method"] == "hand"] == [4, 8, 12, 16]
    # the frozen features of the 16 training images plus 4 test images were each computed once
    assert len(frozen._cache.store) == 20
    assert max(r["accuracy"] for r in rows if r["method"] == "hand") == 1.0


def test_feature_classifier_fits_any_feature_function_and_computes_each_photo_once():
    splits = _toy_splits()
    calls = []

    def mean_colour(images):
        calls.append(len(images))
        return torch.stack([im.float().mean((1, 2)) for im in images])

    clf = FeatureClassifier(mean_colour, name="mean colour + linear").fit(splits.train)
    assert clf.score(splits.test) == 1.0 and clf.name == "mean colour + linear"
    clf.fit(splits.train, seed=1)
    assert sum(calls) == len(splits.train) + len(splits.test)  # the second fit reads the cache
    with pytest.raises(TypeError, match="extract: expected a function"):
        FeatureClassifier("colour")
