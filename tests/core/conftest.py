"""Fixtures for tests across real node processes.

The test process itself is the node ``alex@localhost``; other nodes are real child
processes started with :mod:`nodelab.tools.peer` and always stopped after the test.
"""

from __future__ import annotations

import pytest

from nodelab import Node
from nodelab.tools import peer

COOKIE = "secret_token"
TICK = 1.0


@pytest.fixture(scope="module")
def alex():
    # Per module, so that the name is free again for the lesson notebooks that nbval runs
    # in the same test run (each of them starts its own alex@localhost).
    name = Node.start("alex", cookie=COOKIE, tick_time=TICK)
    yield name
    Node.stop()


@pytest.fixture
def start_peer(alex, tmp_path):
    """Start peers for one test: ``kate = start_peer("kate", eval=...)``; all stop after."""
    started: list[peer.Peer] = []

    def start(name: str, **options) -> peer.Peer:
        options.setdefault("cookie", COOKIE)
        options.setdefault("tick_time", TICK)
        options.setdefault("log_dir", tmp_path)
        node = peer.start(name, **options)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
