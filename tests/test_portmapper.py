"""The port mapper speaks EPMD, for real: a daemon process, TCP, nodes that register and die,
and Erlang's own ``erl`` and ``epmd`` on the other side.

Every test gets its own free EPMD port (``ERL_EPMD_PORT``) and ``NODELAB_HOME``; nodelab's
daemon lingers 0.3 s after its last registration, and the fixture checks that it is gone at
the end (and kills it, failing the test, if it is not), and that no real ``epmd`` was left
on the port either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import nodelab
from nodelab.dist import portmapper, portmapper_daemon
from nodelab.dist.names import InvalidNodeName
from nodelab.dist.portmapper import (
    NameInUse,
    PortMapperError,
    PortMapperUnavailable,
    ensure_portmapper,
    lookup,
    mapper_pid,
    names,
    port_please,
    register,
)

ROOT = str(Path(nodelab.__file__).resolve().parent.parent)
LINGER = 0.3
ERL = shutil.which("erl")
EPMD = shutil.which("epmd")


def _argv_and_env(pid: str) -> tuple[list[bytes], list[bytes]]:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return [], []
    return argv, env


def mapper_processes(port: int) -> list[int]:
    """OS pids of nodelab's EPMD daemons for ``port`` (from /proc: also finds a hung one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv, _ = _argv_and_env(entry.name)
        if b"nodelab.dist.portmapper_daemon" in argv and b"--port" in argv:
            index = argv.index(b"--port")
            if argv[index + 1:index + 2] == [str(port).encode()]:
                found.append(int(entry.name))
    return found


def epmd_processes(port: int) -> list[int]:
    """OS pids of Erlang's ``epmd`` serving ``port`` (``-port P``, or ``ERL_EPMD_PORT=P``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "epmd":
                continue
        except OSError:
            continue
        argv, env = _argv_and_env(entry.name)
        if b"-port" in argv:
            index = argv.index(b"-port")
            serves = argv[index + 1:index + 2] == [str(port).encode()]
        else:
            serves = f"ERL_EPMD_PORT={port}".encode() in env
        stat = (entry / "stat").read_bytes() if (entry / "stat").exists() else b""
        zombie = stat[stat.rfind(b")") + 2:][:1] == b"Z"
        if serves and not zombie:
            found.append(int(entry.name))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class MapperEnv:
    """One test's EPMD world: its port, its home, what it started."""

    def __init__(self, port: int, home: Path) -> None:
        self.port = port
        self.home = home
        self.registrations: list[portmapper.Registration] = []
        self.children: list[subprocess.Popen] = []

    def register(self, name: str, port: int) -> portmapper.Registration:
        registration = register(name, port, timeout=5)
        self.registrations.append(registration)
        return registration

    def spawn(self, code: str, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                                 env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
        self.children.append(child)
        return child

    def run_epmd_client(self, *args: str) -> str:
        """Erlang's own epmd client (``epmd -port P -names`` ...): what it prints."""
        assert EPMD is not None
        done = subprocess.run([EPMD, "-port", str(self.port), *args], capture_output=True,
                              timeout=10, stdin=subprocess.DEVNULL)
        return (done.stdout + done.stderr).decode(errors="replace")

    @property
    def log(self) -> str:
        path = self.home / f"portmapper-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        for registration in self.registrations:
            registration.close()
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(10)
            if child.stdout:
                child.stdout.close()
        problems = []
        epmds = epmd_processes(self.port)
        for pid in epmds:
            os.kill(pid, signal.SIGKILL)
        if epmds:
            problems.append(f"a real epmd {epmds} was left on port {self.port}")
        if not wait_until(lambda: not mapper_processes(self.port), LINGER + 5):
            pids = mapper_processes(self.port)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            problems.append(f"nodelab's EPMD {pids} on port {self.port} did not exit after "
                            f"its linger; log:\n{self.log}")
        if problems:
            pytest.fail("; ".join(problems))


def free_port() -> int:
    with portmapper_daemon.bind_listener(0) as sock:
        return sock.getsockname()[1]


@pytest.fixture
def mapper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    port = free_port()
    home = tmp_path / "home"
    monkeypatch.setenv("ERL_EPMD_PORT", str(port))
    monkeypatch.setenv("NODELAB_PORTMAPPER_LINGER", str(LINGER))
    monkeypatch.setenv("NODELAB_HOME", str(home))
    monkeypatch.delenv("NODELAB_PORTMAPPER_PORT", raising=False)
    monkeypatch.delenv("ERL_EPMD_RELAXED_COMMAND_CHECK", raising=False)
    env = MapperEnv(port, home)
    try:
        yield env
    finally:
        env.cleanup()


def read_line(child: subprocess.Popen, timeout: float = 10.0) -> str:
    """The child's next output line, or fail after ``timeout`` seconds."""
    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            pytest.fail(f"no output from the child within {timeout} s")
    return child.stdout.readline().decode(errors="replace").strip()


def packet(body: bytes) -> bytes:
    """An EPMD request: a 2-byte length, then the request."""
    return struct.pack("!H", len(body)) + body


def alive2(name: bytes, port: int, highest: int = 6, lowest: int = 5, node_type: int = 77,
           extra: bytes = b"") -> bytes:
    return packet(struct.pack("!BHBBHHH", ord("x"), port, node_type, 0, highest, lowest,
                              len(name)) + name + struct.pack("!H", len(extra)) + extra)


def talk(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 3.0) -> bytes:
    """Send raw bytes to the EPMD; everything it answers until it closes (or a pause)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # "that was all": a registration ends with it
        received = b""
        sock.settimeout(0.3)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        return received


REGISTERING_NODE = """
    import socket, sys, time
    from nodelab.dist import portmapper
    listener = socket.create_server(("127.0.0.1", 0))
    registration = portmapper.register(sys.argv[1], listener.getsockname()[1])
    print("registered", listener.getsockname()[1], registration.creation, flush=True)
    listener.settimeout(30)
    try:
        conn, _ = listener.accept()
    except OSError:
        sys.exit(0)
    conn.settimeout(30)
    while True:                      # an echo service: "a running node keeps talking"
        data = conn.recv(100)
        if not data:
            break
        conn.sendall(data)
"""


# --- the basics --------------------------------------------------------------------------


def test_register_lookup_names_and_in_use(mapper: MapperEnv) -> None:
    started = time.perf_counter()
    assert ensure_portmapper() == "nodelab"
    start_time = time.perf_counter() - started
    print(f"\nport mapper start (ensure_portmapper, cold): {start_time * 1000:.0f} ms")
    assert start_time < 5
    assert lookup("alex") is None
    alex = mapper.register("alex", 40001)
    kate = mapper.register("kate", 40002)
    assert lookup("alex") == 40001
    assert lookup("kate", "127.0.0.1", mapper.port) == 40002
    assert names() == {"alex": 40001, "kate": 40002}
    # What PORT_PLEASE2_REQ tells: registered as OTP 25 registers its nodes.
    assert port_please("alex") == portmapper.EpmdEntry("alex", 40001, 77, 0, 6, 5, b"")
    # The creation is EPMD's: 32 bits, never 0, one per registration.
    assert 0 < alex.creation < 1 << 32 and alex.creation != kate.creation

    with pytest.raises(NameInUse) as info:
        register("alex", 40003, full_name="alex@localhost")
    assert str(info.value) == ("node name alex@localhost is already in use on this host: "
                               "pick another --sname, or stop the node that has it")
    assert lookup("alex") == 40001  # the failed attempt changed nothing

    alex.close()
    alex.close()  # idempotent
    assert alex.wait_closed(2)
    assert lookup("alex") is None
    # close() returns once EPMD forgot the name: the name is free again at once, and the
    # new run of alex gets another creation.
    again = mapper.register("alex", 40004)
    assert lookup("alex") == 40004
    assert again.creation != alex.creation


def test_lookup_of_bad_names_and_missing_mappers(mapper: MapperEnv) -> None:
    with pytest.raises(InvalidNodeName):
        lookup("al ex")
    started = time.monotonic()
    assert lookup("alex") is None  # no EPMD at all: "no such node", quickly
    assert port_please("alex") is None
    assert names() == {}
    assert mapper_pid() is None
    assert portmapper.epmd_kind() is None
    assert time.monotonic() - started < 1


def test_bad_environment_values_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODELAB_PORTMAPPER_PORT", raising=False)
    monkeypatch.setenv("ERL_EPMD_PORT", "http")
    with pytest.raises(PortMapperError, match="ERL_EPMD_PORT='http' is not a TCP port number "
                                              "like 4369"):
        portmapper.default_port()
    monkeypatch.delenv("ERL_EPMD_PORT")
    assert portmapper.default_port() == 4369
    # The old variable is not silently ignored (that would put a private setup on 4369).
    monkeypatch.setenv("NODELAB_PORTMAPPER_PORT", "43210")
    with pytest.raises(PortMapperError, match="NODELAB_PORTMAPPER_PORT='43210' is no longer "
                                              "read.*set ERL_EPMD_PORT=43210 instead"):
        portmapper.default_port()
    monkeypatch.setenv("ERL_EPMD_PORT", "43210")
    assert portmapper.default_port() == 43210  # both say the same: fine
    monkeypatch.setenv("NODELAB_PORTMAPPER_LINGER", "-1")
    with pytest.raises(PortMapperError, match="NODELAB_PORTMAPPER_LINGER"):
        portmapper.default_linger()


def test_lookup_round_trip_time(mapper: MapperEnv) -> None:
    ensure_portmapper()
    mapper.register("alex", 40001)
    times = []
    for _ in range(1000):
        started = time.perf_counter()
        assert lookup("alex") == 40001
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"\nlookup round trip, median of 1000: {median * 1e6:.0f} us "
          f"(p99 {sorted(times)[989] * 1e6:.0f} us)")
    assert median < 0.01


def test_the_node_takes_the_creation_epmd_gives(mapper: MapperEnv) -> None:
    from nodelab import Node
    from nodelab import self as self_pid
    from nodelab.runtime import pids

    ensure_portmapper()
    Node.start("creationtest")
    try:
        # nodelab's EPMD logs the creation it gave; the node, and its PIDs, have it.
        logged = [line for line in mapper.log.splitlines() if "registered creationtest" in line]
        assert len(logged) == 1, mapper.log
        creation = int(logged[0].rsplit("creation ", 1)[1].rstrip(")"))
        assert pids.local_creation() == creation
        assert self_pid().creation == creation
    finally:
        Node.stop()
    assert lookup("creationtest") is None


def test_an_old_epmd_with_16_bit_creations_is_understood(mapper: MapperEnv) -> None:
    # An EPMD older than OTP 23 answers ALIVE2_RESP ('y', 16-bit creation).
    server = socket.create_server(("127.0.0.1", mapper.port))
    server.settimeout(10)
    requests: list[bytes] = []

    def old_epmd() -> None:
        for reply in (b"y\x00\x00\x02", b"y\x01\x00\x00"):  # creation 2, then "in use"
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                requests.append(conn.recv(1024))
                conn.sendall(reply)
                conn.recv(1)  # until the node closes (it unregisters, or gives up)

    thread = threading.Thread(target=old_epmd, daemon=True)
    thread.start()
    try:
        registration = register("oldie", 40001, timeout=5)
        assert registration.creation == 2
        registration.close()
        assert registration.wait_closed(2)
        with pytest.raises(NameInUse):
            register("oldie", 40001, timeout=5)
        thread.join(5)
        assert not thread.is_alive()
        # What we send: ALIVE2_REQ, node type 77, protocol 0, versions 6..5, no extra.
        assert requests == [alive2(b"oldie", 40001)] * 2
    finally:
        server.close()


# --- life and death -----------------------------------------------------------------------


def test_sigkill_of_a_registered_node_frees_its_name(mapper: MapperEnv) -> None:
    ensure_portmapper()
    mapper.register("alex", 40001)  # keeps the daemon up while kate starts
    kate = mapper.spawn(REGISTERING_NODE, "kate")
    line = read_line(kate)
    assert line.startswith("registered"), line
    assert lookup("kate") == int(line.split()[1])
    kate.kill()  # SIGKILL: no atexit, no close(); only the kernel closes the socket
    started = time.monotonic()
    assert wait_until(lambda: lookup("kate") is None, 2.0)
    print(f"\nname freed {1000 * (time.monotonic() - started):.1f} ms after SIGKILL")
    mapper.register("kate", 40002)  # and can be taken again


def test_a_forked_child_does_not_keep_the_name(mapper: MapperEnv) -> None:
    # multiprocessing and os.fork copy the registration socket; the node's death must
    # still free the name even while such a child lives on.
    ensure_portmapper()
    mapper.register("alex", 40001)
    node = mapper.spawn("""
        import os, time
        from nodelab.dist import portmapper
        registration = portmapper.register("kate", 40002)
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        print(child, flush=True)
        time.sleep(30)
    """)
    child_pid = int(read_line(node))
    try:
        assert lookup("kate") == 40002
        node.kill()
        assert wait_until(lambda: lookup("kate") is None, 2.0)
    finally:
        os.kill(child_pid, signal.SIGKILL)


def foreground_daemon(mapper: MapperEnv, *options: str) -> subprocess.Popen:
    """nodelab's daemon run in the foreground, as a user would (not counted as a child)."""
    daemon = mapper.spawn("from nodelab.dist.portmapper_daemon import main; "
                          "raise SystemExit(main())",
                          "--port", str(mapper.port), *options)
    mapper.children.remove(daemon)
    if not wait_until(lambda: mapper_pid() == daemon.pid, 5):
        daemon.kill()
        daemon.wait(5)
        pytest.fail("the daemon did not answer within 5 s")
    return daemon


def end(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.kill()
    daemon.wait(5)
    if daemon.stdout:
        daemon.stdout.close()


def test_the_daemon_lingers_then_exits(mapper: MapperEnv) -> None:
    daemon = foreground_daemon(mapper, "--linger", "0.5")
    try:
        registration = register("alex", 40001)
        time.sleep(0.8)  # longer than the linger: a registration keeps it alive
        assert daemon.poll() is None
        assert lookup("alex") == 40001
        registration.close()
        started = time.monotonic()
        assert daemon.wait(5) == 0
        assert 0.3 < time.monotonic() - started < 2
        assert daemon.stdout is not None
        assert b"no node registered for 0.5 s: exiting" in daemon.stdout.read()
        with socket.create_server(("127.0.0.1", mapper.port)):
            pass  # the port is free again
    finally:
        end(daemon)


def test_ensure_portmapper_starts_a_detached_daemon_that_lingers(mapper: MapperEnv) -> None:
    started = time.perf_counter()
    assert ensure_portmapper() == "nodelab"
    print(f"\nport mapper start: {1000 * (time.perf_counter() - started):.0f} ms")
    pid = mapper_pid()
    assert pid is not None and pid in mapper_processes(mapper.port)
    assert os.getpgid(pid) != os.getpgid(0)  # its own session: a ^C here does not kill it
    assert ensure_portmapper() == "nodelab"  # already running: nothing new is started
    assert mapper_pid() == pid
    assert wait_until(lambda: not mapper_processes(mapper.port), LINGER + 3)
    assert "listening on port" in mapper.log


def test_two_processes_racing_to_start_the_mapper_both_succeed(mapper: MapperEnv) -> None:
    go = mapper.home.parent / "go"
    racer = """
        import sys, time
        from pathlib import Path
        from nodelab.dist import portmapper
        print("ready", flush=True)
        deadline = time.monotonic() + 20
        while not Path(sys.argv[1]).exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        portmapper.ensure_portmapper()
        registration = portmapper.register(sys.argv[2], int(sys.argv[3]))
        print(portmapper.mapper_pid(), flush=True)
        stop = Path(sys.argv[1] + ".stop")
        while not stop.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    """
    nodes = {"alex": 40001, "kate": 40002, "moebi": 40003}
    racers = [mapper.spawn(racer, str(go), name, str(port)) for name, port in nodes.items()]
    for child in racers:
        assert read_line(child) == "ready"
    go.touch()  # all three find no EPMD and start one at the same time
    pids = {read_line(child) for child in racers}
    assert len(pids) == 1 and pids != {"None"}, pids
    assert names() == nodes
    assert mapper.log.count("listening on port") == 1, mapper.log
    Path(str(go) + ".stop").touch()
    for child in racers:
        assert child.wait(10) == 0


def test_a_remote_host_is_only_checked(mapper: MapperEnv) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    started = time.monotonic()
    with pytest.raises(PortMapperUnavailable, match=f"no EPMD answers on {address} port "
                                                    f"{mapper.port}.*the same ERL_EPMD_PORT"):
        ensure_portmapper(address, timeout=1)
    assert time.monotonic() - started < 2
    assert mapper_processes(mapper.port) == []


def test_a_port_taken_by_another_program_is_explained(mapper: MapperEnv) -> None:
    refusal = "taken by a program that is not an EPMD"
    # A program that listens on the port and never answers:
    with portmapper_daemon.bind_listener(mapper.port), pytest.raises(PortMapperUnavailable,
                                                                     match=refusal):
        ensure_portmapper(timeout=1.5)


def test_a_connection_to_itself_counts_as_nothing_listening(
        mapper: MapperEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # When nothing listens on a port of the ephemeral range (like this test's), a loopback
    # connect can get that very port as its source and reach itself: forced here.
    connect = socket.socket.connect

    def connect_from_the_same_port(sock: socket.socket, address) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", address[1]))
        connect(sock, address)

    # Only connect is restored afterwards: monkeypatch.undo() would also undo the fixture's
    # ERL_EPMD_PORT, and the last line would then ask the run's EPMD, which is Erlang's epmd
    # whenever an earlier test's erl started one there (the test failed so, now and then).
    with monkeypatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect_from_the_same_port)
        started = time.monotonic()
        assert portmapper.epmd_kind(timeout=1) is None
        assert lookup("alex") is None and names() == {}
        assert time.monotonic() - started < 0.5  # no wait for an answer that is our own echo
    assert os.environ["ERL_EPMD_PORT"] == str(mapper.port)
    assert ensure_portmapper() == "nodelab"
    assert mapper_pid() in mapper_processes(mapper.port)


def test_a_daemon_too_busy_to_answer_once_is_not_taken_for_epmd(mapper: MapperEnv) -> None:
    # nodelab's daemon closes a connection unanswered when it is full of clients (or when it
    # exits after its linger and a new one takes the port). Played here by a server that
    # does so once, then answers NAMES_REQ, then nodelab's own request.
    server = socket.create_server(("127.0.0.1", mapper.port))
    server.settimeout(10)
    replies = [b"", struct.pack("!I", mapper.port), b"nodelab-epmd 1 pid=4242\n"]
    requests: list[bytes] = []

    def busy_then_nodelab() -> None:
        for reply in replies:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                requests.append(conn.recv(1024))
                conn.sendall(reply)

    thread = threading.Thread(target=busy_then_nodelab, daemon=True)
    thread.start()
    try:
        assert portmapper.epmd_kind(timeout=5) == "nodelab"
        thread.join(5)
        assert not thread.is_alive()
        assert requests == [packet(b"?"), packet(b"n"), packet(b"?")]
    finally:
        server.close()


# --- hostile input --------------------------------------------------------------------------


def non_loopback_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing: it only picks a route
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_register_is_refused_from_other_hosts(mapper: MapperEnv) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    ensure_portmapper()
    mapper.register("alex", 40001)
    # Through the host's own network address the peer is not loopback any more: its
    # registration, DUMP_REQ and KILL_REQ get the connection closed, with no answer.
    assert talk(mapper.port, alive2(b"eve", 40666), host=address) == b""
    assert talk(mapper.port, packet(b"d"), host=address) == b""
    assert talk(mapper.port, packet(b"k"), host=address) == b""
    # Lookups are for everyone: nodes on other hosts need them.
    assert talk(mapper.port, packet(b"zalex"), host=address)[:4] == b"w\x00\x9c\x41"
    assert portmapper.lookup("alex", address) == 40001
    assert portmapper.mapper_pid(address, mapper.port) is None  # the pid is for locals only
    assert lookup("eve") is None


def well_formed(answer: bytes, port: int) -> bool:
    """Is ``answer`` one complete EPMD answer (or none at all)?"""
    if answer in (b"", b"w\x01", b"NO"):
        return True
    if answer[:1] == b"v":
        return len(answer) == 6 and answer[1] in (0, 1)
    if answer[:1] == b"y":
        return len(answer) == 4 and answer[1] in (0, 1)
    if answer.startswith(b"nodelab-epmd 1 pid="):
        return answer.endswith(b"\n")
    if answer[:4] == struct.pack("!I", port):  # NAMES or DUMP
        text = answer[4:]
        return (not text or text.endswith(b"\n") or text.endswith(b"\n\0"))
    if answer[:2] == b"w\x00":  # PORT2_RESP of a name found
        try:
            name_length = struct.unpack_from("!H", answer, 10)[0]
            extra_length = struct.unpack_from("!H", answer, 12 + name_length)[0]
        except struct.error:
            return False
        return len(answer) == 14 + name_length + extra_length
    return False


def test_garbage_gets_the_connection_closed_and_the_mapper_keeps_serving(
        mapper: MapperEnv) -> None:
    ensure_portmapper()
    pid = mapper_pid()
    mapper.register("alex", 40001)
    port = struct.pack("!I", mapper.port)
    found_alex = struct.pack("!BBHBBHHH", ord("w"), 0, 40001, 77, 0, 6, 5, 4) + b"alex\0\0"
    cases = {
        # Well-formed requests get EPMD's answers...
        packet(b"n"): port + b"name alex at port 40001\n",
        packet(b"zalex"): found_alex,
        packet(b"zalex\0"): found_alex,  # a NUL-terminated name, as old nodes send it
        packet(b"zbob"): b"w\x01",
        packet(b"zal ex"): b"w\x01",  # not a nodelab name, but a possible BEAM one
        packet(b"d"): port + b"active name     <alex> at port 40001, fd = ",
        packet(b"k"): b"NO",  # epmd -kill: refused while a node is registered
        packet(b"?"): b"nodelab-epmd 1 pid=",
        alive2(b"alex", 1234): b"v\x01\x00\x00\x00\x00",  # in use
        alive2(b"alex", 1234, highest=5): b"y\x01\x00\x00",  # in use, to an old node
        alive2(b"eve", 0): b"v\x01\x00\x00\x00\x00",  # port 0
        alive2(b"e\0ve", 1234): b"v\x01\x00\x00\x00\x00",  # NUL in the name
        alive2(b"\xff\xfe", 1234): b"v\x01\x00\x00\x00\x00",  # not UTF-8
        alive2(b"e" * 256, 1234): b"v\x01\x00\x00\x00\x00",  # 256 characters
        # ...anything else gets the connection closed, without an answer.
        packet(b"salex"): b"",  # epmd -stop: refused (no relaxed command check)
        packet(b"z"): b"",  # no name
        packet(b"z\xff\xfe"): b"",  # not UTF-8
        packet(b"za\0b"): b"",  # NUL inside
        packet(b"Q"): b"",  # an unknown request
        packet(b"n") + packet(b"n"): b"",  # one request per connection
        packet(b"zalex") + b"more": b"",
        b"\x00\x00": b"",  # an empty request
        b"\x00": b"",  # half a length
        b"\xff\xff" + b"x" * 100: b"",  # 65535 bytes announced: more than any request
        alive2(b"eve", 1234)[:-2]: b"",  # cut short (then EOF)
        packet(struct.pack("!BHBBHHH", ord("x"), 1, 77, 0, 6, 5, 200) + b"eve\0\0"): b"",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n": b"",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03": b"",  # a TLS hello
    }
    for data, expected in cases.items():
        answer = talk(mapper.port, data)
        assert answer.startswith(expected) and (expected or not answer), (data, answer)
    # A registration that ends with the client's EOF (talk half-closes) is gone at once.
    answer = talk(mapper.port, alive2(b"eve", 1234))
    assert answer[:2] == b"v\x00" and len(answer) == 6, answer
    assert wait_until(lambda: lookup("eve") is None, 2)
    # Random bytes, random requests: only well-formed answers, and no crash.
    rng = random.Random(20261126)
    tags = b"xzndks?Qa\x00\xff"
    tried = 0
    for _ in range(300):
        roll = rng.random()
        body = bytes([rng.choice(tags)]) + bytes(rng.randrange(256)
                                                 for _ in range(rng.randrange(40)))
        if roll < 0.35:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 700)))
        elif roll < 0.8:
            data = packet(body)
        else:
            data = struct.pack("!H", rng.randrange(65536)) + body
        answer = talk(mapper.port, data, timeout=1.0)
        tried += 1
        assert well_formed(answer, mapper.port), (data, answer)
    assert mapper_pid() == pid
    assert lookup("alex") == 40001
    assert wait_until(lambda: names() == {"alex": 40001}, 2), names()
    print(f"\n{tried + len(cases)} hostile inputs, EPMD still serving")


def test_idle_and_half_open_connections_do_not_block_others(mapper: MapperEnv) -> None:
    ensure_portmapper()
    mapper.register("alex", 40001)
    idle = [socket.create_connection(("127.0.0.1", mapper.port)) for _ in range(100)]
    try:
        for index, sock in enumerate(idle):
            if index % 2:
                sock.sendall(packet(b"zalex")[:4])  # half a request, never finished
        started = time.monotonic()
        assert lookup("alex") == 40001
        assert time.monotonic() - started < 0.5
    finally:
        for sock in idle:
            sock.close()


def test_slow_clients_are_closed(mapper: MapperEnv) -> None:
    daemon = foreground_daemon(mapper, "--request-timeout", "0.5", "--linger", "0.5")
    try:
        registration = register("alex", 40001)
        silent = socket.create_connection(("127.0.0.1", mapper.port), timeout=5)
        trickle = socket.create_connection(("127.0.0.1", mapper.port), timeout=5)
        started = time.monotonic()
        closed_after = None
        request = packet(b"zalex")
        for index in range(len(request) - 1):  # one byte every 0.2 s: slower than allowed
            try:
                trickle.sendall(request[index:index + 1])
            except OSError:
                break
            time.sleep(0.2)
        silent.settimeout(5)
        assert silent.recv(10) == b""  # closed, without an answer
        closed_after = time.monotonic() - started
        trickle.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert trickle.recv(10) == b""
        assert 0.4 < closed_after < 3, closed_after
        assert lookup("alex") == 40001  # meanwhile, and after
        assert registration.registered  # registrations have no deadline
        silent.close()
        trickle.close()
        registration.close()
        assert daemon.wait(5) == 0
    finally:
        end(daemon)


# --- epmd -kill, -stop, -dump ------------------------------------------------------------------


@pytest.mark.skipif(EPMD is None, reason="Erlang's epmd is not installed (apt-get install "
                                         "erlang-base)")
def test_epmd_kill_and_stop_are_refused_as_epmd_refuses_them(mapper: MapperEnv) -> None:
    ensure_portmapper()
    alex = mapper.register("alex", 40001)
    pid = mapper_pid()
    assert "Killing not allowed - living nodes in database." in mapper.run_epmd_client("-kill")
    assert talk(mapper.port, packet(b"salex")) == b""  # epmd -stop: ignored
    assert lookup("alex") == 40001 and alex.registered and mapper_pid() == pid
    alex.close()
    assert "Killed" in mapper.run_epmd_client("-kill")  # nobody registered: it goes
    assert wait_until(lambda: not mapper_processes(mapper.port), 3)
    assert mapper_pid() is None


def test_the_relaxed_command_check_allows_kill_and_stop(mapper: MapperEnv) -> None:
    daemon = foreground_daemon(mapper, "--relaxed-command-check")
    try:
        alex = register("alex", 40001)
        creation = alex.creation
        assert talk(mapper.port, packet(b"snobody")) == b"NOEXIST"
        assert talk(mapper.port, packet(b"salex")) == b"STOPPED"
        # EPMD forgot alex; a nodelab node notices and registers again (a BEAM would not).
        assert alex.wait_registered(5) and wait_until(lambda: lookup("alex") == 40001, 5)
        assert alex.reregistrations == 1 and alex.creation == creation
        alex.close()
        with socket.create_connection(("127.0.0.1", mapper.port), timeout=5) as raw:
            raw.sendall(alive2(b"raw", 1234))
            assert raw.recv(6)[:2] == b"v\x00"
            assert talk(mapper.port, packet(b"k")) == b"OK"  # even with a node registered
            assert daemon.wait(5) == 0
    finally:
        end(daemon)


# --- a killed mapper ------------------------------------------------------------------------


def test_killed_mapper_nodes_keep_talking_and_register_again(
        mapper: MapperEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nodelab.dist.portmapper")
    ensure_portmapper()
    alex = mapper.register("alex", 40001)
    creation = alex.creation
    lost = threading.Event()
    alex.on_lost(lost.set)
    kate = mapper.spawn(REGISTERING_NODE, "kate")
    line = read_line(kate)
    kate_port = int(line.split()[1])
    assert lookup("kate") == kate_port
    # alex talks to kate over a connection it found through EPMD...
    conversation = socket.create_connection(("127.0.0.1", kate_port), timeout=5)
    conversation.sendall(b"hi")
    assert conversation.recv(10) == b"hi"

    old_pid = mapper_pid()
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()

    # ...and keeps talking: an established connection does not need EPMD.
    conversation.sendall(b"still there?")
    assert conversation.recv(20) == b"still there?"

    assert lost.wait(2), "the registration did not notice that its EPMD died"
    assert alex.wait_registered(5), "alex did not register again"
    # kate (another process) registers again too; new lookups recover within a bound.
    assert wait_until(lambda: lookup("alex") == 40001 and lookup("kate") == kate_port, 5)
    recovery = time.monotonic() - killed
    print(f"\nlookups recovered {recovery * 1000:.0f} ms after EPMD was killed")
    assert recovery < 5
    new_pid = mapper_pid()
    assert new_pid is not None and new_pid != old_pid
    assert names() == {"alex": 40001, "kate": kate_port}
    assert alex.registered and alex.reregistrations == 1
    # The new EPMD gave a new creation; the node keeps its own.
    assert alex.creation == creation and alex.epmd_creation != creation
    messages = [record.getMessage() for record in caplog.records
                if record.name == "nodelab.dist.portmapper"]
    assert any("went away" in text and "alex@localhost" in text for text in messages)
    assert any("alex@localhost is registered again" in text
               and f"the node keeps its creation {creation}" in text for text in messages)
    conversation.sendall(b"and now?")
    assert conversation.recv(20) == b"and now?"  # nothing lost on the live connection
    conversation.close()


def test_a_closed_registration_does_not_come_back(mapper: MapperEnv) -> None:
    ensure_portmapper()
    alex = mapper.register("alex", 40001)
    mapper.register("keep", 40002)  # keeps the daemon alive
    alex.close()
    os.kill(mapper_pid(), signal.SIGKILL)  # type: ignore[arg-type]
    assert wait_until(lambda: lookup("keep") == 40002, 5)
    assert lookup("alex") is None
    assert not alex.registered


# --- Erlang's own erl and epmd ---------------------------------------------------------------


class ErlNode:
    """``erl -sname NAME -setcookie c -noshell``, on the test's EPMD port."""

    def __init__(self, name: str, port: int) -> None:
        assert ERL is not None
        self.name = name
        env = dict(os.environ, ERL_EPMD_PORT=str(port))
        self.process = subprocess.Popen(
            [ERL, "-sname", name, "-setcookie", "c", "-noshell"], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def output(self) -> str:
        if self.process.poll() is None or self.process.stdout is None:
            return "still running"
        return self.process.stdout.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # the BEAM halts on SIGTERM
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()


@pytest.mark.skipif(ERL is None or EPMD is None,
                    reason="Erlang/OTP is not installed (no erl/epmd on PATH): apt-get "
                           "install erlang-base")
def test_erl_registers_with_nodelabs_epmd_and_epmd_names_lists_nodelab_nodes(
        mapper: MapperEnv) -> None:
    assert ensure_portmapper() == "nodelab"
    daemon = mapper_pid()
    alex = mapper.register("alex", 40001)
    erl = ErlNode("erlx", mapper.port)
    try:
        entry = wait_until(lambda: port_please("erlx") or erl.process.poll() is not None, 20,
                           interval=0.05)
        assert isinstance(entry, portmapper.EpmdEntry), f"erl did not register ({erl.output()})"
        # Registered the way OTP 25 registers: a normal node, TCP, versions 6..5.
        assert (entry.name, entry.node_type, entry.protocol, entry.highest_version,
                entry.lowest_version) == ("erlx", 77, 0, 6, 5)
        with socket.create_connection(("127.0.0.1", entry.port), timeout=5):
            pass  # the port is the one the BEAM listens on
        assert mapper_pid() == daemon  # erl used nodelab's EPMD (its own epmd gave way)
        assert wait_until(lambda: not epmd_processes(mapper.port), 5)
        # Erlang's epmd client reads nodelab's daemon like its own, by -port or by env.
        listing = mapper.run_epmd_client("-names")
        assert f"epmd: up and running on port {mapper.port} with data:" in listing
        assert "name alex at port 40001" in listing and "name erlx at port" in listing
        done = subprocess.run([EPMD, "-names"], capture_output=True, timeout=10,
                              env=dict(os.environ, ERL_EPMD_PORT=str(mapper.port)))
        assert b"name alex at port 40001" in done.stdout
        # And the BEAM unregisters as it stops.
        erl.stop()
        assert wait_until(lambda: lookup("erlx") is None, 5)
        alex.close()
        assert mapper.run_epmd_client("-names").strip().endswith("with data:")
    finally:
        erl.stop()


@pytest.fixture
def real_epmd(mapper: MapperEnv):
    """Erlang's ``epmd -daemon -port P``, stopped after the test (by pid: -kill refuses
    while nodes are registered)."""
    if EPMD is None:
        pytest.skip("Erlang's epmd is not installed (apt-get install erlang-base)")
    subprocess.run([EPMD, "-daemon", "-port", str(mapper.port)], timeout=10, check=True,
                   stdin=subprocess.DEVNULL)
    try:
        if not wait_until(lambda: portmapper.epmd_kind() == "epmd", 5, interval=0.02):
            pytest.fail("epmd -daemon did not answer within 5 s")
        pids = epmd_processes(mapper.port)
        assert len(pids) == 1, pids
        yield pids[0]
    finally:
        for pid in epmd_processes(mapper.port):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not epmd_processes(mapper.port), 5)


def test_a_running_epmd_is_used_and_a_sigkilled_node_leaves_it(
        mapper: MapperEnv, real_epmd: int) -> None:
    assert ensure_portmapper() == "epmd"
    alex = mapper.register("alex", 40001)
    assert mapper_processes(mapper.port) == []  # nodelab started no daemon of its own
    assert mapper_pid() is None  # (and epmd does not answer nodelab's own request)
    assert 0 < alex.creation < 1 << 32
    assert lookup("alex") == 40001
    assert port_please("alex") == portmapper.EpmdEntry("alex", 40001, 77, 0, 6, 5, b"")
    with pytest.raises(NameInUse, match="node name alex@localhost is already in use"):
        register("alex", 40002, full_name="alex@localhost")
    kate = mapper.spawn(REGISTERING_NODE, "kate")
    kate_port = int(read_line(kate).split()[1])
    assert names() == {"alex": 40001, "kate": kate_port}
    assert f"name kate at port {kate_port}" in mapper.run_epmd_client("-names")
    kate.kill()  # SIGKILL: epmd sees the registration connection close
    assert wait_until(lambda: lookup("kate") is None, 2)
    assert "kate" not in mapper.run_epmd_client("-names")
    # The name is free for a new run, which epmd gives another creation.
    again = mapper.spawn(REGISTERING_NODE, "kate")
    line = read_line(again).split()
    assert lookup("kate") == int(line[1])
    again.kill()
    assert wait_until(lambda: lookup("kate") is None, 2)
    alex.close()
    assert lookup("alex") is None


def test_a_killed_real_epmd_is_replaced_by_nodelabs(mapper: MapperEnv, real_epmd: int) -> None:
    ensure_portmapper()
    alex = mapper.register("alex", 40001)
    creation = alex.creation
    lost = threading.Event()
    alex.on_lost(lost.set)
    os.kill(real_epmd, signal.SIGKILL)
    # Nothing listens any more: alex starts nodelab's EPMD and registers there.
    assert lost.wait(2), "the registration did not notice that epmd died"
    assert alex.wait_registered(5) and alex.reregistrations == 1
    assert wait_until(lambda: lookup("alex") == 40001, 5)
    assert portmapper.epmd_kind() == "nodelab"
    assert alex.creation == creation
