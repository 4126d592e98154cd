"""Fixtures for the reliability tests: real nodes, real signals, real sockets.

The test process is the node ``alex@localhost`` (as in ``tests/core``); peers are child
processes started with :mod:`nodelab.tools.peer` through ``start_peer`` (borrowed from
``tests/core/conftest.py``) and always stopped after their test, even when it fails.

``alex`` here is module-scoped and shares the node when ``tests/core``'s session fixture
already made this process ``alex``: one OS process is one node, so whichever directory
runs first starts it, and this one only stops what it started.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest
from reliability_helpers import COOKIE, CORE_CONFTEST, TICK

from nodelab import Node, receive
from nodelab.runtime import processes as P

__all__ = ["COOKIE", "TICK", "start_peer"]

#: ``start_peer("kate", eval=..., tick_time=..., env=...)``: peers stopped after the test.
start_peer = CORE_CONFTEST.start_peer


@pytest.fixture(scope="module")
def alex() -> Iterator[str]:
    """This process as the node ``alex@localhost`` with the tests' cookie and a 1 s tick."""
    if Node.alive():
        dist = P.current_transport()
        assert dist.cookie == COOKIE, "another fixture started this node with another cookie"
        old_tick, dist.tick_time = dist.tick_time, TICK
        yield Node.self()
        dist.tick_time = old_tick
        return
    name = Node.start("alex", cookie=COOKIE, tick_time=TICK)
    try:
        yield name
    finally:
        Node.stop()


@pytest.fixture
def clean_mailbox() -> Iterator[None]:
    """Start and end the test with an empty mailbox (stale messages would fool receive)."""
    while receive(timeout=0, after=None) is not None:
        pass
    yield
    while receive(timeout=0, after=None) is not None:
        pass


@pytest.fixture
def error_lines() -> Iterator[list[str]]:
    """What this node logs (``P.set_error_sink``), one entry per log line."""
    lines: list[str] = []
    old = P.set_error_sink(lines.append)
    yield lines
    P.set_error_sink(old)


@pytest.fixture
def sigcont_after() -> Iterator[Callable[[int], None]]:
    """``stopped(os_pid)`` records a SIGSTOPped process; it is resumed after the test, so a
    failing test never leaves a frozen process that ignores SIGTERM."""
    frozen: list[int] = []
    yield frozen.append
    for pid in frozen:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
