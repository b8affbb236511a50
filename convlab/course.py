"""The course map: which notebook teaches which idea, with which ``convlab`` modules, and how long it takes.

One list serves the ``00_start_here`` notebook and a test that keeps README.md's map in step with the notebooks.
``cpu_s`` is the measured sum of the notebook's cell times when the test suite ran it (nbval) in one process on 2
idle CPU cores (README's map says which run, and shows the same numbers: a test keeps them equal); ``gpu_s`` is
``None`` until measured on a GPU.
:func:`benchmark_summary` reads the benchmark scripts' latest JSON results into the table notebook 00 shows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Lesson", "COURSE", "benchmark_summary", "run_time"]


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


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def benchmark_summary(results: str | os.PathLike) -> list[dict]:
    """One row per headline figure in ``benchmarks/results/*_cpu.json``: benchmark, measure, result, key.

    Reads what the scripts last wrote (nothing is re-measured); a missing file gives a row saying so. Ratios compare
    contenders at equal resources (1 thread each, or every core each: convlab's threads against as many
    ``DataLoader`` workers), as a user choosing between them would run them; ``key`` is where the figure is in the
    JSON, as the README cites it.
    """
    folder = Path(results)
    rows: list[dict] = []

    def load(name: str) -> dict | None:
        path = folder / name
        if not path.is_file():
            rows.append({"benchmark": name, "measure": "-", "result": f"not run yet ({path} is missing)", "key": "-"})
            return None
        return json.loads(path.read_text())

    aug = load("augment_cpu.json")
    if aug is not None:
        for key, h in aug["ratios"].items():
            setting, size = key.split("@")
            cores = aug["results"][key]["cores"] if setting == "all_cores" else 1
            resources = (
                "1 thread each"
                if setting == "per_core"
                else f"all {cores} cores each: {cores} threads vs {cores} DataLoader workers"
            )
            rows.append(
                {
                    "benchmark": "augmentation (bench_augment.py)",
                    "measure": f"convlab fused pipeline vs {h['best_other']}, {size} px, {resources}",
                    "result": _ratio(h["ratio"]),
                    "key": f"augment_cpu.json: ratios.{key}.ratio",
                }
            )
        slowest = max(v["median_ms"] for v in aug["results"]["widget"].values())
        rows.append(
            {
                "benchmark": "augmentation (bench_augment.py)",
                "measure": "slowest preview re-render",
                "result": f"{slowest:.0f} ms",
                "key": "augment_cpu.json: results.widget",
            }
        )
    tr = load("transfer_cpu.json")
    if tr is not None:
        head = f"head only, {tr['head_only']['epochs']} epochs: cache vs recomputing"
        partial = f"first {tr['partial']['frozen_stages']} stages frozen: boundary cache vs none"
        for part, what in (("head_only", head), ("partial", partial)):
            rows.append(
                {
                    "benchmark": "feature cache (bench_transfer.py)",
                    "measure": f"{what} (speed-up)",
                    "result": _ratio(tr[part]["speedup_cold"]),
                    "key": f"transfer_cpu.json: {part}.speedup_cold",
                }
            )
    tta = load("tta_cpu.json")
    if tta is not None:
        acc = tta["acceptance"]
        same, dense = acc["tencrop_vs_10_single_same_best_batch"], acc["dense_vs_tencrop"]
        for name, what, field in (
            ("crops_vs_pil_tencrop", "building 10 crops vs PIL TenCrop (speed-up)", "speedup"),
            (
                "tencrop_vs_10_single_same_best_batch",
                f"10-crop vs ten single-crop evaluations, forwards of {same['batch']} each (time)",
                "ratio",
            ),
            (
                "dense_vs_tencrop",
                f"dense evaluation (whole image + mirror, Q={dense['scale']}) vs 10-crop (time)",
                "ratio",
            ),
        ):
            rows.append(
                {
                    "benchmark": "multi-crop (bench_tta.py)",
                    "measure": what,
                    "result": _ratio(acc[name][field]),
                    "key": f"tta_cpu.json: acceptance.{name}.{field}",
                }
            )
    shared = load("shared_cpu.json")
    if shared is not None:
        n, cpus = shared["kernels"], shared["machine"]["cpus"]
        for name, what in (("policy", "convlab's thread policy"), ("default", "PyTorch's default threads")):
            rows.append(
                {
                    "benchmark": "shared machine (bench_shared.py)",
                    "measure": f"{n} kernels at once on {cpus} cores, time vs alone: {what}",
                    "result": _ratio(shared["results"][name]["slowdown"]),
                    "key": f"shared_cpu.json: results.{name}.slowdown",
                }
            )
    return rows
