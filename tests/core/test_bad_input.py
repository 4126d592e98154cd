"""Garbage, wrong MACs and oversized messages close one connection, never the node."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from nodelab import ANY, MessageTooLarge, Node, Process, receive, self, send
from nodelab.dist import portmapper
from nodelab.dist.frames import MAX_MESSAGE
from nodelab.runtime import processes as P


@pytest.fixture
def error_lines():
    lines: list[str] = []
    old = P.set_error_sink(lines.append)
    yield lines
    P.set_error_sink(old)


def my_port() -> int:
    # What a peer does to find this node: ask the port mapper.
    port = portmapper.lookup(Node.self().split("@")[0])
    assert port is not None
    return port


def raw_connection() -> socket.socket:
    return socket.create_connection(("127.0.0.1", my_port()), timeout=2)


def closes_soon(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b"" or sock.recv(1024) == b""
    except (ConnectionResetError, TimeoutError):
        return True


@pytest.mark.parametrize("garbage", [
    b"\x00" * 64,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    struct.pack("!H", 65535) + b"x" * 10,  # a handshake length beyond the limit
    b"\x00\x0fN\x00\x00\x00",  # a truncated name message of the Erlang handshake
])
def test_garbage_handshakes_are_dropped_and_the_node_keeps_serving(alex, start_peer,
                                                                  garbage) -> None:
    kate = start_peer("kate")
    with raw_connection() as sock:
        sock.sendall(garbage)
        assert closes_soon(sock)
    assert Node.ping(kate.node) == "pong"


def test_a_hello_with_a_wrong_cookie_reply_is_refused_and_logged(alex, error_lines) -> None:
    with raw_connection() as sock:
        name = b"mallory@localhost"
        # The Erlang handshake's name message (flags OTP 25 requires), then a reply to the
        # challenge whose digest is not made with the cookie.
        hello = b"N" + struct.pack("!QIH", 0x5075F5FBD, 1, len(name)) + name
        sock.sendall(struct.pack("!H", len(hello)) + hello)
        answer = b""
        while answer.count(b"N") < 1 or len(answer) < 2 + 3 + 2 + 19:
            chunk = sock.recv(1024)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"\x00\x03sok") and answer[7:8] == b"N"
        sock.sendall(struct.pack("!H", 21) + b"r" + b"\x00" * 20)
        assert closes_soon(sock)
    deadline = time.monotonic() + 2
    while not error_lines and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any("Connection attempt from node mallory@localhost rejected. Invalid challenge reply."
               in line for line in error_lines)


def test_an_oversized_message_is_refused_to_the_sender(alex, start_peer) -> None:
    kate = start_peer("kate")
    pid = Node.spawn(kate.node, lambda: send(receive(), "still here"))
    with pytest.raises(MessageTooLarge, match="larger than the limit"):
        send(pid, b"x" * (MAX_MESSAGE + 1))
    send(pid, self())
    assert receive("still here", timeout=5) == "still here"


def test_an_unpicklable_message_is_refused_to_the_sender(alex, start_peer) -> None:
    kate = start_peer("kate")
    pid = Node.spawn(kate.node, lambda: receive())
    with pytest.raises(TypeError, match="cannot send"):
        send(pid, socket.socket())


def test_a_shell_killed_by_a_link_prints_exit_and_gets_a_new_pid(alex) -> None:
    lines: list[str] = []
    from nodelab import group_leader, start_group_leader

    leader = start_group_leader(lambda stream, text: lines.append(text))
    old_leader = group_leader()
    group_leader(leader)
    before = self()
    try:
        Process.flag("trap_exit", False)
        Node.spawn_link("nobody@localhost", lambda: None)
        deadline = time.monotonic() + 2
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lines and lines[0].startswith(f"** (EXIT from {before!r}) shell process exited "
                                             "with reason: no connection")
        assert self() != before
        assert receive(ANY, timeout=0, after="empty") == "empty"
    finally:
        group_leader(old_leader)
