"""Interactive previews of the augmentations (ipywidgets), plus static figures for where widgets don't run.

- :func:`augmentation_preview`: sliders for one augmentation's parameters and a seed, a live grid of
  augmented copies of a photo (an ``ipywidgets.Image`` fed PNG bytes, fast to refresh), and the code
  line that reproduces the current setting.
- :func:`static_grid`: the same grid as a matplotlib figure, seeded (renders on GitHub).
- :func:`pca_explorer`: a training set's RGB principal axes and eigenvalues, and sliders for the three
  alphas of AlexNet's PCA colour augmentation.

ipywidgets is imported only inside the functions that build widgets. Every preview is returned as an
object whose ``update()`` can be called directly (tests and scripts need no Jupyter kernel).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from .augment import (
    PCAColor,
    RandomColorShift,
    RandomCrop,
    RandomElasticWarp,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomShear,
)
from .augment import functional as K
from .augment.transforms import BatchRandomTransform

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from matplotlib.figure import Figure

__all__ = ["AUGMENTATIONS", "AugmentationPreview", "augmentation_preview", "static_grid", "pca_explorer",
           "PCAExplorer", "png_bytes"]

# name -> (factory(size, **slider values), {param: (min, max, step, default)})
Slider = tuple[float, float, float, float]
AUGMENTATIONS: dict[str, tuple[Callable[..., BatchRandomTransform], dict[str, Slider]]] = {
    "RandomHorizontalFlip": (lambda s, **k: RandomHorizontalFlip(**k), {"p": (0.0, 1.0, 0.05, 0.5)}),
    "RandomCrop": (lambda s, frac, **k: RandomCrop(max(1, int(round(frac * s))), **k),
                   {"frac": (0.3, 1.0, 0.05, 0.75)}),
    "RandomResizedCrop": (lambda s, min_scale, **k: RandomResizedCrop(s, scale=(min_scale, 1.0), **k),
                          {"min_scale": (0.05, 1.0, 0.05, 0.08)}),
    "RandomRotation": (lambda s, **k: RandomRotation(**k), {"degrees": (0.0, 180.0, 1.0, 15.0),
                                                            "p": (0.0, 1.0, 0.05, 1.0)}),
    "RandomShear": (lambda s, **k: RandomShear(**k), {"shear_x": (0.0, 45.0, 1.0, 10.0),
                                                      "shear_y": (0.0, 45.0, 1.0, 0.0),
                                                      "p": (0.0, 1.0, 0.05, 1.0)}),
    "RandomElasticWarp": (lambda s, **k: RandomElasticWarp(**k), {"strength": (0.0, 30.0, 0.5, 8.0),
                                                                  "smoothness": (4.0, 96.0, 1.0, 32.0),
                                                                  "p": (0.0, 1.0, 0.05, 1.0)}),
    "RandomColorShift": (lambda s, **k: RandomColorShift(clamp=True, **k), {"magnitude": (0.0, 0.5, 0.01, 0.1),
                                                                            "p": (0.0, 1.0, 0.05, 1.0)}),
    "PCAColor": (lambda s, **k: PCAColor.imagenet(clamp=True, **k), {"sigma": (0.0, 1.0, 0.01, 0.1),
                                                                      "p": (0.0, 1.0, 0.05, 1.0)}),
}


# what each slider's number means, shown beside it (a projector audience reads the label, not the code)
UNITS: dict[str, str] = {
    "p": "probability per image", "frac": "crop side / photo side", "min_scale": "smallest crop area / photo area",
    "degrees": "largest angle, \u00b0", "shear_x": "largest angle, \u00b0", "shear_y": "largest angle, \u00b0",
    "strength": "largest shift, px", "smoothness": "control-point spacing, px",
    "magnitude": "largest shift / value range", "sigma": "std of AlexNet's alphas",
}
SLIDER_LAYOUT = {"width": "780px"}  # a long track: finer steps per pixel on a projector
SLIDER_STYLE = {"description_width": "280px"}
SIZES = (("160 px", 160), ("240 px", 240), ("320 px (projector)", 320))


def _decimals(step: float) -> int:
    """Decimals that a slider of this step can show: 1.0 -> 0, 0.05 -> 2."""
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _slider_value(value: float, step: float) -> float:
    """A browser slider sends e.g. 31.999999999999996 for 32: round to the step's decimals."""
    return round(float(value), _decimals(step))


def _natural_size(image: Any, grid: Tensor) -> None:
    """Show the PNG at its own pixel size (1 image pixel = 1 screen pixel: sharp on a projector)."""
    image.layout.width = f"{grid.shape[-1]}px"
    image.layout.height = f"{grid.shape[-2]}px"


def _check_photo(photo: Any) -> Tensor:
    if not isinstance(photo, Tensor) or photo.ndim != 3 or photo.shape[0] != 3 or photo.dtype != torch.uint8:
        got = f"{photo.dtype} {tuple(photo.shape)}" if isinstance(photo, Tensor) else type(photo).__name__
        raise ValueError(f"photo: expected a uint8 tensor of shape (3, H, W), got {got}")
    return photo


def _thumbnail(photo: Tensor, size: int) -> Tensor:
    """Centre square crop resized to ``size`` (uint8, (3, size, size))."""
    h, w = photo.shape[-2:]
    s = min(h, w)
    sq = photo[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(sq[None], size=(size, size), mode="bilinear", antialias=True)[0]


def png_bytes(image: Tensor) -> bytes:
    """Encode a uint8 (3, H, W) tensor as PNG bytes (for ``ipywidgets.Image``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _build(name: str, size: int, values: dict[str, float], seed: int) -> BatchRandomTransform:
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
    factory, _ = AUGMENTATIONS[name]
    return factory(size, generator=torch.Generator().manual_seed(int(seed)), **values)


def _grid(photo: Tensor, transform: BatchRandomTransform, n: int, ncols: int, size: int) -> Tensor:
    thumb = _thumbnail(photo, size)
    batch = thumb.expand(n, -1, -1, -1).contiguous()
    out = transform(batch)
    if out.shape[-2:] != batch.shape[-2:]:  # crops: show them at the thumbnail size
        out = F.interpolate(out.float(), size=(size, size), mode="bilinear").round().clamp(0, 255).byte()
    return make_grid(torch.cat([thumb[None], out]), nrow=ncols, padding=2, pad_value=255)


def _code_line(transform: BatchRandomTransform, seed: int) -> str:
    r = repr(transform)
    return r[:-1] + f", generator=torch.Generator().manual_seed({seed}))"


def _caption(name: str, n: int, seed: int) -> str:
    return (f"<b>{name}</b>: top left, the <b>original</b> photo; then {n} augmented copies, each with its own "
            f"random parameters (seed {seed}). The line below is the code that draws them.")


@dataclass
class AugmentationPreview:
    """A live preview. ``widget`` to display; ``update()`` re-renders from the current slider values."""

    name: str
    photo: Tensor
    widget: Any
    image: Any
    sliders: dict[str, Any]
    code: Any
    n: int = 5
    ncols: int = 3
    size: int = 160
    caption: Any = None
    size_control: Any = None
    transform: BatchRandomTransform | None = field(default=None, init=False)

    def values(self) -> dict[str, float]:
        """The sliders' values, rounded to their steps (no float noise from the browser)."""
        steps = {k: st for k, (_, _, st, _) in AUGMENTATIONS[self.name][1].items()}
        return {k: _slider_value(s.value, steps[k]) for k, s in self.sliders.items() if k != "seed"}

    def update(self, change: Any = None) -> None:
        seed = int(self.sliders["seed"].value)
        if self.size_control is not None:
            self.size = int(self.size_control.value)
        self.transform = _build(self.name, self.size, self.values(), seed)
        grid = _grid(self.photo, self.transform, self.n, self.ncols, self.size)
        self.image.value = png_bytes(grid)
        _natural_size(self.image, grid)
        self.code.value = f"<code>{_code_line(self.transform, seed)}</code>"
        if self.caption is not None:
            self.caption.value = _caption(self.name, self.n, seed)


def augmentation_preview(photo: Tensor, name: str = "RandomRotation", *, n: int = 5, ncols: int = 3,
                         size: int = 160) -> AugmentationPreview:
    """Sliders + live grid (the original first, then ``n`` augmented copies) for one augmentation.

    Args:
        photo: uint8 ``(3, H, W)``; shown as a centre square at ``size`` px (the preview has a size control too;
            the image is shown at its own pixel size, so it stays sharp on a projector).
        name: one of :data:`AUGMENTATIONS`.
    """
    import ipywidgets as W

    photo = _check_photo(photo)
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
    _, specs = AUGMENTATIONS[name]
    sliders: dict[str, Any] = {
        k: W.FloatSlider(value=d, min=lo, max=hi, step=st, description=f"{k} ({UNITS[k]})", continuous_update=True,
                         readout_format=f".{_decimals(st)}f", layout=SLIDER_LAYOUT, style=SLIDER_STYLE)
        for k, (lo, hi, st, d) in specs.items()
    }
    sliders["seed"] = W.IntSlider(value=0, min=0, max=99, description="seed", layout=SLIDER_LAYOUT, style=SLIDER_STYLE)
    options = dict(SIZES)
    sizes = W.ToggleButtons(options=list(SIZES) if size in options.values() else [*SIZES, (f"{size} px", size)],
                            value=size, description="preview size", style={"description_width": "100px"})
    image = W.Image(format="png")
    code, caption = W.HTML(), W.HTML()
    box = W.VBox([caption, *sliders.values(), sizes, image, code])
    box.add_class("convlab-preview")  # the browser tests find previews by this class
    prev = AugmentationPreview(name, photo, box, image, sliders, code, n=n, ncols=ncols, size=size, caption=caption,
                               size_control=sizes)
    for s in [*sliders.values(), sizes]:
        s.observe(prev.update, names="value")
    prev.update()
    return prev


def static_grid(photo: Tensor, name: str = "RandomRotation", *, n: int = 5, ncols: int = 3, size: int = 160,
                seed: int = 0, **values: float) -> Figure:
    """A seeded matplotlib figure of the preview grid (default slider values unless given)."""
    import matplotlib.pyplot as plt

    photo = _check_photo(photo)
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
    defaults = {k: d for k, (_, _, _, d) in AUGMENTATIONS[name][1].items()}
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {name}; expected some of {sorted(defaults)}")
    t = _build(name, size, {**defaults, **values}, seed)
    grid = _grid(photo, t, n, ncols, size)
    fig, ax = plt.subplots(figsize=(2.2 * ncols, 2.2 * grid.shape[1] / grid.shape[2] * ncols))
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_title(_code_line(t, seed), fontsize=8, family="monospace")
    ax.axis("off")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- PCA explorer
PCA_STEP = 0.05


@dataclass
class PCAExplorer:
    """PCA colour explorer: ``axes_figure`` (eigenvectors/eigenvalues) and a live image for three alphas."""

    pca: PCAColor
    photo: Tensor
    widget: Any
    image: Any
    sliders: dict[str, Any]
    code: Any
    axes_figure: Any
    size: int = 256

    def alphas(self) -> list[float]:
        """The three alphas, rounded to the sliders' step."""
        return [_slider_value(self.sliders[f"alpha{i + 1}"].value, PCA_STEP) for i in range(3)]

    def update(self, change: Any = None) -> None:
        a = self.alphas()
        alpha = torch.tensor([a])
        thumb = _thumbnail(self.photo, self.size)
        off = self.pca.offsets(alpha)[0]
        out = K.pca_color(thumb, alpha, self.pca.eigenvalues_, self.pca.eigenvectors_)
        pair = torch.cat([thumb, torch.full((3, thumb.shape[1], 8), 255, dtype=torch.uint8), out], dim=2)
        self.image.value = png_bytes(pair)
        _natural_size(self.image, pair)
        rgb = ", ".join(f"{255 * v:+.1f}" for v in off.tolist())
        self.code.value = (
            f"<code>convlab.augment.functional.pca_color(photo, torch.tensor([[{a[0]:g}, {a[1]:g}, {a[2]:g}]]), "
            f"pca.eigenvalues_, pca.eigenvectors_)</code><br>offset added to every pixel = eigenvectors_ @ (alpha * "
            f"eigenvalues_) = ({rgb}) levels of 255 in R, G, B")


def _axes_figure(pca: PCAColor, max_alpha: float = 3.0):
    import matplotlib.pyplot as plt

    vals, vecs = pca.eigenvalues_, pca.eigenvectors_
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 2.8))
    a1.bar(["PC1", "PC2", "PC3"], vals.tolist(), color="0.4")
    a1.set_yscale("log")
    a1.set_ylabel("eigenvalue lambda")
    a1.set_title("variance of the pixels along each principal axis")
    # each axis as a colour ramp: mid grey plus alpha * lambda * axis, the same alpha as the sliders
    steps = torch.linspace(-max_alpha, max_alpha, 13)
    ramps = 0.5 + steps[None, :, None] * vals[:, None, None] * vecs.T[:, None, :]
    a2.imshow(ramps.clamp(0, 1).numpy(), aspect="auto", extent=(-max_alpha, max_alpha, 2.5, -0.5))
    a2.set_yticks([0, 1, 2], [f"PC{i + 1} ({', '.join(f'{v:+.2f}' for v in vecs[:, i].tolist())})"
                              for i in range(3)])
    a2.set_xlabel("alpha (the sliders' unit): grey + alpha * lambda * axis")
    a2.set_title("mid grey moved along each axis")
    fig.suptitle("AlexNet's PCA colour: the principal axes of the training pixels' RGB values")
    fig.tight_layout()
    return fig


def pca_explorer(photo: Tensor, pca: PCAColor | None = None, train_images: Tensor | None = None, *,
                 size: int = 256, max_alpha: float = 3.0) -> PCAExplorer:
    """Explore AlexNet PCA colour: fit on ``train_images`` (or use ``pca``, default ImageNet's), then
    move the three alphas and see the offset applied to ``photo``."""
    import ipywidgets as W

    photo = _check_photo(photo)
    if pca is None:
        pca = PCAColor().fit(train_images) if train_images is not None else PCAColor.imagenet()
    pca.check_is_fitted()
    lam = pca.eigenvalues_.tolist()
    sliders = {f"alpha{i + 1}": W.FloatSlider(value=0.0, min=-max_alpha, max=max_alpha, step=PCA_STEP,
                                              description=f"alpha{i + 1} (PC{i + 1}, lambda={lam[i]:.3g})",
                                              readout_format=".2f", layout=SLIDER_LAYOUT, style=SLIDER_STYLE)
               for i in range(3)}
    image = W.Image(format="png")
    code = W.HTML()
    fig = _axes_figure(pca, max_alpha)
    title = W.HTML("<b>AlexNet's PCA colour</b>: every pixel gets the same RGB offset, alpha1*lambda1*PC1 + "
                   "alpha2*lambda2*PC2 + alpha3*lambda3*PC3. Left: the <b>original</b>; right: shifted. (Training "
                   "draws each alpha from N(0, sigma), sigma = 0.1 in AlexNet.)")
    box = W.VBox([title, *sliders.values(), image, code])
    box.add_class("convlab-preview")
    ex = PCAExplorer(pca, photo, box, image, sliders, code, fig, size=size)
    for s in sliders.values():
        s.observe(ex.update, names="value")
    ex.update()
    return ex
