"""Real data sets for the course, held in memory as uint8 tensors, with fixed seeded splits.

- :func:`load_food`: colour photos of foods (IFCT 2017), de-duplicated, a choice of food groups. The default,
  fruits / other vegetables / marine fish, is the seminar's "3 classes instead of 1000".
- :func:`load_fashion_mnist`: 60k/10k grayscale product photos, for the larger-data regimes.
- :func:`load_image_folder`: any ``root/<class>/<image>`` folder of your own.
- :func:`torchvision_dataset`: the online route to standard sets such as Food-101 or Oxford-IIIT Pets.
- :func:`imagenet_samples`, :func:`sample_photos`: labelled ImageNet photos and scikit-image's bundled photos.

Every :class:`ImageSet` yields ``(image, label)`` with ``image`` a uint8 ``(C, H, W)`` tensor and has a
:meth:`ImageSet.fingerprint` that changes whenever any image or label changes (used to key feature caches).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from convlab.assets import fetch
from convlab.backbones import imagenet_categories

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from torch.utils.data import Dataset

__all__ = [
    "ImageSet",
    "Splits",
    "FOOD_GROUPS",
    "HELD_OUT_GROUPS",
    "load_food",
    "load_held_out_food",
    "load_fashion_mnist",
    "FASHION_MNIST_CLASSES",
    "load_image_folder",
    "torchvision_dataset",
    "imagenet_samples",
    "sample_photos",
    "decode_image_file",
    "decode_image_bytes",
    "IMAGE_SUFFIXES",
    "class_folders",
    "image_files",
    "stratified_split",
]

FOOD_GROUPS: dict[str, str] = {
    "A": "cereals_millets",
    "B": "grain_legumes",
    "C": "green_leafy_vegetables",
    "D": "other_vegetables",
    "E": "fruits",
    "F": "roots_tubers",
    "G": "condiments_spices",
    "H": "nuts_oil_seeds",
    "I": "sugars",
    "J": "mushrooms",
    "K": "miscellaneous",
    "L": "milk_products",
    "M": "egg_products",
    "N": "poultry",
    "O": "animal_meat",
    "P": "marine_fish",
    "Q": "marine_shellfish",
    "R": "marine_mollusks",
    "S": "freshwater_fish_shellfish",
    "T": "edible_oils_fats",
}

#: Food groups that no notebook before the capstone uses (the course's splits, ``load_food()`` with any seed, hold
#: fruits, other vegetables and marine fish only): the six other groups with the most distinct photos (19 to 34
#: each): green leafy vegetables, condiments and spices, grain legumes, cereals and millets, nuts and oil seeds,
#: roots and tubers. :func:`load_held_out_food` splits them; its test split is the capstone's held-out test set.
HELD_OUT_GROUPS: tuple[str, ...] = ("C", "G", "B", "A", "H", "F")

FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

#: File name endings read as images (lower case) by :func:`load_image_folder` and :func:`image_files`.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageSet(torch.utils.data.Dataset):
    """Images in memory with integer labels.

    Args:
        images: a list of uint8 ``(C, H, W)`` tensors (sizes may differ) or one uint8 ``(N, C, H, W)`` tensor.
        labels: ``(N,)`` integer labels in ``[0, len(classes))``.
        classes: class names; ``classes[label]`` names a label.
        ids: a name per image (file name or index), shown in plots of mistakes.
        transform: applied to the image in ``__getitem__`` (e.g. a torchvision v2 transform).
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        classes: Sequence[str],
        ids: Sequence[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels: expected shape ({len(images)},), got {tuple(labels.shape)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"labels: expected values in [0, {len(classes)}), got range [{labels.min()}, {labels.max()}]"
            )
        for i in range(min(len(images), 1)):
            if images[i].dtype != torch.uint8 or images[i].ndim != 3:
                raise TypeError(
                    f"images: expected uint8 (C, H, W) images, got {images[i].dtype} {tuple(images[i].shape)}"
                )
        self.images = images
        self.labels = labels
        self.classes = tuple(classes)
        self.ids = tuple(ids) if ids is not None else tuple(str(i) for i in range(len(labels)))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        if len(self.classes) > 12:
            return f"ImageSet({len(self)} images, {len(self.classes)} classes)"
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return f"ImageSet({len(self)} images, classes={dict(zip(self.classes, counts))})"

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSet:
        """A new ImageSet with the chosen images (same classes and transform)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if isinstance(self.images, torch.Tensor):
            images = self.images[idx]
        else:
            images = [self.images[i] for i in idx.tolist()]
        return ImageSet(images, self.labels[idx], self.classes, [self.ids[i] for i in idx.tolist()], self.transform)

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> ImageSet:
        """The same images and labels with another transform (the data are shared, not copied)."""
        return ImageSet(self.images, self.labels, self.classes, self.ids, transform)

    def per_class(self, n: int, seed: int = 0) -> ImageSet:
        """At most ``n`` images of each class, drawn with ``seed`` (for learning curves over set size)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an int >= 1, got {n!r}")
        g = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(len(self.classes)):
            idx = torch.nonzero(self.labels == c).flatten()
            keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
        return self.subset(torch.cat(keep).sort().values)

    def fingerprint(self) -> str:
        """sha256 over every image's bytes and shape, the labels and the class names (transform excluded).

        Computed afresh on every call, never remembered: images and labels are mutable tensors, and a remembered
        value would outlive an in-place edit (a feature cache would then serve the old features). It costs one
        sha256 pass over the pixels: a fraction of a second for the course's data sets, small next to the
        extraction it guards.
        """
        h = hashlib.sha256()
        h.update(repr(self.classes).encode())
        h.update(self.labels.numpy().tobytes())
        if isinstance(self.images, torch.Tensor):  # one batch: walk numpy rows (much faster than tensor indexing)
            batch = self.images.contiguous().numpy()
            shape = repr(tuple(batch.shape[1:])).encode()
            for image in batch:
                h.update(shape)
                h.update(image)
        else:
            for image in self.images:
                h.update(repr(tuple(image.shape)).encode())
                h.update(image.contiguous().numpy())
        return h.hexdigest()


@dataclass
class Splits:
    """Train / validation / test sets over the same classes, and how they were made."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    seed: int
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Splits(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
            f"classes={self.classes}, seed={self.seed})"
        )


def decode_image_file(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Decode a JPEG/PNG/... file with Pillow into a uint8 ``(channels, H, W)`` tensor (RGB or grayscale).

    The image comes out the way a photo viewer shows it: the EXIF orientation tag is applied (a phone photo
    taken upright is upright), 16-bit images are scaled to 8 bits (65535 -> 255), not clipped, and an image with
    transparency (RGBA, grey + alpha, a palette with a transparent colour) is composited over white, as a viewer
    on a white page shows it: a transparent pixel becomes white, whatever colour values it hides.

    Raises ValueError naming the file if it is not a readable image (corrupt, truncated or another format), or if
    it has more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``): a tiny file can
    claim a 20000x20000 image and take gigabytes to decode.
    """
    return _decode(path, str(path), channels)


def decode_image_bytes(data: bytes, name: str, channels: int = 3) -> torch.Tensor:
    """:func:`decode_image_file` for the bytes of an image file (an upload, say); errors name the file ``name``."""
    import io

    return _decode(io.BytesIO(bytes(data)), name, channels)


def _decode(source, name: str, channels: int) -> torch.Tensor:
    from PIL import Image, ImageOps

    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat both as the same refusal
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                im = ImageOps.exif_transpose(im)
                array = _to_uint8_array(im, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), SyntaxError, struct errors, ...
        why = str(exc).replace(f" {source!r}", "")  # a file object's repr says nothing to the user
        raise ValueError(f"{name}: not a readable image ({type(exc).__name__}: {why})") from exc
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _to_uint8_array(im, channels: int) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` uint8. Pillow's ``convert`` clips 16-bit grey (mode ``I;16``/``I``) at 255
    instead of scaling it, so those modes are scaled here: ``round(v * 255 / 65535)``. Transparency is composited
    over white (``convert("RGB")`` alone would drop the alpha channel and show the hidden colours)."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im).astype(np.float64)
        grey = np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2) if channels == 3 else grey
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    return np.asarray(im.convert("RGB" if channels == 3 else "L"))


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Sorted ``(train, val, test)`` index tensors holding ``fractions`` of every class (seeded with ``seed``)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions: expected three non-negative numbers summing to 1, got {tuple(fractions)}")
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train : n_train + n_val])
        parts[2].append(idx[n_train + n_val :])
    return [torch.cat(p).sort().values for p in parts]


def _near_duplicate_groups(images: Sequence[torch.Tensor], threshold: float = 0.02) -> list[int]:
    """Component id per image, joining images whose 32x32 thumbnails differ by an RMS below ``threshold``.

    On the food photos the nearest distinct pair is 0.078 apart and duplicates are <= 0.001, so the threshold
    sits well inside the gap.
    """
    thumbs = (
        torch.stack([F.interpolate(im[None].float(), size=(32, 32), mode="area")[0] for im in images]).flatten(1) / 255
    )
    close = (torch.cdist(thumbs, thumbs) / thumbs.shape[1] ** 0.5) <= threshold
    parent = list(range(len(images)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in torch.nonzero(torch.triu(close, diagonal=1)).tolist():
        parent[find(j)] = find(i)
    return [find(i) for i in range(len(images))]


def load_food(
    groups: Sequence[str] = ("E", "D", "P"),
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    max_per_class: int | None = None,
) -> Splits:
    """The food photos of the chosen groups, de-duplicated, split per class with a fixed ``seed``.

    Args:
        groups: food-group letters (see :data:`FOOD_GROUPS`); default fruits, other vegetables, marine fish.
        seed: the split seed (seed 0 is the course's fixed split; 0..4 for repeated splits).
        fractions: train / val / test fractions, per class.
        max_per_class: keep at most this many distinct photos per class (chosen with ``seed``) before splitting.

    Near-duplicate files (the same photo saved twice) are merged first, keeping the first file name, so no
    photo can land in two splits. ``splits.info`` records the counts before and after.
    """
    if isinstance(groups, str):
        raise TypeError(f"groups: expected a sequence of letters like ('E', 'D', 'P'), got the string {groups!r}")
    unknown = [g for g in groups if g not in FOOD_GROUPS]
    if unknown or len(set(groups)) != len(groups) or len(groups) < 2:
        raise ValueError(f"groups: expected >= 2 distinct letters from {''.join(FOOD_GROUPS)}, got {tuple(groups)}")
    folder = fetch("food_photos")
    paths = sorted(p for p in folder.glob("*.jpeg") if p.name[0] in groups)
    images = [decode_image_file(p) for p in paths]
    labels = [list(groups).index(p.name[0]) for p in paths]
    comp = _near_duplicate_groups(images)
    keep, seen = [], set()
    for i, c in enumerate(comp):
        if c not in seen:
            seen.add(c)
            keep.append(i)
    classes = tuple(FOOD_GROUPS[g] for g in groups)
    full = ImageSet([images[i] for i in keep], [labels[i] for i in keep], classes, [paths[i].name for i in keep])
    if max_per_class is not None:
        full = full.per_class(max_per_class, seed=seed)
    train, val, test = (full.subset(idx) for idx in stratified_split(full.labels, fractions, seed))
    info = {
        "files": len(paths),
        "distinct": len(keep),
        "per_class": torch.bincount(full.labels, minlength=len(classes)).tolist(),
    }
    return Splits(train, val, test, classes, seed, info)


def load_held_out_food(seed: int = 0, fractions: Sequence[float] = (0.5, 0.2, 0.3)) -> Splits:
    """The capstone's data: the food photos of :data:`HELD_OUT_GROUPS`, which no earlier notebook shows.

    The same photos, de-duplication and per-class split as :func:`load_food` (seed 0 is the fixed split), over
    groups disjoint from the course's default ones, so none of these photos appears in notebooks 00-09 (a test also
    checks that none is a near-duplicate of a course photo). A larger test fraction than the course's (0.3) keeps
    the held-out test set near 50 photos (46: one photo is about 2 points of accuracy).
    """
    splits = load_food(HELD_OUT_GROUPS, seed=seed, fractions=fractions)
    splits.info["groups"] = HELD_OUT_GROUPS
    return splits


def _read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    val_per_class: int = 500,
    seed: int = 0,
) -> Splits:
    """Fashion-MNIST as uint8 ``(N, 1, 28, 28)`` tensors: validation carved out of the 60k training images.

    Args:
        train_per_class: keep this many training images per class (default: all that remain after validation).
        test_per_class: keep this many test images per class (default: all 1,000).
        val_per_class: validation images per class, taken from the official training set.
        seed: which images are drawn; the official train/test boundary is always kept.
    """
    if not isinstance(val_per_class, int) or isinstance(val_per_class, bool) or not 0 < val_per_class < 6000:
        raise ValueError(f"val_per_class: expected an int in [1, 5999], got {val_per_class!r}")
    for arg, value, most in (
        ("train_per_class", train_per_class, 6000 - val_per_class),
        ("test_per_class", test_per_class, 1000),
    ):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= most):
            raise ValueError(f"{arg}: expected None or an int in [1, {most}], got {value!r}")
    folder = fetch("fashion_mnist")
    x_train = torch.from_numpy(_read_idx(folder / "train-images-idx3-ubyte").copy()).unsqueeze(1)
    y_train = torch.from_numpy(_read_idx(folder / "train-labels-idx1-ubyte").astype(np.int64))
    x_test = torch.from_numpy(_read_idx(folder / "t10k-images-idx3-ubyte").copy()).unsqueeze(1)
    y_test = torch.from_numpy(_read_idx(folder / "t10k-labels-idx1-ubyte").astype(np.int64))
    full_train = ImageSet(x_train, y_train, FASHION_MNIST_CLASSES, [f"train_{i}" for i in range(len(y_train))])
    test = ImageSet(x_test, y_test, FASHION_MNIST_CLASSES, [f"test_{i}" for i in range(len(y_test))])
    g = torch.Generator().manual_seed(seed)
    val_idx, train_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y_train == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[:val_per_class])
        rest = idx[val_per_class:]
        train_idx.append(rest if train_per_class is None else rest[:train_per_class])
    train = full_train.subset(torch.cat(train_idx).sort().values)
    val = full_train.subset(torch.cat(val_idx).sort().values)
    if test_per_class is not None:
        test = test.per_class(test_per_class, seed=seed)
    return Splits(train, val, test, FASHION_MNIST_CLASSES, seed, {"source": "fashion_mnist"})


def load_image_folder(
    root: str | Path,
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    on_error: str = "raise",
) -> Splits:
    """Your own images: ``root/<class name>/<image files>``, decoded to RGB and split per class with ``seed``.

    If ``root`` holds ``train/`` and ``test/`` (and optionally ``val/``) folders, those splits are used as given;
    they must hold the same class folders, spelt the same way.

    Set-ups that would train to a meaningless number are refused with a ValueError naming the folder: fewer than
    two classes, a class folder without images, split folders whose classes differ, class names that differ only
    in case. Hidden files (names starting with ``.``, such as macOS's ``._photo.jpg`` resource files) and files
    that are not images by their names (:data:`IMAGE_SUFFIXES`; e.g. ``notes.txt``, ``photo.heic``) are skipped
    with a warning naming them. Images with transparency are composited over white (:func:`decode_image_file`).

    Args:
        on_error: ``"raise"`` (default) stops at the first unreadable file with a ValueError naming it;
            ``"skip"`` leaves such files out with a warning (decompression bombs included).
    """
    root = Path(root)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"root: no such folder: {root}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = {"train": _class_folders(root / "train"), "test": _class_folders(root / "test")}
        if (root / "val").is_dir():
            parts["val"] = _class_folders(root / "val")
        for name, classes in parts.items():
            if name != "train":
                _check_same_classes(root, parts["train"], name, classes)
        train = _read_class_folders(root / "train", on_error, parts["train"])
        test = _read_class_folders(root / "test", on_error, parts["train"])
        val = _read_class_folders(root / "val", on_error, parts["train"]) if "val" in parts else train.subset([])
        return Splits(train, val, test, train.classes, seed, {"root": str(root), "layout": "given splits"})
    full = _read_class_folders(root, on_error, _class_folders(root))
    train, val, test = (full.subset(idx) for idx in stratified_split(full.labels, fractions, seed))
    return Splits(train, val, test, full.classes, seed, {"root": str(root), "layout": "split by convlab"})


def _class_folders(root: Path) -> list[str]:
    """The class folder names under ``root`` (hidden ones left out), checked: at least two, no case-only twins."""
    found = class_folders(root)
    if not found:
        raise ValueError(f"root: expected class sub-folders in {root} (root/<class>/<image>), found none")
    if len(found) < 2:
        raise ValueError(
            f"root: expected at least 2 class folders in {root} (a classifier with one class is "
            f"always right), found only {found[0]!r}"
        )
    by_lower: dict[str, list[str]] = {}
    for name in found:
        by_lower.setdefault(name.lower(), []).append(name)
    twins = [names for names in by_lower.values() if len(names) > 1]
    if twins:
        raise ValueError(
            f"root: class folders in {root} differ only in case ({', '.join(map(repr, twins[0]))}); "
            "rename them to one spelling (they are one class on other file systems)"
        )
    return found


def _check_same_classes(root: Path, train: list[str], split: str, other: list[str]) -> None:
    if other == train:
        return
    missing, extra = sorted(set(train) - set(other)), sorted(set(other) - set(train))
    lower = {c.lower(): c for c in train}
    case = [f"{split}/{c} vs train/{lower[c.lower()]}" for c in extra if c.lower() in lower]
    if case:
        raise ValueError(
            f"root: class folders in {root} differ only in case ({', '.join(case)}); "
            "use the same spelling in every split"
        )
    what = []
    if extra:
        what.append(f"{split}/ has {extra} that train/ lacks (its images could never be predicted)")
    if missing:
        what.append(f"train/ has {missing} that {split}/ lacks")
    raise ValueError(f"root: the splits in {root} must hold the same class folders: {'; '.join(what)}")


def class_folders(root: Path) -> list[str]:
    """The names of the visible sub-folders of ``root`` (one per class), sorted: the class order."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def image_files(folder: Path, hidden: bool = False) -> list[Path]:
    """The image files (by :data:`IMAGE_SUFFIXES`) in ``folder``, sorted; names starting with "." only if ``hidden``.

    Hidden files are not images as a rule (macOS writes ``._photo.jpg`` resource files beside copied photos).
    """
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and (hidden or not p.name.startswith("."))
    )


def _read_class_folders(root: Path, on_error: str, classes: Sequence[str]) -> ImageSet:
    images, labels, ids, hidden, other = [], [], [], [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = image_files(folder, hidden=True)
        other += sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES
        )
        count = 0
        for path in files:
            if path.name.startswith("."):  # ._photo.jpg (macOS resource fork), .thumbnail.png, ...
                hidden.append(path)
                continue
            try:
                images.append(decode_image_file(path))
            except ValueError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipped unreadable image {path}: {exc}", stacklevel=3)
                continue
            labels.append(label)
            ids.append(f"{name}/{path.name}")
            count += 1
        if count == 0:
            skipped = " (its files were unreadable or hidden)" if files else ""
            raise ValueError(
                f"root: class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}){skipped}; "
                "add images or remove the folder"
            )
    if other:
        names = ", ".join(str(p.relative_to(root)) for p in other[:3]) + (", ..." if len(other) > 3 else "")
        warnings.warn(
            f"skipped {len(other)} file(s) under {root} that are not images by their names ({names}); images are "
            f"{', '.join(IMAGE_SUFFIXES)}",
            stacklevel=3,
        )
    if hidden:
        warnings.warn(
            f"skipped {len(hidden)} hidden file(s) under {root} (names starting with '.', e.g. "
            f"{hidden[0].relative_to(root)}; macOS writes '._' resource files beside copied photos)",
            stacklevel=3,
        )
    return ImageSet(images, labels, classes, ids)


def torchvision_dataset(name: str, root: str | Path, split: str = "train", download: bool = True) -> Dataset:
    """The online route to a standard data set through ``torchvision.datasets`` (needs the internet once).

    ``name`` is ``"Food101"`` or ``"OxfordIIITPet"``; images come back as uint8 tensors via ``v2.PILToTensor()``.
    torchvision checks the archive's MD5 after downloading. Not used offline.
    """
    from torchvision import datasets
    from torchvision.transforms import v2

    to_tensor = v2.PILToTensor()
    if name == "Food101":
        return datasets.Food101(str(root), split=split, transform=to_tensor, download=download)
    if name == "OxfordIIITPet":
        return datasets.OxfordIIITPet(
            str(root), split="trainval" if split == "train" else "test", transform=to_tensor, download=download
        )
    raise ValueError(f"name: expected 'Food101' or 'OxfordIIITPet', got {name!r}")


def imagenet_samples() -> ImageSet:
    """The 20 labelled ImageNet validation photos (label = ImageNet class index), as one ImageSet."""
    folder = fetch("imagenet_samples")
    paths = sorted(folder.glob("imagenet_*.jpg"))
    labels = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    return ImageSet([decode_image_file(p) for p in paths], labels, imagenet_categories(), [p.name for p in paths])


def sample_photos() -> dict[str, torch.Tensor]:
    """scikit-image's bundled colour photos (CC0) as uint8 ``(3, H, W)`` tensors: chelsea, coffee, astronaut, rocket."""
    from skimage import data as skdata

    names = ("chelsea", "coffee", "astronaut", "rocket")
    return {
        n: torch.from_numpy(np.ascontiguousarray(getattr(skdata, n)())).permute(2, 0, 1).contiguous() for n in names
    }
