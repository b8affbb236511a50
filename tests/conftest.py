"""Shared fixtures. The network guard is the plugin ``tests/netguard/netguard_plugin.py`` (see pyproject)."""

from __future__ import annotations

import os
import shutil
import time
import types
from pathlib import Path

import pytest
import torch

#: the browser the real-browser tests drive (Debian's Chromium; .ci/install installs it)
CHROMIUM = os.environ.get("CONVLAB_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """An empty CONVLAB_HOME, so a test sees exactly what it puts there."""
    home = tmp_path / "convlab_home"
    monkeypatch.setenv("CONVLAB_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: they gain nothing from threads, and two OpenMP threads on a
    shared 2-core machine can stall each other (a 4-step fit measured 100x slower). Restored afterwards.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def copy_food_photos(root: Path, photos: slice) -> Path:
    """``root/<class>/<photo>``: the ``photos`` slice (in name order) of the fruits, other-vegetables and
    marine-fish food photos, as an image folder for ``python -m convlab train --data``."""
    from convlab.assets import fetch

    source = fetch("food_photos")
    for letter, name in (("E", "fruits"), ("D", "other_vegetables"), ("P", "marine_fish")):
        (root / name).mkdir(parents=True)
        for path in sorted(source.glob(f"{letter}*.jpeg"))[photos]:
            shutil.copy(path, root / name / path.name)
    return root


def train_argv(data: Path, out: Path, options: str, *extra: str, cache: Path | None = None) -> list[str]:
    """Arguments of a quiet ``python -m convlab train`` on the image folder ``data`` into ``out``: ``options`` (one
    string, split on spaces), then ``extra`` (later values win, e.g. a second ``--epochs``), then ``--cache-dir``."""
    cache_dir = ["--cache-dir", str(cache)] if cache is not None else []
    return ["train", "--out", str(out), "--data", str(data), "--no-progress", *options.split(), *extra, *cache_dir]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ],
        )
        yield b
        b.close()


class PageRecord:
    """Everything a browser test's page said: console messages, page errors, failed requests, and every request
    to anything but ``server_url`` (there must be none: the course runs offline)."""

    def __init__(self, page, server_url: str):
        self.t0 = time.monotonic()
        self.lines: list[str] = []
        self.outside: list[str] = []
        page.on("console", lambda m: self._add(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self._add(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self._add(f"requestfailed: {r.method} {r.url} ({r.failure})"))
        page.on("websocket", lambda ws: self._add(f"websocket: {ws.url}"))

        def request(r):
            if not r.url.startswith((server_url, "data:", "blob:", "about:")):
                self.outside.append(r.url)
                self._add(f"request outside the server: {r.method} {r.url}")

        page.on("request", request)

    def mark(self, what: str) -> None:
        """A step of the test, with its time (printed: ``pytest -rA`` shows them for a passing test too)."""
        self._add(what)
        print(self.lines[-1], f"(load average {os.getloadavg()[0]:.1f})")

    def _add(self, line: str) -> None:
        self.lines.append(f"[{time.monotonic() - self.t0:7.1f} s] {line}")


def copy_of(fn):
    """A copy of the function ``fn`` under another name. An exercise's check refuses answers that call its reference;
    tests build wrong answers on a copy (copying the code is the one way round that the check cannot see)."""
    return types.FunctionType(fn.__code__.replace(co_name=f"copy_of_{fn.__name__}"), fn.__globals__)
