"""Shared fixtures. The network guard is the plugin ``tests/netguard/netguard_plugin.py`` (see pyproject)."""

from __future__ import annotations

import pytest


@pytest.fixture
def tmp_home(tmp_path, monkeypatch):
    """An empty CONVLAB_HOME, so a test sees exactly what it puts there."""
    home = tmp_path / "convlab_home"
    monkeypatch.setenv("CONVLAB_HOME", str(home))
    return home
