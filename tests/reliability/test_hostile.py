"""Hostile and bad input: fuzzed handshakes and frames, forged and replayed traffic, wrong
cookies, bad names, a cookie file others can read, oversized messages, too many sockets.

The promises (SPEC §3, issue 6): the node stays up and keeps serving its good peers; no
payload is decoded before the sender proved it knows the cookie (a :class:`Canary` in a
refused frame would leave a file behind if it were ever unpickled); nothing reaches a
process; a wrong cookie is refused every time with exactly one log line; every mistake a
user can make gets one clear line that says what to do.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import (
    COOKIE,
    ROOT,
    Canary,
    RawPeer,
    closes_soon,
    send_named_body,
    wait_until,
)

from nodelab import (
    ANY,
    InvalidNodeName,
    MessageTooLarge,
    Node,
    Process,
    exit,
    receive,
    register,
    self,
    send,
    spawn,
    unregister,
)
from nodelab.dist import erlang_handshake as eh
from nodelab.dist import frames, portmapper, shipment
from nodelab.dist.connections import SEND, SEND_NAMED
from nodelab.runtime import processes as P

SENTINEL = "reliability_sentinel"
COLLECTOR = "reliability_collector"


def fuzz_settings(examples: int) -> settings:
    """Hypothesis against a live node: no deadline (the network sets the pace), no example
    database written into the checkout, the node fixtures shared by every example."""
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def my_port() -> int:
    return P.current_transport().port


def hello(name: bytes, flags: int = eh.DEFAULT_FLAGS, creation: int = 1) -> bytes:
    """The initiator's name message of the Erlang handshake as the wire carries it:
    ``len u16 | 'N' | flags u64 | creation u32 | name length u16 | name`` (a nodelab node
    claims DFLAG_NODELAB in ``flags``)."""
    payload = b"N" + struct.pack("!QIH", flags, creation, len(name)) + name
    return struct.pack("!H", len(payload)) + payload


def message(payload: bytes) -> bytes:
    """``payload`` framed as a handshake message (``{packet, 2}``)."""
    return struct.pack("!H", len(payload)) + payload


def read_message(sock: socket.socket) -> bytes:
    """One handshake message from ``sock`` (b"" when it closed first)."""
    try:
        return eh.recv_message(sock, time.monotonic() + 3)
    except eh.HandshakeError:
        return b""


@pytest.fixture
def sentinel(alex) -> Iterator[Callable[[], int]]:
    """A registered process that takes nothing out of its mailbox; returns its queue length."""
    pid = spawn(lambda: receive(lambda _message: False))
    register(SENTINEL, pid)
    yield lambda: Process.info(pid)["message_queue_len"]
    unregister(SENTINEL)
    exit(pid, "kill")


@pytest.fixture
def collector(alex) -> Iterator[Callable[[], list]]:
    """A registered process that keeps what it gets; returns the list so far."""

    def keep() -> None:
        kept: list = []
        while True:
            message = receive()
            if type(message) is tuple and len(message) == 2 and message[0] == "$dump":
                send(message[1], ("$kept", list(kept)))
            else:
                kept.append(message)

    pid = spawn(keep)
    register(COLLECTOR, pid)

    def kept() -> list:
        send(pid, ("$dump", self()))
        return receive(("$kept", ANY), timeout=5)[1]

    yield kept
    unregister(COLLECTOR)
    exit(pid, "kill")


@pytest.fixture
def good_peer(alex, start_peer) -> Callable[[object], bool]:
    """kate with an echo process; ``round_trip(token)`` is True when the token came back."""
    kate = start_peer("kate")
    echo = Node.spawn(kate.node, lambda: [send(m[0], m[1]) for m in iter(receive, None)])

    def round_trip(token: object) -> bool:
        send(echo, (self(), token))
        return receive(token, timeout=5, after=None) == token

    assert round_trip("hello")
    return round_trip


@pytest.fixture
def canary(tmp_path) -> Iterator[Canary]:
    """A payload that must never be decoded; the test fails if it ever was."""
    path = tmp_path / "canary-was-unpickled"
    yield Canary(path)
    assert not path.exists(), "the node unpickled a payload that it had not authenticated"


def test_the_canary_would_see_a_decoded_payload(alex, sentinel, tmp_path) -> None:
    """The oracle of the tests below works: an *authenticated* frame carrying a Canary is
    decoded (that is what authentication is for), and the file appears."""
    path = tmp_path / "decoded"
    peer = RawPeer(my_port(), COOKIE, "trusted@localhost", Node.self())
    try:
        peer.send_valid(SEND_NAMED, send_named_body(SENTINEL, Canary(path)))
        assert wait_until(lambda: sentinel() == 1, 3)
    finally:
        peer.close()
    assert path.exists()


def accepts_a_good_handshake() -> bool:
    """The node's acceptor still works: a new peer that knows the cookie gets in."""
    peer = RawPeer(my_port(), COOKIE, "goodpeer@localhost", Node.self())
    try:
        peer.send_valid(frames.TICK, b"")
        return True
    finally:
        peer.close()


# --- fuzzing the handshake ---------------------------------------------------------------------

_bytes_as_name = st.one_of(
    st.binary(min_size=0, max_size=70),
    st.sampled_from([b"kate@localhost", b"alex@localhost", b"k\xc3\xa4te@localhost",
                     b"bad name@localhost", b"x" * 65 + b"@localhost", b"eve@10.0.0.1"]),
)

pre_handshake_input = st.one_of(
    st.binary(max_size=700),
    # Length prefixes of every size (the limit is 600), followed by too little data.
    st.tuples(st.integers(0, 65535), st.binary(max_size=64)).map(
        lambda t: struct.pack("!H", t[0]) + t[1]),
    # Name messages with odd names, flags and creations, cut or extended at random.
    st.tuples(_bytes_as_name, st.one_of(st.just(eh.DEFAULT_FLAGS), st.integers(0, 2**64 - 1)),
              st.integers(0, 2**32 - 1), st.integers(-60, 60)).map(
        lambda t: (lambda h: h[: len(h) + t[3]] if t[3] < 0 else h + os.urandom(t[3]))(
            hello(t[0][:255], t[1], t[2]))),
    # A well-formed HELLO claiming to be a connected peer, then a random REPLY.
    st.tuples(st.sampled_from([b"kate@localhost", b"eve@localhost"]), st.binary(max_size=80)).map(
        lambda t: hello(t[0]) + struct.pack("!H", len(t[1])) + t[1]),
)


def test_fuzzed_handshakes_never_reach_a_process(alex, good_peer, sentinel, canary,
                                                 error_lines, record_property) -> None:
    processes_before = len(P.processes())
    tried: list[int] = []

    @fuzz_settings(1000)
    @given(data=pre_handshake_input)
    def attack(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
            try:
                sock.sendall(data)
            except OSError:
                pass  # the node may close before reading everything
            assert closes_soon(sock), f"the node kept a bad handshake open: {data[:60]!r}"
        tried.append(len(data))
        assert good_peer(len(tried)), "the node stopped serving its good peer"

    attack()
    record_property("inputs_tried", len(tried))
    print(f"fuzzed handshakes tried: {len(tried)}")
    assert len(tried) >= 900
    assert accepts_a_good_handshake()
    assert sentinel() == 0
    assert len(P.processes()) == processes_before
    # A refused handshake logs at most one line (a wrong reply), never a flood.
    assert len(error_lines) <= len(tried)


# --- fuzzing the frames of an authenticated connection ----------------------------------------

ATTACKS = ["garbage", "forged", "replay", "future_seq", "huge", "tiny", "truncated",
           "unknown_kind", "short_send", "bad_pickle"]


def test_fuzzed_frames_after_a_handshake(alex, good_peer, sentinel, collector, canary,
                                         error_lines, record_property) -> None:
    processes_before = len(P.processes())
    tried: list[str] = []
    delivered: list[int] = []
    poison = send_named_body(SENTINEL, canary)

    @fuzz_settings(600)
    @given(attack=st.sampled_from(ATTACKS), valid_first=st.booleans(),
           noise=st.binary(max_size=300), number=st.integers(0, 2**32 - 1),
           kind=st.integers(0, 255))
    def attack(attack: str, valid_first: bool, noise: bytes, number: int, kind: int) -> None:
        peer = RawPeer(my_port(), COOKIE, "fuzzer@localhost", Node.self())
        try:
            valid = b""
            if valid_first or attack == "replay":
                token = len(tried)
                valid = peer.send_valid(SEND_NAMED, send_named_body(COLLECTOR, token))
                delivered.append(token)
            if attack == "garbage":
                data = noise or b"\x00"
            elif attack == "forged":  # a MAC made without the session key
                forged_key = frames.mac_state(os.urandom(32))
                data = peer.frame(kind if kind else SEND_NAMED, poison, state=forged_key)
            elif attack == "replay":  # the very bytes of a frame that was accepted
                data = valid
            elif attack == "future_seq":  # the right key, a sequence number out of order
                data = peer.frame(SEND_NAMED, poison, seq=peer.seq + 1 + number % 1000)
            elif attack == "huge":
                size = frames.MAX_MESSAGE + 1 + frames.MAC_SIZE + 1 + number % (2**32 - 2**25)
                data = struct.pack("!I", min(size, 2**32 - 1)) + noise
            elif attack == "tiny":
                data = struct.pack("!I", number % (1 + frames.MAC_SIZE)) + noise
            elif attack == "truncated":
                whole = peer.frame(SEND_NAMED, poison)
                data = whole[: max(1, number % len(whole))]
            elif attack == "unknown_kind":  # authenticated, but no such frame
                data = peer.frame(5 + kind % 251, noise)
            elif attack == "short_send":  # authenticated, but too short to carry a PID
                data = peer.frame(SEND if number % 2 else SEND_NAMED, noise[: number % 12])
            else:  # authenticated garbage where a control tuple should be
                data = peer.frame(frames.DATA, b"\x80\x05" + noise)
            try:
                peer.sock.sendall(data)
            except OSError:
                pass
            assert peer.closes_soon(), f"the node kept the connection after {attack}"
        finally:
            peer.close()
        tried.append(attack)
        assert good_peer(len(tried)), f"the node stopped serving its good peer after {attack}"

    attack()
    record_property("inputs_tried", len(tried))
    print(f"fuzzed frame sequences tried: {len(tried)} ({sorted(set(tried))})")
    assert len(tried) >= 500 and set(tried) >= set(ATTACKS) - {"replay"}
    # Each valid frame arrived exactly once, in order; no forged, replayed or reordered one.
    assert wait_until(lambda: collector() == delivered, 5), "a replayed frame was delivered"
    assert sentinel() == 0
    assert accepts_a_good_handshake()
    assert len(P.processes()) == processes_before
    assert len(error_lines) <= 2 * len(tried), "one bad connection, one or two lines at most"


# --- replayed handshakes -------------------------------------------------------------------------

class Recording:
    """A socket that keeps a copy of everything sent through it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)


def test_a_recorded_initiator_handshake_cannot_be_replayed(alex, error_lines, sentinel) -> None:
    with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
        recording = Recording(sock)
        result = eh.initiate(recording, COOKIE, "mallory@localhost", Node.self(), 1,
                             python_tag=shipment.PYTHON_TAG)
        assert result.nodelab  # a genuine handshake, by someone with the cookie
        # alex registers the connection after its ack: wait for it, so that the wait below
        # sees it go (a replay while it is still up would rightly be answered "alive").
        assert wait_until(lambda: "mallory@localhost" in Node.list(), 3)
    hello_bytes, reply_bytes = recording.sent
    assert wait_until(lambda: "mallory@localhost" not in Node.list(), 3)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
            sock.sendall(hello_bytes)
            assert read_message(sock) == b"sok"
            assert read_message(sock)[:1] == b"N"  # a fresh challenge...
            sock.sendall(reply_bytes)  # ...answered with yesterday's proof
            assert closes_soon(sock)
    refused = [line for line in error_lines if "mallory@localhost rejected" in line]
    assert len(refused) == 5
    assert "mallory@localhost" not in Node.list()
    assert sentinel() == 0


def test_a_recorded_acceptor_handshake_cannot_be_replayed(alex) -> None:
    """A fake node answers alex's dial with the CHALLENGE and ACK of an earlier, genuine
    handshake: alex must refuse, because the ACK proves nothing about its fresh nonce."""
    listener = socket.create_server(("127.0.0.1", 0))
    registration = portmapper.register("replayee", listener.getsockname()[1],
                                       full_name="replayee@localhost")
    recorded: list[bytes] = []
    kept: list[socket.socket] = []

    def fake_node() -> None:
        for round_number in range(2):
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            kept.append(sock)
            sock.settimeout(5)
            try:
                hello_message = eh.recv_name(sock, None)
                if round_number == 0:
                    recording = Recording(sock)
                    eh.accept(recording, COOKIE, "replayee@localhost", hello_message, 1,
                              python_tag=shipment.PYTHON_TAG)
                    recorded.extend(recording.sent)
                else:
                    status, challenge, ack = recorded
                    sock.sendall(status + challenge)
                    eh.recv_message(sock, None)  # alex's reply to the old challenge
                    sock.sendall(ack)
            except (OSError, eh.HandshakeError):
                pass

    thread = threading.Thread(target=fake_node, daemon=True)
    thread.start()
    try:
        # Connect, not ping: the fake node completes a handshake but answers no question.
        assert Node.connect("replayee@localhost") is True  # the genuine one
        Node.disconnect("replayee@localhost")
        assert Node.connect("replayee@localhost") is False  # the replayed one
        assert "replayee@localhost" not in Node.list()
    finally:
        registration.close()
        listener.close()
        thread.join(5)
        for sock in kept:
            sock.close()


# --- the cookie ----------------------------------------------------------------------------------

def test_a_wrong_cookie_is_refused_every_time_with_one_line_each(
        alex, error_lines, sentinel, canary) -> None:
    attempts = 50
    refused = 0
    for number in range(attempts):
        name = f"eve{number}@localhost".encode()
        with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
            sock.sendall(hello(name))
            assert read_message(sock) == b"sok"
            challenge = eh.parse_challenge(read_message(sock))
            assert challenge.claims_nodelab  # the nodelab trailer, to a nodelab claimant
            # A reply and a proof made with the wrong cookie, and right behind it, without
            # waiting, a frame that would reach the sentinel if the node ever read it.
            nonce = os.urandom(eh.NONCE_SIZE)
            transcript = eh.Transcript(
                name.decode(), Node.self(), eh.DEFAULT_FLAGS, challenge.flags, 1,
                challenge.creation, challenge.challenge, 7, nonce, challenge.nonce or b"",
                shipment.PYTHON_TAG, challenge.python_tag or "")
            wrong_keys = eh.session_keys("not_the_cookie", transcript)
            forged = frames.encode(frames.mac_state(wrong_keys[0]), 0, SEND_NAMED,
                                   send_named_body(SENTINEL, canary))
            reply = eh.encode_challenge_reply(eh.ChallengeReply(
                7, eh.gen_digest(challenge.challenge, "not_the_cookie"), nonce,
                shipment.PYTHON_TAG, transcript.mac("not_the_cookie", b"nodelab reply")))
            sock.sendall(message(reply) + forged)
            if closes_soon(sock):
                refused += 1
    assert refused == attempts
    assert wait_until(lambda: len([x for x in error_lines if "rejected" in x]) >= attempts, 3)
    time.sleep(0.2)  # no late extra lines
    for number in range(attempts):
        lines = [x for x in error_lines if f"node eve{number}@localhost rejected" in x]
        assert lines == [f"[error] ** Connection attempt from node eve{number}@localhost "
                         "rejected. Invalid challenge reply. **"]
    assert len([x for x in error_lines if "rejected" in x]) == attempts
    assert sentinel() == 0
    assert not [n for n in Node.list() if n.startswith("eve")]


def test_claiming_a_connected_name_without_the_cookie_takes_nothing_down(
        alex, good_peer, error_lines) -> None:
    """The ALIVE question lets a node replace a stale connection; the old one is dropped
    only after the newcomer proved the cookie, so an impostor cannot cut kate off."""
    kate = next(node for node in Node.list() if node.startswith("kate@"))
    Node.monitor(kate)
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
                sock.settimeout(3)
                sock.sendall(hello(kate.encode()))
                answer = read_message(sock)
                assert answer == b"salive", answer
                sock.sendall(message(b"strue"))  # "yes, replace it"
                assert read_message(sock)[:1] == b"N"  # the challenge
                sock.sendall(message(b"r" + os.urandom(4 + eh.DIGEST_SIZE)))
                assert closes_soon(sock)
        assert receive(("nodedown", kate), timeout=0.5, after=None) is None
        assert kate in Node.list()
        assert good_peer("still there")
        assert len([x for x in error_lines if f"node {kate} rejected" in x]) == 5
    finally:
        Node.monitor(kate, False)  # kate stops after the test: no stray nodedown


EVE_TRIES = """
import sys
results = []
for attempt in range(5):
    results.append(Node.connect("alex@localhost"))
    send(("reliability_sentinel", "alex@localhost"), ("from eve", attempt))
    Node.spawn("alex@localhost", lambda: print("eve's code ran on alex"))
print("eve results", results, "pings", Node.ping("alex@localhost"), file=sys.stderr, flush=True)
"""


def test_a_real_node_with_a_wrong_cookie_gets_nothing_through(
        alex, start_peer, error_lines, sentinel) -> None:
    eve = start_peer("eve", cookie="not_the_secret", eval=EVE_TRIES)
    output = eve.wait_for_output("eve results", timeout=30)
    assert "eve results [False, False, False, False, False] pings pang" in output
    # Each connect, send and spawn above was one attempt, and the ping one more: 16.
    assert wait_until(lambda: len([x for x in error_lines if "node eve@localhost rejected"
                                   in x]) >= 16, 3)
    time.sleep(0.2)
    assert len([x for x in error_lines if "node eve@localhost rejected" in x]) == 16
    assert sentinel() == 0
    assert "eve@localhost" not in Node.list()


def _run_node(*args: str, env: dict[str, str] | None = None,
              timeout: float = 20) -> subprocess.CompletedProcess:
    """Run ``nodelab node ARGS`` expecting it to refuse; if it comes up instead, stop it
    at once (its stderr then says "is up") rather than waiting for a timeout."""
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = str(ROOT)
    child_env.update(env or {})
    process = subprocess.Popen([sys.executable, "-m", "nodelab", "node", *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=child_env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_until(lambda: process.poll() is not None or any("is up" in x for x in lines),
                   timeout)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        reader.join(5)
        process.stderr.close()
    return subprocess.CompletedProcess(process.args, process.returncode, "", "".join(lines))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_cookie_file_that_others_can_read_is_refused(tmp_path, mode) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cookie_file = home / "cookie"
    cookie_file.write_text("SOMESECRETCOOKIE")
    cookie_file.chmod(mode)
    result = _run_node("--sname", "cookiecheck", env={"NODELAB_HOME": str(home)}, timeout=10)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"nodelab node: cookie file {cookie_file} has mode {mode:04o}, but it must "
                     f"be accessible by its owner only: fix it with chmod 600 {cookie_file}"]


def test_the_cookie_file_is_created_private(start_peer, tmp_path) -> None:
    home = tmp_path / "fresh-home"
    node = start_peer("cookiejar", cookie=None, env={"NODELAB_HOME": str(home)})
    cookie_file = home / "cookie"
    assert (cookie_file.stat().st_mode & 0o777) == 0o600
    text = cookie_file.read_text()
    assert len(text) == 20 and text.isascii() and text.isupper()
    # alex has another cookie: the new node is a stranger to it.
    assert Node.ping(node.node) == "pang"


# --- names -------------------------------------------------------------------------------------

NAME_CASES = [
    (["--sname", "bad name"], "' ' is not allowed in NAME"),
    (["--sname", "a@b@c"], "more than one '@'"),
    (["--sname", "x" * 65], "NAME has 65 characters, at most 64"),
    (["--sname", "käte"], "'ä' is not allowed in NAME"),
    (["--sname", "kate@"], "HOST after '@' is empty"),
    (["--sname", "k\x1bte"], "'\\x1b' is not allowed in NAME"),
    (["--sname", ""], "NAME is empty"),
    (["--name", "kate"], "a long name (--name) needs a host"),
    (["--sname", "kate@127.0.0.9"], "a short name (--sname) has a host without dots"),
]


@pytest.mark.parametrize(("args", "reason"), NAME_CASES)
def test_a_bad_node_name_gets_one_clear_line(args, reason) -> None:
    result = _run_node(*args, "--cookie", COOKIE, timeout=10)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("nodelab node: ") and reason in lines[0], lines


def test_a_name_in_use_gets_one_clear_line(alex, start_peer) -> None:
    start_peer("dupe")
    result = _run_node("--sname", "dupe", "--cookie", COOKIE, timeout=10)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nodelab node: node name dupe@localhost is already in use on this host: pick another "
        "--sname, or stop the node that has it"]


@pytest.mark.parametrize("name", ["bad name@localhost", "käte@localhost", "x" * 300,
                                  "kate@@localhost"])
def test_a_bad_name_in_the_api_is_a_clear_error(alex, error_lines, name) -> None:
    with pytest.raises(InvalidNodeName, match="invalid node name"):
        Node.spawn(name, lambda: None)
    assert Node.ping(name) == "pang"
    assert Node.connect(name) is False
    assert len(error_lines) == 2 and all("Cannot connect to" in x for x in error_lines)


@pytest.mark.parametrize("name", [b"bad name@localhost", b"k\xc3\xa4te@localhost",
                                  b"x" * 240 + b"@localhost", b"alex@localhost",
                                  b"long@10.1.2.3"])
def test_a_handshake_with_a_bad_name_is_not_allowed(alex, good_peer, name) -> None:
    with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
        sock.sendall(hello(name))
        answer = sock.recv(1024)
        if answer:  # a short name of this node, a long name: "not allowed"
            assert answer == message(b"snot_allowed")
        assert closes_soon(sock)
    assert good_peer("still fine")


# --- oversized messages ------------------------------------------------------------------------

def test_an_oversized_message_is_refused_to_its_sender_only(alex, start_peer, trapping) -> None:
    kate = start_peer("kate")
    me = self()
    Node.monitor(kate.node)

    def keep_all() -> None:
        register("keeper")
        send(me, "keeper up")
        got = []
        while (message := receive()) != "report":
            got.append(message if isinstance(message, int) else len(message))
        send(me, ("kept", got))

    keeper = Node.spawn_link(kate.node, keep_all)
    receive("keeper up", timeout=5)
    too_big = b"x" * (frames.MAX_MESSAGE + 1)
    send(keeper, 1)
    with pytest.raises(MessageTooLarge, match="larger than the limit .* NODELAB_MAX_MESSAGE"):
        send(keeper, too_big)
    send(keeper, 2)
    with pytest.raises(MessageTooLarge):
        send(("keeper", kate.node), too_big)
    with pytest.raises(MessageTooLarge):
        Node.spawn(kate.node, lambda: len(too_big))
    big_but_fine = b"y" * (frames.MAX_MESSAGE // 2)
    send(keeper, big_but_fine)
    send(keeper, 3)
    send(keeper, "report")
    assert receive(("kept", ANY), timeout=10)[1] == [1, 2, len(big_but_fine), 3]
    # Nothing broke: the keeper ended normally, no nodedown, the connection stayed up.
    assert receive(("EXIT", keeper, ANY), timeout=5)[2] == "normal"
    assert receive(("nodedown", ANY), timeout=0.3, after=None) is None
    assert kate.node in Node.list()


def test_a_frame_over_the_receivers_limit_closes_only_that_connection(
        alex, start_peer, error_lines, trapping) -> None:
    # kate allows bigger messages than alex does: alex must refuse the frame, log it once,
    # drop that one connection, and take kate back when she connects again.
    kate = start_peer("kate", env={"NODELAB_MAX_MESSAGE": str(4 * frames.MAX_MESSAGE)})
    me = self()
    Node.monitor(kate.node)
    size = frames.MAX_MESSAGE + 1024
    Node.spawn(kate.node, lambda: send(me, b"z" * size))
    assert receive(("nodedown", kate.node), timeout=10)
    assert wait_until(lambda: any("closed: received a frame of" in x for x in error_lines), 3)
    assert receive(lambda m: isinstance(m, bytes), timeout=0.2, after=None) is None
    assert Node.ping(kate.node) == "pong"
    Node.spawn(kate.node, lambda: send(me, b"z" * 1000))
    assert receive(b"z" * 1000, timeout=5)


# --- too many sockets --------------------------------------------------------------------------

def test_idle_half_open_handshakes_do_not_lock_out_good_peers(alex, good_peer) -> None:
    idle = [socket.create_connection(("127.0.0.1", my_port()), timeout=3) for _ in range(100)]
    try:
        started = time.monotonic()
        assert accepts_a_good_handshake()
        assert time.monotonic() - started < 1.0
        assert good_peer("through the crowd")
    finally:
        for sock in idle:
            sock.close()


def test_a_handshake_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(alex) -> None:
    """A peer that trickles its HELLO (each byte well within the per-read timeout) is cut
    off when the whole handshake's time is up, not after the last byte."""
    from nodelab.dist.connections import HANDSHAKE_TIMEOUT

    message = hello(b"slowpoke@localhost")
    with socket.create_connection(("127.0.0.1", my_port()), timeout=3) as sock:
        started = time.monotonic()
        closed_after = None
        for byte in message:
            try:
                sock.sendall(bytes((byte,)))
            except OSError:
                closed_after = time.monotonic() - started
                break
            sock.settimeout(0.4)
            try:
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
            if time.monotonic() - started > HANDSHAKE_TIMEOUT + 5:
                break
    assert closed_after is not None, (
        f"the node still waited after {time.monotonic() - started:.1f} s of a trickled HELLO")
    assert closed_after < HANDSHAKE_TIMEOUT + 2, closed_after
    assert len(message) * 0.4 > HANDSHAKE_TIMEOUT + 2  # the trickle itself would take longer


def test_a_node_out_of_file_descriptors_accepts_again_later(alex, start_peer) -> None:
    kate = start_peer("fdlimit", eval=(
        "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"))
    port = portmapper.lookup("fdlimit")
    flood = []
    try:
        for _ in range(100):  # more than kate can hold: her accept() fails with EMFILE
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(0.3)
    finally:
        for sock in flood:
            sock.close()

    def answers_a_hello() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(hello(b"prober@localhost"))
                return sock.recv(16)[2:5] == b"sok"
        except OSError:
            return False

    assert wait_until(answers_a_hello, 2.0, interval=0.1), (
        "the node never accepted a connection again after running out of descriptors")
    assert Node.ping(kate.node) == "pong"
