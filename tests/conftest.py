"""Shared fixtures. The network guard is the plugin ``tests/netguard/netguard_plugin.py`` (see pyproject)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest
import torch


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


def copy_of(fn):
    """A copy of the function ``fn`` under another name. An exercise's check refuses answers that call its reference;
    tests build wrong answers on a copy (copying the code is the one way round that the check cannot see)."""
    return types.FunctionType(fn.__code__.replace(co_name=f"copy_of_{fn.__name__}"), fn.__globals__)
