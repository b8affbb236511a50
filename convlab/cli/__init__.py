"""The command line behind ``python -m convlab train``, ``evaluate`` and ``study`` (:mod:`convlab.__main__` reads it).

:mod:`convlab.cli.options` describes ``train``'s and ``evaluate``'s options and checks them without torch;
:mod:`convlab.cli.train` and :mod:`convlab.cli.evaluate` run them; :mod:`convlab.cli.study` runs a study at a scale.
Nothing is imported here, so ``python -m convlab ... --help`` stays fast.
"""
