"""Helpers shared by the reliability tests and ``benchmarks/reliability_figures.py``.

* :class:`Remote` runs a node in a child process that the test drives line by line
  (``remote_control.py``), optionally inside a network namespace.
* :class:`TwoHosts` makes two "hosts" on this machine with Linux network namespaces and a
  veth cable between them (``10.77.0.1`` and ``10.77.0.2``), and always removes them.
* Small readers of ``/proc`` for memory and CPU figures.

Everything that starts something also stops it, in ``close()``/``__exit__``, even when
the test fails half-way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DRIVER = HERE / "remote_control.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _load_core_conftest() -> Any:
    """``tests/core/conftest.py`` under a name of its own (every conftest is "conftest")."""
    path = HERE.parent / "core" / "conftest.py"
    spec = importlib.util.spec_from_file_location("nodelab_tests_core_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORE_CONFTEST = _load_core_conftest()
#: The cookie and tick of the test node ``alex`` and of its peers (the same as tests/core).
COOKIE: str = CORE_CONFTEST.COOKIE
TICK: float = CORE_CONFTEST.TICK


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that, or the last
    falsy value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- /proc figures ------------------------------------------------------------------------

def start_peers(start_one: Callable[..., Any], names: list[str], *, timeout: float,
                **options: Any) -> list[Any]:
    """Start several peers at once with ``start_one(name, **options)`` (each start is mostly
    waiting for Python to import); wait ``timeout`` seconds for each; the first error is
    raised after all have been waited for."""
    started: dict[str, Any] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            started[name] = start_one(name, **options)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return [started[name] for name in names]


def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM`` peak RSS), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        data = stat.read()
    fields = data[data.rfind(b")") + 2:].split()
    # Fields after "(comm)": state is field 3 of the man page, utime 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def live_threads_cpu_seconds(pid: int) -> float:
    """CPU time of the live threads of process ``pid``, to the nanosecond, in seconds.

    For small amounts (an idle node uses a few ms a second): :func:`cpu_seconds` reads clock
    ticks (10 ms), and sixteen processes over 3 s could be off by 16 ticks, 5% of a CPU, from
    rounding alone. The scheduler's own count per thread (``/proc/PID/task/*/schedstat``) has
    no such step; a thread that ends meanwhile takes its share along, so use this where
    threads do not come and go.
    """
    nanoseconds = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as schedstat:
                nanoseconds += int(schedstat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return nanoseconds / 1e9


def thread_count(pid: int) -> int | None:
    value = None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    value = int(line.split()[1])
    except OSError:
        return None
    return value


def os_process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie waiting for a parent that
    does not reap it — in a container, PID 1 may be such a parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2:].split()[0] in (b"Z", b"X")


# --- a node driven from outside -----------------------------------------------------------

def start_crowd(node: Any, count: int, *, timeout: float, idle_seconds: float) -> dict[str, Any]:
    """Start ``count`` processes blocked in receive on the peer ``node`` (the
    ``load_workload.crowd`` body) and measure it: the start time, the node's memory and OS
    threads before and with them, and its CPU over ``idle_seconds`` of doing nothing.
    ``"release"`` sent to the result's ``leader`` wakes them all."""
    import load_workload

    from nodelab import ANY, Node, receive, self

    rss_before = proc_status_kb(node.os_pid, "VmRSS")
    leader = Node.spawn(node.node, load_workload.crowd, args=[self(), count])
    _, started, seconds_up = receive(("crowd up", ANY, ANY), timeout=timeout)
    rss_up = proc_status_kb(node.os_pid, "VmRSS")
    threads = thread_count(node.os_pid)
    cpu_before = cpu_seconds(node.os_pid)
    time.sleep(idle_seconds)
    return {"leader": leader, "count": started, "seconds_up": seconds_up,
            "rss_before_kb": rss_before, "rss_up_kb": rss_up, "threads": threads,
            "idle_cpu_s": cpu_seconds(node.os_pid) - cpu_before}


class RemoteError(Exception):
    """The remote code raised; the message holds its traceback."""


class Remote:
    """A node in a child process, driven by sending it Python code (see remote_control.py).

    ``prefix`` goes before the Python command (``["ip", "netns", "exec", "ns1"]``).
    Calling the object runs code there and returns its value: ``remote("Node.self()")``.
    """

    def __init__(self, *, prefix: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None, timeout: float = 15.0) -> None:
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
        child_env["PYTHONUNBUFFERED"] = "1"
        if env:
            child_env.update(env)
        self.log_path = log_path
        stderr: Any = subprocess.DEVNULL
        if log_path is not None:
            stderr = open(log_path, "ab")  # closed in close()
        self._stderr = stderr
        self.process = subprocess.Popen(
            [*(prefix or []), sys.executable, str(DRIVER)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=stderr, env=child_env, cwd=str(ROOT))
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"remote reader {self.process.pid}")
        self._reader.start()
        try:
            ready = self._next_answer(timeout)
        except BaseException:
            self.close()
            raise
        self.driver_pid: int = ready["pid"]  # differs from process.pid under `ip netns exec`

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._answers.put(json.loads(line))
            except ValueError:
                continue
        self._answers.put(None)

    def _next_answer(self, timeout: float) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the remote node did not answer within {timeout} s; "
                               f"its log says:\n{self.log()}") from None
        if answer is None:
            self._answers.put(None)
            raise RemoteError(f"the remote node exited (status {self.process.poll()}); "
                              f"its log says:\n{self.log()}")
        return answer

    def __call__(self, code: str, timeout: float = 10.0) -> Any:
        """Run ``code`` on the remote node; return the value of its last expression."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps({"code": code}) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RemoteError(f"the remote node is gone; its log says:\n{self.log()}") from None
        answer = self._next_answer(timeout)
        if not answer["ok"]:
            raise RemoteError(answer["traceback"])
        return answer["data"] if "data" in answer else answer["value"]

    def log(self) -> str:
        if self.log_path is None:
            return "(no log)"
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node's own OS process (not a wrapper like ``ip netns exec``)."""
        try:
            os.kill(self.driver_pid, sig)
        except ProcessLookupError:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Stop the node: close its stdin (it stops by itself), then SIGKILL if needed."""
        if self.process.poll() is None:
            try:
                if self.process.stdin is not None:
                    self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if hasattr(self, "driver_pid") and not os_process_gone(self.driver_pid):
            self.kill()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- two hosts on one machine -------------------------------------------------------------

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are a Linux feature"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (install the iproute2 package)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs as root)"
    probe = f"nlr-probe-{secrets.token_hex(3)}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class TwoHosts:
    """Two network namespaces joined by a veth pair: host A is 10.77.0.1, B 10.77.0.2.

    Each has its own loopback (so its own port mapper on 127.0.0.1) and its own view of
    the network; ``cut()`` brings the cable down, ``heal()`` back up. Addresses exist only
    inside these namespaces, which are deleted (with every process still in them) on exit.
    """

    A_IP = "10.77.0.1"
    B_IP = "10.77.0.2"

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.a = f"nlr-a-{tag}"
        self.b = f"nlr-b-{tag}"
        self.veth_a = f"nlra{tag}"  # interface names: 15 characters at most
        self.veth_b = f"nlrb{tag}"

    def __enter__(self) -> TwoHosts:
        try:
            _ip("netns", "add", self.a)
            _ip("netns", "add", self.b)
            _ip("link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
            _ip("link", "set", self.veth_a, "netns", self.a)
            _ip("link", "set", self.veth_b, "netns", self.b)
            for ns, dev, ip in ((self.a, self.veth_a, self.A_IP), (self.b, self.veth_b, self.B_IP)):
                _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def cut(self) -> None:
        """Bring the cable down: packets between the hosts are lost, nobody is told."""
        _ip("-n", self.a, "link", "set", self.veth_a, "down")

    def heal(self) -> None:
        _ip("-n", self.a, "link", "set", self.veth_a, "up")

    def pids(self, ns: str) -> list[int]:
        result = _ip("netns", "pids", ns, check=False)
        return [int(word) for word in result.stdout.split() if word.isdigit()]

    def __exit__(self, *exc: object) -> None:
        # Every process still in a namespace was started by this test (its nodes, and the
        # port mapper each first node started): end them by pid, then remove the hosts.
        for ns in (self.a, self.b):
            for pid in self.pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in (self.a, self.b):
            wait_until(lambda ns=ns: not [p for p in self.pids(ns) if not os_process_gone(p)],
                       5.0)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.veth_a, check=False)  # only if it never moved into A


# --- a raw, hand-made peer for hostile input ----------------------------------------------

class Canary:
    """A message that leaves a file behind if anyone ever unpickles it.

    Put in a frame that must be refused (a forged MAC, a replay, a wrong cookie): if the
    file appears, the node decoded a payload it had not authenticated.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


class RawPeer:
    """A TCP connection to a node that completed the handshake by hand (knowing the
    cookie), and can then send any bytes: valid frames, forged ones, replays."""

    def __init__(self, port: int, cookie: str, my_name: str, node: str,
                 timeout: float = 3.0) -> None:
        import socket

        from nodelab.dist import erlang_handshake, frames, shipment

        self.frames = frames
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            result = erlang_handshake.initiate(self.sock, cookie, my_name, node, 1,
                                               python_tag=shipment.PYTHON_TAG)
        except erlang_handshake.HandshakeError as error:
            self.sock.close()
            raise ConnectionRefusedError(f"{node} refused the handshake: {error}") from None
        if not result.nodelab:
            self.sock.close()
            raise ConnectionRefusedError(f"{node} is not a nodelab node")
        self.send_state = frames.mac_state(result.send_key)
        self.seq = 0

    def frame(self, kind: int, body: bytes, *, seq: int | None = None,
              state: Any = None) -> bytes:
        """A frame as the next one (or ``seq``), MACed with our key (or ``state``)."""
        return self.frames.encode(state or self.send_state, self.seq if seq is None else seq,
                                  kind, body)

    def send_valid(self, kind: int, body: bytes) -> bytes:
        data = self.frame(kind, body)
        self.seq += 1
        self.sock.sendall(data)
        return data

    def closes_soon(self, timeout: float = 3.0) -> bool:
        return closes_soon(self.sock, timeout)

    def close(self) -> None:
        self.sock.close()


def closes_soon(sock: Any, timeout: float = 3.0) -> bool:
    """Half-close our side, then True once the node closes its side within ``timeout``
    (whatever it sends first is read and dropped)."""
    import socket

    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (TimeoutError, OSError):
            return False
    return False


def send_named_body(name: str, message: Any) -> bytes:
    """The body of a SEND_NAMED frame: ``len u8 | name | pickled message``."""
    import pickle

    raw = name.encode()
    return bytes((len(raw),)) + raw + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
