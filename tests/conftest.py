"""Suite-wide set-up: keep the tests out of the user's home, and prove nothing leaks.

At import (before any plugin starts a node) every place nodelab, Jupyter and IPython write
to is pointed at a fresh temporary directory, and EPMD (``ERL_EPMD_PORT``) at a free port, so a
test run never touches the user's cookie, kernels, running nodes or epmd.

Every process the suite starts inherits ``NODELAB_TEST_RUN=<id>``. When the session ends,
the autouse fixture below waits a few seconds for those processes to end, then kills what
is left and fails the run, naming each leftover: a test that starts a node, a kernel or a
browser must also stop it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RUN_ID = secrets.token_hex(8)
SANDBOX = Path(tempfile.mkdtemp(prefix=f"nodelab-tests-{RUN_ID}-"))
atexit.register(shutil.rmtree, SANDBOX, ignore_errors=True)

# How long processes get to finish by themselves after the last test.
GRACE = 5.0
# A process that carries this run's tag but is no longer our descendant (daemons detach)
# counts as a leak when its command line says what it is. epmd, which any real `erl`
# leaves running by design, is deliberately not among them.
LEAK_MARKERS = ("nodelab", "ipykernel", "jupyter", "beam.smp", "chromium", "chrome")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _isolate_environment() -> None:
    for variable, sub in [("JUPYTER_CONFIG_DIR", "jupyter-config"),
                          ("JUPYTER_DATA_DIR", "jupyter-data"),
                          ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"),
                          ("IPYTHONDIR", "ipython"),
                          ("NODELAB_HOME", "nodelab-home")]:
        (SANDBOX / sub).mkdir(mode=0o700)
        os.environ[variable] = str(SANDBOX / sub)
    os.environ["NODELAB_TEST_RUN"] = RUN_ID
    # The EPMD port of every node of the run, nodelab's and the BEAM's: a free one, so the
    # run never meets a real epmd on 4369 nor another run's nodes.
    os.environ["ERL_EPMD_PORT"] = str(_free_port())
    os.environ.pop("NODELAB_PORTMAPPER_PORT", None)  # no longer read (it would be refused)
    # nodelab's EPMD outlives its last node by this long; short, so the leak check
    # below does not mistake a lingering daemon for a leak.
    os.environ["NODELAB_PORTMAPPER_LINGER"] = "1"
    # Use the platformdirs layout now (jupyter_core warns that it becomes the default).
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"


_isolate_environment()


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str
    why: str


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:  # the process ended meanwhile, or is not ours to read
        return b""


def find_leftovers() -> list[Leftover]:
    """Processes of this test run that are still alive (zombies excluded), never ourselves."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat[stat.rfind(b")") + 2:].split()
            if len(fields) >= 2 and fields[0] != b"Z":
                parents[int(entry)] = int(fields[1])

    def descends_from_me(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            seen.add(pid)
            pid = parents[pid]
            if pid == me:
                return True
        return False

    tag = f"NODELAB_TEST_RUN={RUN_ID}".encode()
    leftovers = []
    for pid in parents:
        if pid == me:
            continue
        command = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
        if not command.strip():
            continue  # a kernel thread, or gone
        if descends_from_me(pid):
            leftovers.append(Leftover(pid, command.strip(), "a child of the pytest process"))
        elif (any(marker in command for marker in LEAK_MARKERS)
              and tag in _read(f"/proc/{pid}/environ").split(b"\0")):
            leftovers.append(Leftover(pid, command.strip(), "started by this test run"))
    return [leftover for leftover in leftovers if not _expected(leftover)]


def _expected(leftover: Leftover) -> bool:
    # `pytest --sname NAME` makes the run itself a node until pytest_unconfigure, which
    # comes after this check: its port mapper is rightly still up.
    node = sys.modules.get("nodelab.node")
    return ("nodelab.dist.portmapper" in leftover.command and node is not None
            and node.Node.alive())


def listening_ports_of_this_process() -> list[int]:
    """TCP ports on which the pytest process itself still listens (a node of a test that
    was never stopped, a leaked server socket). Other processes' ports end with them."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def _stop_epmds_of_this_run() -> None:
    """Stop a daemonized epmd that an ``erl`` of this run started on the run's ERL_EPMD_PORT:
    not counted as a leak (every erl starts one, by design), but it would run forever."""
    tag = f"NODELAB_TEST_RUN={RUN_ID}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _read(f"/proc/{entry}/comm").strip() != b"epmd":
            continue
        stat = _read(f"/proc/{entry}/stat")
        fields = stat[stat.rfind(b")") + 2:].split()
        ours = len(fields) >= 2 and int(fields[1]) == os.getpid()  # a test stops its own
        if not ours and tag in _read(f"/proc/{entry}/environ").split(b"\0"):
            try:
                os.kill(int(entry), signal.SIGTERM)
            except OSError:
                pass


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    yield
    node = sys.modules.get("nodelab.node")
    if not (node is not None and node.Node.alive()):  # pytest --sname: the run is a node
        _stop_epmds_of_this_run()
        ports = listening_ports_of_this_process()
        if ports:
            pytest.fail(f"the test process still listens on port(s) {ports} after the last "
                        "test: a test started a node or a server and did not stop it",
                        pytrace=False)
    deadline = time.monotonic() + GRACE
    while (leftovers := find_leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not leftovers:
        return
    for leftover in leftovers:
        try:
            os.kill(leftover.pid, signal.SIGKILL)
        except OSError:
            pass
    listing = "\n".join(f"  pid {item.pid} ({item.why}): {item.command[:200]}"
                        for item in leftovers)
    pytest.fail(f"{len(leftovers)} process(es) were still running {GRACE:.0f} s after the last "
                f"test, and have now been killed:\n{listing}\nEvery test that starts a node, "
                "kernel or browser must stop it (a fixture with a finalizer does that), and a "
                "node started by a test should exit with its parent (--exit-with-parent).",
                pytrace=False)


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    return _free_port()


@pytest.fixture
def listening_ports() -> Callable[[], list[int]]:
    """The leak check's search for listening ports, for tests of the test machinery."""
    return listening_ports_of_this_process


@pytest.fixture
def leftover_processes() -> Callable[[], list[Leftover]]:
    """The leak check's own search, for tests of the test machinery."""
    return find_leftovers


@pytest.fixture
def trapping() -> Iterator[None]:
    """The test's shell process traps exits; its mailbox is emptied afterwards."""
    from nodelab import Process, receive

    old = Process.flag("trap_exit", True)
    yield
    Process.flag("trap_exit", old)
    while receive(timeout=0, after=None) is not None:
        pass
