"""Widget previews work without a Jupyter kernel: call update() and inspect the outputs."""

import matplotlib

matplotlib.use("Agg")

import pytest
import skimage.data
import torch

from convlab.widgets import AUGMENTATIONS, augmentation_preview, draw_grid, pca_explorer, png_bytes, static_grid

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


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_sliders_are_the_declared_settings_and_both_ends_run(photo, name):
    """A slider is built from its setting's declaration; at either end of every slider the transform runs."""
    prev = augmentation_preview(photo, name, size=48)
    declared = AUGMENTATIONS[name][1]
    assert list(prev.sliders) == [param.name for param in declared] + ["seed"]
    for param in declared:
        slider = prev.sliders[param.name]
        assert (slider.min, slider.max, slider.step, slider.value) == (*param.slider, param.default)
        assert slider.description == f"{param.name} ({param.unit})"
    for end in (0, 1):
        for param in declared:
            prev.sliders[param.name].value = param.slider[end]  # each move redraws: an unaccepted setting raises
        assert prev.values() == {param.name: param.slider[end] for param in declared}


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
    assert bytes(png_bytes(draw_grid(photo, pasted, prev.n, prev.ncols, prev.size))) == bytes(prev.image.value)


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
    with pytest.raises(TypeError, match=r"photo: expected a uint8 tensor of shape \(3, H, W\), got torch.float32"):
        augmentation_preview(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"photo: expected 3 channels \(RGB\) at dim -3, got shape \(1, 8, 8\)"):
        augmentation_preview(torch.zeros(1, 8, 8, dtype=torch.uint8))


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
    from convlab.widgets import thumbnail

    thumb = thumbnail(photo, 48)
    out = eval(code, {"torch": torch, "convlab": convlab, "photo": thumb, "pca": pca})
    assert bytes(png_bytes(out)) != bytes(png_bytes(thumb))
    assert "lambda" in ex.sliders["alpha1"].description
    plt.close("all")


# ----------------------------------------------------------------------------- the chain of augmentations
def _run(code: str) -> dict:
    """Run a code block as a learner would paste it (it imports what it needs)."""
    namespace: dict = {}
    exec(code, namespace)
    return namespace


def _pre(html_value: str) -> str:
    """The text of a code widget's HTML, as the page shows it."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", html_value))


@pytest.mark.parametrize("second", sorted(AUGMENTATIONS))
def test_chain_code_reproduces_the_grid(photo, second):
    """Every augmentation after a rotation: the convlab code under the chain draws the grid again, bit for bit."""
    from convlab.widgets import chain_preview

    chain = chain_preview(photo, ("RandomRotation", second), n=4, size=64, seed=5)
    chain.steps[0].sliders["degrees"].value = 33.0
    assert not chain.message.value, chain.message.value
    code = _pre(chain.code.value)
    assert "manual_seed(5)" in code and "degrees=33.0" in code and second in code
    augment = _run(code)["augment"]
    assert torch.equal(draw_grid(photo, augment, chain.n, chain.ncols, chain.size), chain.grid)
    assert bytes(png_bytes(chain.grid)) == bytes(chain.image.value)


def test_chain_controls(photo):
    from convlab.widgets import chain_preview

    chain = chain_preview(photo, ("RandomRotation",), n=3, size=64)
    first = bytes(chain.image.value)
    chain.new_draws()
    assert chain.seed.value == 1 and "manual_seed(1)" in chain.code.value and bytes(chain.image.value) != first
    chain.add("RandomColorShift")
    chain.move_up(1)
    assert [s.name for s in chain.steps] == ["RandomColorShift", "RandomRotation"]
    assert "1. RandomColorShift" in chain.steps[0].title.value
    assert chain.code.value.index("RandomColorShift(") < chain.code.value.index("RandomRotation(")
    chain.remove(0)
    assert [type(t).__name__ for t in chain.transforms] == ["RandomRotation"]
    chain.size_control.value = 160
    assert chain.grid.shape[-1] == 3 * 160 + 4 * 2
    chain.remove(0)
    assert "empty" in chain.message.value and "empty" in chain.code.value and not chain.transforms


def test_chain_refuses_what_cannot_run_and_keeps_the_grid(photo):
    from convlab.widgets import chain_preview

    chain = chain_preview(photo, ("FusedTrainPipeline",), n=2, size=64)
    grid = chain.grid
    chain.add("RandomRotation")  # the pipeline returns normalised floats: nothing may follow it
    assert "last step" in chain.message.value and chain.grid is grid
    chain.move_up(1)
    assert not chain.message.value and [type(t).__name__ for t in chain.transforms][-1] == "FusedTrainPipeline"
    crops = chain_preview(photo, ("RandomCrop", "RandomCrop"), n=2, size=64)  # 48 px crops of a 48 px crop
    grid = crops.grid
    crops.steps[0].sliders["frac"].value = 0.5  # a 48 px crop of a 32 px crop cannot be cut
    assert "cannot run" in crops.message.value and "size" in crops.message.value and crops.grid is grid


def test_torchvision_code_runs_and_names_what_torchvision_lacks():
    from torchvision.transforms import v2

    from convlab.augment import FusedTrainPipeline, PCAColor, RandomColorShift, RandomRotation, RandomShear
    from convlab.widgets import torchvision_code

    code = torchvision_code(
        [
            RandomRotation(20.0, p=0.5),
            RandomShear(shear_x=10.0, shear_y=5.0),
            RandomColorShift(0.1),
            FusedTrainPipeline(64, scale=(0.2, 1.0), pca=PCAColor.imagenet()),
        ]
    )
    augment = _run(code)["augment"]
    kinds = [type(t).__name__ for t in augment.transforms]
    assert kinds == ["RandomApply", "RandomAffine", "RandomResizedCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    assert augment.transforms[0].transforms[0].interpolation == v2.InterpolationMode.BILINEAR
    assert list(augment.transforms[1].shear) == [-10.0, 10.0, -5.0, 5.0]
    assert augment.transforms[2].scale == (0.2, 1.0)
    assert "not in torchvision: RandomColorShift" in code and "colour shift and PCA colour" in code
    assert augment(torch.zeros(3, 80, 80, dtype=torch.uint8)).shape == (3, 64, 64)
    assert torchvision_code([RandomColorShift(0.1)]).startswith("# torchvision v2 has none")
