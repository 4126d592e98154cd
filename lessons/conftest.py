"""pytest's set-up for the lesson notebooks, which nbval runs (``pytest lessons --nbval``).

Lesson 5's cells run pytest themselves (``!pytest -q`` in the chat project, and its check
cell), in kernels that inherit this process's environment. pytest loads every plugin
installed in the environment, and here that includes nbval, whose import (nbformat, then
jsonschema's format checkers, which build dozens of parsers) cost 2 s of CPU per run
(measured: ``pytest --collect-only`` of the lesson's project, 3.0 s of CPU with nbval loaded,
1.0 s with ``-p no:nbval``) — a tenth of the whole nbval run, spent on a plugin a learner's
tests never use. So the pytest runs inside the lessons are told ``-p no:nbval``.

This process read ``PYTEST_ADDOPTS`` when it started, so nbval itself stays loaded here.
A learner's JupyterLab has no nbval (it is a test dependency of nodelab), and neither this
file nor the option reaches it: what the lessons print is the same either way.
"""

import os

NO_NBVAL = "-p no:nbval"

_options = os.environ.get("PYTEST_ADDOPTS", "")
if NO_NBVAL not in _options:
    os.environ["PYTEST_ADDOPTS"] = f"{_options} {NO_NBVAL}".strip()
