"""The course map: which notebook teaches which idea, with which ``convlab`` modules, and how long it takes.

One list serves the ``00_start_here`` notebook and a test that keeps README.md's map in step with the notebooks.
``cpu_s`` is the measured nbval time on 2 CPU cores (see README), ``None`` where not yet measured.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lesson", "COURSE"]


@dataclass(frozen=True)
class Lesson:
    notebook: str
    idea: str
    modules: tuple[str, ...]


COURSE: tuple[Lesson, ...] = (
    Lesson("00_start_here", "the course map, set-up check, licences", ("course", "assets")),
    Lesson("01_open_source_weights", "find, load and trust published code + weights: provenance, licence, sha256, "
           "weights_only; stages; swapping the 1000-way softmax for a 3-way one", ("assets", "backbones", "data")),
    Lesson("02_transfer_small_data", "little data: a new softmax head on a frozen backbone, frozen activations "
           "cached on disk, confusion matrix and worst mistakes", ("transfer", "featcache", "engine")),
    Lesson("03_transfer_freeze_first_layers", "more data: freeze only the first k stages; accuracy and time per "
           "epoch against k", ("transfer", "featcache", "engine")),
    Lesson("04_transfer_full_finetune", "lots of data: fine-tune everything from pretrained vs from scratch; the "
           "'more data, fewer frozen layers' rule measured", ("transfer", "engine")),
    Lesson("05_augmentation_geometry", "mirroring, random crops, rotation, shearing, local warping, with live "
           "previews", ("augment", "widgets")),
    Lesson("06_augmentation_color_pca", "colour shifting and AlexNet's PCA colour augmentation, with live previews",
           ("augment", "widgets")),
    Lesson("07_parallel_data_loading", "workers that load and distort data while the model trains; the seeding "
           "bug", ("loading", "profiler")),
    Lesson("08_data_vs_hand_engineering", "hand-engineered features vs learned ones over training-set sizes",
           ("handfeatures",)),
    Lesson("09_ensembles_and_multicrop", "winning benchmarks: ensembles and 10-crop, with their gain and cost",
           ("tta", "ensemble")),
)
