"""ConvLab: a hands-on course toolkit for practical ConvNet work.

Modules, one idea each, in six layers, lowest first: a module imports only from its own layer or lower ones. This
list is the one map of the layers: ``tests/test_architecture.py`` reads it and checks every import against it (and
that nothing imports in a cycle). A folder's modules (``augment/``, ``featcache/``, ``exercises/``, ``cli/``) take
their folder's layer.

**foundations**
  :mod:`convlab.device` (``device="auto"``, ``eval_mode()``), :mod:`convlab.threads` (threads per kernel on a
  shared machine), :mod:`convlab.memory` (peak memory of a block of code), :mod:`convlab.atomicio` (files written
  whole or not at all), :mod:`convlab.display` (tables), :mod:`convlab.plots` (figures), :mod:`convlab.studyrun`
  (a study's runs in one resumable JSON), :mod:`convlab.arguments` (command-line numbers within a range);
  ``convlab._checks`` (shared argument checks, ``check_is_fitted``).

**weights and data**
  :mod:`convlab.weights` (one record per weights file: asset, classes, preprocessing, stages, top-1),
  :mod:`convlab.assets` (weights and data sets with sha256, licence and provenance; offline mirrors and
  downloads), :mod:`convlab.preprocess` (the one eval preprocessing: resize, centre crop, normalise),
  :mod:`convlab.backbones` (pretrained CNNs as named stages with a spec), :mod:`convlab.data` (real photo data
  sets with fixed seeded splits), :mod:`convlab.loading` (parallel loading with per-worker seeding).

**training, augmentation, evaluation**
  :mod:`convlab.engine` (the one training loop, ``fit``, and evaluation loop; history, early stopping,
  checkpoints), :mod:`convlab.smallcnn` (the small CNN trained from scratch), :mod:`convlab.featcache` (frozen
  activations cached on disk, safely keyed), :mod:`convlab.transfer` (new heads, freezing the first k stages, the
  three regimes), :mod:`convlab.distributed` (data-parallel training), :mod:`convlab.profiler` (where the trainer
  waits), :mod:`convlab.augment` (kernels, per-sample transforms, PCA colour, the fused pipeline),
  :mod:`convlab.tta` (10-crop and dense test-time views), :mod:`convlab.ensemble` (ensembles and their cost).

**studies behind the seminar's claims**
  :mod:`convlab.sizeaxis` (data-set size x regime), :mod:`convlab.similarity` (distance from ImageNet by stage
  probes), :mod:`convlab.augstudy` (each augmentation's effect on the food photos), :mod:`convlab.augregimes`
  (augmentation in a model that overfits and one that underfits), :mod:`convlab.colourstudy` (colour augmentation
  under another light), :mod:`convlab.handfeatures` (hand-engineered features and their linear classifiers),
  :mod:`convlab.cnnclassifiers` (the CNNs compared with them: from scratch and fine-tuned),
  :mod:`convlab.learningcurves` (accuracy against training-set size over seeds, and the crossover),
  :mod:`convlab.cropstudy` (crops and ensembles at equal cost), :mod:`convlab.verdicts` (the one verdict rule: what a
  measurement does and does not show),
  :mod:`convlab.ensemblestudy` (ensembles, 10-crop and dense evaluation where one point of accuracy can show).

**course**
  :mod:`convlab.course` (the course map), :mod:`convlab.benchresults` (the benchmarks' latest results as one table),
  :mod:`convlab.course_open` (``python -m convlab open``),
  :mod:`convlab.hub` (``python -m convlab hub``: a class on one machine), :mod:`convlab.hub_config` (its
  JupyterHub login and servers),
  :mod:`convlab.exercises` (self-checking exercises, learner copies), :mod:`convlab.widgets` (live augmentation
  previews), :mod:`convlab.slides` (slide metadata: each notebook presents as slides), :mod:`convlab.explorer`
  (the augmentation explorer app), :mod:`convlab.explore_open` (``python -m convlab explore``).

**command line**
  :mod:`convlab.__main__` (``python -m convlab`` and its subcommands), :mod:`convlab.cli` (``train``'s and
  ``evaluate``'s options, checked before torch is imported, and the runs of ``train``, ``evaluate`` and ``study``).
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
