"""Learning curves: the crossover by the one rule, the table's intervals, a function as a method, the study end to end
on real data at a tiny scale (resumable, training accuracy and budgets recorded)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from convlab import learningcurves as lc
from convlab import verdicts
from convlab.studyrun import StudyRecord

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(gaps: dict[int, list[float]], base: float = 0.6) -> list[dict]:
    """Rows of two methods whose gap ``cnn - hog`` at size ``n`` and seed ``i`` is ``gaps[n][i]``."""
    rows = []
    for n, per_seed in gaps.items():
        for seed, g in enumerate(per_seed):
            rows += [
                {"method": "cnn", "n_per_class": n, "seed": seed, "accuracy": base + g, "fit_s": 1.0},
                {"method": "hog", "n_per_class": n, "seed": seed, "accuracy": base, "fit_s": 0.5},
            ]
    return rows


def test_crossover_interpolates_each_seed_in_log_size_and_gives_a_t_interval():
    rows = _rows({10: [-0.10, -0.12, -0.08], 100: [0.05, 0.04, 0.045], 1000: [0.2, 0.21, 0.19]})
    c = lc.crossover(rows, "cnn", "hog")
    expected = [10 ** (1 + 0.10 / 0.15), 10 ** (1 + 0.12 / 0.16), 10 ** (1 + 0.08 / 0.125)]
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(c.per_seed, expected))
    logs = [math.log(x) for x in expected]
    ci = verdicts.paired_ci(logs, [0.0] * 3)
    assert math.isclose(c.at, math.exp(ci.mean)) and math.isclose(c.low, math.exp(ci.low))
    assert c.low < c.at < c.high and c.crossed
    assert c.where("worse") == (10,) and c.where("better") == (100, 1000) and c.where("tie") == ()
    assert [g.verdict for g in c.gaps] == ["worse", "better", "better"]
    text = str(c)
    assert f"Crossover at about {c.at:.0f} images per class (95% CI {c.low:.0f}-{c.high:.0f}" in text
    assert "shown better at n = 100, 1000; shown worse at n = 10" in text


def test_a_gap_whose_interval_includes_zero_is_printed_as_a_tie():
    rows = _rows({10: [-0.05, -0.06, -0.04], 100: [0.03, -0.02, 0.01], 1000: [0.02, 0.03, 0.025]})
    c = lc.crossover(rows, "cnn", "hog")
    assert c.where("tie") == (100,) and "tied at n = 100" in str(c)
    assert "n=100: +0.7 [" in str(c) and "] tie" in str(c)


def test_no_crossover_within_the_sizes_measured_is_said_so():
    behind = lc.crossover(_rows({10: [-0.2, -0.3], 100: [-0.1, -0.15]}), "cnn", "hog")
    assert not behind.crossed and math.isnan(behind.at)
    assert "No crossover within the sizes measured (10-100 per class)" in str(behind)
    assert "behind at the largest size on every seed" in str(behind)
    ahead = lc.crossover(_rows({10: [0.1, 0.2], 100: [0.1, 0.15]}), "cnn", "hog")
    assert "ahead at every size on every seed, so any crossover lies below 10" in str(ahead)
    # a seed ahead at every size enters the interval at the smallest size, and the line says so
    censored = lc.crossover(_rows({10: [-0.1, 0.1, -0.1], 100: [0.1, 0.1, 0.05]}), "cnn", "hog")
    assert censored.crossed and censored.censored == 1
    logs = [math.log(10 ** (1 + 0.1 / 0.2)), math.log(10), math.log(10 ** (1 + 0.1 / 0.15))]
    assert math.isclose(censored.at, math.exp(sum(logs) / 3))
    assert "per seed 32, <=10, 46; 1 seed ahead at every size, counted at 10, the smallest size measured" in str(
        censored
    )
    mixed = lc.crossover(_rows({10: [-0.1, 0.1, -0.1], 100: [0.1, 0.1, -0.05]}), "cnn", "hog")
    assert not mixed.crossed and "No crossover interval: of 3 seeds, 1 crosses inside" in str(mixed)


def test_the_crossover_needs_two_seeds_and_known_methods():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        lc.crossover(_rows({10: [0.1], 100: [0.2]}), "cnn", "hog")
    with pytest.raises(KeyError, match="learner, baseline"):
        lc.crossover(_rows({10: [0.1, 0.2]}), "cnn", "sift")


def test_the_learning_table_shows_each_mean_with_its_interval():
    rows = _rows({10: [0.0, 0.02, 0.04]})
    for r in rows:
        r["train_acc"] = 1.0
    table = lc.learning_table(rows)
    ci = verdicts.paired_ci([0.6, 0.62, 0.64], [0, 0, 0])
    assert table.rows[0]["n=10"] == f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
    assert table.rows[1]["n=10"] == "0.600 [0.600, 0.600]" and table.rows[0]["train acc (largest n)"] == 1.0


def _food_like(n: int = 6):
    from convlab.data import ImageSet, Splits

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8, generator=g) for _ in range(3 * n)]
    full = ImageSet(images, [i % 3 for i in range(3 * n)], ("a", "b", "c"))
    idx = torch.arange(3 * n)
    return Splits(full.subset(idx[: 2 * n]), full.subset(idx[2 * n :]), full.subset(idx[2 * n :]), full.classes, 0)


def test_a_function_is_a_method_that_never_sees_the_labels_it_is_scored_on():
    splits = _food_like()
    seen = []

    def nearest_mean(train_images, train_labels, test_images):
        seen.append((len(train_images), len(test_images)))
        return torch.zeros(len(test_images), dtype=torch.long)

    rows = lc.learning_curve({"mine": lc.FunctionMethod(nearest_mean)}, splits, sizes_per_class=(2, 4), seeds=(0, 1))
    assert [(r["n_per_class"], r["n_train"]) for r in rows] == [(2, 6), (4, 12), (2, 6), (4, 12)]
    assert (6, len(splits.test)) in seen and (6, 6) in seen  # scored on the test photos and on its training photos
    expected = float((splits.test.labels == 0).float().mean())
    assert all(r["accuracy"] == expected and "train_acc" in r for r in rows)
    with pytest.raises(ValueError, match="one class per image"):
        lc.FunctionMethod(lambda tr, y, te: [0]).fit(splits.train).score(splits.test)
    with pytest.raises(TypeError, match="predict: expected a function"):
        lc.FunctionMethod("not callable")


TINY = {
    "seeds": (0, 1),
    "fashion_sizes": (5, 20),
    "fashion_test_per_class": 20,
    "fashion_cnn": {"steps": 20, "min_epochs": 1.0, "batch_size": 32},
    "food_sizes": (2, 4),
    "food_cnn": {"steps": 5},
    "finetune": None,
}


def test_the_study_runs_resumes_and_records_how_each_fit_trained(tmp_path, monkeypatch):
    """The study end to end on the real data sets at a tiny scale, through the study record as the command runs it."""
    monkeypatch.setitem(lc.SCALES, "tiny", TINY)
    monkeypatch.setitem(lc.COMPARISONS, "food", ((lc.CNN, lc.COLOUR_HOG),))  # skip MobileNetV2: fast enough to test
    monkeypatch.setattr(
        lc,
        "study_methods",
        lambda data, scale, _f=lc.study_methods: {k: v for k, v in _f(data, scale).items() if k != lc.FROZEN},
    )
    path = tmp_path / "curves.json"
    with StudyRecord(path, lc.KEY, lc.config("tiny"), "learning-curves") as record:
        study = lc.run("tiny", record, progress=False)
    stored = json.loads(path.read_text())
    assert len(stored["rows"]) == 2 * 2 * 2 + 2 * 2 * 3 == len(study.rows)
    assert {r["test_images"] for r in study.data("fashion")} == {200}
    cnn = [r for r in study.rows if r["method"] == lc.CNN and r["data"] == "fashion"]
    assert all(r["steps"] >= 20 and r["epochs"] > 0 and 0 <= r["train_acc"] <= 1 for r in cnn)
    again = StudyRecord(path, lc.KEY, lc.config("tiny"), "learning-curves")
    with again as record:
        assert lc.run("tiny", record, progress=False).rows == stored["rows"]  # nothing left to run
    loaded = lc.LearningCurves.from_json(path)
    lines = loaded.claims()
    assert lines[0].startswith("STORED run, not computed now:") and "fashion: 200 test images" in lines[1]
    assert any(line.startswith(f"{lc.CNN} minus {lc.HOG}, points with 95% CI over 2 paired seeds") for line in lines)
    assert loaded.table("food").rows and loaded.budgets("fashion").rows[0]["steps"] >= 20


def test_unknown_scales_and_data_sets_are_refused_by_name():
    with pytest.raises(ValueError, match="scale: expected one of"):
        lc.config("huge")
    with pytest.raises(ValueError, match="data: expected 'fashion' or 'food'"):
        lc.study_methods("cifar", "small")
