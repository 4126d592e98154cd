"""The port mapper, for real: a daemon process, TCP, nodes that register and die.

Every test gets its own free mapper port and ``NODELAB_HOME``; the daemon lingers 0.3 s
after its last registration, and the fixture checks that it is gone at the end (and
kills it, failing the test, if it is not).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import nodelab
from nodelab.dist import portmapper
from nodelab.dist.names import InvalidNodeName
from nodelab.dist.portmapper import (
    NameInUse,
    PortMapperError,
    PortMapperUnavailable,
    ensure_portmapper,
    lookup,
    mapper_pid,
    names,
    register,
)

ROOT = str(Path(nodelab.__file__).resolve().parent.parent)
LINGER = 0.3
ANSWER = re.compile(rb"(ERR [a-z_]+|PORT \d+|NONE|NAMES( [A-Za-z0-9_-]+=\d+)*|OK|PONG .*)\n")


def mapper_processes(port: int) -> list[int]:
    """OS pids of port mapper daemons for ``port`` (from /proc: also finds a hung one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"nodelab.dist.portmapper" in argv and b"--port" in argv:
            index = argv.index(b"--port")
            if argv[index + 1:index + 2] == [str(port).encode()]:
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
    """One test's port mapper world: its port, its home, what it started."""

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
        leftover = wait_until(lambda: not mapper_processes(self.port), LINGER + 5)
        if not leftover:
            pids = mapper_processes(self.port)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"port mapper {pids} on port {self.port} did not exit after its "
                        f"linger; log:\n{self.log}")


def free_port() -> int:
    with portmapper.bind_listener(0) as sock:
        return sock.getsockname()[1]


@pytest.fixture
def mapper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    port = free_port()
    home = tmp_path / "home"
    monkeypatch.setenv("NODELAB_PORTMAPPER_PORT", str(port))
    monkeypatch.setenv("NODELAB_PORTMAPPER_LINGER", str(LINGER))
    monkeypatch.setenv("NODELAB_HOME", str(home))
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


def talk(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 3.0) -> bytes:
    """Send raw bytes to the mapper; everything it answers until it closes (or a pause)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # "that was all": the mapper answers and closes
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
    print("registered", listener.getsockname()[1], flush=True)
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
    ensure_portmapper()
    start_time = time.perf_counter() - started
    print(f"\nport mapper start (ensure_portmapper, cold): {start_time * 1000:.0f} ms")
    assert start_time < 5
    assert lookup("alex") is None
    alex = mapper.register("alex", 40001)
    mapper.register("kate", 40002)
    assert lookup("alex") == 40001
    assert lookup("kate", "127.0.0.1", mapper.port) == 40002
    assert names() == {"alex": 40001, "kate": 40002}

    with pytest.raises(NameInUse) as info:
        register("alex", 40003, full_name="alex@localhost")
    assert str(info.value) == ("node name alex@localhost is already in use on this host: "
                               "pick another --sname, or stop the node that has it")
    assert lookup("alex") == 40001  # the failed attempt changed nothing

    alex.close()
    alex.close()  # idempotent
    assert alex.wait_closed(2)
    assert lookup("alex") is None
    # close() returns once the mapper forgot the name: the name is free again at once.
    mapper.register("alex", 40004)
    assert lookup("alex") == 40004


def test_lookup_of_bad_names_and_missing_mappers(mapper: MapperEnv) -> None:
    with pytest.raises(InvalidNodeName):
        lookup("al ex")
    started = time.monotonic()
    assert lookup("alex") is None  # no mapper at all: "no such node", quickly
    assert names() == {}
    assert mapper_pid() is None
    assert time.monotonic() - started < 1


def test_bad_environment_values_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODELAB_PORTMAPPER_PORT", "http")
    with pytest.raises(PortMapperError, match="NODELAB_PORTMAPPER_PORT='http' is not a TCP "
                                              "port number like 4370"):
        portmapper.default_port()
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


# --- life and death -----------------------------------------------------------------------


def test_sigkill_of_a_registered_node_frees_its_name(mapper: MapperEnv) -> None:
    ensure_portmapper()
    mapper.register("alex", 40001)  # keeps the mapper up while kate starts
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


def test_the_daemon_lingers_then_exits(mapper: MapperEnv) -> None:
    # Run the daemon in the foreground, as a user would: it exits by itself.
    daemon = mapper.spawn("from nodelab.dist.portmapper import main; raise SystemExit(main())",
                          "--port", str(mapper.port), "--linger", "0.5")
    mapper.children.remove(daemon)
    try:
        assert wait_until(lambda: mapper_pid() == daemon.pid, 5)
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
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(5)
        if daemon.stdout:
            daemon.stdout.close()


def test_ensure_portmapper_starts_a_detached_daemon_that_lingers(mapper: MapperEnv) -> None:
    started = time.perf_counter()
    ensure_portmapper()
    print(f"\nport mapper start: {1000 * (time.perf_counter() - started):.0f} ms")
    pid = mapper_pid()
    assert pid is not None and pid in mapper_processes(mapper.port)
    assert os.getpgid(pid) != os.getpgid(0)  # its own session: a ^C here does not kill it
    ensure_portmapper()  # already running: nothing new is started
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
    go.touch()  # all three find no mapper and start one at the same time
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
    with pytest.raises(PortMapperUnavailable, match=f"no nodelab port mapper answers on "
                                                    f"{address} port {mapper.port}"):
        ensure_portmapper(address, timeout=1)
    assert time.monotonic() - started < 2
    assert mapper_processes(mapper.port) == []


def test_a_port_taken_by_another_program_is_explained(mapper: MapperEnv) -> None:
    refusal = "taken by a program that is not a nodelab port mapper"
    # A program that listens on the port and never answers:
    with portmapper.bind_listener(mapper.port), pytest.raises(PortMapperUnavailable,
                                                              match=refusal):
        ensure_portmapper(timeout=1.5)


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
    # Through the host's own network address the peer is not loopback any more.
    assert talk(mapper.port, b"REGISTER eve 40666\n", host=address) == b"ERR not_loopback\n"
    assert talk(mapper.port, b"LOOKUP alex\n", host=address) == b"PORT 40001\n"
    assert portmapper.mapper_pid(address, mapper.port) is None  # the pid is for locals only
    assert lookup("eve") is None


def test_garbage_gets_an_error_and_the_mapper_keeps_serving(mapper: MapperEnv) -> None:
    ensure_portmapper()
    pid = mapper_pid()
    mapper.register("alex", 40001)
    cases = {
        b"x" * 600: b"ERR line_too_long\n",
        b"x" * 600 + b"\n": b"ERR line_too_long\n",
        b"LOOKUP " + b"a" * 505 + b"\n": b"ERR line_too_long\n",
        b"\xff\xfe\x00garbage\n": b"ERR not_ascii\n",
        b"\n": b"ERR empty_line\n",
        b"HELLO\n": b"ERR unknown_command\n",
        b"FOO\nLOOKUP alex\n": b"ERR unknown_command\n",  # nothing after an ERR
        b"LOOKUP\n": b"ERR bad_arguments\n",
        b"LOOKUP a b\n": b"ERR bad_arguments\n",
        b"LOOKUP al.ex\n": b"ERR bad_name\n",
        b"REGISTER eve 0\n": b"ERR bad_port\n",
        b"REGISTER eve 70000\n": b"ERR bad_port\n",
        b"REGISTER eve -1\n": b"ERR bad_port\n",
        b"REGISTER alex 1234\n": b"ERR in_use\n",
        b"REGISTER eve 1234\nREGISTER eve2 1235\n": b"OK\nERR already_registered\n",
        b"lookup alex\r\n": b"PORT 40001\n",  # commands are case-insensitive; CRLF is fine
        b"LOOKUP alex\nNAMES\nPING\n": b"PORT 40001\nNAMES alex=40001\n",  # + PONG
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n": b"ERR unknown_command\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03": b"",  # a TLS hello: no newline yet
    }
    for data, expected in cases.items():
        answer = talk(mapper.port, data)
        assert answer.startswith(expected), (data, answer)
    # Random bytes, random lines: only well-formed answers, and no crash.
    rng = random.Random(20261126)
    words = [b"REGISTER", b"LOOKUP", b"NAMES", b"PING", b"UNREGISTER", b"alex", b"1", b" ",
             b"\n", b"\r", b"\x00", b"\xff", b"=", b"@"]
    tried = 0
    for _ in range(300):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 700)))
        else:
            data = b"".join(rng.choice(words) for _ in range(rng.randrange(1, 12)))
        answer = talk(mapper.port, data, timeout=1.0)
        tried += 1
        assert all(ANSWER.fullmatch(line + b"\n") for line in answer.splitlines()), (data,
                                                                                     answer)
    assert mapper_pid() == pid
    assert lookup("alex") == 40001
    assert names() == {"alex": 40001}
    print(f"\n{tried + len(cases)} hostile inputs, mapper still serving")


def test_idle_and_half_open_connections_do_not_block_others(mapper: MapperEnv) -> None:
    ensure_portmapper()
    mapper.register("alex", 40001)
    idle = [socket.create_connection(("127.0.0.1", mapper.port)) for _ in range(100)]
    try:
        for index, sock in enumerate(idle):
            if index % 2:
                sock.sendall(b"LOOKUP al")  # half a line, never finished
        started = time.monotonic()
        assert lookup("alex") == 40001
        assert time.monotonic() - started < 0.5
    finally:
        for sock in idle:
            sock.close()


# --- a killed mapper ------------------------------------------------------------------------


def test_killed_mapper_nodes_keep_talking_and_register_again(
        mapper: MapperEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nodelab.dist.portmapper")
    ensure_portmapper()
    alex = mapper.register("alex", 40001)
    lost = threading.Event()
    alex.on_lost(lost.set)
    kate = mapper.spawn(REGISTERING_NODE, "kate")
    line = read_line(kate)
    kate_port = int(line.split()[1])
    assert lookup("kate") == kate_port
    # alex talks to kate over a connection it found through the mapper...
    conversation = socket.create_connection(("127.0.0.1", kate_port), timeout=5)
    conversation.sendall(b"hi")
    assert conversation.recv(10) == b"hi"

    old_pid = mapper_pid()
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()

    # ...and keeps talking: an established connection does not need the mapper.
    conversation.sendall(b"still there?")
    assert conversation.recv(20) == b"still there?"

    assert lost.wait(2), "the registration did not notice that its mapper died"
    assert alex.wait_registered(5), "alex did not register again"
    # kate (another process) registers again too; new lookups recover within a bound.
    assert wait_until(lambda: lookup("alex") == 40001 and lookup("kate") == kate_port, 5)
    recovery = time.monotonic() - killed
    print(f"\nlookups recovered {recovery * 1000:.0f} ms after the mapper was killed")
    assert recovery < 5
    new_pid = mapper_pid()
    assert new_pid is not None and new_pid != old_pid
    assert names() == {"alex": 40001, "kate": kate_port}
    assert alex.registered and alex.reregistrations == 1
    messages = [record.getMessage() for record in caplog.records
                if record.name == "nodelab.dist.portmapper"]
    assert any("went away" in text and "alex@localhost" in text for text in messages)
    assert any("alex@localhost is registered again" in text for text in messages)
    conversation.close()


def test_a_closed_registration_does_not_come_back(mapper: MapperEnv) -> None:
    ensure_portmapper()
    alex = mapper.register("alex", 40001)
    mapper.register("keep", 40002)  # keeps the mapper alive
    alex.close()
    os.kill(mapper_pid(), signal.SIGKILL)  # type: ignore[arg-type]
    assert wait_until(lambda: lookup("keep") == 40002, 5)
    assert lookup("alex") is None
    assert not alex.registered
