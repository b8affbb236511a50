"""The feature cache: keys, hits, corruption, interrupted extraction, random transforms (real backbone, 32 px)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torchvision.transforms import v2

from convlab.backbones import load_backbone
from convlab.data import ImageSet, Splits
from convlab.featcache import (
    FeatureCache,
    RandomTransformError,
    cache_key,
    check_deterministic,
    extract_features,
)
from convlab.transfer import Preprocess, freeze, split_at

PREP = Preprocess(size=32, resize=36)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return freeze(load_backbone("mobilenet_v2", num_classes=3), 4)


def _images(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def data() -> ImageSet:
    return ImageSet(_images(), [i % 3 for i in range(10)], ("a", "b", "c"))


class Flaky(torch.utils.data.Dataset):
    """An ImageSet whose loader dies after ``fail_after`` reads (a killed extraction), counting reads.

    The cache reads item 0 twice first (its determinism probe), then every item of the batches it computes.
    """

    def __init__(self, base: ImageSet, fail_after: int | None):
        self.base, self.fail_after, self.reads = base, fail_after, 0
        self.classes = base.classes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.fail_after is not None and self.reads >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.reads += 1
        return self.base[i]

    def fingerprint(self):
        return self.base.fingerprint()


def _expected(model, data, k):
    front, _ = split_at(model, k)
    front.eval()
    with torch.no_grad():
        return front(PREP([im for im, _ in (data[i] for i in range(len(data)))]))


# --------------------------------------------------------------------------------------------- keys
def test_key_changes_with_everything_that_changes_the_content(model, data):
    base = cache_key(model, data, 4, PREP)
    assert cache_key(model, data, 4, PREP) == base
    changed_image = [im.clone() for im in data.images]
    changed_image[3][0, 5, 5] ^= 1
    other_data = ImageSet(changed_image, data.labels, data.classes)
    assert cache_key(model, other_data, 4, PREP).digest != base.digest
    other_labels = ImageSet(data.images, data.labels.roll(1), data.classes)
    assert cache_key(model, other_labels, 4, PREP).digest != base.digest
    assert cache_key(model, data, 3, PREP).digest != base.digest
    assert cache_key(model, data, 4, Preprocess(size=32, resize=40)).digest != base.digest
    assert cache_key(model, data, 4, Preprocess(size=32, resize=36, mean=(0.5, 0.5, 0.5))).digest != base.digest
    assert cache_key(model, data, 4, PREP, dtype=torch.float16).digest != base.digest
    assert cache_key(model, data.with_transform(v2.Grayscale(3)), 4, PREP).digest != base.digest
    assert cache_key(load_backbone("efficientnet_lite0", num_classes=3), data, 4, PREP).digest != base.digest
    assert cache_key(load_backbone("mobilenet_v2", weights=None, num_classes=3), data, 4, PREP).digest != base.digest


def test_key_follows_the_frozen_weights_only(data):
    m = load_backbone("mobilenet_v2", num_classes=3)
    base = cache_key(m, data, 4, PREP).digest
    with torch.no_grad():
        m.stages.stage4[0].conv[0][0].weight.add_(1.0)  # after the boundary: same cached content
        m.head[1].weight.add_(1.0)
    assert cache_key(m, data, 4, PREP).digest == base
    with torch.no_grad():
        m.stages.stage2[0].conv[0][0].weight[0, 0, 0, 0] += 1e-3  # a fine-tuned frozen weight
    assert cache_key(m, data, 4, PREP).digest != base
    m2 = load_backbone("mobilenet_v2", num_classes=3)
    m2.stages.stem[1].running_mean[0] += 1e-3  # BatchNorm statistics count too
    assert cache_key(m2, data, 4, PREP).digest != base


# --------------------------------------------------------------------------------------------- hits
@pytest.mark.parametrize("k", [4, 7])
def test_miss_then_memory_mapped_hit_with_the_right_values(model, data, tmp_path, k):
    cache = FeatureCache(tmp_path)
    first = cache.get(model, data, k, PREP, shard_size=4, batch_size=3, progress=False)
    assert not first.report.hit and first.report.computed_shards == 3
    second = cache.get(model, data, k, PREP, shard_size=4, batch_size=3, progress=False)
    assert second.report.hit and second.path == first.path
    assert second.memory_mapped and not extract_features(model, data, k, PREP).memory_mapped
    expected = _expected(model, data, k)
    torch.testing.assert_close(second.features, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(second.labels, data.labels)
    x, y = second.get_batch(torch.tensor([3, 1]))
    torch.testing.assert_close(x, expected[[3, 1]], atol=1e-5, rtol=1e-5)
    assert y.tolist() == [0, 1] and second[2][1] == 2
    torch.testing.assert_close(extract_features(model, data, k, PREP).features, expected, atol=1e-5, rtol=1e-5)
    assert [e.complete for e in cache.entries()] == [True]


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_folding_batchnorm_changes_only_rounding_and_the_key(data, tmp_path, backbone):
    m = freeze(load_backbone(backbone, num_classes=3), 7)
    plain = FeatureCache(tmp_path).get(m, data, 7, PREP, progress=False)
    folded = FeatureCache(tmp_path).get(m, data, 7, PREP, fold_batchnorm=True, progress=False)
    assert folded.key.digest != plain.key.digest and not folded.report.hit
    torch.testing.assert_close(folded.features, plain.features, atol=1e-4, rtol=1e-4)
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())  # the model itself is untouched


def test_extraction_restores_the_modules_modes(model, data, tmp_path):
    model.train()
    FeatureCache(tmp_path).get(model, data, 5, PREP, progress=False)
    assert [s.training for s in model.stages] == [False] * 4 + [True] * 3
    model.eval()


def test_float16_storage(model, data, tmp_path):
    feats = FeatureCache(tmp_path).get(model, data, 7, PREP, dtype=torch.float16, progress=False)
    assert feats._features.dtype == torch.float16 and feats.get_batch(torch.arange(2))[0].dtype == torch.float32
    torch.testing.assert_close(feats.features.float(), _expected(model, data, 7), atol=2e-2, rtol=1e-2)


def test_splits_of_the_same_pool_share_one_entry(model, data, tmp_path):
    cache = FeatureCache(tmp_path)
    perms = [torch.arange(10), torch.randperm(10, generator=torch.Generator().manual_seed(3))]
    expected = _expected(model, data, 7)
    for i, p in enumerate(perms):
        sets = data.subset(p[:5]), data.subset(p[5:7]), data.subset(p[7:])
        train, val, test = cache.get_splits(model, Splits(*sets, data.classes, i), 7, PREP, progress=False)
        assert train.report.hit == (i == 1)
        for feats, idx in zip((train, val, test), (p[:5], p[5:7], p[7:])):
            torch.testing.assert_close(feats.features, expected[idx], atol=1e-5, rtol=1e-5)
            assert torch.equal(feats.labels, data.labels[idx]) and feats.classes == data.classes
    assert len(cache.entries()) == 1


# --------------------------------------------------------------------------------------------- damage
@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest", "delete"])
def test_a_damaged_cache_is_detected_and_rebuilt(model, data, tmp_path, damage):
    cache = FeatureCache(tmp_path)
    first = cache.get(model, data, 7, PREP, progress=False)
    path = first.path / "features.npy"
    del first
    if damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[-7] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "manifest":
        (path.parent / "manifest.json").write_text("{not json")
    else:
        path.unlink()
    with pytest.warns(RuntimeWarning, match="recomputing"):
        again = cache.get(model, data, 7, PREP, progress=False)
    assert not again.report.hit and again.report.rebuilt_because
    torch.testing.assert_close(again.features, _expected(model, data, 7), atol=1e-5, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(model, data, 7, PREP, progress=False).report.hit


def test_size_check_alone_catches_truncation(model, data, tmp_path):
    cache = FeatureCache(tmp_path, verify="size")
    path = cache.get(model, data, 7, PREP, progress=False).path / "features.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert cache.load(cache_key(model, data, 7, PREP)) is None


def test_a_killed_extraction_is_never_served_and_resumes(model, data, tmp_path):
    cache = FeatureCache(tmp_path)
    flaky = Flaky(data, fail_after=2 + 6)  # probe, then two batches of 3
    with pytest.raises(KeyboardInterrupt):
        cache.get(model, flaky, 4, PREP, shard_size=3, batch_size=2, progress=False)
    key = cache_key(model, flaky, 4, PREP)
    folder = cache.path_for(key)
    assert cache.load(key) is None
    assert not (folder / "manifest.json").exists() and not (folder / "features.npy").exists()
    assert [e.complete for e in cache.entries()] == [False]
    progress = json.loads((folder / "partial" / "progress.json").read_text())
    assert sorted(progress["shards"]) == ["0", "1"]

    flaky.fail_after, flaky.reads = None, 0
    feats = cache.get(model, flaky, 4, PREP, shard_size=3, batch_size=2, progress=False)
    assert (feats.report.reused_shards, feats.report.computed_shards) == (2, 2)
    assert flaky.reads == 2 + 4  # the probe, then only the two missing batches (3 + 1 images)
    torch.testing.assert_close(feats.features, _expected(model, data, 4), atol=1e-5, rtol=1e-5)
    assert not (folder / "partial").exists()


def test_a_damaged_shard_is_recomputed_on_resume(model, data, tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.get(model, Flaky(data, fail_after=2 + 7), 7, PREP, shard_size=3, batch_size=2, progress=False)
    shard = cache.path_for(cache_key(model, data, 7, PREP)) / "partial" / "shard_00001.npy"
    shard.write_bytes(shard.read_bytes()[:-8])
    feats = cache.get(model, data, 7, PREP, shard_size=3, batch_size=2, progress=False)
    assert (feats.report.reused_shards, feats.report.computed_shards) == (1, 3)
    torch.testing.assert_close(feats.features, _expected(model, data, 7), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- randomness
@pytest.mark.parametrize(
    "transform",
    [
        v2.RandomHorizontalFlip(),
        v2.Compose([v2.RandomResizedCrop(32), v2.ToDtype(torch.uint8)]),
        v2.ColorJitter(0.5),
        v2.RandomApply([v2.Grayscale(3)]),
    ],
)
def test_random_dataset_transforms_are_refused(model, data, tmp_path, transform):
    with pytest.raises(RandomTransformError, match="fixed view"):
        FeatureCache(tmp_path).get(model, data.with_transform(transform), 7, PREP, progress=False)
    assert not list(tmp_path.iterdir())


def test_convlab_augment_transforms_are_refused(model, data):
    from convlab.augment import RandomHorizontalFlip

    with pytest.raises(RandomTransformError, match="RandomHorizontalFlip"):
        check_deterministic(data.with_transform(RandomHorizontalFlip()), PREP)


def test_an_unknown_random_callable_is_caught_by_running_it_twice(model, data):
    def noisy(images):
        return PREP(images) + torch.rand(1)

    with pytest.raises(RandomTransformError, match="different outputs"):
        check_deterministic(data, noisy)

    def noisy_item(image):
        return image ^ torch.randint(0, 2, (1,), dtype=torch.uint8)

    with pytest.raises(RandomTransformError, match="differed"):
        check_deterministic(data.with_transform(noisy_item), PREP)


class Scale:
    """A custom preprocess whose ``cache_key()`` names everything that changes its output."""

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, images):
        return PREP(images) * self.factor

    def cache_key(self):
        return {"scale": self.factor, "then": PREP.key()}


def test_a_custom_preprocess_is_keyed_by_its_cache_key(model, data, tmp_path):
    cache, scale = FeatureCache(tmp_path), Scale(0.5)
    first = cache.get(model, data, 7, scale, progress=False)
    assert '"scale": 0.5' in first.key.preprocess and cache.get(model, data, 7, scale, progress=False).report.hit
    scale.factor = 0.25  # the same object, changed: a new key, not the old features
    changed = cache.get(model, data, 7, scale, progress=False)
    assert not changed.report.hit and changed.key.digest != first.key.digest
    front, _ = split_at(model, 7)
    with torch.no_grad():
        expected = front.eval()(PREP([data[i][0] for i in range(len(data))]) * 0.25)
    torch.testing.assert_close(changed.features, expected, atol=1e-5, rtol=1e-5)


class Halve:
    def __call__(self, images):
        return PREP(images) * 0.5

    def __repr__(self):
        return "Halve(PREP)"  # a name, not a description: it would stay the same if the factor changed


class Anonymous:
    def __call__(self, images):
        return PREP(images) * 0.5  # its repr is a memory address, which differs between runs and can be reused


def _halve(images):
    return PREP(images) * 0.5


@pytest.mark.parametrize("preprocess", [_halve, Halve(), Anonymous()], ids=["function", "repr", "address"])
def test_a_custom_preprocess_without_a_stable_description_is_refused(model, data, tmp_path, preprocess):
    with pytest.raises(ValueError, match=r"^preprocess: expected .*cache_key\(\)") as err:
        FeatureCache(tmp_path).get(model, data, 7, preprocess, progress=False)
    assert "extract_features" in str(err.value)
    assert not list(tmp_path.iterdir()), "nothing may be written for a refused preprocess"
    extract_features(model, data, 7, preprocess)  # the uncached path needs no key


def test_custom_dataset_transforms_need_a_stable_description_too(model, data, tmp_path):
    with pytest.raises(ValueError, match=r"^dataset\.transform: expected"):
        cache_key(model, data.with_transform(lambda im: im), 7, PREP)
    with pytest.raises(ValueError, match=r"^dataset\.transform: .*Lambda\(.*torchvision.transforms.v2._misc.Lambda"):
        cache_key(model, data.with_transform(v2.Compose([v2.Grayscale(3), v2.Lambda(lambda im: im)])), 7, PREP)
    grey = cache_key(model, data.with_transform(v2.Compose([v2.Grayscale(3)])), 7, PREP)
    assert "Grayscale" in grey.dataset_transform

    class NotJson(Scale):
        def cache_key(self):
            return object()

    with pytest.raises(TypeError, match=r"^preprocess: expected .*JSON-serialisable.*got object"):
        cache_key(model, data, 7, NotJson(0.5))


# --------------------------------------------------------------------------------------------- in-place edits
def test_an_image_or_label_changed_in_place_after_a_hit_is_not_served_stale(model, tmp_path):
    data = ImageSet(_images(), [i % 3 for i in range(10)], ("a", "b", "c"))  # its own tensors: edited below
    cache = FeatureCache(tmp_path)
    cache.get(model, data, 7, PREP, progress=False)
    assert cache.get(model, data, 7, PREP, progress=False).report.hit
    data.images[3][:, 10:20, 10:20] = 255 - data.images[3][:, 10:20, 10:20]  # one image's pixels, in place
    fresh = cache.get(model, data, 7, PREP, progress=False)
    assert not fresh.report.hit
    torch.testing.assert_close(fresh.features, _expected(model, data, 7), atol=1e-5, rtol=1e-5)

    data.labels[4] = (data.labels[4] + 1) % 3  # one label, in place
    relabelled = cache.get(model, data, 7, PREP, progress=False)
    assert not relabelled.report.hit and torch.equal(relabelled.labels, data.labels)
    assert relabelled.labels[4] != fresh.labels[4]
    shaded = data.with_transform(v2.Grayscale(3))
    assert cache.get(model, shaded, 7, PREP, progress=False).key.dataset == relabelled.key.dataset
    data.images[0][0, 0, 0] ^= 1  # the two sets share their tensors: the derived one sees the edit as well
    assert cache_key(model, shaded, 7, PREP).dataset != relabelled.key.dataset
