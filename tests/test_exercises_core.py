"""Unit tests of the exercise API (convlab/exercises/core.py): checks, hints in levels, the solution only when
asked, the reference fallback, and quiz verdicts. Outside IPython, what a notebook shows as Markdown is printed."""

from __future__ import annotations

import pytest

from convlab.exercises import Exercise, Question, Quiz, check, expect


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
def test_check_fails_with_the_reason_and_a_hint(answer, reason):
    ex = _exercise()
    with pytest.raises(AssertionError) as info:
        ex.check(answer)
    text = str(info.value)
    assert text.startswith("Not yet:") and reason in text and "Hint 1 of 2: idea: multiply" in text
    assert "reference_square" not in text and "x * x\n" not in text, "a failing check never shows the solution"
    assert ex.passed_ is None


def test_hints_advance_with_each_failing_check_and_cap_at_the_last():
    ex = _exercise()
    messages = []
    for _ in range(4):
        with pytest.raises(AssertionError) as info:
            ex.check(None)
        messages.append(str(info.value))
    assert "Hint 1 of 2: idea: multiply" in messages[0] and "`nbXX.SQUARE.hint()`, for hint 2" in messages[0]
    for text in messages[1:]:
        assert "Hint 2 of 2: API: x * x or x ** 2" in text and "that was the last hint" in text
    assert all("`nbXX.SQUARE.solution()` shows the reference solution" in m for m in messages)


def test_hint_method_shows_the_next_level_and_caps(capsys):
    ex = _exercise()
    ex.hint()
    first = capsys.readouterr().out
    ex.hint()
    second = capsys.readouterr().out
    ex.hint()
    third = capsys.readouterr().out
    assert "Hint 1 of 2: idea: multiply" in first and "Hint 2 of 2" in second and "Hint 2 of 2" in third
    assert "def reference_square" not in first + second + third


def test_solution_only_when_asked(capsys):
    ex = _exercise()
    ex.check(reference_square)
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
    assert ex.passed_ is mine and ex.use(mine) is mine
    other = lambda x: x * x  # noqa: E731 - passes without a check call before
    assert ex.use(other) is other
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("answer", [None, _stub, lambda x: 0], ids=["none", "stub", "wrong"])
def test_use_falls_back_to_the_reference_with_one_line(answer, capsys):
    ex = _exercise()
    assert ex.use(answer) is reference_square
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("[using convlab's reference `square`")
    assert ex.level_ == 0, "use() does not spend the learner's hints"


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
    _quiz().check(lambda: {"q1": "b", "q2": 10, "q3": "a"})
    out = capsys.readouterr().out
    assert "3 of 3 right" in out and "b is right because." in out and "ten because." in out


def test_quiz_check_fails_and_explains_the_wrong_choices(capsys):
    with pytest.raises(AssertionError, match="2 answer"):
        _quiz().check({"q1": "a", "q2": 10, "q3": None, "q9": "x"})
    out = capsys.readouterr().out
    assert "1 of 3 right" in out and "a is the trap." in out and "not answered yet" in out and "q9" in out


@pytest.mark.parametrize(
    "answers, match",
    [
        (_quiz_stub, "not answered yet"),
        (lambda: 1 / 0, "raised ZeroDivisionError"),
        (lambda: None, "return a dict"),
        (None, "return a dict"),
        (["b", 10, "a"], "return a dict"),
    ],
    ids=["stub", "crash", "returns-none", "none", "list"],
)
def test_quiz_check_fails_with_a_sentence_on_unanswered_or_wrong_types(answers, match):
    with pytest.raises(AssertionError, match=match):
        _quiz().check(answers)


def test_quiz_show_lists_every_question_and_option(capsys):
    _quiz().show()
    out = capsys.readouterr().out
    assert all(s in out for s in ("**q1.** Which?", "- `a`: A", "**q3.** Which again?"))
