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

Why the check cell raises: nbgrader scores a test cell by whether it raises, and a learner should see that a check
failed. The failure is a :class:`NotYet` (an ``AssertionError``) that IPython shows as its message alone, wrapped at
word boundaries, without a traceback through convlab's code; nbval and nbgrader still see an error. Why that does
not stop the notebook: the ``raises-exception`` tag makes JupyterLab's "Run All", nbval and nbgrader go on past the
cell, and :meth:`Exercise.use` gives later cells the reference implementation while the exercise is unfinished. So
a learner's copy always runs to the end.

Hints come in levels and only on request: a failing check says why and that a hint is available; each call of
:meth:`Exercise.hint` shows the next level (the idea first, then the API); running the check again spends nothing.
The reference solution is shown only by :meth:`Exercise.solution`.

The learner's code runs under a guard: a time limit in processor time (:class:`Exercise` ``time_limit_s``) with a clear
message, a refusal when it calls the reference solution, and tensor arguments checked after each call (a function that
changes them in place fails, and they are restored, so a wrong answer cannot poison the data that later checks share).
"""

from __future__ import annotations

import functools
import inspect
import math
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads when a check runs, not when the command line imports the exercises
    import torch

__all__ = [
    "check",
    "expect",
    "expect_near_reference",
    "learner_code",
    "wrap_text",
    "NotYet",
    "Exercise",
    "Question",
    "Quiz",
    "QuizScore",
]

WIDTH = 100  # characters per line of a failing check's message


def wrap_text(text: str, width: int = WIDTH) -> str:
    """``text`` wrapped at word boundaries to ``width`` characters, its own line breaks kept (never inside a word)."""
    return "\n".join(
        textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False) if line.strip() else line
        for line in text.split("\n")
    )


class NotYet(AssertionError):
    """A check that does not pass yet. IPython shows it as its message alone, wrapped at word boundaries (no
    traceback through convlab's code); nbval, nbgrader and pytest see an ``AssertionError`` like any other."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for an exception's own rendering
        return wrap_text(str(self)).split("\n")


def check(condition: bool, hint: str) -> None:
    """Raise :class:`NotYet` with ``hint`` unless ``condition`` holds (works under ``python -O`` too)."""
    __tracebackhide__ = True  # pytest hides this frame
    if not condition:
        raise NotYet(f"Not yet: {hint}")
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


class _TimeLimit(BaseException):
    """Raised into the learner's code when its time is up (a ``BaseException``: ``except Exception`` cannot hide it)."""


class _ReferenceCalled(BaseException):
    """Raised into the learner's code when it calls a forbidden function (the reference solution)."""


def _tensors(value: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(where, tensor)`` for every tensor in ``value``, looking into lists, tuples and dicts (not into modules)."""
    import torch

    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{path}[{key!r}]")


class _Guard:
    """Runs the learner's code for one check: a time budget for all its calls together, a profiler hook that refuses
    calls to the forbidden functions, and tensor arguments compared with a snapshot after each call (restored if the
    call changed them)."""

    def __init__(self, name: str, forbidden: Mapping[Any, str], time_limit_s: float):
        self.name, self.time_limit_s = name, time_limit_s
        self.forbidden = {id(code): (code, what) for code, what in forbidden.items()}  # by identity: cheap per call
        self.spent_s = 0.0
        self.called: str | None = None

    def _profile(self, frame, event, arg):
        if event == "call" and (hit := self.forbidden.get(id(frame.f_code))) is not None and hit[0] is frame.f_code:
            self.called = hit[1]
            raise _ReferenceCalled

    def call(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        named = [(f"argument {i + 1}", a) for i, a in enumerate(args)] + [
            (f"argument {k!r}", v) for k, v in kwargs.items()
        ]
        snapshot = [(where, t, t.detach().clone()) for label, a in named for where, t in _tensors(a, label)]
        left = self.time_limit_s - self.spent_s
        if left <= 0:
            raise _TimeLimit
        timed = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        if timed:

            def ring(signum, frame):
                raise _TimeLimit

            # processor time, not wall time: a correct answer on a busy shared machine is not cut short
            previous_handler = signal.signal(signal.SIGPROF, ring)
            signal.setitimer(signal.ITIMER_PROF, left, 1.0)  # rings again every second if the first is swallowed
        previous_profile = sys.getprofile()
        start = time.process_time()
        sys.setprofile(self._profile)
        try:
            result = fn(*args, **kwargs)
        finally:
            sys.setprofile(previous_profile)
            self.spent_s += time.process_time() - start
            if timed:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.signal(signal.SIGPROF, previous_handler)
        if self.called is not None:
            raise _ReferenceCalled
        changed = [where for where, t, saved in snapshot if not _same(t, saved)]
        for _, t, saved in snapshot:
            if not _same(t, saved):
                import torch

                with torch.no_grad():
                    t.resize_(saved.shape).copy_(saved)
        expect(
            not changed,
            f"`{self.name}` changed its {', '.join(changed)} in place (restored now): the data is shared with the "
            "rest of the notebook, so work on a copy (x.clone(), or out-of-place operations such as x = x * 2)",
        )
        return result


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` still equals its snapshot ``b`` (NaN equal to NaN)."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a = a.detach()
    return torch.equal(a, b) or (a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all()))


_ACTIVE: list[_Guard] = []  # the guard of the check now running (a stack: a check may run inside a check's test)


def learner_code(fn: Callable) -> Callable:
    """Inside an exercise's test: ``fn`` (something the learner's answer returned, e.g. a model whose forward the test
    calls) wrapped to run under the same guard as the answer itself; ``fn`` unchanged outside a check."""
    if not _ACTIVE or not callable(fn):
        return fn
    guard = _ACTIVE[-1]

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        return guard.call(fn, args, kwargs)

    return guarded


def _code_of(fn: Any) -> Any:
    """The code object that runs when ``fn`` is called, or ``None`` (a value, a builtin)."""
    fn = inspect.unwrap(fn) if callable(fn) else fn
    return getattr(fn, "__code__", None)


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
        time_limit_s: the most seconds of processor time the learner's code may use in one check, all its calls
            together (processor time, so that a busy machine does not fail a correct answer).
        forbidden: functions the learner's code may not call (the reference always is): a check refuses an answer
            that calls one, with a sentence.

    State while the learner works (not arguments): ``hints_shown``, how many hints :meth:`hint` has shown;
    ``passed_answer``, the last answer that passed its check (what :meth:`use` and :meth:`provenance` recognise).
    """

    name: str
    test: Callable[[Any], None]
    reference: Any
    hints: Sequence[str]
    solution_text: str | None = None
    skill: str = ""
    handle: str = "exercise"
    time_limit_s: float = 120.0
    forbidden: Sequence[Callable] = ()
    hints_shown: int = field(default=0, init=False, repr=False)
    passed_answer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.hints:
            raise ValueError(f"hints: expected at least one hint for exercise {self.name!r}, got none")
        if not callable(self.test):
            raise TypeError(f"test: expected a callable test(answer), got {type(self.test).__name__}")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s: expected a positive number of seconds, got {self.time_limit_s!r}")

    # ------------------------------------------------------------------------------------------------ running
    def run(self, answer: Any) -> str | None:
        """Run the test quietly: ``None`` if ``answer`` passes, else the reason (one paragraph)."""
        if answer is None:
            return f"`{self.name}` is None: define it in the exercise cell above and run that cell first."
        # the reference itself passes (use() and the tests rely on it); an answer that calls it does not
        forbidden = {_code_of(f): getattr(f, "__name__", repr(f)) for f in (self.reference, *self.forbidden)}
        forbidden.pop(None, None)
        if answer is self.reference:
            forbidden.pop(_code_of(answer), None)
        guard = _Guard(self.name, forbidden, self.time_limit_s)
        _ACTIVE.append(guard)
        try:
            self.test(learner_code(answer) if callable(answer) else answer)
        except NotImplementedError:
            return f"`{self.name}` is not written yet (it still raises NotImplementedError): replace the stub."
        except _TimeLimit:
            return (
                f"`{self.name}` computed for more than {self.time_limit_s:g} s, this check's time limit (the "
                "reference needs far less): look for a loop that never ends, or far more work than the task needs."
            )
        except _ReferenceCalled:
            if guard.called != getattr(self.reference, "__name__", None):
                return (
                    f"`{self.name}` calls `{guard.called}`, which does what this exercise asks you to write: the "
                    "check refuses that. Write it with plain PyTorch."
                )
            return (
                f"`{self.name}` calls the reference solution `{guard.called}`: the check refuses that. Write your "
                f"own version (`{self.handle}.solution()` shows the reference if you want to read it)."
            )
        except AssertionError as err:
            return str(err) or "the answer is not right yet."
        except Exception as err:  # the learner's code crashed: say where, as a failed check, not a crash
            return f"`{self.name}` raised {type(err).__name__}: {err}"
        finally:
            _ACTIVE.remove(guard)
        return None

    def check(self, answer: Any) -> None:
        """Test ``answer``: print a pass, or raise :class:`NotYet` with the reason and where the next hint is.

        Running a check again spends no hint: hints come only from :meth:`hint`."""
        __tracebackhide__ = True
        if answer is self.reference and callable(answer):
            reason = (
                f"`{self.name}` is the reference solution itself: the check refuses that. Write your own version "
                f"(`{self.handle}.solution()` shows the reference if you want to read it)."
            )
        else:
            reason = self.run(answer)
        if reason is None:
            self.passed_answer = answer
            _say(f"**Correct!** `{self.name}` passes its check{': ' + self.skill if self.skill else ''}.")
            return
        self.passed_answer = None
        raise NotYet(f"Not yet: {reason}\n{self._offer()}")

    def _offer(self) -> str:
        """One line: which hint :meth:`hint` shows next, and where the solution is."""
        n = len(self.hints)
        if self.hints_shown < n:
            return (
                f"A hint is available: {self.handle}.hint() (hint {self.hints_shown + 1} of {n}); "
                f"{self.handle}.solution() shows the reference solution."
            )
        return (
            f"You have seen all {n} hints ({self.handle}.hint() shows the last again); "
            f"{self.handle}.solution() shows the reference solution."
        )

    # ------------------------------------------------------------------------------------------------ asking
    def hint(self) -> None:
        """Show the next hint (the idea first, then the API); after the last, the last again."""
        level = min(self.hints_shown, len(self.hints) - 1)
        self.hints_shown = min(self.hints_shown + 1, len(self.hints))
        more = (
            f"`{self.handle}.hint()` again for hint {level + 2}"
            if level + 1 < len(self.hints)
            else "that was the last hint"
        )
        _say(
            f"**Hint {level + 1} of {len(self.hints)}:** {self.hints[level]}  \n"
            f"({more}; `{self.handle}.solution()` shows the reference solution.)"
        )

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
        if answer is not None and answer is self.passed_answer:
            return answer
        reason = self.run(answer)
        if reason is None:
            self.passed_answer = answer
            return answer
        first = reason.split("\n", 1)[0]
        print(f"[using convlab's reference `{self.name}` below: yours does not pass its check yet ({first})]")
        return self.reference

    def provenance(self, used: Any) -> str:
        """The line a result prints to say whose code computed it: ``used`` is what :meth:`use` returned.

        ``"computed with your `name`"`` when ``used`` is the learner's passing answer, else
        ``"computed with convlab's reference `name` (yours does not pass its check yet)"``.
        """
        if used is not None and used is self.passed_answer and used is not self.reference:
            return f"computed with your `{self.name}`"
        return f"computed with convlab's reference `{self.name}` (yours does not pass its check yet)"


@dataclass(frozen=True)
class Question:
    """One quiz question: multiple choice (``options``), numeric (``answer`` a number, with ``tolerance``), or a
    number read from the learner's own run (``measured``: the name of the value the notebook computed, passed to
    :meth:`Quiz.check` as ``measured={name: value}``).

    Args:
        prompt: the question, in Markdown.
        answer: the correct option's key (e.g. ``"b"``) or the numeric value; ``None`` for a measured question.
        why: the explanation shown with the verdict (right or wrong).
        options: option key -> text, for multiple choice.
        wrong: option key -> why that option is wrong (shown when chosen); numeric questions may use the keys
            ``"low"`` and ``"high"``.
        tolerance: for numeric answers, the accepted absolute difference.
        measured: for a number from the learner's run, the name of the notebook's value.
        rel_tolerance: for a measured number, the accepted difference as a fraction of the value (added to
            ``tolerance``).
    """

    prompt: str
    answer: str | float | None
    why: str
    options: Mapping[str, str] | None = None
    wrong: Mapping[str, str] = field(default_factory=dict)
    tolerance: float = 0.0
    measured: str | None = None
    rel_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.measured is not None:
            if self.options is not None or self.answer is not None:
                raise ValueError(f"measured: a measured question takes no options and answer=None, got {self.answer!r}")
            return
        if self.options is not None and self.answer not in self.options:
            raise ValueError(f"answer: expected one of the options {sorted(self.options)}, got {self.answer!r}")
        if self.options is None and not isinstance(self.answer, (int, float)):
            raise TypeError(
                f"answer: expected a number for a question without options, got {type(self.answer).__name__}"
            )

    def verdict(self, given: Any, measured: Mapping[str, Any] | None = None) -> tuple[bool, str]:
        """``(correct, explanation)`` for the learner's answer ``given`` (``measured``: the run's values, by name)."""
        if given is None:
            return False, "not answered yet."
        target = self.answer
        tolerance = self.tolerance
        if self.measured is not None:
            value = (measured or {}).get(self.measured)
            if value is None:
                return False, f"run the notebook's cells above first: `{self.measured}` is not computed yet."
            target = float(value)
            tolerance = self.tolerance + self.rel_tolerance * abs(target)
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
        if abs(value - float(target)) <= tolerance:
            return True, self.why + (f" (your run: {float(target):.4g})" if self.measured is not None else "")
        side = "low" if value < float(target) else "high"
        return False, self.wrong.get(side, f"too {side}.") + " Think again."


class QuizScore(float):
    """What an unanswered quiz's check returns: an invitation to answer, shown as Markdown in a notebook, whose plain
    text is the score (``0.0``), so nbgrader's partial-credit rule grades it 0 without an error in the notebook."""

    def __new__(cls, value: float, text: str) -> QuizScore:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj

    def __repr__(self) -> str:
        return repr(float(self))

    def _repr_markdown_(self) -> str:
        return self.text


@dataclass
class Quiz:
    """Checked questions at the end of a notebook, and open "further research" prompts (not graded). The learner
    writes a function returning a dict of answers (``{"q1": "b", "q2": 10, ...}``), so a learner's copy (whose stub
    raises) still runs to the end."""

    title: str
    questions: Mapping[str, Question]
    research: Sequence[str] = ()

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
            elif q.measured is not None:
                text += " *(a number from your run above)*"
            else:
                text += " *(a number)*"
            parts.append(text)
        if self.research:
            parts.append("**Further research** (open questions, not graded):")
            parts.append("\n".join(f"- {r}" for r in self.research))
        return "\n\n".join(parts)

    def show(self) -> None:
        """Show the questions (Markdown in a notebook)."""
        _say(self.markdown())

    def check(self, answers: Any, measured: Mapping[str, Any] | None = None) -> QuizScore | None:
        """Mark every answer, explain each, and raise :class:`NotYet` unless all are right.

        ``answers`` is a dict, or a function returning one (the exercise cell's function, not called by the learner).
        ``measured``: the values of the learner's run that measured questions ask about, by name. An unanswered
        quiz (the stub) raises nothing: it returns a :class:`QuizScore` of 0 that invites the learner to answer.
        """
        __tracebackhide__ = True
        if callable(answers):
            try:
                answers = answers()
            except NotImplementedError:
                return QuizScore(
                    0.0,
                    f"**Your turn:** {len(self.questions)} questions above wait for your answers. Write them in "
                    "`quiz_answers` (a dict such as `{'q1': 'b', 'q2': 0.5}`) and run this cell again; each answer "
                    "gets an explanation. The quiz counts once it is answered.",
                )
            except Exception as err:  # a typo in the answers function: a failed check that says so, not a crash
                raise NotYet(f"Not yet: the answers function raised {type(err).__name__}: {err}") from None
        if not isinstance(answers, Mapping):
            raise NotYet(f"Not yet: return a dict of answers such as {{'q1': 'b'}}, got {type(answers).__name__}.")
        unknown = sorted(set(map(str, answers)) - set(self.questions))
        lines, right = [], 0
        for key, q in self.questions.items():
            ok, why = q.verdict(answers.get(key), measured)
            right += ok
            lines.append(f"- **{key}** {'right' if ok else 'not yet'}: {why}")
        if unknown:
            lines.append(f"- unknown question keys ignored: {unknown}")
        _say(f"**{right} of {len(self.questions)} right.**\n\n" + "\n".join(lines))
        if right < len(self.questions):
            raise NotYet(f"Not yet: {len(self.questions) - right} answer(s) to think about again (see above).")
        return None
