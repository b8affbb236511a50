"""Every notebook's quiz: at least 8 questions, one of them read from the learner's own run, each explained (right
and wrong), "further research" prompts, and no question asked twice in the course (nor nearly so)."""

from __future__ import annotations

import difflib
import itertools
import json
import re
from pathlib import Path

import pytest

from convlab.exercises import Quiz, nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08, nb09, nb10
from convlab.exercises.core import NotYet

MODULES = (nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08, nb09, nb10)


def _name(module) -> str:
    return module.__name__.rsplit(".", 1)[1]


@pytest.mark.parametrize("module", MODULES, ids=_name)
def test_quiz_has_eight_explained_questions_one_from_the_run_and_research_prompts(module, capsys):
    quiz = module.QUIZ
    assert isinstance(quiz, Quiz) and len(quiz.questions) >= 8
    measured = {q.measured: 0.5 for q in quiz.questions.values() if q.measured}
    assert measured, "at least one question asks for a number from the learner's own run"
    assert quiz.research and all(r.strip().endswith("?") for r in quiz.research)
    for key, q in quiz.questions.items():
        assert q.why and q.wrong, f"{key}: explain the right answer and the wrong ones"
        if q.options:
            assert set(q.wrong) == set(q.options) - {q.answer}, f"{key}: explain every wrong option"
            assert not q.verdict(next(k for k in q.options if k != q.answer))[0]
    right = {k: (0.5 if q.measured else q.answer) for k, q in quiz.questions.items()}
    assert quiz.check(right, measured=measured) is None
    assert f"{len(right)} of {len(right)} right" in capsys.readouterr().out
    with pytest.raises(NotYet):
        quiz.check(right)  # the run's values missing: the measured question cannot be right
    with pytest.raises(NotYet):
        quiz.check({})


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def test_no_question_is_asked_twice_in_the_course():
    prompts = [(_name(m), k, _words(q.prompt)) for m in MODULES for k, q in m.QUIZ.questions.items()]
    seen: dict[str, str] = {}
    for where, key, text in prompts:
        assert text not in seen, f"{where} {key} repeats {seen[text]}"
        seen[text] = f"{where} {key}"
    close = [
        (f"{a[0]} {a[1]}", f"{b[0]} {b[1]}", round(ratio, 2))
        for a, b in itertools.combinations(prompts, 2)
        if a[0] != b[0] and (ratio := difflib.SequenceMatcher(None, a[2], b[2]).ratio()) > 0.6
    ]
    assert not close, f"near-duplicate questions across notebooks: {close}"


@pytest.mark.parametrize("module", MODULES, ids=_name)
def test_the_notebook_shows_the_quiz_and_reads_the_runs_values(module):
    """A notebook shows its quiz as ``QUIZ.show()`` or as a Markdown cell holding ``QUIZ.markdown()`` (renders
    without running); its check cell passes the values of the run that the measured questions ask about."""
    number = _name(module)[2:]
    path = next((Path(__file__).resolve().parents[1] / "notebooks").glob(f"{number}_*.ipynb"))
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
    body = module.QUIZ.markdown().split("\n\n", 1)[1]
    assert any(f"nb{number}.QUIZ.show()" in c or body in c for c in cells), f"{path.name}: quiz not shown or stale"
    check = next(c for c in cells if f"nb{number}.QUIZ.check(" in c)
    for q in module.QUIZ.questions.values():
        if q.measured:
            assert f'"{q.measured}": {q.measured}' in check, f"{path.name}: pass measured={{{q.measured!r}: ...}}"
