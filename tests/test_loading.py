"""File-backed loading: per-sample seeding (workers differ, a seed replays the epoch for any num_workers), bad files
give a clear error in the main process or are skipped with a warning, non-RGB files become RGB, device batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from convlab.loading import (
    FileImageDataset,
    NumpyBrightness,
    SampleLoadError,
    UnreadableImageError,
    augment_on_device,
    augmentation_draws,
    make_loader,
    naive_numpy_augment,
    sample_seed,
)
from convlab.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    affine_,
    affine_coefficients,
    fit_size,
    normalize,
    tile_w,
)


def _photo(rng: np.random.Generator, h: int = 40, w: int = 56) -> np.ndarray:
    """A smooth random colour image (so crops and jitter change it visibly)."""
    y, x = np.mgrid[0:h, 0:w]
    base, slope = rng.uniform(0, 255, 3), rng.uniform(-3, 3, (3, 2))
    img = base + np.stack([slope[c, 0] * y + slope[c, 1] * x for c in range(3)], -1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/<class>/ with 12 RGB JPEGs and PNGs of varied sizes in two classes."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir()
        for i in range(6):
            h, w = (40, 56) if i % 2 else (50, 37)
            Image.fromarray(_photo(rng, h, w)).save(root / c / f"{c}{i}.{'jpg' if i % 3 else 'png'}")
    return root


@pytest.fixture(scope="module")
def augmented(folder):
    aug = v2.Compose(
        [
            v2.RandomResizedCrop(24, scale=(0.3, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.4, 0.4, 0.4),
        ]
    )
    return FileImageDataset.from_folder(folder, size=24, transform=aug)


def _epochs(loader, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(n):
        images, labels = zip(*loader)
        out.append((torch.cat(images), torch.cat(labels)))
    return out


def test_items_are_fixed_size_uint8_rgb(folder):
    ds = FileImageDataset.from_folder(folder, size=(20, 30))
    assert ds.classes == ("cat", "dog") and len(ds) == 12
    shapes = {tuple(ds[i][0].shape) for i in range(len(ds))}
    assert shapes == {(3, 20, 30)} and ds[0][0].dtype == torch.uint8
    images, labels = next(iter(make_loader(ds, batch_size=5, shuffle=False)))
    assert images.shape == (5, 3, 20, 30) and labels.tolist() == [0] * 5


def test_fit_size_keeps_right_sized_images_and_covers_others():
    im = torch.randint(0, 256, (3, 30, 60), dtype=torch.uint8)
    assert fit_size(im, (30, 60)) is im
    assert fit_size(im, (16, 16)).shape == (3, 16, 16) and fit_size(im.float(), (40, 20)).shape == (3, 40, 20)


def test_fixed_seed_reproduces_every_epoch_for_any_num_workers(augmented):
    runs = {
        w: _epochs(make_loader(augmented, batch_size=4, num_workers=w, seed=7, persistent_workers=w == 2))
        for w in (0, 2)
    }
    for e in range(2):
        for w in (0, 2):
            assert torch.equal(runs[w][e][0], runs[0][e][0]) and torch.equal(runs[w][e][1], runs[0][e][1])
    # epochs differ from each other (new order and new draws), and another seed gives another epoch
    assert not torch.equal(runs[0][0][0], runs[0][1][0])
    other = _epochs(make_loader(augmented, batch_size=4, seed=8), 1)[0]
    assert not torch.equal(other[0], runs[0][0][0])


def test_set_epoch_replays_an_epoch(augmented):
    loader = make_loader(augmented, batch_size=6, seed=3)
    first, second = _epochs(loader)
    loader.sampler.set_epoch(1)
    assert torch.equal(_epochs(loader, 1)[0][0], second[0])


def test_workers_draw_different_augmentations(augmented):
    # The same file read twice in one epoch (a dataset of repeated paths) must get two different augmentations,
    # also when the two copies land on different workers.
    same = FileImageDataset([augmented.paths[0]] * 8, [0] * 8, size=24, transform=augmented.transform)
    images, _ = _epochs(make_loader(same, batch_size=2, num_workers=2, shuffle=False), 1)[0]
    assert len({im.numpy().tobytes() for im in images}) == 8


def test_the_numpy_seeding_bug_and_its_fix():
    rows = augmentation_draws(naive_numpy_augment(), num_workers=2, n=6, epochs=2, seeded=False)
    by_worker = {w: [r["draw"] for r in rows if r["worker"] == w] for w in (0, 1)}
    assert by_worker[0] == by_worker[1], "an RNG object copied into two workers draws the same numbers"
    draws = [r["draw"] for r in rows]
    assert draws[:6] == draws[6:], "non-persistent workers start every epoch from the same copy"
    fixed = {
        w: [r["draw"] for r in augmentation_draws(NumpyBrightness(), num_workers=w, n=6, epochs=2)] for w in (0, 2)
    }
    assert fixed[0] == fixed[2] and fixed[0][:6] != fixed[0][6:] and len(set(fixed[0])) > 3


def test_sample_seed_is_mixed_and_checked():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="index"):
        sample_seed(0, 0, -1)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Good RGB files, plus grayscale, RGBA, palette and CMYK files, and one corrupt 'JPEG' in class b."""
    root = tmp_path_factory.mktemp("messy")
    rng = np.random.default_rng(1)
    (root / "a").mkdir()
    (root / "b").mkdir()
    rgb = _photo(rng)
    Image.fromarray(rgb).save(root / "a" / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(root / "a" / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(root / "a" / "rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "b" / "palette.gif")
    Image.fromarray(rgb).convert("CMYK").save(root / "b" / "cmyk.jpg")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not the rest of a JPEG")
    return root


def test_non_rgb_files_become_rgb(messy):
    ds = FileImageDataset.from_folder(messy, size=16)
    names = [p.name for p in ds.paths]
    for name in ("gray.png", "rgba.png", "palette.gif", "cmyk.jpg"):
        image, _ = ds[names.index(name)]
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8, name
    gray, _ = ds[names.index("gray.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_file_raises_in_the_main_process_naming_it(messy, workers):
    ds = FileImageDataset.from_folder(messy, size=16)
    with pytest.raises(UnreadableImageError, match=r"broken\.jpg: not a readable image") as info:
        _epochs(make_loader(ds, batch_size=4, num_workers=workers), 1)
    assert "DataLoader worker" not in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_file_is_skipped_with_a_warning_when_asked(messy, workers):
    ds = FileImageDataset.from_folder(messy, size=16, on_error="skip")
    with pytest.warns(UserWarning, match=r"skipped unreadable image .*broken\.jpg"):
        images, labels = _epochs(make_loader(ds, batch_size=4, num_workers=workers, shuffle=False), 1)[0]
    assert images.shape == (5, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1]


def test_direct_indexing_of_a_corrupt_file_raises(messy):
    ds = FileImageDataset.from_folder(messy, size=16, on_error="skip")
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        ds[[p.name for p in ds.paths].index("broken.jpg")]


def test_a_failing_transform_names_the_sample_and_keeps_the_worker_traceback(folder):
    def bad(image):
        raise TypeError("this transform is broken")

    ds = FileImageDataset.from_folder(folder, size=16, transform=bad)
    with pytest.raises(SampleLoadError, match=r"\.(jpg|png)\) failed: TypeError: this transform is broken") as info:
        next(iter(make_loader(ds, batch_size=2, num_workers=2)))
    assert any("bad" in note for note in info.value.__notes__)


def test_bad_arguments_name_themselves(folder):
    with pytest.raises(ValueError, match="on_error"):
        FileImageDataset.from_folder(folder, size=16, on_error="ignore")
    with pytest.raises(ValueError, match="size"):
        FileImageDataset.from_folder(folder, size=0)
    with pytest.raises(ValueError, match="pin_memory"):
        make_loader(FileImageDataset.from_folder(folder, size=16), pin_memory="yes")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": -1}, ValueError, r"seed: expected an int in \[0, 2\*\*64\), got -1"),
        ({"seed": 2**64}, ValueError, "seed: expected an int"),
        ({"seed": 1.5}, TypeError, "seed: expected an int .* got float 1.5"),
        ({"seed": True}, TypeError, "seed: expected an int .* got bool"),
        ({"seed": "0"}, TypeError, "seed: expected an int .* got str"),
        ({"prefetch_factor": 0}, ValueError, "prefetch_factor: expected None or an int >= 1, got 0"),
        ({"prefetch_factor": 0, "num_workers": 2}, ValueError, "prefetch_factor: expected None or an int >= 1, got 0"),
        (
            {"prefetch_factor": 2.0, "num_workers": 2},
            TypeError,
            "prefetch_factor: expected None or an int >= 1, got float",
        ),
    ],
)
def test_make_loader_checks_seed_and_prefetch_factor_before_iterating(kwargs, error, message):
    # raised by make_loader itself: no iteration, so no worker is started
    with pytest.raises(error, match=message):
        make_loader(torch.utils.data.TensorDataset(torch.zeros(4, 3)), batch_size=2, **kwargs)


def test_make_loader_accepts_numpy_seeds_and_default_prefetch():
    ds = torch.utils.data.TensorDataset(torch.arange(6.0))
    a = [x for (x,) in make_loader(ds, batch_size=3, seed=np.int64(3))]
    b = [x for (x,) in make_loader(ds, batch_size=3, seed=3, prefetch_factor=None)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == 2


def test_device_augmentation_on_uint8_batches(folder):
    ds = FileImageDataset.from_folder(folder, size=24)  # workers only decode and resize

    def batch_flip(x):  # a per-sample batched augmentation
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x).float() / 255

    runs = []
    for _ in range(2):
        loader = augment_on_device(
            make_loader(ds, batch_size=4, num_workers=2, seed=1), batch_flip, device="cpu", seed=5
        )
        assert len(loader) == 3
        runs.append(_epochs(loader, 2))
    for e in range(2):
        assert runs[0][e][0].dtype == torch.float32 and torch.equal(runs[0][e][0], runs[1][e][0])
    plain = torch.cat([x for x, _ in make_loader(ds, batch_size=4, seed=1)]).float() / 255
    flipped = [torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(runs[0][0][0], plain)]
    kept = [torch.equal(a, b) for a, b in zip(runs[0][0][0], plain)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_normalize_is_the_formula_on_uint8_and_float_and_refuses_other_shapes():
    x = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    assert torch.equal(normalize(x, IMAGENET_MEAN, IMAGENET_STD), expected)
    floats = x.float()
    assert torch.equal(normalize(floats, IMAGENET_MEAN, IMAGENET_STD), expected) and torch.equal(floats, x.float())
    with pytest.raises(ValueError, match=r"x: expected a batch \(B, 3, H, W\).*got shape \(3, 4, 5\)"):
        normalize(x[0], IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_in_place_affine_form_is_the_normalisation_in_either_memory_format(channels_last):
    """``affine_`` (test-time augmentation and the fused pipeline) equals ``normalize`` up to float rounding, in the
    memory format of its input, and a per-sample offset shifts only its own sample."""
    x = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    scale, shift = affine_coefficients(IMAGENET_MEAN, IMAGENET_STD)
    out = affine_(x.float().contiguous(memory_format=fmt), scale, shift)
    assert out.is_contiguous(memory_format=fmt) and tile_w(scale, out).shape == (1, 3, 1, 5)
    torch.testing.assert_close(out, normalize(x, IMAGENET_MEAN, IMAGENET_STD), rtol=0, atol=1e-5)
    offset = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, -0.1]])
    scale, shift = affine_coefficients(IMAGENET_MEAN, IMAGENET_STD, offset=offset)
    moved = affine_(x.float().contiguous(memory_format=fmt), scale, shift)
    torch.testing.assert_close(moved[0], out[0], rtol=0, atol=0)
    expected = (moved[1] - out[1]) * torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(expected, offset[1].view(3, 1, 1).expand(3, 4, 5), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("mean", "std"),
    [((0.5, 0.5), (0.2, 0.2, 0.2)), ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2)), ((0.5, float("nan"), 0.5), (1, 1, 1))],
)
def test_one_mean_std_check_for_every_normalisation(mean, std):
    from convlab.augment import FusedTrainPipeline
    from convlab.preprocess import Preprocess

    for make in (
        lambda: Preprocess(mean=mean, std=std),
        lambda: FusedTrainPipeline(mean=mean, std=std),
        lambda: normalize(torch.zeros(1, 3, 2, 2), mean, std),
        lambda: affine_coefficients(mean, std),
    ):
        with pytest.raises(ValueError, match=r"mean, std: expected [23] finite numbers each"):
            make()
