"""Each notebook reports a measured result computed with the learner's function, and says whose code computed it.

For every notebook whose result a learner's function drives (:data:`DRIVEN`), the function is defined from the
notebook's own exercise cell twice: solved (the committed solution) and as a learner's copy has it (the stub). Each
goes through the exercise's ``use``, as the notebook does; then the code path that produces the notebook's result
runs with what ``use`` returned (the convlab functions the notebook calls, at the smallest size), and the test checks
that the solved function ran in that path and that the provenance line the notebook prints changes from convlab's
reference to the learner's. A notebook joins by one line in :data:`DRIVEN`.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from convlab.exercises import BEGIN, Exercise, nb02, nb03, nb04, nb05, nb06, nb07, nb08, nb09, strip_solutions

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Driven:
    """A notebook's result driven by an exercise: ``produce(fn, tmp_path)`` runs the result's code path with ``fn``."""

    notebook: str
    exercise: Exercise
    produce: Callable[[Callable, Path], object]


def _size_axis(regime: str, hook: str) -> Callable[[Callable, Path], object]:
    """Notebooks 03 and 04's call, ``run_size_axis``, at the smallest size: 2 images per class, one seed, 1 epoch."""

    def produce(fn: Callable, tmp_path: Path) -> object:
        from convlab.sizeaxis import Budget, run_size_axis
        from convlab.transfer import Regime

        regimes = {"freeze first 5": Regime.freeze_first(5), "fine-tune all": Regime.finetune()}
        return run_size_axis(
            [2],
            {regime: regimes[regime]},
            seeds=(0,),
            input_size=32,
            test_per_class=2,
            budget=Budget(min_epochs=1, min_steps=1),
            cache_dir=str(tmp_path),
            progress=False,
            **{hook: fn},
        )

    return produce


def _colour_study(fn: Callable, tmp_path: Path) -> object:
    """Notebook 06's live study trains each condition with ``augstudy.train_model``: one epoch on 16 photo frames."""
    from convlab.augstudy import StudyConfig, frames, train_model
    from convlab.data import load_food

    food = load_food()
    train = frames(food.train.images[:16], (36, 64))
    return train_model("colour shift", train, food.train.labels[:16], 3, 0, StudyConfig(epochs=1), color_shift=fn)


def _loader_timing(fn: Callable, tmp_path: Path) -> object:
    """Notebook 07 times its loaders over the food photos read from disk: here 2 steps of 4 photos, no workers."""
    from convlab import loading
    from convlab.assets import fetch
    from convlab.data import load_food

    files = loading.FileImageDataset.from_image_set(load_food().train, fetch("food_photos"), 32)
    return fn(loading.make_loader(files, batch_size=4, seed=0), lambda batch: None, 2, 1)


def _mirror_crop(fn: Callable, tmp_path: Path) -> object:
    from convlab import augregimes

    frames = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return augregimes.make_augment("mirror + crop", torch.Generator().manual_seed(0), mirror_crop=fn)(frames)


def _food_features(fn: Callable, tmp_path: Path) -> object:
    """Notebook 08's live learning curve fits ``hf.FeatureClassifier(food_features)``: here 4 photos per class."""
    from convlab.data import load_food
    from convlab.handfeatures import FeatureClassifier

    train = load_food().train.per_class(4, seed=0)
    return FeatureClassifier(fn, name="food_features + linear").fit(train).predict(train)


def _average(fn: Callable, tmp_path: Path) -> object:
    """Notebook 09's crop and ensemble tables average cached logits (members, photos, views, classes) with it."""
    logits = torch.randn(3, 5, 10, 3, generator=torch.Generator().manual_seed(0))
    return fn(logits, [0, 2], list(range(10)))


DRIVEN = [
    Driven("02", nb02.TRAIN_HEAD, lambda fn, tmp: fn(*nb02.little_features()[:2], 10)),
    Driven("03", nb03.FREEZE_FIRST_K, _size_axis("freeze first 5", "freeze_first_k")),
    Driven("04", nb04.PARAM_GROUPS, _size_axis("fine-tune all", "make_param_groups")),
    Driven("05", nb05.MIRROR_CROP, _mirror_crop),
    Driven("06", nb06.COLOR_SHIFT, _colour_study),
    Driven("07", nb07.TIME_STEPS, _loader_timing),
    Driven("08", nb08.FOOD_FEATURES, _food_features),
    Driven("09", nb09.AVERAGE, _average),
]


def _notebook(number: str) -> tuple[Path, list[str]]:
    path = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    return path, ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _cell_function(number: str, name: str, solved: bool) -> Callable:
    """``name`` as the notebook's exercise cell defines it: solved, or with the learner copy's stub."""
    path, cells = _notebook(number)
    source = next(c for c in cells if BEGIN in c and re.search(rf"^def {name}\(", c, re.M))
    from convlab import handfeatures

    namespace = {"torch": torch, "np": np, "math": math, "time": time, "hf": handfeatures}  # the notebooks' imports
    exec(compile(source if solved else strip_solutions(source), f"{path.name}: {name}", "exec"), namespace)
    fn = namespace[name]

    @functools.wraps(fn)
    def counted(*args, **kwargs):
        counted.calls += 1
        return fn(*args, **kwargs)

    counted.calls = 0
    return counted


@pytest.mark.parametrize("case", DRIVEN, ids=lambda c: c.notebook)
def test_the_notebook_prints_the_provenance_of_its_result(case):
    _, cells = _notebook(case.notebook)
    assert any(f"{case.exercise.handle}.provenance(" in c for c in cells), (
        f"notebook {case.notebook} does not print {case.exercise.handle}.provenance(...) beside its result"
    )


@pytest.mark.parametrize("case", DRIVEN, ids=lambda c: c.notebook)
def test_a_solved_function_changes_the_results_provenance_line(case, tmp_path):
    ex, name = case.exercise, case.exercise.name
    before = ex.passed_answer
    try:
        ex.passed_answer = None
        stub = _cell_function(case.notebook, name, solved=False)
        used = ex.use(stub)
        assert used is ex.reference
        stub.calls = 0
        case.produce(used, tmp_path / "stub")
        assert stub.calls == 0
        unsolved_line = ex.provenance(used)

        solved = _cell_function(case.notebook, name, solved=True)
        used = ex.use(solved)
        assert used is solved, f"the notebook's solution of {name} does not pass its check"
        solved.calls = 0
        case.produce(used, tmp_path / "solved")
        assert solved.calls > 0, f"the result's code path did not call the learner's {name}"
        solved_line = ex.provenance(used)
    finally:
        ex.passed_answer = before
    assert unsolved_line.startswith(f"computed with convlab's reference `{name}`")
    assert solved_line == f"computed with your `{name}`"
