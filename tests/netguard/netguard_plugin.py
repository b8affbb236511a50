"""pytest plugin (loaded with ``-p netguard_plugin`` from pyproject): no network beyond loopback in the whole
test session, in the pytest process and in every notebook kernel nbval starts (they inherit PYTHONPATH, and
``sitecustomize.py`` in this folder installs the same guard there)."""

from __future__ import annotations

import os
from pathlib import Path

import convlab_netguard

_HERE = Path(__file__).parent


def pytest_configure(config):
    convlab_netguard.install()
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(_HERE) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(_HERE)] + parts)
    os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_runtest_setup(item):
    # Another plugin (e.g. pytest-socket) may restore the real socket methods between tests: guard again.
    convlab_netguard.install()
