"""The node's process table: one record per process, and which process the calling thread is.

Private to the runtime. Other layers ask the functions of :mod:`nodelab.runtime.processes`
and never hold a :class:`LocalProcess`.

Who writes what (the rest of the runtime keeps to it):

* ``processes``, ``registry`` and ``node_watchers`` change under ``runtime.lock``.
* A record's ``links``/``watchers``/``watching`` are single set/dict operations (atomic under
  the GIL), done by the owner and by the threads that deliver signals to it; a process that
  ends copies and clears them under ``runtime.lock``.
* ``pending_exit``, ``mask``, ``ident``, ``exiting`` and ``injected`` are the kill machinery's
  (:mod:`nodelab.runtime._kill`); they change under the record's ``kill_lock``, except
  ``mask``, which only its owner's thread changes.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable
from typing import Any

from nodelab.errors import ProcessExit
from nodelab.runtime.mailbox import Mailbox, Signal
from nodelab.runtime.pids import Pid, Ref
from nodelab.runtime.pids import _local as _this_node  # this node's name and creation


class LocalProcess:
    """The runtime's record of one process of this node."""

    __slots__ = (
        "pid", "mailbox", "links", "watchers", "watching", "trap_exit", "group_leader",
        "name", "status", "is_shell", "reason", "dictionary",
        # the kill machinery (see _kill.py)
        "pending_exit", "mask", "ident", "exiting", "injected", "kill_lock", "reaping",
    )

    def __init__(self, pid: Pid, group_leader: Pid | None, is_shell: bool = False) -> None:
        self.pid = pid
        # A plain function, not a method of this record: a record that its own mailbox
        # referred to would be a reference cycle, left for the cyclic garbage collector
        # (ten objects per process) instead of freed when the process ends.
        self.mailbox = Mailbox(exit_on_signal)
        self.links: set[Pid] = set()
        self.watchers: dict[Ref, Pid] = {}  # monitors others hold on this process
        self.watching: dict[Ref, Any] = {}  # monitors it holds: ref -> pid or (name, node)
        self.trap_exit = False
        self.group_leader = group_leader
        self.name: str | None = None
        self.status = "running"  # -> "exiting" -> "exited"
        self.is_shell = is_shell
        self.reason: Any = None
        self.dictionary: dict[Any, Any] = {}
        self.pending_exit: tuple[Any, Any] | None = None  # (reason, sender) of a kill
        self.mask = 0  # > 0 while the process runs nodelab code that must not be interrupted
        self.ident: int | None = None  # its thread, as the process itself registered it
        self.exiting = False  # its exit path has begun: nothing interrupts it any more
        self.injected = False  # an asynchronous exception may be pending in its thread
        self.kill_lock = threading.Lock()
        self.reaping = 0  # the reaper's chain that watches it (0: none)

    def __repr__(self) -> str:
        return f"<process {self.pid!r} {self.status}>"


def exit_on_signal(signal: Signal) -> None:
    """What a process does with an exit signal found in its mailbox: exit (see ``_kill.py``;
    once its exit path has begun, ``_kill.begin_exit`` makes it :func:`ignore_signal`)."""
    raise ProcessExit(signal.reason, signal.origin)


def ignore_signal(signal: Signal) -> None:
    """An exiting process is on its way out already (a last print may wait for its reply)."""


def _write_stderr(text: str) -> None:
    stream = sys.stderr or sys.__stderr__
    try:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed stream must not take a process down with it
        pass


class Runtime:
    """Everything one node knows about its own processes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.processes: dict[int, LocalProcess] = {}
        self.registry: dict[str, LocalProcess] = {}
        self.serials = itertools.count(100)
        self.current = threading.local()
        self.default_group_leader: Pid | None = None
        self.node_watchers: dict[Ref, tuple[Pid, str]] = {}  # Node.monitor: ref -> (pid, node)
        self.error_sink: Callable[[str], None] = _write_stderr
        # Called as tracer(sender, destination, message) for every send while a trace runs
        # (the message sequence pictures); None otherwise, which costs one check per send.
        self.tracer: Callable[[Pid | None, Any, Any], None] | None = None

    def new_pid(self) -> Pid:
        return Pid.of_this_node(next(self.serials))


runtime = Runtime()


def current_or_none() -> LocalProcess | None:
    """The calling thread's process record, if it has one (even an exited shell's)."""
    return getattr(runtime.current, "proc", None)


def current() -> LocalProcess:
    """The calling thread's process; a plain thread is adopted as a shell process."""
    proc = getattr(runtime.current, "proc", None)
    if proc is not None and proc.status == "running":
        return proc
    gl = proc.group_leader if proc is not None else runtime.default_group_leader
    return _adopt_shell(gl)


def _adopt_shell(group_leader: Pid | None) -> LocalProcess:
    proc = LocalProcess(runtime.new_pid(), group_leader, is_shell=True)
    proc.ident = threading.get_ident()
    with runtime.lock:
        runtime.processes[proc.pid.serial] = proc
    runtime.current.proc = proc
    return proc


def lookup(pid: Pid) -> LocalProcess | None:
    """The live local process with this PID, or None."""
    proc = runtime.processes.get(pid.serial)
    # ``proc.pid == pid``, spelled out: the record's PID is this node's, so the two are
    # equal when ``pid`` has its generation and names this node (its fields None, or this
    # node's name and creation). Every link, monitor, reply and exit signal looks up here.
    if (proc is not None and proc.pid.generation == pid.generation
            and (pid._node is None or pid._node == _this_node["node"])
            and (pid._creation is None or pid._creation == _this_node["creation"])):
        return proc
    return None


def lookup_serial(serial: int, creation: int) -> LocalProcess | None:
    """The local process with this serial, if this node's creation is ``creation``."""
    # Every record's PID is this node's (``Pid.of_this_node``), so its creation is the
    # node's: compare with that directly, without the PID's property (once per message a
    # peer sends).
    if creation != _this_node["creation"]:
        return None
    return runtime.processes.get(serial)


def named(name: str) -> LocalProcess | None:
    """The process registered as ``name``, or None."""
    return runtime.registry.get(name)
