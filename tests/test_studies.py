"""The course's one verdict rule, the resumable study record, and the augmentation and colour studies' pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from convlab import augregimes, colourstudy
from convlab.exercises.nb05 import mirror_crop_reference
from convlab.studyrun import StudyRecord, StudyResult, mean, read_study, run_jobs, scale_settings, stored_lines
from convlab.verdicts import format_interval, paired_ci


# ----------------------------------------------------------------------------- paired_ci: the one rule
def test_paired_ci_is_the_student_t_interval_of_the_paired_differences():
    from scipy import stats

    new = [0.82, 0.83, 0.81, 0.83, 0.84]
    base = [0.80, 0.80, 0.80, 0.81, 0.80]
    ci = paired_ci(new, base, "x vs y")
    d = np.subtract(new, base)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert ci.mean == pytest.approx(d.mean())
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    assert ci.verdict == "better" and ci.shown
    assert "shown: better" in str(ci)


def test_paired_ci_calls_an_interval_that_includes_zero_a_tie_and_a_negative_one_worse():
    assert paired_ci([0.80, 0.82, 0.79], [0.81, 0.80, 0.80]).verdict == "tie"
    assert "a tie" in str(paired_ci([0.80, 0.82, 0.79], [0.81, 0.80, 0.80]))
    assert paired_ci([0.70, 0.71, 0.69, 0.70], [0.80, 0.80, 0.81, 0.80]).verdict == "worse"


def test_paired_ci_is_unpaired_by_nothing_it_uses_the_pairs():
    # the same two sets of accuracies, paired: seed-to-seed spread cancels, the gain is shown
    base = [0.70, 0.80, 0.75, 0.85, 0.78]
    new = [b + 0.01 for b in base]
    assert paired_ci(new, base).verdict == "better"


@pytest.mark.parametrize(
    ("new", "base", "match"),
    [([0.5], [0.4], "at least 2"), ([0.5, 0.6], [0.4], "equal length"), ([[0.5, 0.6]], [[0.4, 0.5]], "1-D")],
)
def test_paired_ci_refuses_what_has_no_interval(new, base, match):
    with pytest.raises(ValueError, match=match):
        paired_ci(new, base)


# ----------------------------------------------------------------------------- the resumable record
def _key_runs(path, config=None, study="demo"):
    return StudyRecord(path, ("a", "seed"), config or {"n": 1}, study)


def test_an_interval_prints_one_way_in_text_tables_and_rows():
    ci = paired_ci([0.81, 0.84, 0.80], [0.80, 0.80, 0.79], "x vs y")
    assert ci.interval() == "[-2.30, +6.30]" and ci.interval(3, 1.0) == "[-0.023, +0.063]"
    assert ci.estimate(1) == "+2.0 [-2.3, +6.3]" and ci.summary(1) == "+2.0 points, 95% CI [-2.3, +6.3]"
    assert paired_ci([0.5, 0.6], [0.0, 0.0]).estimate(3, 1.0, signed=False) == "0.550 [-0.085, 1.185]"
    assert ci.columns("gain") == {"gain (points)": "+2.00", "95% CI": "[-2.30, +6.30]", "verdict": "tie"}
    assert list(ci.row()) == ["comparison", "effect (points)", "95% CI", "seeds", "verdict"]
    assert format_interval(0.1, 0.25, 1) == "[+10.0, +25.0]"


def test_a_record_resumes_and_runs_only_what_is_missing(tmp_path):
    path = tmp_path / "s.json"
    jobs = [{"a": a, "seed": s} for a in ("x", "y") for s in (0, 1)]
    calls = []

    def run(job):
        calls.append(dict(job))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the study is stopped in its third run
        return {"acc": 0.5}

    with pytest.raises(KeyboardInterrupt), _key_runs(path) as rec:
        run_jobs(rec, jobs, run, progress=False)
    stored = json.loads(path.read_text())
    assert [(r["a"], r["seed"]) for r in stored["rows"]] == [("x", 0), ("x", 1)]
    assert not list((tmp_path / "s.json.claims").iterdir())  # the interrupted run's claim is released
    calls.clear()
    with _key_runs(path) as rec:
        rows = run_jobs(rec, jobs, lambda job: calls.append(dict(job)) or {"acc": 0.5}, progress=False)
    assert calls == jobs[2:]
    assert len(rows) == 4
    meta = json.loads(path.read_text())["meta"]
    assert {"date", "device", "command", "seconds"} <= set(meta)


def test_without_a_record_the_jobs_run_in_memory_in_their_order():
    jobs = [{"a": a, "seed": s} for a in ("x", "y") for s in (0, 1)]
    rows = run_jobs(None, jobs, lambda job: {"acc": job["seed"] / 2}, progress=False)
    assert rows == [{**job, "acc": job["seed"] / 2} for job in jobs]
    assert StudyResult.from_run(rows, {"k": 1}, None).meta == {}


def test_the_stored_line_names_date_device_duration_and_command():
    meta = {"date": "2026-01-01 10:00 UTC", "device": "cpu", "command": "python -m convlab study x", "seconds": 1629}
    assert stored_lines(meta) == [
        "STORED run, not computed now: 2026-01-01 10:00 UTC on cpu, 27 min; command: python -m convlab study x"
    ]
    assert stored_lines({**meta, "seconds": 10106.5})[0].endswith("cpu, 2.8 h; command: python -m convlab study x")
    assert "on cpu; command:" in stored_lines({k: v for k, v in meta.items() if k != "seconds"})[0]
    assert stored_lines({}) == []


def test_a_scale_is_looked_up_once_and_a_mean_of_nothing_is_nan():
    import math

    assert scale_settings({"small": 1, "full": 2}, "full") == 2
    with pytest.raises(ValueError, match=r"scale: expected one of \['small', 'full'\], got 'tiny'"):
        scale_settings({"small": 1, "full": 2}, "tiny")
    assert mean([0.25, 0.75]) == 0.5 and math.isnan(mean([]))


def test_a_record_refuses_a_file_of_another_study_or_other_settings(tmp_path):
    path = tmp_path / "s.json"
    with _key_runs(path) as rec:
        rec.add({"a": "x", "seed": 0, "acc": 1.0})
    with pytest.raises(ValueError, match="other settings"), _key_runs(path, {"n": 2}):
        pass
    with pytest.raises(ValueError, match="other settings"), _key_runs(path, study="another"):
        pass
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"), _key_runs(path):
        pass


def test_a_study_result_reads_back_what_the_record_wrote(tmp_path):
    """Every study's results class reads its stored JSON through StudyResult.from_json; a file without ``meta`` (a
    study written by hand) reads with an empty one."""
    path = tmp_path / "s.json"
    with _key_runs(path, {"n": 3}) as rec:
        rec.add({"a": "x", "seed": 0, "acc": 1.0})
    result = StudyResult.from_json(path)
    assert result.rows == [{"a": "x", "seed": 0, "acc": 1.0}] and result.config == {"n": 3}
    assert result.meta == json.loads(path.read_text())["meta"] and result.meta["command"]
    stored = json.loads(path.read_text())
    del stored["meta"]
    path.write_text(json.dumps(stored))
    assert read_study(path)["meta"] == {} and StudyResult.from_json(path).meta == {}


def test_two_processes_share_the_runs_and_a_dead_claim_is_taken_over(tmp_path):
    path = tmp_path / "s.json"
    with _key_runs(path) as first, _key_runs(path) as second:
        assert first.claim(a="x", seed=0)
        assert not second.claim(a="x", seed=0)  # held by a live process (this one)
        assert second.claim(a="x", seed=1)
        second.add({"a": "x", "seed": 1, "acc": 0.25})
        first.add({"a": "x", "seed": 0, "acc": 0.5})
        assert not first.claim(a="x", seed=1)  # recorded by the other
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["seed"], r["acc"]) for r in rows) == [(0, 0.5), (1, 0.25)]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with _key_runs(path) as rec:
        claim = rec._claim_path({"a": "y", "seed": 0})
        claim.write_text(f"{int(dead.stdout)} host\n")  # a claim left by a process that has ended
        assert rec.claim(a="y", seed=0)
        assert claim.read_text().split()[0] == str(os.getpid())


# ----------------------------------------------------------------------------- the augmentation study's pieces
def _frames(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, augregimes.FRAME, augregimes.FRAME), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("name", list(augregimes.CONDITIONS))
def test_each_condition_gives_windows_of_the_network_size_drawn_per_sample_and_reproducibly(name):
    x = _frames()
    a = augregimes.make_augment(name, torch.Generator().manual_seed(1))(x)
    b = augregimes.make_augment(name, torch.Generator().manual_seed(1))(x)
    assert a.shape == (6, 1, augregimes.SIZE, augregimes.SIZE) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    if name == "none":
        assert torch.equal(a, x[..., 2:30, 2:30])


def test_a_correct_mirror_crop_draws_the_same_batches_as_convlab_transforms():
    x = _frames(16)
    ours = augregimes.make_augment("mirror + crop", torch.Generator().manual_seed(3))
    learner = augregimes.make_augment("mirror + crop", torch.Generator().manual_seed(3), mirror_crop_reference)
    for _ in range(3):  # several batches from one generator: the draws stay in step
        assert torch.equal(ours(x), learner(x))


def test_test_views_carry_one_variation_each():
    x = _frames(8)[..., 2:30, 2:30].contiguous()
    views = augregimes.test_views(x, torch.tensor([0, 3, 5]))
    assert torch.equal(views["clean"], x)
    assert torch.equal(views["mirrored"], x[[0, 3, 5]].flip(-1))
    assert views["shifted"].shape == views["rotated"].shape == (3, 1, 28, 28)
    assert torch.equal(augregimes.test_views(x, torch.tensor([0, 3, 5]))["rotated"], views["rotated"])


def test_one_training_run_records_training_and_test_accuracy_on_every_view():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(40) % 10
    views = augregimes.test_views(images[:20], torch.arange(10))
    view_labels = {v: labels[: len(t)] for v, t in views.items()}
    setting = augregimes.Setting("tiny", 4, 4, 1, ("none", "crop"))
    row = augregimes.train_run("crop", setting, 0, (images, labels), views, view_labels)
    assert {"test_acc", "train_acc", "train_acc_augmented", "test_shifted", "epochs", "steps"} <= set(row)
    assert row["test_acc"] == row["test_clean"] and 0 <= row["train_acc"] <= 1
    assert row["steps"] == 1  # 40 images, batches of 64


def test_unknown_conditions_and_scales_are_refused_by_name():
    with pytest.raises(ValueError, match="name: expected one of"):
        augregimes.make_augment("flip", torch.Generator())
    with pytest.raises(ValueError, match="scale: expected one of"):
        augregimes.jobs("huge")


# ----------------------------------------------------------- similarity: the stage chosen on validation
def test_the_earlier_stage_is_chosen_on_validation_and_the_late_gain_uses_the_one_rule():
    from convlab.similarity import StageProbe

    test = {"a": (0.70, 0.71, 0.72), "b": (0.75, 0.76, 0.74), "c": (0.80, 0.82, 0.81)}
    val = {"a": (0.90, 0.91, 0.90), "b": (0.60, 0.61, 0.62), "c": (0.70, 0.70, 0.71)}
    p = StageProbe("d", 10, 96, ("a", "b", "c"), test, 100, val)
    assert p.earlier_stage == "a" and p.best_stage == "a"  # b is better on test, but the test set chooses nothing
    ci = p.late()
    assert ci.diffs == pytest.approx((0.10, 0.11, 0.09)) and ci.verdict == "better"
    assert "close to ImageNet" in p.verdict() and "95% CI" in p.verdict()


# ----------------------------------------------------------------------------- the colour study's casts
def test_a_colour_cast_adds_its_offsets_and_saturates():
    x = torch.tensor([[[[0, 100, 250]], [[10, 128, 255]], [[20, 30, 5]]]], dtype=torch.uint8)
    out = colourstudy.apply_cast(x, (28, 4, -28))
    assert out.tolist() == [[[[28, 128, 255]], [[14, 132, 255]], [[0, 2, 0]]]]
    with pytest.raises(ValueError, match="images: expected uint8"):
        colourstudy.apply_cast(x.float(), (1, 2, 3))


@pytest.mark.parametrize("name", ["augregimes", "ensemblestudy", "sizeaxis"])
def test_a_stored_study_stays_valid_when_its_config_adds_runs_and_not_otherwise(name):
    import importlib
    import json
    from pathlib import Path

    from convlab.studyrun import same_but

    assert same_but({"a": (1, 2), "seeds": [0]}, {"a": [1, 2], "seeds": [0, 1]}, "seeds")
    assert not same_but({"a": 1, "seeds": [0]}, {"a": 2, "seeds": [0]}, "seeds")
    module = importlib.import_module(f"convlab.{name}")
    stored = {"augregimes": "augmentation", "ensemblestudy": "ensembles", "sizeaxis": "size_axis"}[name]
    d = json.loads((Path(__file__).parents[1] / "notebooks" / "results" / f"{stored}_full_cpu.json").read_text())
    assert module.compatible(d["config"], module.config("full"), d["rows"])
    assert not module.compatible(d["config"], {**module.config("full"), "another setting": 1}, d["rows"])


def test_an_effect_pairs_each_seed_with_itself_whatever_seeds_each_side_has():
    from convlab.verdicts import paired_by_seed

    # seed 1 has run on one side only (a study still running): it is left out, not paired with seed 2
    ci = paired_by_seed({0: 0.5, 1: 0.9, 2: 0.7}, {0: 0.4, 2: 0.6})
    assert ci.n == 2 and ci.diffs == pytest.approx((0.1, 0.1))
