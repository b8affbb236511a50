"""``python -m convlab.exercises --mark|--check NOTEBOOK...``: see :func:`convlab.exercises.copies.main`."""

import sys

from convlab.exercises.copies import main

sys.exit(main())
