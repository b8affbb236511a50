"""Data sets: de-duplication counts, split determinism, no image in two splits, clear errors on bad folders."""

from __future__ import annotations

import pytest
import torch

from convlab import load_fashion_mnist, load_food, load_image_folder
from convlab.data import ImageSet


@pytest.fixture(scope="module")
def food():
    return load_food()


def test_food_default_is_three_groups_deduplicated(food):
    assert food.classes == ("fruits", "other_vegetables", "marine_fish")
    # 238 files, of which one vegetable photo is stored twice (D019 and D031).
    assert food.info == {"files": 238, "distinct": 237, "per_class": [68, 77, 92]}
    assert len(food.train) + len(food.val) + len(food.test) == 237


def test_food_four_groups_counts():
    s = load_food(("C", "D", "E", "P"))
    assert s.info["per_class"] == [34, 77, 68, 92]


def _all_fingerprints(ims: ImageSet) -> set[bytes]:
    return {im.numpy().tobytes() for im in ims.images}


def test_no_image_in_two_splits(food):
    tr, va, te = (_all_fingerprints(s) for s in (food.train, food.val, food.test))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr) == len(food.train)


def test_no_near_duplicate_across_splits(food):
    """The food set holds re-encoded copies of one photo (D019 = D031): none may sit on both sides of a split."""
    import torch.nn.functional as F

    def thumbs(s):
        return (
            torch.stack([F.interpolate(im[None].float(), size=(32, 32), mode="area")[0] for im in s.images]).flatten(1)
            / 255
        )

    tr, va, te = thumbs(food.train), thumbs(food.val), thumbs(food.test)
    for a, b in ((tr, va), (tr, te), (va, te)):
        rms = torch.cdist(a, b) / a.shape[1] ** 0.5
        assert rms.min() > 0.05, f"a near-duplicate pair across splits: RMS {rms.min():.4f}"


def test_fashion_mnist_counts_are_checked_before_loading():
    for kwargs in ({"train_per_class": -5}, {"train_per_class": 0}, {"test_per_class": 1001}, {"val_per_class": 2.5}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            load_fashion_mnist(**kwargs)


def test_split_is_deterministic_and_seed_dependent(food):
    again = load_food()
    assert again.train.ids == food.train.ids and again.test.ids == food.test.ids
    assert again.train.fingerprint() == food.train.fingerprint()
    other = load_food(seed=1)
    assert other.train.ids != food.train.ids
    # stratified: each class keeps ~60/20/20 in every seed
    counts = torch.bincount(other.test.labels, minlength=3).tolist()
    assert counts == torch.bincount(food.test.labels, minlength=3).tolist()


def test_items_are_uint8_chw(food):
    image, label = food.train[0]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3 and 0 <= label < 3


def test_fingerprint_changes_with_one_pixel(food):
    sub = food.train.subset(range(5))
    images = [im.clone() for im in sub.images]
    images[2][0, 0, 0] ^= 1
    changed = ImageSet(images, sub.labels, sub.classes)
    assert changed.fingerprint() != sub.fingerprint()


def test_food_bad_groups():
    with pytest.raises(ValueError, match="groups"):
        load_food(("E", "Z"))
    with pytest.raises(TypeError, match="groups"):
        load_food("EDP")


def test_fashion_mnist_sizes_and_determinism():
    s = load_fashion_mnist(train_per_class=20, test_per_class=10, val_per_class=5)
    assert (len(s.train), len(s.val), len(s.test)) == (200, 50, 100)
    assert s.train.images.shape[1:] == (1, 28, 28) and s.train.images.dtype == torch.uint8
    full = load_fashion_mnist()
    assert len(full.train) + len(full.val) == 60_000 and len(full.test) == 10_000
    assert (
        load_fashion_mnist(train_per_class=20, test_per_class=10, val_per_class=5).train.fingerprint()
        == s.train.fingerprint()
    )
    assert not set(s.train.ids) & set(s.val.ids)


def _write_folder(root, food, corrupt=False):
    from PIL import Image

    for c, name in enumerate(("apple", "fish")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(food.train.images[c * 5 + i].permute(1, 2, 0).numpy()).save(root / name / f"{i}.jpg")
    if corrupt:
        (root / "fish" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")


def test_image_folder_roundtrip_and_errors(tmp_path, food):
    _write_folder(tmp_path / "ok", food)
    s = load_image_folder(tmp_path / "ok")
    assert s.classes == ("apple", "fish") and len(s.train) + len(s.val) + len(s.test) == 10
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="class sub-folders"):
        load_image_folder(tmp_path / "empty")
    _write_folder(tmp_path / "bad", food, corrupt=True)
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image_folder(tmp_path / "bad")
    with pytest.warns(UserWarning, match="broken.jpg"):
        s = load_image_folder(tmp_path / "bad", on_error="skip")
    assert len(s.train) + len(s.val) + len(s.test) == 10
