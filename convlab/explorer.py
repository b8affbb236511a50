"""The augmentation explorer: the course's preview widgets composed into one app (``python -m convlab explore``).

The app is made of :mod:`convlab.widgets` parts only, the same ones the notebooks show:

- a photo: from the course's food photos, scikit-image's sample photos, a folder of your own (``--photos``) or
  photos uploaded in the page (a file that is not a readable photo is refused with a sentence saying why);
- :func:`convlab.widgets.chain_preview`: a chain of augmentations, each with sliders in real units, applied per
  sample to a grid of seeded draws, a "new draws" button, the preview size (160, 240 or 320 px for a projector),
  and the code for the current settings in convlab (it reproduces the grid) and in torchvision v2;
- AlexNet's PCA colour basis fitted on the chosen photo set (:func:`convlab.widgets.pca_axes_figure`), beside
  ImageNet's, which the chain's ``PCAColor`` steps use.

:func:`explorer_app` builds it and returns an :class:`ExplorerApp` whose parts can be driven without a browser
(tests call ``add_uploads`` and the chain's methods directly). :mod:`convlab.explore_open` serves it with Voila.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from convlab.augment import PCAColor
from convlab.data import decode_image_bytes, decode_image_file, image_files, sample_photos
from convlab.widgets import chain_preview, pca_axes_figure

__all__ = [
    "FOOD",
    "SAMPLES",
    "FOLDER",
    "UPLOADS",
    "MAX_UPLOAD_BYTES",
    "MIN_SIDE",
    "ExplorerApp",
    "decode_upload",
    "explorer_app",
    "fit_photo_set",
]

FOOD, SAMPLES, FOLDER, UPLOADS = "the course's food photos", "scikit-image's photos", "your folder", "your uploads"
#: the food photo the notebooks preview first (yellow bell peppers)
FIRST_FOOD_PHOTO = "D035.jpeg"
#: an upload larger than this is refused before decoding (a 48-megapixel phone JPEG is about 20 MB)
MAX_UPLOAD_BYTES = 40_000_000
#: the smallest side a photo may have: a smaller one would be mostly interpolation in a 160 px preview
MIN_SIDE = 32
_ACCEPT = "image/*,.jpg,.jpeg,.png,.webp,.bmp,.gif,.tif,.tiff"


def decode_upload(name: str, content: bytes) -> Tensor:
    """The uploaded file ``name`` as a uint8 RGB ``(3, H, W)`` photo.

    Raises ValueError with one sentence saying why the file is refused: empty, larger than
    :data:`MAX_UPLOAD_BYTES`, not an image Pillow can read (any format it can: JPEG, PNG, WebP, GIF, BMP, TIFF...),
    a possible decompression bomb, or smaller than :data:`MIN_SIDE` pixels on a side.
    """
    size = len(content)
    if size == 0:
        raise ValueError(f"{name}: the file is empty; upload a photo (JPEG, PNG, WebP, ...)")
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(
            f"{name}: {size / 1e6:.0f} MB is more than the {MAX_UPLOAD_BYTES / 1e6:.0f} MB an upload may have; "
            "upload a smaller copy of the photo"
        )
    try:
        photo = decode_image_bytes(content, name)
    except ValueError as exc:
        raise ValueError(f"{exc}; upload a photo (JPEG, PNG, WebP, ...)") from None
    h, w = photo.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(
            f"{name}: {w} x {h} pixels is too small to preview; upload a photo at least {MIN_SIDE} pixels on each side"
        )
    return photo


def fit_photo_set(photos: list[Tensor], pixels: int = 4096) -> PCAColor:
    """AlexNet's PCA colour basis of a photo set: :class:`~convlab.augment.PCAColor` fitted on every k-th row and
    column of each photo, k chosen so that about ``pixels`` pixels per photo count (plenty for a 3 x 3 covariance,
    and no random subset: the same set always gives the same basis)."""
    grids = []
    for p in photos:
        k = max(1, int((p.shape[-2] * p.shape[-1] / pixels) ** 0.5))
        grids.append(p[:, ::k, ::k].reshape(3, -1))
    # one (3, N, 1) image of all of them: one pass over the pixels instead of a small product per photo
    return PCAColor().fit(torch.cat(grids, dim=1)[:, :, None])


def _food_photos() -> dict[str, Tensor]:
    from convlab.assets import fetch

    folder = fetch("food_photos", allow_network=False)
    return {p.name: decode_image_file(p) for p in image_files(folder)}


def _folder_photos(folder: Path) -> tuple[dict[str, Tensor], list[str]]:
    """The readable photos of ``folder`` and a sentence for each file refused."""
    photos, refused = {}, []
    for path in image_files(folder):
        try:
            photos[path.name] = decode_upload(path.name, path.read_bytes())
        except (ValueError, OSError) as exc:
            refused.append(str(exc))
    return photos, refused


def _basis_table(pca: PCAColor, label: str) -> str:
    vals, vecs = pca.eigenvalues_.tolist(), pca.eigenvectors_
    rows = "".join(
        f"<tr><td>PC{i + 1}</td><td>{vals[i]:.4f}</td><td>"
        + ", ".join(f"{v:+.3f}" for v in vecs[:, i].tolist())
        + "</td></tr>"
        for i in range(3)
    )
    return (
        f"<table class='convlab-pca-table'><caption>{html.escape(label)}</caption>"
        "<tr><th></th><th>eigenvalue</th><th>eigenvector (R, G, B)</th></tr>"
        f"{rows}</table>"
    )


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)  # a figure left open would also be shown as the cell's output
    return buf.getvalue()


@dataclass
class ExplorerApp:
    """The explorer's parts: ``widget`` to display, ``chain`` (a :class:`~convlab.widgets.ChainPreview`), the photo
    sets by name (``sets``), the controls that choose one (``source``, ``photo``), the ``upload`` button with its
    ``upload_message``, and the PCA panel (``pca_image``, ``pca_table``)."""

    widget: Any
    chain: Any
    sets: dict[str, dict[str, Tensor]]
    source: Any
    photo: Any
    upload: Any
    upload_message: Any
    pca_image: Any
    pca_table: Any
    fitted: dict[str, PCAColor] = field(default_factory=dict)
    _busy: bool = field(default=False, repr=False)  # True while the app itself sets the dropdowns

    def current_photo(self) -> Tensor:
        return self.sets[self.source.value][self.photo.value]

    def add_uploads(self, files: list[tuple[str, bytes]]) -> list[str]:
        """Add uploaded ``(name, content)`` files to :data:`UPLOADS` and show the first accepted one; returns
        (and shows in ``upload_message``) a sentence for each file refused."""
        uploads = self.sets.setdefault(UPLOADS, {})
        accepted, refused = [], []
        for name, content in files:
            try:
                photo = decode_upload(name, content)
            except ValueError as exc:
                refused.append(str(exc))
                continue
            key, k = name, 1
            while key in uploads:  # the same name twice: keep both
                k += 1
                key = f"{name} ({k})"
            uploads[key] = photo
            accepted.append(key)
        self.fitted.pop(UPLOADS, None)
        lines = [f"Refused: {html.escape(r)}." for r in refused]
        if accepted:
            names = html.escape(", ".join(accepted))
            lines.insert(0, f"Added {len(accepted)} photo{'s' if len(accepted) > 1 else ''}: {names}.")
            self._offer_sets()
            self._show_set(UPLOADS, accepted[0])
        self.upload_message.value = "<br>".join(lines)
        return refused

    def _on_upload(self, change: Any) -> None:
        files = [(f["name"], bytes(f["content"])) for f in change["new"]]
        if files:
            self.add_uploads(files)
            self.upload.value = ()  # ready for the next upload of the same file

    def _offer_sets(self) -> None:
        names = [s for s in (FOOD, SAMPLES, FOLDER, UPLOADS) if self.sets.get(s)]
        if list(self.source.options) != names:
            busy, self._busy = self._busy, True
            value = self.source.value
            self.source.options = names
            self.source.value = value if value in names else names[0]
            self._busy = busy

    def _show_set(self, name: str, photo: str | None = None) -> None:
        photos = self.sets[name]
        busy, self._busy = self._busy, True
        self.source.value = name
        self.photo.options = list(photos)
        self.photo.value = photo if photo in photos else next(iter(photos))
        self._busy = busy
        self.chain.set_photo(self.current_photo())
        self._show_pca(name)

    def _show_pca(self, name: str) -> None:
        if name not in self.fitted:
            self.fitted[name] = fit_photo_set(list(self.sets[name].values()))
        pca = self.fitted[name]
        png = _figure_png(pca_axes_figure(pca))
        self.pca_image.value = png
        self.pca_image.layout.width = f"{int.from_bytes(png[16:20], 'big')}px"  # its own size (the PNG header's)
        imagenet = PCAColor.imagenet()
        n = len(self.sets[name])
        tables = _basis_table(pca, f"{name} ({n} photo{'s' if n > 1 else ''})") + _basis_table(
            imagenet, "ImageNet (published; the chain's PCAColor uses it)"
        )
        self.pca_table.value = f"<div style='display: flex; gap: 40px'>{tables}</div>"

    def _on_source(self, change: Any) -> None:
        if not self._busy and change["new"] in self.sets:
            self._show_set(change["new"])

    def _on_photo(self, change: Any) -> None:
        if not self._busy and change["new"] in self.sets[self.source.value]:
            self.chain.set_photo(self.current_photo())


def explorer_app(
    photos: str | Path | None = None, *, size: int = 240, n: int = 8, chain: tuple[str, ...] = ("RandomRotation",)
) -> ExplorerApp:
    """The augmentation explorer (see the module docstring).

    Args:
        photos: a folder of your own photos, offered as a photo set (files that cannot be read are listed).
        size: the preview size at start, in pixels (the page has a size control).
        n: augmented copies in the grid.
        chain: the augmentations the chain starts with (names from :data:`convlab.widgets.AUGMENTATIONS`).
    """
    import ipywidgets as W

    sets: dict[str, dict[str, Tensor]] = {}
    notes = []
    try:
        sets[FOOD] = _food_photos()
    except Exception as exc:  # not installed (run .ci/install), or a damaged file: the other sets still work
        notes.append(f"The course's food photos are not available ({html.escape(str(exc))}).")
    sets[SAMPLES] = sample_photos()
    if photos is not None:
        folder = Path(photos).expanduser()
        if not folder.is_dir():
            raise ValueError(f"photos: expected a folder of photos, got {str(photos)!r}, which is not a folder")
        sets[FOLDER], refused = _folder_photos(folder)
        if not sets[FOLDER]:
            notes.append(f"No readable photo in {html.escape(str(folder))}.")
        notes += [f"Refused: {html.escape(r)}." for r in refused]
    first_set = FOLDER if sets.get(FOLDER) else FOOD if sets.get(FOOD) else SAMPLES
    first_photo = FIRST_FOOD_PHOTO if first_set == FOOD and FIRST_FOOD_PHOTO in sets[FOOD] else None
    photo0 = sets[first_set][first_photo or next(iter(sets[first_set]))]

    wide = {"description_width": "90px"}
    source = W.Dropdown(options=[first_set], value=first_set, description="photo set", style=wide)
    photo = W.Dropdown(options=[], description="photo", style=wide)
    upload = W.FileUpload(accept=_ACCEPT, multiple=True, description="upload photos", icon="")
    upload.add_class("convlab-upload")
    upload_message = W.HTML("<br>".join(notes))
    upload_message.add_class("convlab-upload-message")
    preview = chain_preview(photo0, chain, n=n, size=size)
    pca_image = W.Image(format="png")
    pca_table = W.HTML()
    pca_table.add_class("convlab-pca")
    box = W.VBox(
        [
            W.HTML(
                "<h2>Augmentation explorer</h2>Choose a photo (or upload your own), build a chain of augmentations, "
                "move the sliders, and copy the code for what you see."
            ),
            W.HBox([source, photo, upload]),
            upload_message,
            preview.widget,
            W.HTML(
                "<h3>AlexNet's PCA colour: the photo set's principal axes</h3>PCA colour adds to every pixel "
                "alpha1*lambda1*PC1 + alpha2*lambda2*PC2 + alpha3*lambda3*PC3, alpha ~ N(0, sigma), once per photo."
            ),
            pca_image,
            pca_table,
        ]
    )
    box.add_class("convlab-explorer")
    app = ExplorerApp(box, preview, sets, source, photo, upload, upload_message, pca_image, pca_table)
    app._offer_sets()
    app._show_set(first_set, first_photo)
    source.observe(app._on_source, names="value")
    photo.observe(app._on_photo, names="value")
    upload.observe(app._on_upload, names="value")
    return app
