"""Widget previews work without a Jupyter kernel: call update() and inspect the outputs."""

import matplotlib

matplotlib.use("Agg")

import pytest
import skimage.data
import torch

from convlab.widgets import AUGMENTATIONS, _grid, augmentation_preview, pca_explorer, png_bytes, static_grid

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def photo():
    return torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_preview_updates_on_slider_move(photo, name):
    prev = augmentation_preview(photo, name, size=64)
    first = bytes(prev.image.value)
    assert first.startswith(PNG) and prev.widget is not None
    prev.sliders["seed"].value = 7  # the observer fires update() as in a notebook
    assert bytes(prev.image.value).startswith(PNG)
    assert "manual_seed(7)" in prev.code.value and name in prev.code.value
    if name != "RandomHorizontalFlip":
        assert bytes(prev.image.value) != first


def test_code_line_reproduces_the_setting(photo):
    prev = augmentation_preview(photo, "RandomRotation", size=64)
    prev.sliders["degrees"].value = 40.0
    assert "RandomRotation(degrees=40.0, p=1.0" in prev.code.value


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_code_line_runs_and_draws_what_the_preview_drew(photo, name):
    """The line under a preview is code a learner can paste: it builds the same transform with the same seed."""
    import convlab.augment as aug

    prev = augmentation_preview(photo, name, size=64)
    prev.sliders["seed"].value = 3
    code = prev.code.value.removeprefix("<code>").removesuffix("</code>")
    pasted = eval(code, {"torch": torch, **{k: getattr(aug, k) for k in aug.__all__}})
    assert bytes(png_bytes(_grid(photo, pasted, prev.n, prev.ncols, prev.size))) == bytes(prev.image.value)


def test_static_grid_is_seeded(photo):
    import matplotlib.pyplot as plt

    a = static_grid(photo, "RandomElasticWarp", size=48, strength=10.0)
    b = static_grid(photo, "RandomElasticWarp", size=48, strength=10.0)
    ia, ib = a.axes[0].images[0].get_array(), b.axes[0].images[0].get_array()
    assert (ia == ib).all()
    plt.close("all")
    with pytest.raises(ValueError, match="unknown parameter"):
        static_grid(photo, "RandomRotation", strength=1.0)


def test_pca_explorer(photo):
    import matplotlib.pyplot as plt

    ex = pca_explorer(photo, train_images=[photo], size=48)
    before = bytes(ex.image.value)
    ex.sliders["alpha1"].value = 2.0
    assert bytes(ex.image.value) != before and "offset" in ex.code.value
    assert len(ex.axes_figure.axes) == 2
    plt.close("all")


def test_bad_photo():
    with pytest.raises(ValueError, match=r"`photo` must be a uint8 tensor of shape \(3, H, W\)"):
        augmentation_preview(torch.zeros(3, 8, 8))
