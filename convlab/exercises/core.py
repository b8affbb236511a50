"""Exercises that check themselves, with hints in levels and a reference to fall back on; quizzes.

How an exercise looks in a notebook (the committed notebook holds the solution, so the course runs under nbval;
learner copies and nbgrader's release versions replace the block between the markers by a stub):

.. code-block:: python

    # exercise cell (nbgrader: a solution cell)
    def train_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.nn.Linear:
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

    # check cell (tagged "check" and "raises-exception"; nbgrader: an autograded test cell)
    nb02.TRAIN_HEAD.check(train_head)

    # a later cell that needs the skill: the learner's version if it passed, else the reference, said in one line
    head = nb02.TRAIN_HEAD.use(train_head)(features, labels, 3)

Why the check cell raises: nbgrader scores a test cell by whether it raises, and a learner should see a failing
check in red. Why that does not stop the notebook: the ``raises-exception`` tag makes JupyterLab's "Run All",
nbval and nbgrader go on past the cell, and :meth:`Exercise.use` gives later cells the reference implementation
while the exercise is unfinished. So a learner's copy always runs to the end.

Hints come in levels: each failing check shows the next hint (the idea first, then the API); :meth:`Exercise.hint`
asks for the next one directly; the reference solution is shown only by :meth:`Exercise.solution`, when the learner
asks for it.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["check", "expect", "expect_near_reference", "Exercise", "Question", "Quiz"]


def check(condition: bool, hint: str) -> None:
    """Raise ``AssertionError`` with ``hint`` unless ``condition`` holds (works under ``python -O`` too)."""
    __tracebackhide__ = True  # IPython and pytest hide this frame: the learner sees the message, not our code
    if not condition:
        raise AssertionError(f"Not yet: {hint}")
    print("Correct!")


def expect(condition: bool, message: str) -> None:
    """Inside an exercise's test: raise ``AssertionError(message)`` unless ``condition`` holds (prints nothing)."""
    __tracebackhide__ = True
    if not condition:
        raise AssertionError(message)


def expect_near_reference(acc: float, ref: float, margin: float, data: str, advice: str) -> None:
    """Inside an exercise's test: the learner's test accuracy ``acc`` on ``data`` may fall short of the reference's
    ``ref`` on the same data by ``margin`` at most; else ``AssertionError`` with the numbers and ``advice``."""
    __tracebackhide__ = True
    expect(
        acc >= ref - margin,
        f"test accuracy {acc:.3f} on {data}; the reference reaches {ref:.3f} (accepted: {ref - margin:.3f} or more). "
        + advice,
    )


def _say(text: str) -> None:
    """Show ``text`` as Markdown in a notebook, as plain text elsewhere (no IPython import at module import)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython ships with the course's JupyterLab
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


@dataclass
class Exercise:
    """One exercise: the test that runs a learner's answer on real data, hints in levels, a reference.

    Args:
        name: the name the learner defines in the exercise cell (e.g. ``"train_head"``), used in messages.
        test: ``test(answer)`` runs the answer and raises ``AssertionError`` with a sentence saying what is wrong
            (use :func:`expect`); any other exception the answer raises is reported as a failed check too.
        reference: what later cells use while the exercise is unfinished: a function with the exercise's
            signature (or a value), usually the ``convlab`` implementation of the same skill.
        hints: in levels, from the idea to the API; never the solution itself.
        solution_text: what :meth:`solution` shows; default: the reference's source code.
        skill: one line naming the skill practised, shown with a pass.
        handle: how the notebook refers to this exercise (e.g. ``"nb02.TRAIN_HEAD"``), for the messages that say
            how to ask for the next hint or the solution.
    """

    name: str
    test: Callable[[Any], None]
    reference: Any
    hints: Sequence[str]
    solution_text: str | None = None
    skill: str = ""
    handle: str = "exercise"
    level_: int = field(default=0, init=False, repr=False)
    passed_: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.hints:
            raise ValueError(f"hints: expected at least one hint for exercise {self.name!r}, got none")
        if not callable(self.test):
            raise TypeError(f"test: expected a callable test(answer), got {type(self.test).__name__}")

    # ------------------------------------------------------------------------------------------------ running
    def run(self, answer: Any) -> str | None:
        """Run the test quietly: ``None`` if ``answer`` passes, else the reason (one paragraph)."""
        if answer is None:
            return f"`{self.name}` is None: define it in the exercise cell above and run that cell first."
        try:
            self.test(answer)
        except NotImplementedError:
            return f"`{self.name}` is not written yet (it still raises NotImplementedError): replace the stub."
        except AssertionError as err:
            return str(err) or "the answer is not right yet."
        except Exception as err:  # the learner's code crashed: say where, as a failed check, not a crash
            return f"`{self.name}` raised {type(err).__name__}: {err}"
        return None

    def check(self, answer: Any) -> None:
        """Test ``answer``: print a pass, or raise ``AssertionError`` with the reason and the next hint."""
        __tracebackhide__ = True
        reason = self.run(answer)
        if reason is None:
            self.passed_ = answer
            _say(f"**Correct!** `{self.name}` passes its check{': ' + self.skill if self.skill else ''}.")
            return
        self.passed_ = None
        hint = self._next_hint()
        raise AssertionError(f"Not yet: {reason}\n{hint}")

    def _next_hint(self) -> str:
        level = min(self.level_, len(self.hints) - 1)
        self.level_ = min(self.level_ + 1, len(self.hints))
        more = (
            f"run the check again, or `{self.handle}.hint()`, for hint {level + 2}"
            if level + 1 < len(self.hints)
            else "that was the last hint"
        )
        return (
            f"Hint {level + 1} of {len(self.hints)}: {self.hints[level]}\n"
            f"({more}; `{self.handle}.solution()` shows the reference solution.)"
        )

    # ------------------------------------------------------------------------------------------------ asking
    def hint(self) -> None:
        """Show the next hint (the idea first, then the API)."""
        _say(self._next_hint().replace("\n", "  \n"))

    def solution(self) -> None:
        """Show the reference solution: only when the learner asks for it."""
        text = self.solution_text
        if text is None:
            try:
                text = textwrap.dedent(inspect.getsource(self.reference))
            except (OSError, TypeError):  # a value, or a function without source (defined interactively)
                text = repr(self.reference)
        _say(f"Reference solution for `{self.name}`:\n\n```python\n{text.rstrip()}\n```")

    def use(self, answer: Any) -> Any:
        """The learner's ``answer`` if it passes its check, else the reference, with one line saying so."""
        if answer is not None and answer is self.passed_:
            return answer
        reason = self.run(answer)
        if reason is None:
            self.passed_ = answer
            return answer
        first = reason.split("\n", 1)[0]
        print(f"[using convlab's reference `{self.name}` below: yours does not pass its check yet ({first})]")
        return self.reference


@dataclass(frozen=True)
class Question:
    """One quiz question: multiple choice (``options``) or numeric (``answer`` a number, with ``tolerance``).

    Args:
        prompt: the question, in Markdown.
        answer: the correct option's key (e.g. ``"b"``) or the numeric value.
        why: the explanation shown with the verdict (right or wrong).
        options: option key -> text, for multiple choice.
        wrong: option key -> why that option is wrong (shown when chosen); numeric questions may use the keys
            ``"low"`` and ``"high"``.
        tolerance: for numeric answers, the accepted absolute difference.
    """

    prompt: str
    answer: str | float
    why: str
    options: Mapping[str, str] | None = None
    wrong: Mapping[str, str] = field(default_factory=dict)
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.options is not None and self.answer not in self.options:
            raise ValueError(f"answer: expected one of the options {sorted(self.options)}, got {self.answer!r}")
        if self.options is None and not isinstance(self.answer, (int, float)):
            raise TypeError(
                f"answer: expected a number for a question without options, got {type(self.answer).__name__}"
            )

    def verdict(self, given: Any) -> tuple[bool, str]:
        """``(correct, explanation)`` for the learner's answer ``given``."""
        if given is None:
            return False, "not answered yet."
        if self.options is not None:
            key = str(given).strip().lower().rstrip(")")
            if key not in self.options:
                return False, f"answer with one of {', '.join(sorted(self.options))} (got {given!r})."
            if key == self.answer:
                return True, self.why
            return False, self.wrong.get(key, "not this one.") + " Think again."
        try:
            value = float(given)
        except (TypeError, ValueError):
            return False, f"answer with a number (got {given!r})."
        if not math.isfinite(value):
            return False, f"answer with a finite number (got {given!r})."
        if abs(value - float(self.answer)) <= self.tolerance:
            return True, self.why
        side = "low" if value < float(self.answer) else "high"
        return False, self.wrong.get(side, f"too {side}.") + " Think again."


@dataclass
class Quiz:
    """A few checked questions at the end of a notebook. The learner writes a function returning a dict of
    answers (``{"q1": "b", "q2": 10, ...}``), so a learner's copy (whose stub raises) still runs to the end."""

    title: str
    questions: Mapping[str, Question]

    def __post_init__(self) -> None:
        if len(self.questions) < 3:
            raise ValueError(f"questions: expected at least 3 questions, got {len(self.questions)}")

    def markdown(self) -> str:
        """The questions as Markdown (what :meth:`show` displays; a notebook's "## Quiz" cell may hold it)."""
        parts = [f"**{self.title}**"]
        for key, q in self.questions.items():
            text = f"**{key}.** {q.prompt}"
            if q.options:
                text += "\n" + "\n".join(f"- `{k}`: {v}" for k, v in q.options.items())
            elif isinstance(q.answer, (int, float)):
                text += " *(a number)*"
            parts.append(text)
        return "\n\n".join(parts)

    def show(self) -> None:
        """Show the questions (Markdown in a notebook)."""
        _say(self.markdown())

    def check(self, answers: Any) -> None:
        """Mark every answer, explain each, and raise ``AssertionError`` unless all are right.

        ``answers`` is a dict, or a function returning one (the exercise cell's function, not called by the learner).
        """
        __tracebackhide__ = True
        if callable(answers):
            try:
                answers = answers()
            except NotImplementedError:
                raise AssertionError(
                    "Not yet: the quiz is not answered yet (the stub raises NotImplementedError); "
                    "return a dict such as {'q1': 'b', 'q2': 0.5, ...}."
                ) from None
            except Exception as err:  # a typo in the answers function: a failed check that says so, not a crash
                raise AssertionError(f"Not yet: the answers function raised {type(err).__name__}: {err}") from None
        if not isinstance(answers, Mapping):
            raise AssertionError(
                f"Not yet: return a dict of answers such as {{'q1': 'b'}}, got {type(answers).__name__}."
            )
        unknown = sorted(set(map(str, answers)) - set(self.questions))
        lines, right = [], 0
        for key, q in self.questions.items():
            ok, why = q.verdict(answers.get(key))
            right += ok
            lines.append(f"- **{key}** {'right' if ok else 'not yet'}: {why}")
        if unknown:
            lines.append(f"- unknown question keys ignored: {unknown}")
        _say(f"**{right} of {len(self.questions)} right.**\n\n" + "\n".join(lines))
        if right < len(self.questions):
            raise AssertionError(f"Not yet: {len(self.questions) - right} answer(s) to think about again (see above).")
