"""Self-checking exercises, quizzes and learner copies of the notebooks.

- :mod:`convlab.exercises.core`: :class:`Exercise` (a check on real data, hints in levels, a reference to fall back
  on), :class:`Quiz` and :class:`Question`, and the plain :func:`check`.
- :mod:`convlab.exercises.copies`: learner copies (solutions replaced by stubs) and the course folders that hold
  them (:func:`make_course_folder`: never over a learner's edits, never inside ``notebooks/``), nbgrader's cell marks
  (:func:`mark_for_nbgrader`) and the convention checks (:func:`notebook_problems`) the tests use.
  ``python -m convlab.exercises --mark|--check notebooks/*.ipynb`` writes or checks the marks.
- ``convlab.exercises.nbNN``: the exercises and quiz of notebook ``NN`` (their tests, references and hints).
"""

from convlab.exercises.copies import (
    BEGIN,
    CHECK_TAGS,
    END,
    STUB,
    CourseFolder,
    check_course_folder,
    course_notebooks,
    exercise_pairs,
    learner_notebook,
    make_course_folder,
    mark_for_nbgrader,
    none_solutions,
    notebook_problems,
    strip_solutions,
)
from convlab.exercises.core import Exercise, Question, Quiz, check, expect

__all__ = [
    "check",
    "expect",
    "Exercise",
    "Question",
    "Quiz",
    "strip_solutions",
    "none_solutions",
    "learner_notebook",
    "course_notebooks",
    "check_course_folder",
    "make_course_folder",
    "CourseFolder",
    "exercise_pairs",
    "mark_for_nbgrader",
    "notebook_problems",
    "BEGIN",
    "END",
    "STUB",
    "CHECK_TAGS",
]
