"""Tables that render as HTML in notebooks, as aligned text elsewhere, and as GitHub markdown (no pandas needed).

:class:`Table` holds rows of dicts or dataclasses; :func:`markdown_table` renders dataclass rows (results such as
``History.rows()``) straight to markdown with a chosen float format. Both share one markdown writer.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, is_dataclass
from typing import Any

__all__ = ["Table", "markdown_table"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def _markdown(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def markdown_table(rows: Sequence[Any], floatfmt: str = ".3g") -> str:
    """A GitHub-markdown table of dataclass rows (one column per field); floats as ``format(v, floatfmt)``."""
    if not rows:
        return ""
    names = [f.name for f in fields(rows[0])]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    return _markdown(names, [[cell(getattr(r, n)) for n in names] for r in rows])


class Table:
    """Rows of dicts or dataclasses, shown as a table. ``rows`` and ``columns`` stay available as data."""

    def __init__(self, rows: Sequence[Mapping[str, Any] | Any], columns: Sequence[str] | None = None, title: str = ""):
        self.rows = [asdict(r) if is_dataclass(r) else dict(r) for r in rows]
        if columns is None:
            columns = list(dict.fromkeys(k for r in self.rows for k in r))
        self.columns = list(columns)
        self.title = title

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    def column(self, name: str) -> list:
        """The values of one column, in row order."""
        if name not in self.columns:
            raise KeyError(f"column: expected one of {self.columns}, got {name!r}")
        return [r.get(name) for r in self.rows]

    def _cells(self) -> list[list[str]]:
        return [[_fmt(r.get(c)) for c in self.columns] for r in self.rows]

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__

    def to_markdown(self) -> str:
        return _markdown(self.columns, self._cells())

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self._cells())
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
