"""Command-line argument types: a number within a range, as argparse's ``type=`` (argparse turns the error into one
line and exit status 2). Light: no torch, so ``--help`` and the refusal of a bad argument stay fast."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["number_in"]


def number_in(
    kind: type[int] | type[float],
    low: float | None = None,
    high: float | None = None,
    *,
    expected: str,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], int | float]:
    """An argparse type: the text as a ``kind`` (``int`` or ``float``) in ``[low, high]`` (``None``: no bound;
    ``low_open`` / ``high_open`` exclude an end; never NaN or infinite), or ``"expected <expected>, got '<text>'"``."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its other messages
    return parse
