"""The course map: which notebook teaches which idea, with which ``convlab`` modules, and how long it takes.

One list serves the ``00_start_here`` notebook and a test that keeps README.md's map in step with the notebooks.
``cpu_s`` is the measured sum of the notebook's cell times when the test suite ran it (nbval) in one process on 2
idle CPU cores (README's map says which run, and shows the same numbers: a test keeps them equal); ``gpu_s`` is
``None`` until measured on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lesson", "COURSE", "run_time"]


@dataclass(frozen=True)
class Lesson:
    notebook: str
    idea: str
    modules: tuple[str, ...]
    cpu_s: int | None = None
    gpu_s: int | None = None


COURSE: tuple[Lesson, ...] = (
    Lesson("00_start_here", "the course map, set-up check, licences", ("course", "assets"), cpu_s=1),
    Lesson(
        "01_open_source_weights",
        "find, load and trust published code + weights: provenance, licence, sha256, "
        "weights_only; stages; swapping the 1000-way softmax for a 3-way one",
        ("assets", "backbones", "data"),
        cpu_s=9,
    ),
    Lesson(
        "02_transfer_small_data",
        "little data: a new softmax head on a frozen backbone (your own training loop), "
        "activations cached on disk; similarity to ImageNet measured by stage probes; the size axis at 10 per class",
        ("transfer", "featcache", "similarity", "sizeaxis"),
        cpu_s=63,
    ),
    Lesson(
        "03_transfer_freeze_first_layers",
        "more data: freeze the first k stages by hand, BatchNorm included; "
        "the size axis at 100 per class, k against accuracy and time",
        ("transfer", "featcache", "sizeaxis"),
        cpu_s=38,
    ),
    Lesson(
        "04_transfer_full_finetune",
        "lots of data: fine-tune everything with parameter groups; the size axis "
        "(size x regime, error bars) and the 'more data, fewer frozen layers' verdict; choosing a regime",
        ("transfer", "sizeaxis"),
        cpu_s=58,
    ),
    Lesson(
        "05_augmentation_geometry",
        "mirroring, random crops, rotation, shearing, local warping, with live "
        "previews; each one's own effect, trained from scratch over seeds",
        ("augment", "widgets", "augstudy"),
        cpu_s=91,
    ),
    Lesson(
        "06_augmentation_color_pca",
        "colour shifting and AlexNet's PCA colour augmentation, with live previews; "
        "their effects and AlexNet's recipe, trained from scratch",
        ("augment", "widgets", "augstudy"),
        cpu_s=31,
    ),
    Lesson(
        "07_parallel_data_loading",
        "workers that load and distort data while the model trains; the seeding bug",
        ("loading", "profiler", "smallcnn"),
        cpu_s=13,
    ),
    Lesson(
        "08_data_vs_hand_engineering",
        "hand-engineered features (your own too) vs learned ones over training-set sizes; the crossover with its "
        "interval, live and stored",
        ("handfeatures", "learningcurves"),
        cpu_s=66,
    ),
    Lesson(
        "09_ensembles_and_multicrop",
        "winning benchmarks: ensembles and 10-crop, with their gain and cost",
        ("tta", "ensemble"),
        cpu_s=69,
    ),
    Lesson(
        "10_capstone_pipeline",
        "the capstone: your whole pipeline (plan from size and similarity, augmentation, a training loop that "
        "selects on validation data, 10-crop) on food groups no notebook has shown, against the reference's "
        "accuracy and cost",
        ("data", "similarity", "cropstudy", "verdicts", "exercises"),
        cpu_s=66,
    ),
)


def run_time(notebook: str) -> str:
    """The line a notebook's set-up cell prints about its own run time, read from :data:`COURSE`.

    Args:
        notebook: the notebook's file stem (``"02_transfer_small_data"``) or its two-digit number (``"02"``).
    """
    found = [lesson for lesson in COURSE if lesson.notebook == notebook or lesson.notebook[:2] == notebook]
    if len(found) != 1:
        known = ", ".join(lesson.notebook for lesson in COURSE)
        raise ValueError(f"notebook: expected one of the course's notebooks ({known}), got {notebook!r}")
    lesson = found[0]
    cpu = "not measured yet" if lesson.cpu_s is None else f"about {lesson.cpu_s} s"
    gpu = "not measured" if lesson.gpu_s is None else f"about {lesson.gpu_s} s"
    return (
        f"Run time of this notebook at its defaults, top to bottom: {cpu} of cell time on 2 idle CPU cores, "
        f"GPU {gpu} (the course map in 00_start_here lists every notebook's)."
    )
