"""Notebooks 07-09: their exercises' references pass their own checks, wrong answers fail with a reason, the
quizzes are consistent, and the helpers behind the experiments (dense evaluation, verdicts) are right."""

from __future__ import annotations

import time

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


@pytest.mark.slow
def test_food_features_reference_beats_the_colour_histogram_and_weaker_or_leaky_features_fail():
    from convlab.handfeatures import color_histogram

    assert nb08.FOOD_FEATURES.run(nb08.reference_food_features) is None
    # the colour histogram itself does not beat the colour histogram
    said = nb08.FOOD_FEATURES.run(lambda images: color_histogram(images))
    assert said is not None and "beat it by at least" in said
    # standardising over the list makes a photo's row depend on the others
    leaky = nb08.FOOD_FEATURES.run(lambda images: (lambda f: f - f.mean(0))(color_histogram(images)))
    assert leaky is not None and "depend on its own photo only" in leaky
    ragged = nb08.FOOD_FEATURES.run(lambda images: [im.float().mean() for im in images])
    assert ragged is not None and "return a tensor" in ragged


@pytest.mark.slow
def test_hand_baseline_reference_passes_and_a_constant_answer_fails():
    assert nb08.HAND_BASELINE.run(nb08.reference_hand_baseline) is None
    assert "commonest class" in nb08.HAND_BASELINE.run(lambda tr, y, te: torch.zeros(len(te), dtype=torch.long))


@pytest.mark.slow
def test_ten_crop_reference_passes_and_logit_averaging_fails():
    from torchvision.transforms.v2 import functional as TF

    assert nb09.TEN_CROP.run(nb09.reference_ten_crop_predict) is None

    def logit_mean(model, x, size):
        with torch.no_grad():
            return torch.stack([model(v) for v in TF.ten_crop(x, [size, size])]).mean(0).softmax(-1)

    assert "mean logits" in nb09.TEN_CROP.run(logit_mean)


@pytest.mark.slow
def test_average_predictions_reference_passes_and_wrong_or_fooling_answers_fail_with_a_reason():
    ex = nb09.AVERAGE
    assert ex.run(nb09.reference_average_predictions) is None
    logits = nb09.check_logits()
    assert logits.shape == (2, 4, 10, 1000)

    def logit_mean(lg, members, views):
        return lg[list(members)][:, :, list(views)].mean(dim=(0, 2)).softmax(-1)

    def every_member(lg, members, views):  # ignores which members were asked for
        return lg[:, :, list(views)].softmax(-1).mean(dim=(0, 2))

    def every_view(lg, members, views):  # ignores which views were asked for
        return lg[list(members)].softmax(-1).mean(dim=(0, 2))

    def in_place(lg, members, views):  # softmax written into the shared logits
        lg.copy_(lg.softmax(-1))
        return lg[list(members)][:, :, list(views)].mean(dim=(0, 2))

    def calls_the_reference(lg, members, views):
        return nb09.reference_average_predictions(lg, members, views)

    assert "mean logits" in ex.run(logit_mean)
    assert "exactly the members and views" in ex.run(every_member)
    assert "exactly the members and views" in ex.run(every_view)
    assert "in place" in ex.run(in_place)
    assert "reference solution" in ex.run(calls_the_reference)
    assert torch.equal(nb09.check_logits(), logits)  # nothing the answers did reached the shared data
    assert ex.run(nb09.reference_average_predictions) is None  # and the right answer still passes after them


def test_the_averaging_reference_is_the_study_kernel():
    from convlab.ensemblestudy import combine

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 12, 5, generator=g)
    for members, views in (([0], [4]), ([2, 0], range(10)), (range(3), (10, 11))):
        torch.testing.assert_close(
            nb09.reference_average_predictions(logits, members, views), combine(logits, members, views)
        )


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


def test_one_verdict_rule_remains():
    assert not hasattr(verdicts, "paired_difference") and not hasattr(verdicts, "sign_test")
    assert verdicts.paired_ci([0.9, 0.8, 0.85], [0.8, 0.7, 0.76]).verdict == "better"


def test_cost_ratio_is_the_median_of_back_to_back_ratios():
    rows = [{"config": "a", "ms_each": [1.0, 2.0, 3.0]}, {"config": "b", "ms_each": [4.0, 4.0, 4.0]}]
    r = verdicts.cost_ratio(rows, "a", "b")
    assert r.ratio == 0.5 and r.low == 0.25 and r.high == 0.75 and r.repeats == 3
    with pytest.raises(KeyError):
        verdicts.cost_ratio(rows, "a", "c")


def test_cropstudy_center_aspect_keeps_the_centre_at_the_ratio():
    from convlab.cropstudy import center_aspect

    assert center_aspect(torch.zeros(3, 9, 30), 4 / 3).shape == (3, 9, 12)


@pytest.mark.slow
def test_a_solved_average_predictions_computes_the_notebooks_tables_and_says_so():
    ex = nb09.AVERAGE

    def average_predictions(logits, members, views):  # a learner's own answer
        return logits[list(members)][:, :, list(views)].softmax(-1).mean(dim=(0, 2))

    unsolved = ex.use(lambda logits, members, views: None)
    assert unsolved is ex.reference and "convlab's reference" in ex.provenance(unsolved)
    used = ex.use(average_predictions)
    assert used is average_predictions and ex.provenance(used) == "computed with your `average_predictions`"
