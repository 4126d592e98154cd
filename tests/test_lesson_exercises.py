"""Each lesson's exercise check can fail: run without its worked solution, the check cell
(and only it) fails, as it does for a learner who has not solved the exercise yet. With the
solution, nbval runs the same notebook and the check passes.

A check must look at what the learner's code did, not at a value that could be typed in:
the second test runs lessons with such shortcuts in place of the solution (the expected
answer typed in, an old PID kept, a moebi left running by another notebook), and their
checks must fail too.

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


#: Shortcuts a learner might take instead of the exercise; the check must not pass them.
SHORTCUTS = {
    # pid still holds the kate PID of an earlier cell; introduce is defined, never run.
    "01_nodes_and_spawn_link": [
        '%%node kate\nclass Kate:\n    @staticmethod\n    def introduce(friend):\n'
        '        print(f"Hi {friend}, I am Kate")',
        "pid = hello",
    ],
    "02_replying_and_cookies": ['reply = ("pong", "kate@localhost")'],
    "03_distributed_tasks": ['where = "kate@localhost"'],
    "06_beyond_the_lesson": ['down = ("nodedown", "sophie@localhost")'],
}


@pytest.mark.parametrize("name", sorted(SHORTCUTS))
def test_a_typed_answer_is_not_a_solution(name: str) -> None:
    notebook = LESSONS / "en" / f"{name}.ipynb"
    problem = build.verify_exercise(notebook, "python3", instead=SHORTCUTS[name])
    assert problem is None, f"{notebook.name} with {SHORTCUTS[name]!r}: {problem}"


def test_a_moebi_of_another_notebook_does_not_solve_lesson_0() -> None:
    from nodelab.tools import peer

    notebook = LESSONS / "en" / "00_start_here.ipynb"
    with peer.start("moebi"):  # answers pings, but this notebook did not start it
        problem = build.verify_exercise(notebook, "python3")
    assert problem is None, f"{notebook.name} with a moebi running elsewhere: {problem}"
