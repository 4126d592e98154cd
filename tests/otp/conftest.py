"""Fixtures for the OTP tests: this test process as a node, and peers running the chat app.

The test process is one node at most (one OS process is one node), and other test
directories may have made it one already for the whole session; ``otp_node`` then reuses
that node (and its cookie) instead of starting a second one. Peers are real OS processes
(``nodelab node --app chat``), always stopped by the fixture that started them. The
suite-wide ``tests/conftest.py`` gives the run its own port mapper and NODELAB_HOME.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodelab import Node
from nodelab.otp import Application
from nodelab.tools import peer

REPO = Path(__file__).resolve().parents[2]
LESSONS = REPO / "lessons"
COOKIE = "otp_" + secrets.token_hex(4)
TICK = 2.0

@pytest.fixture(scope="module")
def otp_node() -> Iterator[str]:
    """This test process as a named node (a fresh one per module, unless one is running)."""
    if Node.alive():
        yield Node.self()
        return
    name = Node.start(f"otp{os.getpid()}", cookie=COOKIE, tick_time=TICK)
    try:
        yield name
    finally:
        Node.stop()


@pytest.fixture(scope="module")
def app_path() -> Iterator[str]:
    """``NODELAB_APP_PATH`` pointing at ``lessons/``, where the chat project lives."""
    old = os.environ.get("NODELAB_APP_PATH")
    os.environ["NODELAB_APP_PATH"] = str(LESSONS)
    yield str(LESSONS)
    if old is None:
        os.environ.pop("NODELAB_APP_PATH", None)
    else:
        os.environ["NODELAB_APP_PATH"] = old


PeerStarter = Callable[..., peer.Peer]


def _starter(log_dir: Path) -> tuple[PeerStarter, list[peer.Peer]]:
    started: list[peer.Peer] = []

    def start(name: str, *, env: str = "dev", app: str | None = "chat", **options) -> peer.Peer:
        """Start node ``name`` running ``app`` in environment ``env``, with our cookie."""
        node = peer.start(
            name, cookie=Node.get_cookie(), app=app, tick_time=TICK, log_dir=log_dir,
            env={"NODELAB_ENV": env, "NODELAB_APP_PATH": str(LESSONS)}, **options)
        started.append(node)
        return node

    return start, started


@pytest.fixture(scope="module")
def module_peers(otp_node: str, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[PeerStarter]:
    """Start peers shared by the tests of one module; all stop when the module ends."""
    start, started = _starter(tmp_path_factory.mktemp("peers"))
    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def test_peers(otp_node: str, tmp_path: Path) -> Iterator[PeerStarter]:
    """Start peers for one test (e.g. one the test kills); all stop when it ends."""
    start, started = _starter(tmp_path)
    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="module")
def chat_here(app_path: str) -> Iterator[None]:
    """The chat application running in this test process (the test environment's config)."""
    _, started = Application.ensure_all_started("chat")
    yield
    if started:
        Application.stop("chat")
