"""``Node.ping`` is a question the other node answers, as ``net_adm:ping`` is.

On the BEAM, ``Node.ping(:kate@localhost)`` asks kate's ``net_kernel`` (``{is_auth, node}``),
so once it says ``:pong`` kate lists alex in her own ``Node.list()``, and a node that is
connected but does not answer (stopped, hung) is ``:pang``. kate here is a real child node
driven out of band (``remote_control.py``), so her answer is read without the connection
under test.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from reliability_helpers import COOKIE, TICK, Remote, wait_until

from nodelab import Node

KATE = "kate@localhost"


@pytest.fixture
def kate(alex, tmp_path) -> Iterator[Remote]:
    node = Remote(log_path=tmp_path / "kate.log")
    try:
        node(f"Node.start('kate', cookie={COOKIE!r}, tick_time={TICK})")
        yield node
    finally:
        node.close()


def test_after_pong_the_other_node_lists_this_one(alex, kate) -> None:
    # A fresh connection each round: the race is between the end of the handshake on
    # alex's side and kate's side recording the connection.
    for _ in range(20):
        assert Node.ping(KATE) == "pong"
        assert kate("Node.list()") == [alex]
        assert Node.disconnect(KATE)
        assert wait_until(lambda: kate("Node.list()") == [] and Node.list() == [], 5.0)


def test_a_connected_node_that_does_not_answer_is_pang(alex, kate) -> None:
    assert Node.ping(KATE) == "pong"
    kate.kill(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert Node.ping(KATE) == "pang"
        # Bounded by the tick time: the ping's own limit, or the tick noticing kate first.
        assert time.monotonic() - started < 3 * TICK + 2
    finally:
        kate.kill(signal.SIGCONT)
