"""The stored full-scale studies (notebooks/results/*.json) hold what the notebooks say they hold.

The notebooks print every result from these files; these tests pin the set-up each file must have for its verdicts
to mean something (test images, seeds, training accuracy recorded beside test accuracy) and the findings the
notebooks' text relies on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convlab.augregimes import MATCHING_VIEW, RegimeStudy
from convlab.colourstudy import ColourStudy
from convlab.ensemblestudy import MEMBERS, EnsembleStudy
from convlab.learningcurves import CNN, HOG, LearningCurves
from convlab.sizeaxis import SizeAxis

RESULTS = Path(__file__).resolve().parents[1] / "notebooks" / "results"
GEOMETRIC = ("mirror", "crop", "rotation", "shear", "local warp")


@pytest.fixture(scope="module")
def aug() -> RegimeStudy:
    return RegimeStudy.from_json(RESULTS / "augmentation_full_cpu.json")


@pytest.fixture(scope="module")
def size() -> SizeAxis:
    return SizeAxis.from_json(RESULTS / "size_axis_full_cpu.json")


def test_every_stored_study_says_when_where_and_how_it_ran():
    for name in (
        "augmentation_full_cpu",
        "size_axis_full_cpu",
        "colour_full_cpu",
        "ensembles_full_cpu",
        "learning_curves_full_cpu",
    ):
        import json

        meta = json.loads((RESULTS / f"{name}.json").read_text())["meta"]
        assert meta["date"] and meta["device"] and meta["seconds"] > 0, name
        assert meta["command"].startswith("python -m convlab study "), name


def test_the_augmentation_study_can_resolve_its_effects(aug):
    assert aug.config["test_per_class"] * 10 >= 1000
    for setting, n in aug.parts():
        seeds = {r["seed"] for r in aug.rows if (r["setting"], r["per_class"]) == (setting, n)}
        assert len(seeds) >= 5, (setting, n)
    assert all("train_acc" in r and "test_acc" in r for r in aug.rows)


def test_the_overfit_and_underfit_parts_do_what_their_names_say(aug):
    def fit(setting, n, key):
        values = aug._acc(setting, n, "none", key)
        return sum(values) / len(values)

    parts = aug.parts()
    overfit = [p for p in parts if p[0] == "overfit"]
    underfit = [p for p in parts if p[0] == "underfit"]
    assert overfit and underfit
    for p in overfit:
        assert fit(*p, "train_acc") >= 0.99 and fit(*p, "train_acc") - fit(*p, "test_acc") > 0.1, p
    for p in underfit:
        assert fit(*p, "train_acc") < 0.99, p


def test_a_transform_helps_on_test_data_that_has_its_variation(aug):
    for setting, n in [p for p in aug.parts() if p[0] == "overfit"]:
        for condition, view in MATCHING_VIEW.items():
            assert aug.effect(setting, n, condition, view).verdict == "better", (setting, n, condition)


def test_every_effect_is_resolved_to_better_than_a_point(aug):
    # a tie is then a finding ("no effect as large as a point"), not noise
    for setting, n in aug.parts():
        for c in [c for c in aug.conditions(setting, n) if c != "none"]:
            ci = aug.effect(setting, n, c)
            assert ci.half_width < 0.01, (setting, n, c, ci.half_width)


def test_a_geometric_transform_helps_beyond_its_interval_where_the_model_overfits(aug):
    overfit = [p for p in aug.parts() if p[0] == "overfit"]
    gains = [(p, c) for p in overfit for c in GEOMETRIC if aug.effect(*p, c).verdict == "better"]
    assert gains, "no geometric transform helped on the clean test set in an overfitting part"
    assert all(aug.effect(*p, "mirror + crop").n >= 5 for p in overfit)  # the recommended combination, measured


def test_the_size_axis_reaches_lots_of_data_and_records_how_each_run_fitted(size):
    assert max(size.sizes) >= 1000 and len(size.sizes) >= 4
    assert all(r.epochs >= 1 and r.steps >= 1 and 0 < r.train_acc <= 1 for r in size.rows)
    smallest, largest = size.sizes[0], size.sizes[-1]
    assert size.paired(smallest, "head only", "fine-tune all").verdict in ("better", "tie")
    assert size.paired(largest, "fine-tune all", "head only").verdict == "better"


def test_the_colour_study_measures_under_the_stated_casts():
    study = ColourStudy.from_json(RESULTS / "colour_full_cpu.json")
    assert len(study.accs("none")) >= 5
    assert all("train_acc" in r and "test_cast" in r for r in study.rows)
    assert study.effect("colour shift", "cast").verdict == "better"


@pytest.fixture(scope="module")
def ens() -> EnsembleStudy:
    return EnsembleStudy.from_json(RESULTS / "ensembles_full_cpu.json")


def test_the_ensembles_study_can_resolve_one_point_and_records_how_its_members_fitted(ens):
    assert {r["test_images"] for r in ens.rows} == {10_000}  # README and notebook 09: the whole test set
    assert ens.replications("crop") == ens.replications("plain") and len(ens.replications()) >= 5
    for r in ens.rows:
        assert len(r["members"]) == (MEMBERS if r["recipe"] == "crop" else ens.config["plain_members"])
        assert all(0 < m["train_acc"] <= 1 and m["epochs"] >= 1 and m["steps"] >= 1 for m in r["members"])
    assert all(ci.n == len(ens.replications()) for ci in ens.comparisons())
    # the gains the notebook weighs against their cost, each resolved to better than +-1 point
    for new, base in (
        ("5 models x 1 crop", "1 model x 1 crop"),
        ("1 model x 10 crops", "1 model x 1 crop"),
        ("2 models x 1 crop", "1 model x 2 crops"),
        ("5 models x 1 crop", "1 model x 5 crops"),
    ):
        assert ens.effect(new, base).half_width < 0.01, (new, base)


def test_the_ensembles_study_shows_what_notebook_09_says_it_measures(ens):
    # the acceptance of notebook 09: an ensemble gain or a 10-crop gain beyond its interval
    gains = [ens.effect("5 models x 1 crop"), ens.effect("1 model x 10 crops")]
    assert any(ci.verdict == "better" for ci in gains), gains
    # its summary: whether test-time views help depends on whether training saw views of their kind
    assert ens.trained_distribution().verdict == "better"
    claims = "\n".join(ens.claims())
    assert claims.startswith("STORED run") and "python -m convlab study ensembles --scale full" in claims


@pytest.fixture(scope="module")
def curves() -> LearningCurves:
    return LearningCurves.from_json(RESULTS / "learning_curves_full_cpu.json")


def test_the_learning_curves_can_resolve_a_crossover(curves):
    fashion = curves.data("fashion")
    assert {r["test_images"] for r in fashion} == {10000}
    sizes = sorted({r["n_per_class"] for r in fashion})
    assert sizes[0] <= 10 and sizes[-1] >= 3000 and len(sizes) >= 5
    for data in ("fashion", "food"):
        rows = curves.data(data)
        for method, n in {(r["method"], r["n_per_class"]) for r in rows}:
            seeds = {r["seed"] for r in rows if (r["method"], r["n_per_class"]) == (method, n)}
            assert len(seeds) >= 5, (data, method, n)
        assert all(0 <= r["train_acc"] <= 1 and 0 <= r["accuracy"] <= 1 for r in rows)
    food_methods = {r["method"] for r in curves.data("food")}
    assert {"colour histogram + linear", "colour + HOG + linear", CNN, "frozen MobileNetV2 + linear"} <= food_methods


def test_every_cnn_records_its_budget_and_training_accuracy(curves):
    for data in ("fashion", "food"):
        cnn = [r for r in curves.data(data) if r["method"] == CNN]
        assert all(r["steps"] >= 1 and r["epochs"] > 0 for r in cnn)
    for r in curves.data("fashion"):
        if r["method"] == CNN:
            # no fit ends below its own test accuracy, and the small sets, where the curves cross, are fitted
            assert r["train_acc"] >= r["accuracy"], r
            assert r["n_per_class"] > 30 or r["train_acc"] >= 0.99, r


def test_the_notebooks_reading_of_the_stored_curves(curves):
    """Notebook 08 points the learner at the stored Fashion-MNIST line "for where learning from data overtakes HOG",
    and its quiz says frozen ImageNet features are the most accurate with 5 food photos per class."""
    fashion = curves.crossover("fashion", CNN, HOG)
    sizes = fashion.sizes
    assert sizes[-1] in fashion.where("better"), str(fashion)
    assert fashion.crossed and fashion.high < sizes[-1], str(fashion)
    food = curves.data("food")
    at5 = {
        m: [r["accuracy"] for r in food if r["method"] == m and r["n_per_class"] == 5]
        for m in {r["method"] for r in food}
    }
    best = max(at5, key=lambda m: sum(at5[m]) / len(at5[m]))
    assert best.startswith("frozen MobileNetV2") or best.startswith("MobileNetV2 fine-tuned"), best
