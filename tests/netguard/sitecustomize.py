"""Runs at the start of every Python process whose PYTHONPATH holds this folder (the notebook kernels in tests)."""

import convlab_netguard

convlab_netguard.install()
