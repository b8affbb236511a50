"""Unit tests of the exercise API (convlab/exercises/core.py): checks, hints in levels and only on request, the
solution only when asked, the reference fallback, the guard around the learner's code, and quiz verdicts. Outside
IPython, what a notebook shows as Markdown is printed."""

from __future__ import annotations

import pytest
import torch

from convlab.exercises import Exercise, Question, Quiz, check, expect
from convlab.exercises.core import NotYet, QuizScore, learner_code, wrap_text


def _square_test(answer) -> None:
    expect(answer(3) == 9, "square 3: expected 9")


def reference_square(x):
    return x * x


def _exercise(**kw) -> Exercise:
    kw = {
        "name": "square",
        "test": _square_test,
        "reference": reference_square,
        "hints": ["idea: multiply", "API: x * x or x ** 2"],
        "handle": "nbXX.SQUARE",
        **kw,
    }
    return Exercise(**kw)


def _stub(x):
    raise NotImplementedError("Exercise: replace this line with your solution")


def _quiz_stub() -> dict:
    raise NotImplementedError("Exercise: replace this line with your solution")


# ------------------------------------------------------------------------------------------------ check / expect
def test_check_prints_correct_and_raises_with_hint(capsys):
    check(True, "never shown")
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="Not yet: the hint"):
        check(False, "the hint")


def test_expect_raises_the_message_and_prints_nothing(capsys):
    expect(True, "never")
    assert capsys.readouterr().out == ""
    with pytest.raises(AssertionError, match="^the message$"):
        expect(False, "the message")


# ------------------------------------------------------------------------------------------------ Exercise
def test_exercise_validates_its_arguments():
    with pytest.raises(ValueError, match="hints"):
        _exercise(hints=[])
    with pytest.raises(TypeError, match="test"):
        _exercise(test="not callable")


@pytest.mark.parametrize(
    "answer, reason",
    [
        (None, "is None"),
        (_stub, "NotImplementedError"),
        (lambda x: x + x, "expected 9"),
        (lambda x: x.nope, "raised AttributeError"),
    ],
    ids=["none", "stub", "wrong", "crash"],
)
def test_check_fails_with_the_reason_and_offers_a_hint(answer, reason):
    ex = _exercise()
    with pytest.raises(NotYet) as info:
        ex.check(answer)
    text = str(info.value)
    assert isinstance(info.value, AssertionError), "nbgrader, nbval and pytest see a failing check as an error"
    assert text.startswith("Not yet:") and reason in text
    assert "A hint is available: nbXX.SQUARE.hint() (hint 1 of 2)" in text and "idea: multiply" not in text
    assert "reference_square" not in text and "x * x\n" not in text, "a failing check never shows the solution"
    assert ex.passed_answer is None


def test_rerunning_a_failing_check_spends_no_hint_and_hint_advances_on_request(capsys):
    ex = _exercise()
    for _ in range(3):
        with pytest.raises(NotYet, match=r"hint 1 of 2"):
            ex.check(None)
    assert ex.hints_shown == 0
    ex.hint()
    assert "Hint 1 of 2:** idea: multiply" in capsys.readouterr().out
    with pytest.raises(NotYet, match=r"hint 2 of 2"):
        ex.check(None)
    ex.hint()
    assert "Hint 2 of 2:** API: x * x or x ** 2" in capsys.readouterr().out
    with pytest.raises(NotYet, match=r"You have seen all 2 hints"):
        ex.check(None)


def test_hint_method_shows_the_next_level_and_caps(capsys):
    ex = _exercise()
    ex.hint()
    first = capsys.readouterr().out
    ex.hint()
    second = capsys.readouterr().out
    ex.hint()
    third = capsys.readouterr().out
    assert "Hint 1 of 2" in first and "for hint 2" in first
    assert "Hint 2 of 2" in second and "Hint 2 of 2" in third and "that was the last hint" in third
    assert "def reference_square" not in first + second + third


def test_a_failing_check_renders_as_its_wrapped_message_alone():
    """IPython shows an exception with ``_render_traceback_`` by those lines alone: no traceback through convlab."""
    long_reason = "word " * 60 + "https://a.very/long/unbreakable/address/that/must/stay/whole/on/one/line/of/its/own"
    ex = _exercise(test=lambda answer: expect(False, long_reason))
    with pytest.raises(NotYet) as info:
        ex.check(lambda x: x * x)
    lines = info.value._render_traceback_()
    assert lines[0].startswith("Not yet: word word") and all("core.py" not in line for line in lines)
    assert all(len(line) <= 100 for line in lines if "https://" not in line)
    words = " ".join(lines).split()
    assert words == str(info.value).split(), "wrapping never cuts a word"
    assert wrap_text("a\n\nb c", 3) == "a\n\nb c"


# ------------------------------------------------------------------------------------------------ guard
def _add_reference(x, y):
    return x + y


def _add_test(add) -> None:
    x, y = torch.arange(4.0), torch.ones(4)
    expect(torch.equal(add(x, y), torch.tensor([1.0, 2.0, 3.0, 4.0])), "add: expected x + y")


def _add_exercise(**kw) -> Exercise:
    return Exercise("add", _add_test, _add_reference, ["idea", "API"], handle="nbXX.ADD", **kw)


def _add_calls_reference(x, y):
    return _add_reference(x, y)


def _add_calls_reference_through_use(x, y):
    return _add_exercise().use(None)(x, y)


def _add_swallows_the_refusal(x, y):
    try:
        return _add_reference(x, y)
    except Exception:
        return x + y


@pytest.mark.parametrize(
    "cheat",
    [_add_calls_reference, _add_calls_reference_through_use, _add_swallows_the_refusal],
    ids=lambda f: f.__name__,
)
def test_an_answer_that_calls_the_reference_is_refused_with_a_sentence(cheat, capsys):
    ex = _add_exercise()
    reason = ex.run(cheat)
    assert reason is not None and "calls the reference solution `_add_reference`" in reason
    assert ex.run(lambda x, y: x + y) is None, "the correct answer still passes after a refused one"
    capsys.readouterr()


def test_extra_forbidden_functions_are_refused_too():
    def oracle(x, y):
        return torch.add(x, y)

    ex = _add_exercise(forbidden=[oracle])
    assert "calls `oracle`, which does what this exercise asks you to write" in ex.run(lambda x, y: oracle(x, y))
    assert ex.run(lambda x, y: x + y) is None


def test_an_answer_that_changes_shared_data_in_place_fails_and_the_data_is_restored():
    shared = {"x": torch.arange(4.0)}

    def test(add) -> None:
        out = add(shared["x"], torch.ones(4))
        expect(torch.equal(out, torch.tensor([1.0, 2.0, 3.0, 4.0])), "add: expected x + y")

    def poison(x, y):
        x.zero_()
        return torch.tensor([1.0, 2.0, 3.0, 4.0])

    ex = Exercise("add", test, _add_reference, ["idea"], handle="nbXX.ADD")
    reason = ex.run(poison)
    assert reason is not None and "changed its argument 1 in place (restored now)" in reason
    assert torch.equal(shared["x"], torch.arange(4.0)), "the shared data is restored"
    assert ex.run(lambda x, y: x + y) is None and ex.run(_add_reference) is None


def test_tensors_inside_lists_are_guarded_too():
    images = [torch.zeros(2), torch.ones(2)]

    def test(fn) -> None:
        expect(fn(images) == 2, "count: expected 2")

    def poison(xs):
        xs[1].mul_(0)
        return len(xs)

    ex = Exercise("count", test, len, ["idea"])
    assert "argument 1[1] in place" in ex.run(poison)
    assert torch.equal(images[1], torch.ones(2)) and ex.run(lambda xs: len(xs)) is None


def test_an_endless_answer_stops_at_the_time_limit_with_a_sentence():
    def endless(x, y):
        while True:
            try:  # noqa: SIM105 - a learner's catch-all does not swallow the time limit
                x = x + 0
            except Exception:
                pass

    ex = _add_exercise(time_limit_s=0.5)
    reason = ex.run(endless)
    assert reason is not None and "computed for more than 0.5 s, this check's time limit" in reason
    assert ex.run(lambda x, y: x + y) is None, "the correct answer still passes after a stopped one"


def test_learner_code_guards_what_the_answer_returns():
    def test(make) -> None:
        model = learner_code(make())
        expect(torch.equal(model(torch.ones(2)), torch.full((2,), 2.0)), "model: expected x + 1")

    def make_cheat():
        return lambda x: _add_reference(x, torch.ones(2))

    ex = Exercise("make", test, _add_reference, ["idea"])
    assert "calls the reference solution" in ex.run(make_cheat)
    assert ex.run(lambda: lambda x: x + 1) is None
    assert learner_code(len) is len, "outside a check, learner_code changes nothing"


def test_the_reference_itself_passes_run_but_check_refuses_it_as_an_answer():
    ex = _exercise()
    assert ex.run(reference_square) is None
    with pytest.raises(NotYet, match="is the reference solution itself"):
        ex.check(reference_square)


def test_exercise_refuses_a_time_limit_that_is_not_positive():
    with pytest.raises(ValueError, match="time_limit_s"):
        _exercise(time_limit_s=0)


def test_solution_only_when_asked(capsys):
    ex = _exercise()
    ex.check(lambda x: x**2)
    passed = capsys.readouterr().out
    assert "Correct!" in passed and "def reference_square" not in passed
    ex.solution()
    shown = capsys.readouterr().out
    assert "def reference_square(x):" in shown and "return x * x" in shown
    _exercise(solution_text="x ** 2").solution()
    assert "x ** 2" in capsys.readouterr().out
    _exercise(reference=42).solution()  # a value, not a function: shown by its repr
    assert "42" in capsys.readouterr().out


def test_check_pass_remembers_the_answer_and_use_returns_it_silently(capsys):
    ex = _exercise()
    mine = lambda x: x**2  # noqa: E731
    ex.check(mine)
    capsys.readouterr()
    assert ex.passed_answer is mine and ex.use(mine) is mine
    other = lambda x: x * x  # noqa: E731 - passes without a check call before
    assert ex.use(other) is other
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("answer", [None, _stub, lambda x: 0], ids=["none", "stub", "wrong"])
def test_use_falls_back_to_the_reference_with_one_line(answer, capsys):
    ex = _exercise()
    assert ex.use(answer) is reference_square
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("[using convlab's reference `square`")
    assert ex.hints_shown == 0, "use() does not spend the learner's hints"
    assert ex.use(reference_square) is reference_square, "the reference as the answer: use() returns it, silently"


# ------------------------------------------------------------------------------------------------ Question / Quiz
def _quiz() -> Quiz:
    return Quiz(
        "Quiz",
        {
            "q1": Question(
                "Which?",
                "b",
                "b is right because.",
                options={"a": "A", "b": "B", "c": "C"},
                wrong={"a": "a is the trap."},
            ),
            "q2": Question("How many?", 10, "ten because.", tolerance=0.5, wrong={"low": "count the biases."}),
            "q3": Question("Which again?", "a", "a because.", options={"a": "A", "b": "B"}),
        },
    )


def test_question_validates_its_answer():
    with pytest.raises(ValueError, match="options"):
        Question("?", "z", "why", options={"a": "A"})
    with pytest.raises(TypeError, match="number"):
        Question("?", "ten", "why")


@pytest.mark.parametrize(
    "given, ok, text",
    [
        ("b", True, "b is right because."),
        (" B) ", True, "b is right because."),
        ("a", False, "a is the trap. Think again."),
        ("c", False, "not this one. Think again."),
        ("z", False, "answer with one of a, b, c"),
        (None, False, "not answered yet."),
    ],
)
def test_multiple_choice_verdicts_explain_right_and_wrong_choices(given, ok, text):
    verdict = _quiz().questions["q1"].verdict(given)
    assert verdict[0] is ok and verdict[1].startswith(text)


@pytest.mark.parametrize(
    "given, ok, text",
    [
        (10, True, "ten because."),
        ("10.4", True, "ten because."),
        (9, False, "count the biases. Think again."),
        (11, False, "too high. Think again."),
        ("ten", False, "answer with a number (got 'ten')."),
        ([10], False, "answer with a number"),
        (float("nan"), False, "answer with a finite number"),
        (None, False, "not answered yet."),
    ],
)
def test_numeric_verdicts(given, ok, text):
    verdict = _quiz().questions["q2"].verdict(given)
    assert verdict[0] is ok and verdict[1].startswith(text)


def test_quiz_needs_three_questions():
    with pytest.raises(ValueError, match="at least 3"):
        Quiz("short", {"q1": Question("?", 1, "why")})


def test_quiz_check_passes_on_all_right_and_explains_each(capsys):
    assert _quiz().check(lambda: {"q1": "b", "q2": 10, "q3": "a"}) is None
    out = capsys.readouterr().out
    assert "3 of 3 right" in out and "b is right because." in out and "ten because." in out


def test_quiz_check_fails_and_explains_the_wrong_choices(capsys):
    with pytest.raises(AssertionError, match="2 answer"):
        _quiz().check({"q1": "a", "q2": 10, "q3": None, "q9": "x"})
    out = capsys.readouterr().out
    assert "1 of 3 right" in out and "a is the trap." in out and "not answered yet" in out and "q9" in out


def test_an_unanswered_quiz_invites_an_answer_and_scores_zero():
    """No error: an invitation shown as Markdown, whose plain text nbgrader reads as a partial grade of 0."""
    score = _quiz().check(_quiz_stub)
    assert isinstance(score, QuizScore) and score == 0.0 and repr(score) == "0.0"
    assert score._repr_markdown_().startswith("**Your turn:** 3 questions above wait for your answers")


def test_a_measured_question_takes_its_answer_from_the_learners_run(capsys):
    q = Question(
        "What speed-up did your cache give?",
        None,
        "the cache skips the backbone.",
        measured="speedup",
        rel_tolerance=0.1,
    )
    assert q.verdict(12.5, {"speedup": 12.0}) == (True, "the cache skips the backbone. (your run: 12)")
    assert q.verdict(20, {"speedup": 12.0})[0] is False
    assert q.verdict(12, {})[1].startswith("run the notebook's cells above first: `speedup`")
    with pytest.raises(ValueError, match="measured"):
        Question("?", 3, "why", measured="speedup")
    quiz = Quiz("Q", {"q1": q, "q2": Question("?", 1, "one."), "q3": Question("?", 2, "two.")}, research=["Try X."])
    assert quiz.check({"q1": 11.5, "q2": 1, "q3": 2}, measured={"speedup": 12.0}) is None
    quiz.show()
    shown = capsys.readouterr().out
    assert "*(a number from your run above)*" in shown and "**Further research** (open questions, not graded)" in shown


@pytest.mark.parametrize(
    "answers, match",
    [
        (lambda: 1 / 0, "raised ZeroDivisionError"),
        (lambda: None, "return a dict"),
        (None, "return a dict"),
        (["b", 10, "a"], "return a dict"),
    ],
    ids=["crash", "returns-none", "none", "list"],
)
def test_quiz_check_fails_with_a_sentence_on_wrong_types(answers, match):
    with pytest.raises(NotYet, match=match):
        _quiz().check(answers)


def test_quiz_show_lists_every_question_and_option(capsys):
    _quiz().show()
    out = capsys.readouterr().out
    assert all(s in out for s in ("**q1.** Which?", "- `a`: A", "**q3.** Which again?"))
