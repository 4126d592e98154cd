"""Start other nodes as child OS processes, like OTP's ``peer`` module.

Tests (and notebooks, and benchmarks) need real peer nodes: ``peer.start("kate")`` runs
``nodelab node --sname kate`` as a child process, waits until it answers a ping, and
returns a :class:`Peer`. The child exits by itself if this process dies (even by
SIGKILL), so a crashed test run leaves nothing behind::

    with peer.start("kate", cookie="secret_token", app="chat") as kate:
        Node.spawn_link(kate.node, lambda: print("hi"))
        kate.wait_for_output("hi")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nodelab.dist.names import parse_node_name
from nodelab.errors import NodelabError


class PeerStartError(NodelabError):
    """A peer node did not come up; the message includes what it printed."""


class Peer:
    """A node running in a child process; its output is collected in :attr:`output`."""

    def __init__(self, node: str, process: subprocess.Popen, log_path: Path) -> None:
        self.node = node
        self.process = process
        self.log_path = log_path
        self._lock = threading.Lock()

    @property
    def os_pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        """Everything the node printed so far (stdout and stderr, interleaved)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` appears in the node's output; return the output."""
        deadline = time.monotonic() + timeout
        while True:
            output = self.output
            if text in output:
                return output
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.node} did not print {text!r} within {timeout} s; it printed:\n{output}")
            time.sleep(0.01)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node's OS process (SIGKILL by default: a crash)."""
        self.process.send_signal(sig)  # Popen's own: never a pid it has already reaped

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the node (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        with self._lock:
            if self.process.poll() is None:
                try:
                    self.process.send_signal(signal.SIGCONT)  # a SIGSTOPped node must hear it
                    self.process.terminate()
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Peer {self.node} os_pid={self.process.pid}>"


def start(name: str, *, cookie: str | None = None, app: str | None = None,
          eval: str | None = None, env: dict[str, str] | None = None,
          tick_time: float | None = None, timeout: float = 15.0,
          log_dir: str | os.PathLike[str] | None = None) -> Peer:
    """Start node ``name`` in a child process and wait until it answers a ping.

    ``eval`` is Python code run in the node's namespace at start (define ``Kate`` there);
    ``app`` an application to start (``--app chat``). The caller must be a named node
    (``Node.start``) only if it wants to talk to the peer; the readiness check itself uses
    the port mapper, so it works either way.
    """
    from nodelab.dist import portmapper

    node_name = parse_node_name(name)
    full_name = str(node_name)
    flag = "--name" if node_name.long else "--sname"
    command = [sys.executable, "-m", "nodelab", "node", flag, full_name, "--exit-with-parent"]
    if cookie is not None:
        command += ["--cookie", cookie]
    if app is not None:
        command += ["--app", app]
    if eval is not None:
        command += ["--eval", eval]
    if tick_time is not None:
        command += ["--tick-time", str(tick_time)]
    directory = Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"nodelab-peer-{node_name.name}-{os.getpid()}-{time.monotonic_ns()}.log"
    child_env = dict(os.environ)
    child_env["PYTHONUNBUFFERED"] = "1"
    if env:
        child_env.update(env)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, env=child_env)
    peer = Peer(full_name, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerStartError(f"{full_name} exited with status {process.returncode} before "
                                 f"it was up; it printed:\n{peer.output}")
        if "is up" in peer.output and portmapper.lookup(node_name.name) is not None:
            return peer
        time.sleep(0.02)
    peer.stop()
    raise PeerStartError(f"{full_name} was not up within {timeout} s; it printed:\n{peer.output}")
