"""What the Jupyter tests share: asking /proc whether a process they started has ended.

Kernels, and the nodes those kernels start, are real OS processes. A test proves that one
ended by waiting for its pid to leave /proc; a zombie counts as gone (it has ended, and its
parent may reap it later).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _wait_gone(pid: int, deadline: float) -> float:
    start = time.monotonic()
    while _alive(pid):
        if time.monotonic() - start > deadline:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()[:60]
            except OSError:
                command = b"?"
            pytest.fail(f"process {pid} ({command!r}) still runs {deadline} s later")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(scope="session")
def alive() -> Callable[[int], bool]:
    """``alive(pid)``: True while ``pid`` runs (a zombie counts as gone), from /proc alone."""
    return _alive


@pytest.fixture(scope="session")
def wait_gone() -> Callable[[int, float], float]:
    """``wait_gone(pid, deadline)``: seconds until ``pid`` is gone; fails the test when it
    still runs ``deadline`` seconds later."""
    return _wait_gone
