"""Notebooks 07-09: their exercises' references pass their own checks, wrong answers fail with a reason, the
quizzes are consistent, and the helpers behind the experiments (dense evaluation, verdicts) are right."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from convlab import verdicts
from convlab.exercises import Exercise, Quiz, nb07, nb08, nb09

pytestmark = pytest.mark.usefixtures("one_thread")

MODULES = (nb07, nb08, nb09)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_quiz_has_three_or_more_questions_each_explained_and_its_answers_pass(module):
    quiz = module.QUIZ
    assert isinstance(quiz, Quiz) and len(quiz.questions) >= 3
    for key, q in quiz.questions.items():
        assert q.why, key
        assert q.wrong, f"{key}: explain the wrong answers too"
        if q.options:
            assert set(q.wrong) <= set(q.options) - {q.answer}
    measured = {q.measured: 0.5 for q in quiz.questions.values() if q.measured}
    quiz.check({k: (0.5 if q.measured else q.answer) for k, q in quiz.questions.items()}, measured=measured)
    with pytest.raises(AssertionError):
        quiz.check({k: q.answer for k, q in quiz.questions.items() if not q.measured})


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_exercises_have_handles_and_hints_in_levels(module):
    exercises = [v for v in vars(module).values() if isinstance(v, Exercise)]
    assert len(exercises) >= 1
    for ex in exercises:
        assert len(ex.hints) >= 2 and ex.handle.startswith(module.__name__.rsplit(".", 1)[1] + ".")
        assert callable(ex.reference)


def _time_steps(loader, step_fn, max_steps, warmup_steps=0, clock=time.perf_counter):
    """A right answer written independently of the reference (an answer may not call the reference)."""
    waits, computes, it, last = [], [], iter(loader), clock()
    while len(waits) < max_steps:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        got = clock()
        step_fn(batch)
        waits.append(got - last)
        last = clock()
        computes.append(last - got)
    return waits[warmup_steps:], computes[warmup_steps:]


def test_time_steps_reference_passes_and_the_usual_mistakes_fail_on_real_photos():
    assert nb07.TIME_STEPS.run(nb07.reference_time_steps) is None
    assert nb07.TIME_STEPS.run(_time_steps) is None

    def one_pass(loader, step_fn, max_steps, warmup_steps=0, clock=time.perf_counter):
        waits, computes, last = [], [], clock()
        for batch in loader:  # stops at the end of the pass
            got = clock()
            step_fn(batch)
            waits.append(got - last)
            last = clock()
            computes.append(last - got)
            if len(waits) == max_steps:
                break
        return waits[warmup_steps:], computes[warmup_steps:]

    def own_clock(loader, step_fn, max_steps, warmup_steps=0, clock=time.perf_counter):
        return _time_steps(loader, step_fn, max_steps, warmup_steps, time.perf_counter)

    def swapped(loader, step_fn, max_steps, warmup_steps=0, clock=time.perf_counter):
        return _time_steps(loader, step_fn, max_steps, warmup_steps, clock)[::-1]

    def warmup_kept(loader, step_fn, max_steps, warmup_steps=0, clock=time.perf_counter):
        return _time_steps(loader, step_fn, max_steps, 0, clock)

    def with_profiler(loader, step_fn, max_steps, warmup_steps=0, clock=time.perf_counter):
        from convlab.profiler import profile_loader

        p = profile_loader(loader, step_fn, epochs=None, max_steps=max_steps, warmup_steps=warmup_steps, clock=clock)
        return list(p.wait_s[warmup_steps:]), list(p.compute_s[warmup_steps:])

    assert "start a new pass" in nb07.TIME_STEPS.run(one_pass)
    assert "through clock()" in nb07.TIME_STEPS.run(own_clock)
    assert "swapped" in nb07.TIME_STEPS.run(swapped)
    assert "after the warm-up" in nb07.TIME_STEPS.run(warmup_kept)
    assert "calls `profile_loader`" in nb07.TIME_STEPS.run(with_profiler)
    assert nb07.TIME_STEPS.run(_time_steps) is None  # the right answer still passes after the wrong ones


@pytest.mark.slow
def test_seeded_loader_reference_passes_and_the_plain_loader_fails_on_real_photos():
    assert nb07.SEEDED_LOADER.run(nb07.reference_seeded_loader) is None
    plain = nb07.SEEDED_LOADER.run(
        lambda d, seed, n=2, b=2: torch.utils.data.DataLoader(d, batch_size=b, num_workers=n)
    )
    assert plain is not None and "same brightness offsets" in plain


def test_channel_histogram_reference_and_a_wrong_binning():
    assert nb08.CHANNEL_HISTOGRAM.run(nb08.reference_channel_histogram) is None
    wrong = nb08.CHANNEL_HISTOGRAM.run(
        lambda im, bins=4: nb08.reference_channel_histogram(im, bins).view(3, bins).t().flatten()
    )
    assert wrong is not None


@pytest.mark.slow
def test_hand_baseline_reference_passes_and_a_constant_answer_fails():
    assert nb08.HAND_BASELINE.run(nb08.reference_hand_baseline) is None
    assert "commonest class" in nb08.HAND_BASELINE.run(lambda tr, y, te: torch.zeros(len(te), dtype=torch.long))


@pytest.mark.slow
def test_ten_crop_and_ensemble_references_pass_and_logit_averaging_fails():
    from torchvision.transforms.v2 import functional as TF

    assert nb09.TEN_CROP.run(nb09.reference_ten_crop_predict) is None
    assert nb09.ENSEMBLE.run(nb09.reference_ensemble_predict) is None

    def logit_mean(model, x, size):
        with torch.no_grad():
            return torch.stack([model(v) for v in TF.ten_crop(x, [size, size])]).mean(0).softmax(-1)

    assert "mean logits" in nb09.TEN_CROP.run(logit_mean)


def test_reference_ten_crop_matches_convlab_predict_views():
    from convlab.tta import ViewSet, predict_views

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    images = torch.randint(0, 256, (2, 3, 20, 27), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (images.float() / 255 - 0.5) / 0.25
    ours = predict_views(model, images, ViewSet.ten_crop(16), mean=mean, std=std, channels_last=False)
    torch.testing.assert_close(nb09.reference_ten_crop_predict(model, x, 16), ours, atol=1e-5, rtol=1e-5)


def test_dense_predict_is_the_whole_image_and_its_mirror():
    from convlab.tta import dense_predict

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    images = [
        torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8),
        torch.randint(0, 256, (3, 14, 10), dtype=torch.uint8),
    ]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    got = dense_predict(model, images, mean=mean, std=std, average="none", channels_last=False)
    assert got.shape == (2, 2, 5)
    for i, im in enumerate(images):
        x = ((im.float() / 255 - 0.5) / 0.25)[None]
        with torch.no_grad():
            torch.testing.assert_close(got[i, 0], model(x)[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got[i, 1], model(x.flip(-1))[0], atol=1e-5, rtol=1e-5)
    probs = dense_predict(model, images, mean=mean, std=std, mirror=False)
    assert probs.shape == (2, 5) and torch.allclose(probs.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="resize"):
        dense_predict(model, images, resize=0, mean=mean, std=std)


def test_paired_difference_counts_fixes_and_breaks_and_says_within_noise():
    base = np.array([[1, 1, 0, 0, 1, 0, 1, 1, 0, 1]] * 3, dtype=bool)
    new = base.copy()
    new[:, 2] = True  # one photo fixed in every seed
    d = verdicts.paired_difference(base, new, "a", "b")
    assert d.fixed == 1 and d.broken == 0 and math.isclose(d.gain, 0.1) and d.gain_sd < 1e-12
    assert d.verdict == "within noise" or d.ci[0] > 0  # one photo of ten: the interval may or may not clear 0
    many = np.zeros((3, 200), dtype=bool)
    better = many.copy()
    better[:, :60] = True
    assert verdicts.paired_difference(many, better).verdict == "better"
    assert verdicts.paired_difference(better, many).verdict == "worse"
    assert verdicts.sign_test(0, 0) == 1.0 and verdicts.sign_test(10, 0) < 0.01


def test_crossover_interpolates_in_log_size_and_reports_none_when_never():
    rows = []
    for seed in (0, 1):
        for n, (a, b) in {10: (0.5, 0.6), 100: (0.7, 0.65), 1000: (0.9, 0.7)}.items():
            rows += [
                {"method": "cnn", "n_per_class": n, "seed": seed, "accuracy": a, "fit_s": 1.0},
                {"method": "hog", "n_per_class": n, "seed": seed, "accuracy": b, "fit_s": 1.0},
            ]
    c = verdicts.crossover(rows, "cnn", "hog")
    assert 10 < c.at_mean < 100 and math.isclose(c.at_mean, 10 ** (1 + 0.1 / 0.15), rel_tol=1e-6)
    assert "stays ahead from about 46 images" in str(c)
    never = verdicts.crossover(rows, "hog", "cnn")  # ahead at 10, behind from 100 on
    assert math.isnan(never.at_mean) and "No crossover" in str(never)
    table = verdicts.learning_table(rows)
    assert table.rows[0]["n=10"] == "0.500 ± 0.000"


def test_cost_ratio_is_the_median_of_back_to_back_ratios():
    rows = [{"config": "a", "ms_each": [1.0, 2.0, 3.0]}, {"config": "b", "ms_each": [4.0, 4.0, 4.0]}]
    r = verdicts.cost_ratio(rows, "a", "b")
    assert r.ratio == 0.5 and r.low == 0.25 and r.high == 0.75 and r.repeats == 3
    with pytest.raises(KeyError):
        verdicts.cost_ratio(rows, "a", "c")


def test_cropstudy_random_crops_are_seeded_and_in_range():
    from convlab.cropstudy import center_aspect, random_crop_batch

    photos = torch.randint(0, 256, (2, 3, 20, 26), dtype=torch.uint8)
    a = random_crop_batch(photos, 16, 3, torch.Generator().manual_seed(0))
    b = random_crop_batch(photos, 16, 3, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 3, 16, 16) and torch.equal(a, b)
    assert center_aspect(torch.zeros(3, 9, 30), 4 / 3).shape == (3, 9, 12)
