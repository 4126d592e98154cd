"""Each lesson's exercise check can fail: run without its worked solution, the check cell
(and only it) fails, as it does for a learner who has not solved the exercise yet. With the
solution, nbval runs the same notebook and the check passes.

English notebooks only: the Korean ones have the same code cells (test_lessons_structure).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lessons_structure import LESSONS, build  # lessons/build.py, the notebooks' own tool

NOTEBOOKS = sorted((LESSONS / "en").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_check_fails_until_the_exercise_is_solved(notebook: Path) -> None:
    assert NOTEBOOKS, "no lesson notebooks under lessons/en"
    problem = build.verify_exercise(notebook, "python3")
    assert problem is None, f"{notebook.name}: {problem}"
