"""Interactive previews of the augmentations (ipywidgets), plus static figures for where widgets don't run.

- :func:`augmentation_preview`: sliders for one augmentation's parameters and a seed, a live grid of
  augmented copies of a photo (an ``ipywidgets.Image`` fed PNG bytes, fast to refresh), and the code
  line that reproduces the current setting. A slider is built from the setting's declaration in the
  transform's class (:class:`convlab.augment.Param`: range, step, default, unit).
- :func:`static_grid`: the same grid as a matplotlib figure, seeded (renders on GitHub).
- :func:`pca_explorer`: a training set's RGB principal axes and eigenvalues, and sliders for the three
  alphas of AlexNet's PCA colour augmentation.
- :func:`chain_preview`: several augmentations in order (add, remove, reorder), each with its sliders, applied
  per sample to a grid of seeded draws ("new draws"), with the code for the chain in convlab and, where it has
  the transforms, in torchvision v2 (:func:`chain_code`, :func:`torchvision_code`).

ipywidgets is imported only inside the functions that build widgets. Every preview is returned as an
object whose ``update()`` can be called directly (tests and scripts need no Jupyter kernel).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.utils import make_grid

from ._checks import check_uint8_image, fmt_arg
from .augment import (
    FusedTrainPipeline,
    Param,
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
from .augment.pca import SIGMA
from .augment.transforms import SCALE, BatchRandomTransform

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from matplotlib.figure import Figure

__all__ = [
    "AUGMENTATIONS",
    "AugmentationPreview",
    "augmentation_preview",
    "ChainPreview",
    "chain_preview",
    "chain_code",
    "torchvision_code",
    "draw_grid",
    "thumbnail",
    "pca_axes_figure",
    "static_grid",
    "pca_explorer",
    "PCAExplorer",
    "png_bytes",
]

Augmentation = BatchRandomTransform | FusedTrainPipeline

# Two preview controls are not constructor arguments; the transform checks what they become.
#: a RandomCrop's side as a fraction of the preview's
FRAC = Param("frac", "number", bounds=(0.0, 1.0), default=0.75, unit="crop side / photo side", slider=(0.3, 1.0, 0.05))
#: the low end of a resized crop's ``scale`` (the high end stays 1)
MIN_SCALE = Param(
    "min_scale",
    "number",
    bounds=SCALE.bounds,
    default=SCALE.default[0],
    unit="smallest crop area / photo area",
    slider=(0.05, 1.0, 0.05),
)


def _with_sliders(cls: type[Augmentation]) -> tuple[Param, ...]:
    """The settings ``cls`` declares with a slider (a projector audience reads its unit, not the code)."""
    return tuple(param for param in cls.PARAMS if param.slider is not None)


#: name -> (factory(size, **slider values), the sliders' declarations), in the order the chain's menu lists them
AUGMENTATIONS: dict[str, tuple[Callable[..., Augmentation], tuple[Param, ...]]] = {
    "RandomHorizontalFlip": (lambda s, **k: RandomHorizontalFlip(**k), _with_sliders(RandomHorizontalFlip)),
    "RandomCrop": (lambda s, frac, **k: RandomCrop(max(1, int(round(frac * s))), **k), (FRAC,)),
    "RandomResizedCrop": (lambda s, min_scale, **k: RandomResizedCrop(s, scale=(min_scale, 1.0), **k), (MIN_SCALE,)),
    "RandomRotation": (lambda s, **k: RandomRotation(**k), _with_sliders(RandomRotation)),
    "RandomShear": (lambda s, **k: RandomShear(**k), _with_sliders(RandomShear)),
    "RandomElasticWarp": (lambda s, **k: RandomElasticWarp(**k), _with_sliders(RandomElasticWarp)),
    "RandomColorShift": (lambda s, **k: RandomColorShift(clamp=True, **k), _with_sliders(RandomColorShift)),
    "PCAColor": (lambda s, **k: PCAColor.imagenet(clamp=True, **k), _with_sliders(PCAColor)),
    # the training pipeline: crop + mirror + colour shift + PCA colour + normalise in one pass (shown un-normalised)
    "FusedTrainPipeline": (
        lambda s, min_scale, sigma, **k: FusedTrainPipeline(
            s, scale=(min_scale, 1.0), pca=PCAColor.imagenet(sigma=sigma) if sigma > 0 else None, **k
        ),
        (MIN_SCALE, *_with_sliders(FusedTrainPipeline), SIGMA),
    ),
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


def thumbnail(photo: Tensor, size: int) -> Tensor:
    """The photo's centre square resized to ``size`` (bilinear, antialiased): uint8 ``(3, size, size)``, the first
    tile of every preview grid and the image the augmentations are applied to."""
    h, w = photo.shape[-2:]
    s = min(h, w)
    sq = photo[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(sq[None], size=(size, size), mode="bilinear", antialias=True)[0]


def png_bytes(image: Tensor) -> bytes:
    """Encode a uint8 (3, H, W) tensor as PNG bytes (for ``ipywidgets.Image``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _build(name: str, size: int, values: dict[str, float], generator: torch.Generator) -> Augmentation:
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
    factory, _ = AUGMENTATIONS[name]
    return factory(size, generator=generator, **values)


def _last_step(transform: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return transform.transforms[-1] if isinstance(transform, v2.Compose) and transform.transforms else transform


def _to_uint8(out: Tensor, transform: Callable[[Tensor], Tensor]) -> Tensor:
    """What the augmented batch looks like: the fused pipeline's normalisation undone, floats in [0, 1] as uint8."""
    last = _last_step(transform)
    if isinstance(last, FusedTrainPipeline):
        out = out * last.std.view(1, 3, 1, 1) + last.mean.view(1, 3, 1, 1)
    if out.dtype != torch.uint8:
        out = (out.float() * 255).round().clamp(0, 255).byte()
    return out


def draw_grid(photo: Tensor, transform: Callable[[Tensor], Tensor], n: int, ncols: int, size: int) -> Tensor:
    """The preview grid: the photo's :func:`thumbnail` first, then ``transform`` applied once to a batch of ``n``
    copies of it (each copy gets its own draw), as one uint8 ``(3, H, W)`` image with ``ncols`` tiles per row.

    ``transform``: a convlab augmentation, a :class:`FusedTrainPipeline` (shown un-normalised) or a ``v2.Compose``
    of them; crops are shown resized to ``size``. This is what every preview shows, so a pasted code line can be
    checked against it bit for bit.
    """
    thumb = thumbnail(check_uint8_image(photo, "photo", channels=3), size)
    batch = thumb.expand(n, -1, -1, -1).contiguous()
    out = _to_uint8(transform(batch), transform)
    if out.shape[-2:] != batch.shape[-2:]:  # crops: show them at the thumbnail size
        out = F.interpolate(out.float(), size=(size, size), mode="bilinear").round().clamp(0, 255).byte()
    return make_grid(torch.cat([thumb[None], out]), nrow=ncols, padding=2, pad_value=255)


def _with_generator(transform: Augmentation, generator: str) -> str:
    """The transform's repr (the code that builds it) with ``generator=...`` added."""
    return repr(transform)[:-1] + f", generator={generator})"


def _code_line(transform: Augmentation, seed: int) -> str:
    return _with_generator(transform, f"torch.Generator().manual_seed({seed})")


def _caption(name: str, n: int, seed: int) -> str:
    return (
        f"<b>{name}</b>: top left, the <b>original</b> photo; then {n} augmented copies, each with its own "
        f"random parameters (seed {seed}). The line below is the code that draws them."
    )


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
    transform: Augmentation | None = field(default=None, init=False)

    def values(self) -> dict[str, float]:
        """The sliders' values, rounded to their steps (no float noise from the browser)."""
        return _values(self.name, self.sliders)

    def update(self, change: Any = None) -> None:
        seed = int(self.sliders["seed"].value)
        if self.size_control is not None:
            self.size = int(self.size_control.value)
        self.transform = _build(self.name, self.size, self.values(), torch.Generator().manual_seed(seed))
        grid = draw_grid(self.photo, self.transform, self.n, self.ncols, self.size)
        self.image.value = png_bytes(grid)
        _natural_size(self.image, grid)
        self.code.value = f"<code>{_code_line(self.transform, seed)}</code>"
        if self.caption is not None:
            self.caption.value = _caption(self.name, self.n, seed)


def _sliders(name: str) -> dict[str, Any]:
    """One slider per parameter of the augmentation ``name``, in its real unit (named beside it), at its default."""
    import ipywidgets as W

    return {
        param.name: W.FloatSlider(
            value=param.default,
            min=param.slider[0],
            max=param.slider[1],
            step=param.slider[2],
            description=f"{param.name} ({param.unit})",
            continuous_update=True,
            readout_format=f".{_decimals(param.slider[2])}f",
            layout=SLIDER_LAYOUT,
            style=SLIDER_STYLE,
        )
        for param in AUGMENTATIONS[name][1]
    }


def _size_control(size: int) -> Any:
    """Toggle buttons for the preview size: 160, 240 or 320 px (a projector), and ``size`` if it is none of those."""
    import ipywidgets as W

    options = dict(SIZES)
    return W.ToggleButtons(
        options=list(SIZES) if size in options.values() else [*SIZES, (f"{size} px", size)],
        value=size,
        description="preview size",
        style={"description_width": "100px"},
    )


def _values(name: str, sliders: dict[str, Any]) -> dict[str, float]:
    """The sliders' values, rounded to their steps (no float noise from the browser)."""
    steps = {param.name: param.slider[2] for param in AUGMENTATIONS[name][1]}
    return {k: _slider_value(s.value, steps[k]) for k, s in sliders.items() if k in steps}


def augmentation_preview(
    photo: Tensor, name: str = "RandomRotation", *, n: int = 5, ncols: int = 3, size: int = 160
) -> AugmentationPreview:
    """Sliders + live grid (the original first, then ``n`` augmented copies) for one augmentation.

    Args:
        photo: uint8 ``(3, H, W)``; shown as a centre square at ``size`` px (the preview has a size control too;
            the image is shown at its own pixel size, so it stays sharp on a projector).
        name: one of :data:`AUGMENTATIONS`.
    """
    import ipywidgets as W

    photo = check_uint8_image(photo, "photo", channels=3)
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
    sliders = _sliders(name)
    sliders["seed"] = W.IntSlider(value=0, min=0, max=99, description="seed", layout=SLIDER_LAYOUT, style=SLIDER_STYLE)
    sizes = _size_control(size)
    image = W.Image(format="png")
    code, caption = W.HTML(), W.HTML()
    box = W.VBox([caption, *sliders.values(), sizes, image, code])
    box.add_class("convlab-preview")  # the browser tests find previews by this class
    prev = AugmentationPreview(
        name, photo, box, image, sliders, code, n=n, ncols=ncols, size=size, caption=caption, size_control=sizes
    )
    for s in [*sliders.values(), sizes]:
        s.observe(prev.update, names="value")
    prev.update()
    return prev


# ----------------------------------------------------------------------------- a chain of augmentations
def chain_code(transforms: Sequence[Augmentation], seed: int) -> str:
    """Python that builds ``transforms`` as one ``v2.Compose`` drawing from one generator seeded with ``seed``: run
    on the same images, it draws exactly what :class:`ChainPreview` drew (the steps draw in order from ``g``)."""
    names = set()
    for t in transforms:
        names.add(type(t).__name__)
        if isinstance(t, FusedTrainPipeline) and t.pca is not None:
            names.add("PCAColor")
    lines = ["import torch", "from torchvision.transforms import v2"]
    if names:
        lines.append(f"from convlab.augment import {', '.join(sorted(names))}")
    lines += [
        f"g = torch.Generator().manual_seed({int(seed)})",
        f"augment = v2.Compose([{', '.join(_with_generator(t, 'g') for t in transforms)}])",
    ]
    return "\n".join(lines)


def _tv_size(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else str(tuple(size))


def _tv_interpolation(t: Any) -> str:
    fill = f", fill={fmt_arg(t.fill)}" if t.fill != 0 else ""
    return f"interpolation=v2.InterpolationMode.{t.interpolation.upper()}{fill}"


def _tv_maybe(expr: str, p: float) -> str:
    return expr if p == 1.0 else f"v2.RandomApply([{expr}], p={fmt_arg(p)})"


def _tv_resized_crop(size: tuple[int, int], scale: tuple, ratio: tuple, antialias: bool) -> str:
    ratio_arg = "" if ratio == (3 / 4, 4 / 3) else f", ratio={fmt_arg(ratio)}"
    return f"v2.RandomResizedCrop(size={_tv_size(size)}, scale={fmt_arg(scale)}{ratio_arg}, antialias={antialias})"


def _tv_step(t: Augmentation) -> tuple[list[str], str | None]:
    """torchvision v2 expressions for one convlab step, and what torchvision lacks of it (or None)."""
    if isinstance(t, RandomHorizontalFlip):
        return [f"v2.RandomHorizontalFlip(p={fmt_arg(t.p)})"], None
    if isinstance(t, RandomCrop):
        return [f"v2.RandomCrop(size={_tv_size(t.size)})"], None
    if isinstance(t, RandomResizedCrop):
        return [_tv_resized_crop(t.size, t.scale, t.ratio, t.antialias)], None
    if isinstance(t, RandomRotation):
        return [_tv_maybe(f"v2.RandomRotation(degrees={fmt_arg(t.degrees)}, {_tv_interpolation(t)})", t.p)], None
    if isinstance(t, RandomShear):
        sx, sy = t.shear_x, t.shear_y
        values = sx if sy == (0.0, 0.0) else (*sx, *sy)  # two values: shear along x only
        shear = "(" + ", ".join(fmt_arg(v) for v in values) + ")"
        return [_tv_maybe(f"v2.RandomAffine(degrees=0, shear={shear}, {_tv_interpolation(t)})", t.p)], None
    if isinstance(t, RandomElasticWarp):
        return [], "RandomElasticWarp (v2.ElasticTransform smooths full-size noise with a Gaussian: another field)"
    if isinstance(t, RandomColorShift):
        return [], "RandomColorShift (v2.ColorJitter scales brightness, contrast, saturation, hue; no RGB offset)"
    if isinstance(t, PCAColor):
        return [], "PCAColor (AlexNet's PCA lighting)"
    if isinstance(t, FusedTrainPipeline):
        exprs = [
            _tv_resized_crop(t.size, t.scale, t.ratio, t.antialias),
            f"v2.RandomHorizontalFlip(p={fmt_arg(t.flip_p)})",
            "v2.ToDtype(torch.float32, scale=True)",
            f"v2.Normalize(mean={[round(v, 4) for v in t.mean.tolist()]}, std={[round(v, 4) for v in t.std.tolist()]})",
        ]
        lacks = [what for what, on in (("colour shift", t.color_shift > 0), ("PCA colour", t.pca is not None)) if on]
        return exprs, f"FusedTrainPipeline's {' and '.join(lacks)}" if lacks else None
    raise TypeError(f"transform: expected one of the course's augmentations, got {type(t).__name__}")


def torchvision_code(transforms: Sequence[Augmentation]) -> str:
    """The nearest torchvision v2 code for ``transforms``: the steps torchvision has (same parameters, bilinear
    where convlab is bilinear), and a comment naming the steps it lacks. torchvision draws one set of parameters
    per call, so it is applied to one image at a time; its draws are not convlab's (only convlab's code line
    reproduces the preview)."""
    exprs, missing = [], []
    for t in transforms:
        e, lacks = _tv_step(t)
        exprs += e
        if lacks:
            missing.append(lacks)
    if not exprs:
        lines = ["# torchvision v2 has none of these steps"]
    else:
        lines = [
            "import torch",
            "from torchvision.transforms import v2",
            f"augment = v2.Compose([{', '.join(exprs)}])  # one draw per call: apply it to one image at a time",
        ]
    lines += [f"# not in torchvision: {m}" for m in missing]
    return "\n".join(lines)


def _pre(code: str) -> str:
    """Code as HTML, long lines wrapped (a copy keeps them whole)."""
    style = (
        "white-space: pre-wrap; word-break: break-word; font-family: monospace; line-height: 1.4; margin: 0; "
        "padding: 6px 8px; background: #f5f5f5"
    )
    return f'<pre style="{style}">{html.escape(code)}</pre>'


def _unchanged(x: Tensor) -> Tensor:
    return x


@dataclass
class ChainStep:
    """One step of a :class:`ChainPreview`: an augmentation's name, its sliders and its row of controls."""

    name: str
    sliders: dict[str, Any]
    widget: Any
    title: Any
    up: Any
    remove: Any


@dataclass
class ChainPreview:
    """Several augmentations applied in order, per sample, to a grid of seeded draws.

    ``widget`` to display. ``add(name)``, ``remove(i)``, ``move_up(i)``, ``new_draws()`` and ``set_photo(photo)``
    change it; ``update()`` re-renders from the current controls. After an update, ``transforms`` holds the steps
    as built and ``grid`` the image shown; ``code`` shows :func:`chain_code` for them (which reproduces ``grid``
    through :func:`draw_grid`) and ``torchvision`` shows :func:`torchvision_code`. A setting that cannot run (a
    crop larger than its input, the fused pipeline before another step) is named in ``message`` and the last
    grid stays.
    """

    photo: Tensor
    widget: Any
    image: Any
    code: Any
    torchvision: Any
    message: Any
    seed: Any
    size_control: Any
    steps_box: Any
    adder: Any
    steps: list[ChainStep] = field(default_factory=list)
    n: int = 8
    ncols: int = 3
    transforms: list[Augmentation] = field(default_factory=list, init=False)
    grid: Tensor | None = field(default=None, init=False)

    @property
    def size(self) -> int:
        return int(self.size_control.value)

    def add(self, name: str) -> ChainStep:
        """Append the augmentation ``name`` (one of :data:`AUGMENTATIONS`) at its default settings."""
        import ipywidgets as W

        if name not in AUGMENTATIONS:
            raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
        sliders = _sliders(name)
        for s in sliders.values():  # narrower than a notebook's: the grid stands beside the chain
            s.layout, s.style = W.Layout(width="540px"), {"description_width": "220px"}
        title = W.HTML()
        up = W.Button(description="move up", layout={"width": "90px"})
        remove = W.Button(description="remove", layout={"width": "90px"})
        box = W.VBox([W.HBox([title, up, remove]), *sliders.values()])
        box.add_class("convlab-chain-step")
        step = ChainStep(name, sliders, box, title, up, remove)
        up.on_click(lambda _: self.move_up(self.steps.index(step)))
        remove.on_click(lambda _: self.remove(self.steps.index(step)))
        for s in sliders.values():
            s.observe(self.update, names="value")
        self.steps.append(step)
        self._relayout()
        return step

    def remove(self, index: int) -> None:
        """Take out step ``index`` (0 = the first)."""
        self.steps.pop(index)
        self._relayout()

    def move_up(self, index: int) -> None:
        """Swap step ``index`` with the one before it (the first step stays first)."""
        if index > 0:
            self.steps[index - 1], self.steps[index] = self.steps[index], self.steps[index - 1]
            self._relayout()

    def new_draws(self) -> None:
        """The next seed: every copy gets new random parameters."""
        self.seed.value = int(self.seed.value) + 1  # its observer redraws

    def set_photo(self, photo: Tensor) -> None:
        """Show the chain on another photo (uint8 ``(3, H, W)``)."""
        self.photo = check_uint8_image(photo, "photo", channels=3)
        self.update()

    def _relayout(self) -> None:
        for i, step in enumerate(self.steps):
            step.title.value = f"<b>{i + 1}. {step.name}</b>"
        self.steps_box.children = [s.widget for s in self.steps]
        self.update()

    def update(self, change: Any = None) -> None:
        seed, size = int(self.seed.value), self.size
        g = torch.Generator().manual_seed(seed)
        names = [s.name for s in self.steps]
        if "FusedTrainPipeline" in names[:-1]:
            self.message.value = (
                "FusedTrainPipeline returns normalised floats for the network: make it the last step "
                "(move the steps after it up)."
            )
            return
        try:
            transforms = [_build(s.name, size, _values(s.name, s.sliders), g) for s in self.steps]
            grid = draw_grid(self.photo, v2.Compose(transforms) if transforms else _unchanged, self.n, self.ncols, size)
        except ValueError as exc:
            self.message.value = f"This setting cannot run: {html.escape(str(exc))}."
            return
        self.transforms, self.grid = transforms, grid
        self.message.value = "" if transforms else "The chain is empty: add a step."
        self.image.value = png_bytes(grid)
        _natural_size(self.image, grid)
        empty = "# the chain is empty: add a step"
        self.code.value = _pre(chain_code(transforms, seed) if transforms else empty)
        self.torchvision.value = _pre(torchvision_code(transforms) if transforms else empty)


def chain_preview(
    photo: Tensor,
    names: Sequence[str] = ("RandomRotation",),
    *,
    n: int = 8,
    ncols: int = 3,
    size: int = 240,
    seed: int = 0,
) -> ChainPreview:
    """A chain of augmentations (``names``, in order; more can be added in the widget) applied per sample to
    ``n`` seeded draws of ``photo``'s centre square at ``size`` px, the original first.

    Each step has its sliders in real units, "move up" and "remove"; below the grid: the seed with "new draws", the
    preview size, and the code for the chain in convlab (reproduces the grid) and in torchvision v2.
    """
    import ipywidgets as W

    photo = check_uint8_image(photo, "photo", channels=3)
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"names: expected names from {sorted(AUGMENTATIONS)}, got {name!r}")
    adder = W.Dropdown(options=list(AUGMENTATIONS), value="RandomShear", layout={"width": "220px"})
    add = W.Button(description="add to the chain", layout={"width": "160px"})
    seed_box = W.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", layout={"width": "160px"})
    again = W.Button(description="new draws", layout={"width": "120px"})
    again.add_class("convlab-new-draws")
    sizes = _size_control(size)
    image = W.Image(format="png")
    image.add_class("convlab-grid")
    code, tv, message = W.HTML(), W.HTML(), W.HTML()
    code.add_class("convlab-code")
    tv.add_class("convlab-torchvision-code")
    message.add_class("convlab-message")
    steps_box = W.VBox()
    controls = W.VBox(
        [
            W.HTML("<b>The chain</b>: each copy goes through the steps in order, with its own random parameters."),
            steps_box,
            W.HBox([adder, add]),
            W.HBox([seed_box, again]),
            sizes,
            message,
        ],
        layout={"width": "560px", "margin": "0 16px 0 0"},
    )
    shown = W.VBox(
        [
            W.HTML("Top left: the <b>original</b>; then the augmented copies."),
            image,
            W.HTML("<b>convlab</b> (draws exactly this grid):"),
            code,
            W.HTML("<b>torchvision v2</b> (the same settings where it has the transform; its own draws):"),
            tv,
        ],
        layout={"max_width": "760px"},
    )
    box = W.HBox([controls, shown])
    box.add_class("convlab-chain")
    chain = ChainPreview(photo, box, image, code, tv, message, seed_box, sizes, steps_box, adder, n=n, ncols=ncols)
    add.on_click(lambda _: chain.add(adder.value))
    again.on_click(lambda _: chain.new_draws())
    seed_box.observe(chain.update, names="value")
    sizes.observe(chain.update, names="value")
    for name in names:
        chain.add(name)
    if not names:
        chain.update()
    return chain


def static_grid(
    photo: Tensor,
    name: str = "RandomRotation",
    *,
    n: int = 5,
    ncols: int = 3,
    size: int = 160,
    seed: int = 0,
    **values: float,
) -> Figure:
    """A seeded matplotlib figure of the preview grid (default slider values unless given)."""
    import matplotlib.pyplot as plt

    photo = check_uint8_image(photo, "photo", channels=3)
    if name not in AUGMENTATIONS:
        raise ValueError(f"name: expected one of {sorted(AUGMENTATIONS)}, got {name!r}")
    defaults = {param.name: param.default for param in AUGMENTATIONS[name][1]}
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {name}; expected some of {sorted(defaults)}")
    t = _build(name, size, {**defaults, **values}, torch.Generator().manual_seed(seed))
    grid = draw_grid(photo, t, n, ncols, size)
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
        thumb = thumbnail(self.photo, self.size)
        off = self.pca.offsets(alpha)[0]
        out = K.pca_color(thumb, alpha, self.pca.eigenvalues_, self.pca.eigenvectors_)
        pair = torch.cat([thumb, torch.full((3, thumb.shape[1], 8), 255, dtype=torch.uint8), out], dim=2)
        self.image.value = png_bytes(pair)
        _natural_size(self.image, pair)
        rgb = ", ".join(f"{255 * v:+.1f}" for v in off.tolist())
        self.code.value = (
            f"<code>convlab.augment.functional.pca_color(photo, torch.tensor([[{a[0]:g}, {a[1]:g}, {a[2]:g}]]), "
            f"pca.eigenvalues_, pca.eigenvectors_)</code><br>offset added to every pixel = eigenvectors_ @ (alpha * "
            f"eigenvalues_) = ({rgb}) levels of 255 in R, G, B"
        )


def pca_axes_figure(pca: PCAColor, max_alpha: float = 3.0) -> Figure:
    """A fitted PCA colour basis as a figure: the eigenvalues (log scale) and each principal axis as a colour ramp
    (mid grey moved by alpha * lambda * axis, alpha in the sliders' unit)."""
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
    a2.set_yticks([0, 1, 2], [f"PC{i + 1} ({', '.join(f'{v:+.2f}' for v in vecs[:, i].tolist())})" for i in range(3)])
    a2.set_xlabel("alpha (the sliders' unit): grey + alpha * lambda * axis")
    a2.set_title("mid grey moved along each axis")
    fig.suptitle("AlexNet's PCA colour: the principal axes of the training pixels' RGB values")
    fig.tight_layout()
    return fig


def pca_explorer(
    photo: Tensor,
    pca: PCAColor | None = None,
    train_images: Tensor | None = None,
    *,
    size: int = 256,
    max_alpha: float = 3.0,
) -> PCAExplorer:
    """Explore AlexNet PCA colour: fit on ``train_images`` (or use ``pca``, default ImageNet's), then
    move the three alphas and see the offset applied to ``photo``."""
    import ipywidgets as W

    photo = check_uint8_image(photo, "photo", channels=3)
    if pca is None:
        pca = PCAColor().fit(train_images) if train_images is not None else PCAColor.imagenet()
    pca.check_is_fitted()
    lam = pca.eigenvalues_.tolist()
    sliders = {
        f"alpha{i + 1}": W.FloatSlider(
            value=0.0,
            min=-max_alpha,
            max=max_alpha,
            step=PCA_STEP,
            description=f"alpha{i + 1} (PC{i + 1}, lambda={lam[i]:.3g})",
            readout_format=".2f",
            layout=SLIDER_LAYOUT,
            style=SLIDER_STYLE,
        )
        for i in range(3)
    }
    image = W.Image(format="png")
    code = W.HTML()
    fig = pca_axes_figure(pca, max_alpha)
    title = W.HTML(
        "<b>AlexNet's PCA colour</b>: every pixel gets the same RGB offset, alpha1*lambda1*PC1 + "
        "alpha2*lambda2*PC2 + alpha3*lambda3*PC3. Left: the <b>original</b>; right: shifted. (Training "
        "draws each alpha from N(0, sigma), sigma = 0.1 in AlexNet.)"
    )
    box = W.VBox([title, *sliders.values(), image, code])
    box.add_class("convlab-preview")
    ex = PCAExplorer(pca, photo, box, image, sliders, code, fig, size=size)
    for s in sliders.values():
        s.observe(ex.update, names="value")
    ex.update()
    return ex
