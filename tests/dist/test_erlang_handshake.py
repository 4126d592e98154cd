"""The Erlang distribution handshake (version 6), against itself and against real BEAM nodes.

The BEAM tests start their own ``epmd`` on a free port (``ERL_EPMD_PORT``) and ``erl`` nodes
that halt by themselves; every process is killed if it overstays, so none outlives the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from nodelab.dist import erlang_handshake as eh

ERL = shutil.which("erl")
EPMD = shutil.which("epmd")
needs_beam = pytest.mark.skipif(
    ERL is None or EPMD is None,
    reason="Erlang/OTP is not installed (no erl/epmd on PATH): apt-get install erlang")

COOKIE = "handshake_cookie"
BEAM_START = 60.0  # a loaded 2-core machine can take a while to boot a BEAM


# --- helpers ---------------------------------------------------------------------------

class LogLines(logging.Handler):
    """Collects the handshake module's log lines (the "nodelab" logger may not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def handshake_log() -> Iterator[list[str]]:
    handler = LogLines()
    eh.log.addHandler(handler)
    try:
        yield handler.lines
    finally:
        eh.log.removeHandler(handler)


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = target()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _joined(thread: threading.Thread, box: dict) -> object:
    thread.join(30)
    assert not thread.is_alive(), "the handshake thread did not finish"
    if "error" in box:
        raise box["error"]
    return box["result"]


def _deadline(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


@contextlib.contextmanager
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def python_to_python(*, initiator_cookie: str = COOKIE, acceptor_cookie: str = COOKIE,
                     initiator_flags: int = eh.DEFAULT_FLAGS,
                     acceptor_flags: int = eh.DEFAULT_FLAGS,
                     decide: Callable[[eh.NameMessage], str] | None = None,
                     stale: bool = True) -> tuple[dict, dict]:
    """Run both sides over a socket pair; each side's box holds its result or error."""
    def closing_on_error(sock: socket.socket, run: Callable[[], object]) -> Callable[[], object]:
        def target() -> object:
            try:
                return run()
            except BaseException:
                sock.close()  # as a caller does, so the other side is not left waiting
                raise
        return target

    with socket_pair() as (a, b):
        acceptor = _in_thread(closing_on_error(b, lambda: eh.accept_connection(
            b, acceptor_cookie, "bob@localhost", 2, decide, flags=acceptor_flags,
            python_tag="cpython-3.11", deadline=_deadline())))
        initiator = _in_thread(closing_on_error(a, lambda: eh.initiate(
            a, initiator_cookie, "alice@localhost", "bob@localhost", 1,
            flags=initiator_flags, python_tag="cpython-3.12",
            old_connection_is_stale=lambda: stale, deadline=_deadline())))
        for thread, _ in (initiator, acceptor):
            thread.join(30)
            assert not thread.is_alive()
        return initiator[1], acceptor[1]


# --- flags and digests -----------------------------------------------------------------

def test_flags_offered_and_required() -> None:
    assert eh.missing_flags(eh.DEFAULT_FLAGS) == []
    for unwanted in (eh.DFLAG_ATOM_CACHE, eh.DFLAG_HIDDEN_ATOM_CACHE,
                     eh.DFLAG_DIST_HDR_ATOM_CACHE, eh.DFLAG_FRAGMENTS, eh.DFLAG_NAME_ME):
        assert not eh.DEFAULT_FLAGS & unwanted
    for wanted in (eh.DFLAG_HANDSHAKE_23, eh.DFLAG_BIG_CREATION, eh.DFLAG_UNLINK_ID,
                   eh.DFLAG_SPAWN, eh.DFLAG_ALIAS, eh.DFLAG_V4_NC,
                   eh.DFLAG_MANDATORY_25_DIGEST, eh.DFLAG_NODELAB):
        assert eh.DEFAULT_FLAGS & wanted
    # OTP 25's dist.hrl: the digest flag is bit 26 and stands for the whole mandatory set.
    assert eh.DFLAG_MANDATORY_25_DIGEST == 0x04000000
    assert eh.missing_flags(eh.DFLAG_MANDATORY_25_DIGEST | eh.DFLAG_UNLINK_ID) == []
    lacking = eh.DEFAULT_FLAGS & ~eh.DFLAG_BIT_BINARIES & ~eh.DFLAG_MANDATORY_25_DIGEST
    assert eh.missing_flags(lacking) == ["BIT_BINARIES"]
    assert eh.missing_flags(0, eh.DFLAG_SPAWN | eh.DFLAG_ALIAS) == ["SPAWN", "ALIAS"]
    assert eh.flag_names(0x5075F5FBD)[-3:] == ["MANDATORY_25_DIGEST", "SPAWN", "V4_NC"]
    assert eh.flag_names(1 << 40) == ["UNKNOWN<10000000000>"]


def test_digest_is_md5_of_cookie_and_decimal_challenge() -> None:
    assert eh.gen_digest(123456, "c") == hashlib.md5(b"c123456").digest()
    assert eh.gen_digest(0xFFFFFFFF, "abc") == hashlib.md5(b"abc4294967295").digest()


def test_simultaneous_connect_follows_otp_the_greater_name_wins() -> None:
    assert eh.simultaneous_status("bob@localhost", "alice@localhost") == eh.NOK
    assert eh.simultaneous_status("alice@localhost", "bob@localhost") == eh.OK_SIMULTANEOUS


# --- two Python ends -------------------------------------------------------------------

def test_two_nodelab_ends_recognise_each_other_and_share_session_keys() -> None:
    initiator, acceptor = python_to_python()
    mine, theirs = initiator["result"], acceptor["result"]
    assert mine.nodelab and theirs.nodelab
    assert (mine.name, theirs.name) == ("bob@localhost", "alice@localhost")
    assert (mine.creation, theirs.creation) == (2, 1)
    assert (mine.python_tag, theirs.python_tag) == ("cpython-3.11", "cpython-3.12")
    assert mine.send_key == theirs.recv_key and mine.recv_key == theirs.send_key
    assert len(mine.send_key) == 32 and mine.send_key != mine.recv_key
    assert mine.negotiated == theirs.negotiated
    assert mine.negotiated & eh.DFLAG_NODELAB


def test_session_keys_are_fresh_for_every_handshake() -> None:
    first, _ = python_to_python()
    second, _ = python_to_python()
    assert first["result"].send_key != second["result"].send_key


def test_without_the_claim_both_ends_speak_plain_erlang() -> None:
    plain = eh.DEFAULT_FLAGS & ~eh.DFLAG_NODELAB
    for kwargs in ({"initiator_flags": plain}, {"acceptor_flags": plain}):
        initiator, acceptor = python_to_python(**kwargs)
        assert not initiator["result"].nodelab and not acceptor["result"].nodelab
        assert initiator["result"].send_key == b"" == acceptor["result"].recv_key


def test_wrong_cookie_between_python_ends(handshake_log: list[str]) -> None:
    initiator, acceptor = python_to_python(initiator_cookie="not_the_cookie")
    assert isinstance(acceptor["error"], eh.CookieMismatch)
    assert isinstance(initiator["error"], eh.CookieMismatch)
    assert "does not accept our cookie" in str(initiator["error"])
    assert handshake_log == ["** Connection attempt from node alice@localhost rejected. "
                             "Invalid challenge reply. **"]


def test_a_changed_nodelab_trailer_fails_the_proof(handshake_log: list[str]) -> None:
    # Someone on the wire rewrites the acceptor's Python tag: the MD5 digest still matches
    # (it covers only the challenge), but the transcript HMAC does not.
    with socket_pair() as (a, b):
        acceptor = _in_thread(lambda: eh.accept_connection(
            b, COOKIE, "bob@localhost", 2, python_tag="cpython-3.11", deadline=_deadline()))
        eh.send_name(a, "alice@localhost", eh.DEFAULT_FLAGS, 1)
        assert eh.recv_status(a, _deadline()) == eh.OK
        challenge = eh.recv_challenge(a, _deadline())
        assert challenge.claims_nodelab and challenge.python_tag == "cpython-3.11"
        nonce = os.urandom(eh.NONCE_SIZE)
        transcript = eh.Transcript(
            "alice@localhost", "bob@localhost", eh.DEFAULT_FLAGS, challenge.flags, 1, 2,
            challenge.challenge, 7, nonce, challenge.nonce, "cpython-3.12", "evil-9.9")
        eh.send_challenge_reply(a, eh.ChallengeReply(
            7, eh.gen_digest(challenge.challenge, COOKIE), nonce, "cpython-3.12",
            transcript.mac(COOKIE, b"nodelab reply")))
        with pytest.raises(eh.CookieMismatch, match="invalid nodelab proof"):
            _joined(*acceptor)
    assert handshake_log == ["** Connection attempt from node alice@localhost rejected. "
                             "Invalid challenge reply. **"]


def test_statuses_nok_not_allowed_and_alive() -> None:
    for status in (eh.NOK, eh.NOT_ALLOWED):
        initiator, acceptor = python_to_python(decide=lambda hello, s=status: s)
        assert isinstance(initiator["error"], eh.Refused)
        assert initiator["error"].status == status == acceptor["error"].status
    initiator, acceptor = python_to_python(decide=lambda hello: eh.ALIVE, stale=True)
    assert initiator["result"].status == eh.ALIVE and initiator["result"].nodelab
    assert acceptor["result"].nodelab
    initiator, acceptor = python_to_python(decide=lambda hello: eh.ALIVE, stale=False)
    assert initiator["error"].status == eh.ALIVE == acceptor["error"].status


def test_a_peer_lacking_required_flags_is_not_allowed(handshake_log: list[str]) -> None:
    lacking = eh.DEFAULT_FLAGS & ~eh.DFLAG_UNLINK_ID
    initiator, acceptor = python_to_python(initiator_flags=lacking)
    assert isinstance(acceptor["error"], eh.MissingFlags)
    assert acceptor["error"].missing == ["UNLINK_ID"]
    assert initiator["error"].status == eh.NOT_ALLOWED
    assert handshake_log == ["** bob@localhost: Connection attempt from node alice@localhost "
                             'rejected since it cannot handle ["UNLINK_ID"].**']
    initiator, acceptor = python_to_python(acceptor_flags=lacking)
    assert isinstance(initiator["error"], eh.MissingFlags)
    assert "aborted since it cannot handle" in handshake_log[-1]


def test_malformed_and_silent_peers_are_bounded() -> None:
    with socket_pair() as (a, b):
        started = time.monotonic()
        with pytest.raises(eh.HandshakeError, match="too long"):
            eh.recv_name(b, time.monotonic() + 0.3)
        assert time.monotonic() - started < 5
        a.sendall(struct.pack("!H", 60000))
        with pytest.raises(eh.HandshakeError, match="60000 bytes"):
            eh.recv_name(b, _deadline())
    with socket_pair() as (a, b):
        eh.send_message(a, b"n\x00\x05\x00\x00\x00\x00old@host")
        with pytest.raises(eh.HandshakeError, match="version 5"):
            eh.recv_name(b, _deadline())
    with socket_pair() as (a, b):
        eh.send_message(a, eh.encode_name("no-at-sign", eh.DEFAULT_FLAGS, 1))
        with pytest.raises(eh.HandshakeError, match="malformed node name"):
            eh.recv_name(b, _deadline())
    with socket_pair() as (a, b):
        eh.send_message(a, eh.encode_name("x@h", eh.DEFAULT_FLAGS, 1)[:-2])
        with pytest.raises(eh.HandshakeError, match="truncated"):
            eh.recv_name(b, _deadline())
    with socket_pair() as (a, b):
        a.sendall(b"\x00\x05N\x00")
        a.close()
        with pytest.raises(eh.ConnectionClosed):
            eh.recv_name(b, _deadline())


# --- against real BEAM nodes -----------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def epmd_port() -> Iterator[int]:
    """A private epmd in the foreground (a daemon would outlive the test run)."""
    if EPMD is None:
        pytest.skip("epmd is not installed")
    port = _free_port()
    proc = subprocess.Popen([EPMD, "-port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("epmd did not start")
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def epmd_register(epmd: int, name: str, port: int) -> tuple[socket.socket, int]:
    """ALIVE2_REQ: publish ``name`` at ``port``; the registration lasts while the socket
    is open. Returns the socket and the creation epmd gave us."""
    sock = socket.create_connection(("127.0.0.1", epmd), timeout=10)
    raw = name.encode()
    body = struct.pack("!BHBBHHH", 120, port, 77, 0, eh.HIGHEST_VERSION, eh.LOWEST_VERSION,
                       len(raw)) + raw + struct.pack("!H", 0)
    sock.sendall(struct.pack("!H", len(body)) + body)
    answer = b""
    while len(answer) < 6:
        chunk = sock.recv(6 - len(answer))
        assert chunk, "epmd closed the registration"
        answer += chunk
    assert answer[:2] == b"v\x00", answer  # ALIVE2_X_RESP, result 0
    return sock, struct.unpack("!I", answer[2:])[0]


def epmd_port_of(epmd: int, name: str) -> int:
    """PORT_PLEASE2_REQ: the distribution port of ``name``."""
    with socket.create_connection(("127.0.0.1", epmd), timeout=10) as sock:
        raw = name.encode()
        sock.sendall(struct.pack("!HB", len(raw) + 1, 122) + raw)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data[:2] == b"w\x00", data
    return struct.unpack("!H", data[2:4])[0]


class Beam:
    """A real ``erl`` node running ``script`` (Erlang expressions); it prints ``ready`` when
    its distribution is up, and waits for a line on stdin where the script says
    ``io:get_line("")``. Output lines are collected as they come."""

    def __init__(self, epmd: int, name: str, script: str, cookie: str = COOKIE,
                 extra: list[str] | None = None) -> None:
        self.name = f"{name}@localhost"
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd))
        self.proc = subprocess.Popen(
            [ERL or "erl", "-sname", self.name, "-setcookie", cookie, "-noshell",
             "-kernel", "net_setuptime", "20", *(extra or []), "-eval",
             f'io:format("ready~n"), {script}, timer:sleep(200), halt().'],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<eof>")
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or "<eof>" in self.lines,
                timeout)
            matches = [line for line in self.lines if text in line]
        assert found and matches, f"{self.name} never printed {text!r}: {self.lines}"
        return matches[0]

    def send_line(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(5)


@contextlib.contextmanager
def beam(epmd: int, name: str, script: str, cookie: str = COOKIE,
         extra: list[str] | None = None) -> Iterator[Beam]:
    node = Beam(epmd, name, script, cookie, extra)
    try:
        node.wait_for("ready", BEAM_START)
        yield node
    finally:
        node.stop()


@contextlib.contextmanager
def python_listener(epmd: int, name: str) -> Iterator[tuple[socket.socket, int]]:
    """A listening socket published in epmd as ``name``; yields it and our creation."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(BEAM_START)
    registration, creation = epmd_register(epmd, name, listener.getsockname()[1])
    try:
        yield listener, creation
    finally:
        registration.close()
        listener.close()


def _read_frame(sock: socket.socket, deadline: float) -> bytes:
    def exact(size: int) -> bytes:
        data = b""
        while len(data) < size:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(size - len(data))
            assert chunk, "the BEAM closed the connection"
            data += chunk
        return data
    (size,) = struct.unpack("!I", exact(4))
    return exact(size)


def dial_beam(epmd: int, node: Beam, my_name: str, cookie: str = COOKIE,
              **kwargs: object) -> tuple[socket.socket, eh.HandshakeResult]:
    sock = socket.create_connection(
        ("127.0.0.1", epmd_port_of(epmd, node.name.split("@")[0])), timeout=10)
    try:
        return sock, eh.initiate(sock, cookie, my_name, node.name, 5,
                                 deadline=_deadline(), **kwargs)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise


@needs_beam
def test_beam_dials_python(epmd_port: int) -> None:
    with python_listener(epmd_port, "pyacc") as (listener, creation), \
            beam(epmd_port, "beamdial",
                 'io:get_line(""), R = net_kernel:connect_node(pyacc@localhost), '
                 'io:format("connect ~p~n", [R]), io:get_line("")') as node:
        node.send_line()
        sock, _ = listener.accept()
        with sock:
            result = eh.accept_connection(sock, COOKIE, "pyacc@localhost", creation,
                                          python_tag="cpython-3.11", deadline=_deadline())
            assert node.wait_for("connect ") == "connect true"
            assert result.name == node.name and not result.nodelab
            assert result.send_key == b"" and result.python_tag == ""
            assert eh.missing_flags(result.flags) == []
            assert result.flags & eh.DFLAG_ALIAS and result.flags & eh.DFLAG_SPAWN
            assert not result.negotiated & eh.DFLAG_NODELAB
            # After the handshake: 4-byte frames, each a plain pass-through ('p') message,
            # since neither the atom cache nor fragments were negotiated.
            frame = _read_frame(sock, _deadline())
            assert frame[:2] == b"p\x83"
            node.send_line()


@needs_beam
def test_python_dials_beam_with_the_nodelab_bit_set(epmd_port: int) -> None:
    with beam(epmd_port, "beamacc",
              'io:get_line(""), io:format("nodes ~p~n", [nodes()])') as node:
        sock, result = dial_beam(epmd_port, node, "pydial@localhost")
        with sock:
            # OTP keeps the flags both sides share and ignores bit 63.
            assert eh.DEFAULT_FLAGS & eh.DFLAG_NODELAB
            assert not result.nodelab and not result.negotiated & eh.DFLAG_NODELAB
            assert result.name == node.name and result.creation > 0
            assert result.negotiated & eh.DFLAG_HANDSHAKE_23
            frame = _read_frame(sock, _deadline())
            assert frame[:2] == b"p\x83"
            node.send_line()
            assert node.wait_for("nodes ") == "nodes [pydial@localhost]"


@needs_beam
def test_beam_with_another_cookie_dials_python(epmd_port: int,
                                               handshake_log: list[str]) -> None:
    with python_listener(epmd_port, "pyacc2") as (listener, creation), \
            beam(epmd_port, "evedial",
                 'R = net_kernel:connect_node(pyacc2@localhost), io:format("connect ~p~n", [R])',
                 cookie="not_the_cookie") as node:
        sock, _ = listener.accept()
        with sock, pytest.raises(eh.CookieMismatch):
            eh.accept_connection(sock, COOKIE, "pyacc2@localhost", creation,
                                 deadline=_deadline())
        assert node.wait_for("connect ") == "connect false"
    assert handshake_log == ["** Connection attempt from node evedial@localhost rejected. "
                             "Invalid challenge reply. **"]


@needs_beam
def test_python_with_another_cookie_dials_beam(epmd_port: int) -> None:
    with beam(epmd_port, "beamacc2", 'io:get_line("")') as node:
        with pytest.raises(eh.CookieMismatch, match="does not accept our cookie"):
            dial_beam(epmd_port, node, "evepy@localhost", cookie="not_the_cookie")
        line = node.wait_for("Invalid challenge reply")
        assert line == ("** Connection attempt from node evepy@localhost rejected. "
                        "Invalid challenge reply. **")
        node.send_line()


@needs_beam
def test_beam_refuses_a_node_lacking_mandatory_flags(epmd_port: int) -> None:
    lacking = eh.DEFAULT_FLAGS & ~eh.DFLAG_BIT_BINARIES & ~eh.DFLAG_MANDATORY_25_DIGEST
    with beam(epmd_port, "beamacc3", 'io:get_line("")') as node:
        with pytest.raises(eh.Refused) as refused:
            dial_beam(epmd_port, node, "oldpy@localhost", flags=lacking)
        assert refused.value.status == eh.NOT_ALLOWED
        line = node.wait_for("cannot handle")
        assert line == ('** beamacc3@localhost: Connection attempt from node oldpy@localhost '
                        'rejected since it cannot handle ["BIT_BINARIES"].**')
        node.send_line()


@needs_beam
def test_beam_asks_alive_when_it_holds_a_connection_from_us(epmd_port: int) -> None:
    with beam(epmd_port, "beamacc4",
              'io:get_line(""), io:format("nodes ~p~n", [nodes()])') as node:
        first, _ = dial_beam(epmd_port, node, "twice@localhost")
        with first:
            # "Still in use": the BEAM keeps the first connection.
            with pytest.raises(eh.Refused) as refused:
                dial_beam(epmd_port, node, "twice@localhost",
                          old_connection_is_stale=lambda: False)
            assert refused.value.status == eh.ALIVE
            # "Stale": the BEAM drops the first connection and completes the second.
            second, result = dial_beam(epmd_port, node, "twice@localhost",
                                       old_connection_is_stale=lambda: True)
            with second:
                assert result.status == eh.ALIVE
                first.settimeout(20)
                with contextlib.suppress(ConnectionResetError):
                    while first.recv(65536):
                        pass  # until the BEAM closes the old connection
                node.send_line()
                assert node.wait_for("nodes ") == "nodes [twice@localhost]"


@needs_beam
def test_beam_drops_a_silent_peer_after_net_ticktime(epmd_port: int) -> None:
    # Nothing but ticks keeps a quiet connection: a peer that sends nothing for
    # net_ticktime (here 2 s instead of the default 60) is dropped, with OTP's log line.
    with beam(epmd_port, "beamtick",
              'io:get_line(""), io:format("nodes ~p~n", [nodes()])',
              extra=["-kernel", "net_ticktime", "2"]) as node:
        sock, _ = dial_beam(epmd_port, node, "silent@localhost")
        with sock:
            started = time.monotonic()
            line = node.wait_for("not responding", 30)
            assert line == "** Node silent@localhost not responding **"
            assert 1.5 < time.monotonic() - started < 15
            node.send_line()
            assert node.wait_for("nodes ") == "nodes []"


# --- the link to a BEAM peer -----------------------------------------------------------

from nodelab.dist import beam_link as bl  # noqa: E402 - the handshake tests come first
from nodelab.dist.term_format import Atom  # noqa: E402
from nodelab.runtime.pids import Pid, Ref  # noqa: E402

KATE = "kate@localhost"


def test_events_round_trip_through_frames() -> None:
    a, b = Pid(KATE, 5, 3), Pid("py@localhost", 7, 9, 1)
    ref = Ref(KATE, (1, 2, 3), 3)
    events = [
        bl.Link(a, b), bl.Send(b, ("hi", [1, 2.5]), a), bl.Send(b, None, a, token=Atom("t")),
        bl.RegSend(a, Atom("echo"), {"k": b"\xff"}), bl.AliasSend(a, ref, (Atom("ok"),)),
        bl.Exit(a, b, Atom("boom")), bl.Exit(a, b, Atom("kill"), exit2=True),
        bl.UnlinkId(1 << 63, a, b), bl.UnlinkIdAck(2, b, a), bl.GroupLeader(a, b),
        bl.Monitor(a, Atom("rex"), ref), bl.Demonitor(a, b, ref),
        bl.MonitorExit(b, a, ref, Atom("noproc")),
        bl.SpawnRequest(ref, a, b, Atom("greeter"), Atom("hello"), ["kate"], [Atom("link")]),
        bl.SpawnReply(ref, a, bl.SPAWN_REPLY_LINKED, b),
        bl.SpawnReply(ref, a, 0, Atom("badarg")), bl.NodeLink(),
    ]
    for event in events:
        frame = bl.encode_frame(event)
        assert struct.unpack("!I", frame[:4])[0] == len(frame) - 4
        assert bl.decode_frame(frame[4:]) == event, event
    assert bl.UnlinkId(4, a, b).ack() == bl.UnlinkIdAck(4, b, a)
    unknown = bl.decode_event((99, a))
    assert isinstance(unknown, bl.Unknown) and unknown.control == (99, a)


def test_malformed_control_messages_are_protocol_errors() -> None:
    from nodelab.dist import term_format as tf
    a = Pid(KATE, 5, 3)
    for control, message in [((bl.LINK, a), tf.NO_MESSAGE), ((bl.SEND_SENDER, a, "x"), 1),
                             ("not a tuple", tf.NO_MESSAGE), ((True, a, a), tf.NO_MESSAGE),
                             ((bl.UNLINK_ID, 0, a, a), tf.NO_MESSAGE),
                             ((bl.SPAWN_REQUEST, Ref(KATE, (1,), 3), a, a,
                               (Atom("m"), Atom("f"), 2), []), [1])]:
        with pytest.raises(bl.ProtocolError):
            bl.decode_event(control, message)
    with pytest.raises(bl.ProtocolError):
        bl.decode_frame(b"p\x83\x00")
    with pytest.raises(bl.ProtocolError, match="takes none"):
        bl.decode_frame(tf.encode_dist_message((bl.LINK, a, a), Atom("extra")))
    # An operation that is a list cannot be looked up in a set: a protocol error, not a
    # TypeError that would end the reader thread without closing the connection.
    for frame in (tf.encode_dist_message(([2], a, a), Atom("m")),
                  tf.encode_dist_message(([2], a, a)),
                  tf.encode_dist_message(([2], a, a)) + b"\x83\x00"):
        with pytest.raises(bl.ProtocolError):
            bl.decode_frame(frame)


def test_is_auth_is_answered_to_the_alias() -> None:
    caller, ref = Pid(KATE, 80, 3), Ref(KATE, (7, 8, 9), 3)
    from nodelab.dist.term_format import ImproperList
    tag = ImproperList([Atom("alias")], ref)
    call = bl.RegSend(caller, Atom("net_kernel"),
                      (Atom("$gen_call"), (caller, tag), (Atom("is_auth"), Atom(KATE))))
    assert bl.is_auth_call(call) == (caller, tag)
    me = Pid("py@localhost", 1, 2)
    assert bl.gen_reply(me, caller, tag, Atom("yes")) == bl.AliasSend(me, ref, (tag, "yes"))
    assert bl.gen_reply(me, caller, ref, 1) == bl.Send(caller, (ref, 1), me)
    assert bl.is_auth_call(bl.RegSend(caller, Atom("rex"), call.message)) is None


def _handshaken_pair() -> tuple[socket.socket, socket.socket, eh.HandshakeResult]:
    a, b = socket.socketpair()
    peer = eh.HandshakeResult(KATE, eh.DEFAULT_FLAGS, 3, eh.DEFAULT_FLAGS, initiator=True)
    return a, b, peer


def test_link_ticks_when_quiet_and_drops_a_silent_peer(handshake_log: list[str]) -> None:
    a, b, peer = _handshaken_pair()
    downs: list[str] = []
    lines = LogLines()
    bl.log.addHandler(lines)
    try:
        link = bl.BeamLink(a, peer, "py@localhost", 2, tick_time=0.8,
                           on_down=downs.append).start()
        b.settimeout(5)
        started = time.monotonic()
        assert b.recv(4) == bl.TICK  # written after a quarter of tick_time with nothing sent
        assert time.monotonic() - started < 3
        deadline = time.monotonic() + 10
        # The link marks itself dead before it logs and reports down: wait for the report.
        while not (downs and lines.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert downs == ["net_tick_timeout"] and not link.alive
        assert lines.lines == ["** Node kate@localhost not responding **\n"
                               "** Removing (timedout) connection **"]
    finally:
        bl.log.removeHandler(lines)
        a.close()
        b.close()


def test_link_closes_on_a_malformed_frame() -> None:
    a, b, peer = _handshaken_pair()
    downs: list[str] = []
    lines = LogLines()
    bl.log.addHandler(lines)
    try:
        link = bl.BeamLink(a, peer, "py@localhost", 2, on_down=downs.append).start()
        b.sendall(struct.pack("!I", 3) + b"p\x83\x00")
        link.reader.join(10)
        assert downs == ["protocol_error"]
        assert len(lines.lines) == 1 and "Malformed distribution message" in lines.lines[0]
    finally:
        bl.log.removeHandler(lines)
        link.close()
        b.close()


class Events:
    def __init__(self) -> None:
        self.items: list[bl.Event] = []
        self.changed = threading.Condition()

    def __call__(self, event: bl.Event) -> None:
        with self.changed:
            self.items.append(event)
            self.changed.notify_all()

    def wait_for(self, kind: type, timeout: float = 30.0) -> bl.Event:
        with self.changed:
            assert self.changed.wait_for(
                lambda: any(isinstance(e, kind) for e in self.items), timeout), self.items
            return next(e for e in self.items if isinstance(e, kind))


@needs_beam
def test_ping_from_the_beam_answers_pong(epmd_port: int) -> None:
    with python_listener(epmd_port, "pyping") as (listener, creation), \
            beam(epmd_port, "beamping",
                 'io:format("ping ~p~n", [net_adm:ping(pyping@localhost)]), '
                 'io:format("nodes ~p~n", [nodes()]), io:get_line("")') as node:
        sock, _ = listener.accept()
        result = eh.accept_connection(sock, COOKIE, "pyping@localhost", creation,
                                      deadline=_deadline())
        downs: list[str] = []
        events = Events()
        link = bl.BeamLink(sock, result, "pyping@localhost", creation, on_event=events,
                           on_down=downs.append).start()
        try:
            assert node.wait_for("ping ") == "ping pong"
            assert node.wait_for("nodes ") == "nodes [pyping@localhost]"
            node.send_line()
            link.reader.join(30)
            assert downs == ["connection_closed"]
            # Neither the call nor the monitor of net_kernel reached the callback.
            assert not [e for e in events.items if isinstance(e, bl.RegSend)
                        and e.to_name == "net_kernel"]
        finally:
            link.close()


@needs_beam
def test_messages_spawn_and_ticks_with_a_beam(epmd_port: int) -> None:
    script = ('register(echo, self()), io:format("registered~n"), '
              'receive {From, Msg} -> From ! {echoed, Msg} end, '
              'Pid = spawn(pylink@localhost, greeter, hello, [<<"kate">>]), '
              'io:format("spawned ~p~n", [node(Pid)]), '
              'io:get_line(""), io:format("nodes ~p~n", [nodes()])')
    with beam(epmd_port, "beamlink", script, extra=["-kernel", "net_ticktime", "2"]) as node:
        node.wait_for("registered")
        sock, result = dial_beam(epmd_port, node, "pylink@localhost")
        events = Events()
        link = bl.BeamLink(sock, result, "pylink@localhost", 5, on_event=events,
                           tick_time=2).start()
        try:
            me = Pid("pylink@localhost", 42, 5)
            link.send_event(bl.RegSend(me, Atom("echo"), (me, "sup?")))
            echoed = events.wait_for(bl.Send)
            assert echoed.to_pid == me and echoed.message == ("echoed", "sup?")
            assert isinstance(echoed.message[0], Atom) and echoed.from_pid is not None
            request = events.wait_for(bl.SpawnRequest)
            assert (request.module, request.function, request.args) == \
                ("greeter", "hello", ["kate"])
            link.send_event(bl.SpawnReply(request.req_id, request.from_pid, 0,
                                          Pid("pylink@localhost", 43, 5)))
            assert node.wait_for("spawned ") == "spawned pylink@localhost"
            time.sleep(5)  # quiet for more than net_ticktime: ticks keep the connection
            node.send_line()
            assert node.wait_for("nodes ") == "nodes [pylink@localhost]"
            assert link.alive
        finally:
            link.close()
