"""Self-checking exercises, quizzes and learner copies of the notebooks.

- :mod:`convlab.exercises.core`: :class:`Exercise` (a check on real data, hints in levels, a reference to fall back
  on), :class:`Quiz` and :class:`Question`, and the plain :func:`check`.
- :mod:`convlab.exercises.copies`: learner copies (solutions replaced by stubs) and the helpers the tests use.
- ``convlab.exercises.nbNN``: the exercises and quiz of notebook ``NN`` (their tests, references and hints).
"""

from convlab.exercises.copies import BEGIN, END, STUB, learner_notebook, none_solutions, strip_solutions, write_learner_copies
from convlab.exercises.core import Exercise, Question, Quiz, check, expect

__all__ = ["check", "expect", "Exercise", "Question", "Quiz", "strip_solutions", "none_solutions", "learner_notebook",
           "write_learner_copies", "BEGIN", "END", "STUB"]
