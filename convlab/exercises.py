"""Self-checking exercises: ``check`` raises an ``AssertionError`` with a hint instead of printing.

In the committed notebooks, exercise solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
lines; learner copies replace them with a stub (see :func:`strip_solutions`).
"""

from __future__ import annotations

__all__ = ["check", "strip_solutions", "BEGIN", "END", "STUB"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'


def check(condition: bool, hint: str) -> None:
    """Raise ``AssertionError(hint)`` unless ``condition`` holds (works under ``python -O`` too)."""
    if not condition:
        raise AssertionError(f"Not yet: {hint}")
    print("Correct!")


def strip_solutions(source: str) -> str:
    """Replace every solution block in a cell's source by an indented stub line."""
    out, skipping = [], False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
            skipping = True
        elif stripped == END:
            if not skipping:
                raise ValueError(f"source: {END!r} without a matching {BEGIN!r}")
            skipping = False
        elif not skipping:
            out.append(line)
    if skipping:
        raise ValueError(f"source: {BEGIN!r} without a matching {END!r}")
    return "".join(out)
