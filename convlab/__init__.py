"""ConvLab: a hands-on course toolkit for practical ConvNet work.

Modules, one idea each:

- :mod:`convlab.assets`: weights and data sets with sha256, licence and provenance; offline mirrors and downloads.
- :mod:`convlab.backbones`: pretrained CNNs as named stages with a spec (preprocessing, categories, licence).
- :mod:`convlab.preprocess`: the one eval preprocessing (resize, centre crop, normalise) that every spec uses.
- :mod:`convlab.data`: real photo data sets with fixed seeded splits.
- :mod:`convlab.device`: ``device="auto"``, ``eval_mode()``.
- :mod:`convlab.transfer`: heads, freezing the first k stages (BatchNorm policy), the regimes and their comparison.
- :mod:`convlab.engine`: the one training loop (fit) and evaluation loop, history, early stopping, checkpoints.
- :mod:`convlab.featcache`: frozen activations cached on disk at any freeze boundary, safely keyed.
- :mod:`convlab.augment`: augmentation kernels, per-sample transforms (torchvision v2), PCA colour, fused pipeline.
- :mod:`convlab.loading`, :mod:`convlab.profiler`: parallel loading with per-worker seeding; where the trainer waits.
- :mod:`convlab.handfeatures`: colour and gradient-orientation histograms, learning curves.
- :mod:`convlab.smallcnn`: the small CNN that notebooks 05-08 train from scratch.
- :mod:`convlab.tta`, :mod:`convlab.ensemble`: multi-crop test-time views and ensembles, with their cost measured.
- :mod:`convlab.widgets`: live augmentation previews (ipywidgets, imported only there).
- :mod:`convlab.display`, :mod:`convlab.plots`, :mod:`convlab.exercises`: tables, figures, self-checks.
- :mod:`convlab.cli` (+ ``cli_train``, ``cli_evaluate``, :mod:`convlab.distributed`): ``python -m convlab train``.
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING

# Names are imported on first use (PEP 562), so ``import convlab``, ``python -m convlab open --help`` and the refusal
# of a bad command-line argument stay fast (torch, torchvision and matplotlib load only when something needs them).
_SUBMODULES = ("augment", "engine", "ensemble", "featcache", "handfeatures", "loading", "profiler", "transfer", "tta")
_EXPORTS = {
    "convlab.assets": ("ASSETS", "AssetNotFoundError", "IntegrityError", "fetch", "load_weights_file", "verify_file"),
    "convlab.backbones": ("BACKBONES", "Backbone", "BackboneSpec", "load_backbone"),
    "convlab.data": (
        "ImageSet",
        "Splits",
        "imagenet_samples",
        "load_fashion_mnist",
        "load_food",
        "load_image_folder",
        "sample_photos",
    ),
    "convlab.device": ("resolve_device",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # what static tools and IDEs see
    from convlab import augment, engine, ensemble, featcache, handfeatures, loading, profiler, transfer, tta
    from convlab.assets import ASSETS, AssetNotFoundError, IntegrityError, fetch, load_weights_file, verify_file
    from convlab.backbones import BACKBONES, Backbone, BackboneSpec, load_backbone
    from convlab.data import (
        ImageSet,
        Splits,
        imagenet_samples,
        load_fashion_mnist,
        load_food,
        load_image_folder,
        sample_photos,
    )
    from convlab.device import resolve_device


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # any submodule: convlab.plots, convlab.assets, ...
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "augment",
    "engine",
    "featcache",
    "transfer",
    "ensemble",
    "tta",
    "handfeatures",
    "loading",
    "profiler",
    "ASSETS",
    "AssetNotFoundError",
    "IntegrityError",
    "fetch",
    "load_weights_file",
    "verify_file",
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "load_backbone",
    "ImageSet",
    "Splits",
    "imagenet_samples",
    "load_fashion_mnist",
    "load_food",
    "load_image_folder",
    "sample_photos",
    "resolve_device",
]

__version__ = "0.1.0"
