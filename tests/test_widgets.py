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
    with pytest.raises(ValueError, match=r"photo: expected a uint8 tensor of shape \(3, H, W\)"):
        augmentation_preview(torch.zeros(3, 8, 8))


def test_slider_float_noise_stays_out_of_the_code_line(photo):
    prev = augmentation_preview(photo, "RandomElasticWarp", size=64)
    prev.sliders["smoothness"].value = 31.999999999999996  # what a browser slider sends for 32
    assert "smoothness=32.0," in prev.code.value
    assert "99999" not in prev.code.value


def test_preview_is_shown_at_natural_size_with_a_size_control(photo):
    prev = augmentation_preview(photo, "RandomRotation", size=160)
    assert prev.image.layout.width == "488px"  # 3 thumbnails of 160 px + 4 x 2 px padding, 1:1 on screen
    prev.size_control.value = 320
    assert prev.image.layout.width == "968px" and prev.size == 320
    assert "original" in prev.caption.value
    assert all("(" in s.description for k, s in prev.sliders.items() if k != "seed"), "every slider names its unit"


def test_pca_explorer_code_line_is_runnable(photo):
    import matplotlib.pyplot as plt
    import convlab
    from convlab.augment import PCAColor

    pca = PCAColor.imagenet()
    ex = pca_explorer(photo, pca=pca, size=48)
    ex.sliders["alpha1"].value = 1.2000000000000002
    code = ex.code.value.removeprefix("<code>").split("</code>")[0]
    assert "1.2," in code
    from convlab.widgets import _thumbnail

    thumb = _thumbnail(photo, 48)
    out = eval(code, {"torch": torch, "convlab": convlab, "photo": thumb, "pca": pca})
    assert bytes(png_bytes(out)) != bytes(png_bytes(thumb))
    assert "lambda" in ex.sliders["alpha1"].description
    plt.close("all")
