"""A full-scale study as a resumable record: one JSON file of per-run rows, written after every run.

A study at full scale takes an hour or more on a CPU. :class:`StudyRecord` keeps what it has measured in one JSON
file (``meta``: date, device, command, seconds; ``config``; ``rows``: one dict per training run), rewritten
atomically after each run, so a study that is stopped and started again with the same command skips the runs it
already has. The same command started in a second process (on another core, or another machine sharing the folder)
takes the runs the first has not claimed, so two processes finish the study in about half the time.
:func:`run_jobs` runs a study's jobs into such a record (or, without one, in memory). :func:`read_study` reads a
file back, and :class:`StudyResult` (rows, config, meta) is the base of each study's class of results, which adds
what its rows show; :func:`stored_lines` is the line that labels a stored run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from convlab.atomicio import atomic_write_bytes, file_lock

__all__ = [
    "StudyRecord",
    "StudyResult",
    "machine_label",
    "mean",
    "read_study",
    "run_jobs",
    "scale_settings",
    "same_but",
    "stored_lines",
]


_T = TypeVar("_T")


def same_but(old: Mapping[str, Any], new: Mapping[str, Any], key: str) -> bool:
    """Whether two study configs are equal apart from ``key``, compared as stored (tuples as lists): the test of a
    study's ``compatible`` for a config that only adds or drops runs (seeds, replications)."""
    a, b = (json.loads(json.dumps(dict(c))) for c in (old, new))
    a.pop(key, None)
    b.pop(key, None)
    return a == b


def scale_settings(scales: Mapping[str, _T], scale: str) -> _T:
    """``scales[scale]``: the settings of one of a study's scales (``"small"``, ``"full"``, ...); another name is
    refused in one line that lists the scales."""
    if scale not in scales:
        raise ValueError(f"scale: expected one of {list(scales)}, got {scale!r}")
    return scales[scale]


def mean(values: Iterable[float]) -> float:
    """The mean of a study's values, ``nan`` for none (a part with no runs yet)."""
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def machine_label() -> str:
    """``"cpu: <processor>, N cores, torch X, T threads"`` or ``"cuda: <GPU>, torch X"``: the device a study names."""
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StudyRecord:
    """The rows of one study in ``path``; ``key`` names the fields that identify a run.

    Use as a context manager: entering reads the rows already there; :meth:`claim` reserves a run for this process
    (a file in ``<path>.claims/`` made with ``O_EXCL``, so the same command started in a second process on another
    core takes the other runs); :meth:`add` merges a row into the file under its lock (``<path>.lock``) and rewrites
    it atomically. A claim whose process has died is taken over. A file written with another ``config`` is
    refused (delete it or choose another path), unless ``compatible(old_config, config, old_rows)`` says the stored
    rows are still valid under the new one (a study extended by new parts keeps the runs it has); the file then
    records the new config.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        key: Sequence[str],
        config: Mapping[str, Any],
        study: str,
        compatible: Callable[[Mapping[str, Any], Mapping[str, Any], list[dict]], bool] | None = None,
    ) -> None:
        self.path = Path(path)
        self.compatible = compatible
        self.key = tuple(key)
        self.config = json.loads(json.dumps(dict(config)))  # as it will read back from JSON
        self.study = study
        self.rows: list[dict] = []
        self.meta: dict[str, Any] = {}
        self._claims: set[Path] = set()
        self._t0 = 0.0

    @property
    def _lock(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def _claim_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".claims")

    def _read(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: expected a study JSON, got unreadable content ({exc})") from None
        same = old.get("config") == self.config
        if not same and self.compatible is not None and old.get("study") == self.study:
            same = self.compatible(old.get("config", {}), self.config, old.get("rows", []))
        if old.get("study") != self.study or not same:
            raise ValueError(
                f"{self.path}: holds a study with other settings ({old.get('study')!r}); "
                "delete it or write to another file"
            )
        return old

    def __enter__(self) -> StudyRecord:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self._lock):
            old = self._read()
        self.rows = list(old["rows"]) if old else []
        self._t0 = time.perf_counter()
        command = sys.argv if Path(sys.argv[0]).name != "__main__.py" else ["python", "-m", "convlab", *sys.argv[1:]]
        self.meta = {
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "device": machine_label(),
            "command": " ".join(shlex.quote(a) for a in command),
            "seconds": float(old["meta"].get("seconds", 0.0)) if old else 0.0,
        }
        return self

    def __exit__(self, *exc: object) -> None:
        for claim in list(self._claims):
            self._release(claim)

    def _key(self, row: Mapping[str, Any]) -> tuple:
        return tuple(row.get(k) for k in self.key)

    def done(self, **key: Any) -> bool:
        """Whether a run with these key values is already recorded."""
        want = self._key(key)
        return any(self._key(r) == want for r in self.rows)

    def _claim_path(self, key: Mapping[str, Any]) -> Path:
        import hashlib

        name = hashlib.sha256(json.dumps([key[k] for k in self.key]).encode()).hexdigest()[:24]
        return self._claim_dir / name

    def claim(self, **key: Any) -> bool:
        """Reserve the run ``key`` for this process; False if it is recorded or another live process has it."""
        self.refresh()
        if self.done(**key):
            return False
        self._claim_dir.mkdir(parents=True, exist_ok=True)
        path = self._claim_path(key)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(path.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    return False  # being written right now
                if _alive(pid):
                    return False
                path.unlink(missing_ok=True)  # its process died: take it over
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {platform.node()}\n")
            self._claims.add(path)
            return True
        return False

    def _release(self, claim: Path) -> None:
        claim.unlink(missing_ok=True)
        self._claims.discard(claim)

    def refresh(self) -> None:
        """Read the rows other processes have added since."""
        with file_lock(self._lock):
            old = self._read()
        if old:
            mine = {self._key(r) for r in self.rows}
            self.rows += [r for r in old["rows"] if self._key(r) not in mine]

    def add(self, row: Mapping[str, Any]) -> None:
        """Merge ``row`` (it must hold every key field) into the file, atomically and under its lock."""
        missing = [k for k in self.key if k not in row]
        if missing:
            raise ValueError(f"row: expected the key fields {list(self.key)}, got one without {missing}")
        with file_lock(self._lock):
            old = self._read()
            rows = list(old["rows"]) if old else []
            keys = {self._key(r) for r in rows}
            if self._key(row) not in keys:
                rows.append(dict(row))
            seconds = float(old["meta"].get("seconds", 0.0)) if old else 0.0
            now = time.perf_counter()
            self.meta["seconds"] = round(seconds + now - self._t0, 1)
            self._t0 = now
            record = {"study": self.study, "meta": self.meta, "config": self.config, "rows": rows}  # the new config
            atomic_write_bytes(self.path, (json.dumps(record, indent=1) + "\n").encode())
        self.rows = rows
        self._release(self._claim_path(row))


def run_jobs(
    record: StudyRecord | None,
    jobs: Iterable[Mapping[str, Any]],
    run: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    *,
    progress: bool = True,
    desc: str = "runs",
) -> list[dict]:
    """Run ``run(job)`` for every job (a dict of the key fields), with a progress bar; each result is merged with
    its job. With a ``record``, jobs recorded or claimed by another process are skipped and each row is added to the
    record as soon as it is there, and all rows recorded when the last job here ends are returned; with ``None`` the
    rows live in memory only and come back in the order of ``jobs``."""
    from tqdm.auto import tqdm

    jobs = list(jobs)
    rows: list[dict] = []

    def finished() -> int:
        return len(rows) if record is None else sum(record.done(**j) for j in jobs)

    bar = tqdm(total=len(jobs), initial=finished(), desc=desc, disable=not progress)
    for job in jobs:
        if record is not None and not record.claim(**job):
            continue
        row = {**job, **run(job)}
        if record is None:
            rows.append(row)
        else:
            record.add(row)
        bar.n = finished()
        bar.set_postfix(dict(job))
        bar.refresh()
    bar.close()
    if record is None:
        return rows
    record.refresh()
    return record.rows


def stored_lines(meta: Mapping[str, Any]) -> list[str]:
    """The line that labels a stored run (when, on which device, how long, the command), as a list of one line;
    ``[]`` for a run made in this process (``meta`` without a date)."""
    if not meta.get("date"):
        return []
    took = f", {_duration(float(meta['seconds']))}" if "seconds" in meta else ""
    return [
        f"STORED run, not computed now: {meta['date']} on {meta.get('device', '?')}{took}; "
        f"command: {meta.get('command', '?')}"
    ]


def _duration(seconds: float) -> str:
    """``"40 s"`` under 90 seconds, ``"27 min"`` under two hours, else ``"2.8 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_study(path: str | os.PathLike) -> dict[str, Any]:
    """The stored study at ``path`` (a JSON object as :class:`StudyRecord` or a study's ``to_json`` wrote it), with
    ``meta`` (date, device, command, seconds) set to ``{}`` where the file has none."""
    stored = json.loads(Path(path).read_text())
    stored.setdefault("meta", {})
    return stored


_Result = TypeVar("_Result", bound="StudyResult")


@dataclass
class StudyResult:
    """A study's rows (one dict per run), its ``config`` and its ``meta`` (``{}`` for a run made in this process):
    the base of each study's class of results, which adds what the rows show."""

    rows: list[dict]
    config: dict
    meta: dict

    @classmethod
    def from_json(cls: type[_Result], path: str | os.PathLike) -> _Result:
        """The study stored at ``path`` (a stored run: its ``meta`` says when, where and how it ran)."""
        stored = read_study(path)
        return cls(stored["rows"], stored["config"], stored["meta"])

    @classmethod
    def from_run(cls: type[_Result], rows: list[dict], config: dict, record: StudyRecord | None) -> _Result:
        """The rows of :func:`run_jobs` with ``config``, and the ``record``'s meta (``{}`` without a record)."""
        return cls(rows, config, dict(record.meta) if record is not None else {})
