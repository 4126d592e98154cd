"""Processes: spawn, send, receive, links, monitors, exit signals and registered names.

A nodelab process is a thread with a mailbox, a set of links, the monitors that watch it,
a group leader (where its ``print`` goes) and a flag that says whether it traps exits.
The rules are the BEAM's:

* When a process ends, every linked process gets an *exit signal* with the reason. A
  ``"normal"`` reason is ignored; any other one ends the linked process too, unless it
  called ``Process.flag("trap_exit", True)`` — then it receives ``("EXIT", pid, reason)``.
* A monitor is one-way: the watcher receives ``("DOWN", ref, "process", pid, reason)``.
* An uncaught exception ends a process with a :class:`Crash` reason that carries the
  exception, its traceback and the node, and is logged on the node where it happened.
* A thread that is not a nodelab process (a notebook's cell, a script's main thread)
  becomes a *shell process* the first time it calls :func:`self` — like iex's shell. When
  an exit signal kills a shell process, the shell prints
  ``** (EXIT from #PID<...>) shell process exited with reason: ...`` and the next call to
  :func:`self` on that thread starts a fresh shell process, with a new PID and an empty
  mailbox, exactly as iex does.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any

from nodelab.errors import NodelabError, ProcessExit, format_exit
from nodelab.runtime import pids
from nodelab.runtime.mailbox import NO_MATCH, Mailbox, Signal
from nodelab.runtime.pids import Pid, Ref, make_ref

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Exit reasons with a meaning of their own.
NORMAL = "normal"
KILL = "kill"
KILLED = "killed"
NOPROC = "noproc"
NOCONNECTION = "noconnection"


@dataclass(frozen=True)
class Crash:
    """The exit reason of a process that raised an exception it did not catch.

    ``kind`` is the exception's class name, ``message`` its text, ``traceback`` the
    formatted traceback *as seen on the node where it ran*, ``node`` that node's name.
    """

    kind: str
    message: str
    traceback: str
    node: str

    @classmethod
    def from_exception(cls, error: BaseException) -> Crash:
        # The first frames are nodelab's own (the process's start); the learner's code
        # starts below them, so the traceback starts there too.
        tb = error.__traceback__
        while (tb is not None and tb.tb_next is not None
               and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)):
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(error), error, tb))
        return cls(type(error).__name__, str(error), text, pids.local_node())

    def explain(self) -> str:
        return f"an exception was raised on {self.node}:\n    ** ({self.kind}) {self.message}"

    def __repr__(self) -> str:
        return f"Crash({self.kind}: {self.message!s}, node={self.node!r})"


class LocalProcess:
    """The runtime's record of one process of this node."""

    __slots__ = (
        "pid", "mailbox", "links", "watchers", "watching", "trap_exit", "group_leader",
        "name", "thread", "status", "is_shell", "reason", "lock", "dictionary",
    )

    def __init__(self, pid: Pid, group_leader: Pid | None, is_shell: bool = False) -> None:
        self.pid = pid
        self.mailbox = Mailbox(self._on_signal)
        self.links: set[Pid] = set()
        self.watchers: dict[Ref, Pid] = {}  # monitors others hold on this process
        self.watching: dict[Ref, Any] = {}  # monitors this process holds: ref -> pid or node
        self.trap_exit = False
        self.group_leader = group_leader
        self.name: str | None = None
        self.thread: threading.Thread | None = None
        self.status = "running"
        self.is_shell = is_shell
        self.reason: Any = None
        self.lock = threading.Lock()
        self.dictionary: dict[Any, Any] = {}

    def _on_signal(self, signal: Signal) -> None:
        raise ProcessExit(signal.reason, signal.origin)

    def __repr__(self) -> str:
        return f"<process {self.pid!r} {self.status}>"


class Runtime:
    """Everything one node knows about its own processes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.processes: dict[int, LocalProcess] = {}
        self.registry: dict[str, LocalProcess] = {}
        self.serials = itertools.count(100)
        self.current = threading.local()
        self.distribution: Any = None  # a distribution.Distribution while the node is alive
        self.default_group_leader: Pid | None = None
        self.node_watchers: dict[Ref, tuple[Pid, str]] = {}  # Node.monitor: ref -> (pid, node)
        self.error_sink: Callable[[str], None] = _write_stderr
        # Called as tracer(sender, destination, message) for every send while a trace runs
        # (the message sequence pictures); None otherwise, which costs one check per send.
        self.tracer: Callable[[Pid | None, Any, Any], None] | None = None

    def new_pid(self) -> Pid:
        return Pid.of_this_node(next(self.serials))


def _write_stderr(text: str) -> None:
    stream = sys.stderr or sys.__stderr__
    try:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed stream must not take a process down with it
        pass


runtime = Runtime()


# --- who am I -------------------------------------------------------------------------

def current() -> LocalProcess:
    """The calling thread's process; a plain thread is adopted as a shell process."""
    proc = getattr(runtime.current, "proc", None)
    if proc is not None and proc.status == "running":
        return proc
    gl = proc.group_leader if proc is not None else runtime.default_group_leader
    return _adopt_shell(gl)


def current_or_none() -> LocalProcess | None:
    return getattr(runtime.current, "proc", None)


def _adopt_shell(group_leader: Pid | None) -> LocalProcess:
    proc = LocalProcess(runtime.new_pid(), group_leader, is_shell=True)
    proc.thread = threading.current_thread()
    with runtime.lock:
        runtime.processes[proc.pid.serial] = proc
    runtime.current.proc = proc
    return proc


def self() -> Pid:
    """The PID of the calling process, like Elixir's ``self()``."""
    return current().pid


def lookup(pid: Pid) -> LocalProcess | None:
    """The live local process with this PID, or None."""
    proc = runtime.processes.get(pid.serial)
    if proc is not None and proc.pid.creation == pid.creation:
        return proc
    return None


# --- spawn -----------------------------------------------------------------------------

def spawn(fn: Callable[..., Any], *args: Any) -> Pid:
    """Start a process on this node that runs ``fn(*args)``; return its PID at once."""
    return start_process(fn, args, group_leader=current().group_leader)


def spawn_link(fn: Callable[..., Any], *args: Any) -> Pid:
    """Like :func:`spawn`, and link the new process to the caller in the same step."""
    caller = current()
    return start_process(fn, args, group_leader=caller.group_leader, link_to=caller.pid)


def spawn_monitor(fn: Callable[..., Any], *args: Any) -> tuple[Pid, Ref]:
    """Like :func:`spawn`, and monitor the new process; return ``(pid, ref)``."""
    caller = current()
    ref = make_ref()
    pid = start_process(fn, args, group_leader=caller.group_leader, monitored_by=(caller.pid, ref))
    return pid, ref


def start_process(fn: Callable[..., Any], args: Iterable[Any] = (), *,
                  group_leader: Pid | None, link_to: Pid | None = None,
                  monitored_by: tuple[Pid, Ref] | None = None,
                  name: str | None = None) -> Pid:
    """The one place where processes are born (local spawns and spawns from other nodes)."""
    proc = LocalProcess(runtime.new_pid(), group_leader)
    if link_to is not None:
        proc.links.add(link_to)
    if monitored_by is not None:
        watcher, ref = monitored_by
        proc.watchers[ref] = watcher
    with runtime.lock:
        runtime.processes[proc.pid.serial] = proc
        if name is not None:
            if name in runtime.registry:
                del runtime.processes[proc.pid.serial]
                raise NodelabError(f"the name {name!r} is already registered")
            runtime.registry[name] = proc
            proc.name = name
    if link_to is not None:
        _add_link_on_other_side(link_to, proc.pid)
    if monitored_by is not None:
        watcher, ref = monitored_by
        owner = lookup(watcher)
        if owner is not None:
            owner.watching[ref] = proc.pid
    _workers.run(proc, fn, tuple(args))
    return proc.pid


def _add_link_on_other_side(other: Pid, pid: Pid) -> None:
    if other.is_local:
        target = lookup(other)
        if target is not None:
            target.links.add(pid)
        else:
            deliver_exit(lookup(pid), other, NOPROC, linked=True)
    # a remote caller records the link itself when the spawn reply reaches it


class _Workers:
    """Threads that run processes, kept for the next process when one ends.

    Starting a thread costs a round trip between two threads (``Thread.start`` waits for
    the new thread to run); handing a process to an idle worker costs one queue put. So a
    remote spawn or a supervised task does not pay for a new thread every time.
    """

    MAX_IDLE = 64
    IDLE_EXIT = 30.0

    def __init__(self) -> None:
        self.idle: list[SimpleQueue] = []
        self.lock = threading.Lock()

    def run(self, proc: LocalProcess, fn: Callable[..., Any], args: tuple) -> None:
        with self.lock:
            inbox = self.idle.pop() if self.idle else None
        if inbox is None:
            inbox = SimpleQueue()
            threading.Thread(target=self._work, args=(inbox,), daemon=True,
                             name="nodelab process").start()
        inbox.put((proc, fn, args))

    def _work(self, inbox: SimpleQueue) -> None:
        while True:
            try:
                proc, fn, args = inbox.get(timeout=self.IDLE_EXIT)
            except Empty:
                with self.lock:
                    if inbox in self.idle:  # nobody picked this worker meanwhile: retire
                        self.idle.remove(inbox)
                        return
                continue  # a process is on its way
            proc.thread = threading.current_thread()
            _run(proc, fn, args)
            runtime.current.proc = None
            with self.lock:
                if len(self.idle) >= self.MAX_IDLE:
                    return
                self.idle.append(inbox)


_workers = _Workers()


def _run(proc: LocalProcess, fn: Callable[..., Any], args: tuple) -> None:
    runtime.current.proc = proc
    reason: Any = NORMAL
    try:
        try:
            if proc.reason is not None:  # killed before it started running
                raise ProcessExit(proc.reason)
            fn(*args)
        except ProcessExit as stop:
            reason = stop.reason if type(stop) is not _AsyncKill else proc.reason
        except BaseException as error:  # noqa: BLE001 - any escape is the process's crash
            reason = Crash.from_exception(error)
            report_crash(proc, reason)
        finally:
            # Still "running": sending the last unfinished line to a remote group leader
            # waits for its reply as this process, not as a stand-in shell process.
            _flush_output(proc)
            with proc.lock:
                proc.status = "exiting"
    except ProcessExit as late:  # an exit signal that landed while the process was finishing
        proc.status = "exiting"
        if reason == NORMAL:
            reason = late.reason if type(late) is not _AsyncKill else proc.reason
    _cancel_pending_kill(proc)
    terminate(proc, reason)


def _flush_output(proc: LocalProcess) -> None:
    flush = getattr(sys.stdout, "flush_process", None)
    if flush is not None:
        try:
            flush(proc)
        except Exception:  # noqa: BLE001
            pass


def report_crash(proc: LocalProcess, crash: Crash) -> None:
    """Log a crash on this node, and show it at the process's group leader when that is
    somewhere else (the BEAM shows a remote crash on the node that spawned it, too)."""
    text = (
        f"[error] Process {proc.pid!r} on {crash.node} raised an exception\n"
        f"** ({crash.kind}) {crash.message}\n{crash.traceback}"
    )
    runtime.error_sink(text)
    gl = proc.group_leader
    if gl is not None and gl != runtime.default_group_leader:
        io_write_async(gl, text if text.endswith("\n") else text + "\n", "stderr")


def terminate(proc: LocalProcess, reason: Any) -> None:
    """Take a finished process out of the node and tell its links and monitors."""
    with runtime.lock:
        proc.status = "exited"
        proc.reason = reason
        runtime.processes.pop(proc.pid.serial, None)
        if proc.name is not None and runtime.registry.get(proc.name) is proc:
            del runtime.registry[proc.name]
        # Copied, not iterated: other threads (a nodedown walk, a remote DOWN) change these
        # without the runtime lock, and iterating a dict that changes raises; a copy is one
        # C call. What they add after the clear is gone with the process.
        links, watchers, watching = proc.links.copy(), proc.watchers.copy(), proc.watching.copy()
        proc.links.clear()
        proc.watchers.clear()
        proc.watching.clear()
        for ref in [r for r, (p, _) in runtime.node_watchers.items() if p == proc.pid]:
            del runtime.node_watchers[ref]
    for other in links:
        signal_exit(proc.pid, other, reason, linked=True)
    for ref, watcher in watchers.items():
        notify_down(watcher, ref, proc.pid, reason)
    for ref, target in watching.items():
        if isinstance(target, Pid) and not target.is_local and runtime.distribution:
            runtime.distribution.control(target.node, ("demonitor", proc.pid, target, ref),
                                         connect=False)
        elif isinstance(target, Pid):
            watched = lookup(target)
            if watched is not None:
                watched.watchers.pop(ref, None)


def notify_down(watcher: Pid, ref: Ref, target: Any, reason: Any) -> None:
    """Tell ``watcher`` that the process it monitors with ``ref`` has ended."""
    if watcher.is_local:
        owner = lookup(watcher)
        if owner is not None and owner.watching.pop(ref, None) is not None:
            owner.mailbox.put(("DOWN", ref, "process", target, reason))
    elif runtime.distribution is not None:
        runtime.distribution.control(watcher.node, ("down", target, watcher, ref, reason),
                                     connect=False)


# --- exit signals ------------------------------------------------------------------------

def signal_exit(sender: Pid, target: Pid, reason: Any, *, linked: bool) -> None:
    """Send an exit signal from ``sender`` to ``target``, wherever it lives."""
    if target.is_local:
        deliver_exit(lookup(target), sender, reason, linked=linked)
    elif runtime.distribution is not None:
        kind = "exit" if linked else "exit2"
        runtime.distribution.control(target.node, (kind, sender, target, reason),
                                     connect=not linked)


def deliver_exit(proc: LocalProcess | None, sender: Pid, reason: Any, *, linked: bool) -> None:
    """Apply an exit signal to a local process, by the BEAM's rules."""
    if proc is None or proc.status != "running":
        return
    if linked:
        if sender not in proc.links:
            return  # unlinked meanwhile: the signal no longer applies
        proc.links.discard(sender)
    if reason == KILL and not linked:
        kill(proc, KILLED, sender)
    elif proc.trap_exit:
        proc.mailbox.put(("EXIT", sender, reason))
    elif reason == NORMAL:
        if sender == proc.pid:
            kill(proc, NORMAL, sender)
    else:
        kill(proc, reason, sender)


def kill(proc: LocalProcess, reason: Any, sender: Pid | None = None) -> None:
    """End ``proc`` with ``reason``: wake it if it waits in receive, interrupt it if it runs."""
    if proc.is_shell:
        _shell_dies(proc, reason)
        return
    proc.reason = reason
    proc.mailbox.put(Signal(reason, sender))
    thread = proc.thread
    if thread is threading.current_thread():
        raise ProcessExit(reason, sender)
    with proc.lock:
        if (proc.status == "running" and not proc.mailbox.waiting and thread is not None
                and thread.ident is not None):
            # A process busy in Python code learns of its death at its next bytecode, like
            # a BEAM process at its next reduction. (One blocked in a C call, such as
            # time.sleep, notices when the call returns; Process.sleep wakes at once.)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread.ident), ctypes.py_object(_AsyncKill))


class _AsyncKill(ProcessExit):
    """Raised asynchronously in a running process; its reason is in ``proc.reason``."""

    def __init__(self, reason: object = None) -> None:
        super().__init__(reason)


def _cancel_pending_kill(proc: LocalProcess) -> None:
    thread = proc.thread
    if thread is not None and thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)


def _shell_dies(proc: LocalProcess, reason: Any) -> None:
    line = f"** (EXIT from {proc.pid!r}) shell process exited with reason: {format_exit(reason)}\n"
    # Wake the shell if it waits in receive now, or as soon as it next does.
    proc.mailbox.put(Signal(reason, proc.pid))
    terminate(proc, reason)
    if proc.group_leader is not None:
        io_write_async(proc.group_leader, line, "stderr")
    else:
        runtime.error_sink(line)


def exit(pid: Pid, reason: Any) -> None:  # the name Elixir and Erlang use
    """Send an exit signal to ``pid``, like Elixir's ``Process.exit/2``.

    ``exit(self(), reason)`` ends the caller at once. ``"kill"`` cannot be trapped.
    """
    me = current()
    if pid == me.pid and not me.trap_exit:
        if me.is_shell:
            _shell_dies(me, reason)
            raise ProcessExit(reason, me.pid)
        raise ProcessExit(KILLED if reason == KILL else reason, me.pid)
    signal_exit(me.pid, pid, reason, linked=False)


# --- links and monitors ------------------------------------------------------------------

def link(pid: Pid) -> bool:
    """Link the caller and ``pid``: when either ends abnormally, the other is told."""
    me = current()
    if pid == me.pid:
        return True
    me.links.add(pid)
    if pid.is_local:
        target = lookup(pid)
        if target is None:
            # Linking to a process that is gone is answered with an exit signal "noproc".
            deliver_exit(me, pid, NOPROC, linked=True)
            return True
        target.links.add(me.pid)
    else:
        dist = _distribution_or_noconnection(me, pid, linked=True)
        if dist is not None and not dist.control(pid.node, ("link", me.pid, pid), connect=True):
            deliver_exit(me, pid, NOCONNECTION, linked=True)
    return True


def _distribution_or_noconnection(me: LocalProcess, pid: Pid, *, linked: bool) -> Any:
    dist = runtime.distribution
    if dist is None:
        deliver_exit(me, pid, NOCONNECTION, linked=linked)
    return dist


def unlink(pid: Pid) -> bool:
    """Remove the link between the caller and ``pid``, if any."""
    me = current()
    me.links.discard(pid)
    if pid.is_local:
        target = lookup(pid)
        if target is not None:
            target.links.discard(me.pid)
    elif runtime.distribution is not None:
        runtime.distribution.control(pid.node, ("unlink", me.pid, pid), connect=False)
    return True


def is_monitoring(ref: Ref) -> bool:
    """Whether the caller's monitor ``ref`` is still in place (no DOWN has come for it)."""
    return ref in current().watching


def forget_monitor(ref: Ref) -> None:
    """Drop the caller's monitor ``ref`` here, and its DOWN if queued, without telling the
    other side (whose end of it is already gone: a task that finished and replied)."""
    me = current()
    me.watching.pop(ref, None)
    me.mailbox.take(lambda m: m if (type(m) is tuple and len(m) == 5 and m[0] == "DOWN"
                                    and m[1] == ref) else NO_MATCH, 0)


def forget_watcher(ref: Ref) -> None:
    """Drop the monitor ``ref`` that another process holds on the caller, so that no DOWN is
    sent for it (its holder has what it waited for and forgets the monitor itself)."""
    current().watchers.pop(ref, None)


def hand_over_monitor(ref: Ref, owner: Pid, to: Pid, *, link: bool) -> None:
    """Make ``owner``'s monitor ``ref`` of the caller a monitor of ``to`` instead, and link
    ``to`` and ``owner`` when ``link`` — before ``to`` runs any code.

    This is how a task supervisor starts a task for a caller: the caller monitored the
    supervisor for its request; the task's exit then reaches the caller as
    ``("DOWN", ref, "process", to, reason)``, and a lost node still reaches it as
    ``noconnection``, because the caller's end watches this node. The link is what
    ``link(owner)`` from the task would do.
    """
    current().watchers.pop(ref, None)
    task = lookup(to)
    if task is None:
        # Killed a moment ago (by hand): what a monitor of a dead process says.
        send(owner, ("DOWN", ref, "process", to, NOPROC))
        return
    task.watchers[ref] = owner
    if not link:
        return
    task.links.add(owner)
    if owner.is_local:
        holder = lookup(owner)
        if holder is not None:
            holder.links.add(to)
        else:
            deliver_exit(task, owner, NOPROC, linked=True)
    elif runtime.distribution is not None:
        # Sent before the caller's reply, on the same connection: the owner's node records
        # the link before it can see anything from the task.
        runtime.distribution.control(owner.node, ("link", to, owner), connect=False)


def monitor(target: Pid | str | tuple[str, str]) -> Ref:
    """Watch ``target`` (a PID, a registered name, or ``(name, node)``) without a link.

    When it ends, the caller receives ``("DOWN", ref, "process", pid, reason)``; for a
    process that does not exist the reason is ``"noproc"``, and for one on a node that
    cannot be reached, ``"noconnection"``.
    """
    me = current()
    ref = make_ref()
    if isinstance(target, tuple):
        name, node = target
        if node == pids.local_node():
            target = name
        else:
            me.watching[ref] = target
            dist = runtime.distribution
            request = ("monitor", me.pid, target, ref)
            if dist is None or not dist.control(node, request, connect=True):
                me.watching.pop(ref, None)
                me.mailbox.put(("DOWN", ref, "process", target, NOCONNECTION))
            return ref
    if isinstance(target, str):
        proc = runtime.registry.get(target)
        if proc is None:
            me.mailbox.put(("DOWN", ref, "process", (target, pids.local_node()), NOPROC))
            return ref
        target = proc.pid
    if target.is_local:
        watched = lookup(target)
        with runtime.lock:
            if watched is None or watched.status == "exited":
                me.mailbox.put(("DOWN", ref, "process", target, NOPROC))
                return ref
            watched.watchers[ref] = me.pid
            me.watching[ref] = target
        return ref
    me.watching[ref] = target
    dist = runtime.distribution
    request = ("monitor", me.pid, target, ref)
    if dist is None or not dist.control(target.node, request, connect=True):
        me.watching.pop(ref, None)
        me.mailbox.put(("DOWN", ref, "process", target, NOCONNECTION))
    return ref


def demonitor(ref: Ref, *, flush: bool = False) -> bool:
    """Stop the monitor ``ref``; with ``flush=True`` also drop its DOWN message if queued."""
    me = current()
    target = me.watching.pop(ref, None)
    if isinstance(target, Pid) and target.is_local:
        watched = lookup(target)
        if watched is not None:
            watched.watchers.pop(ref, None)
    elif target is not None and runtime.distribution is not None:
        node = target.node if isinstance(target, Pid) else target[1]
        runtime.distribution.control(node, ("demonitor", me.pid, target, ref), connect=False)
    if flush:
        me.mailbox.take(lambda m: m if _is_down_for(m, ref) else NO_MATCH, 0)
    return True


def _is_down_for(message: Any, ref: Ref) -> bool:
    return (type(message) is tuple and len(message) == 5 and message[0] == "DOWN"
            and message[1] == ref)


# --- messages ----------------------------------------------------------------------------

def send(dest: Pid | str | tuple[str, str], message: Any) -> Any:
    """Send ``message`` to ``dest`` and return the message, like Elixir's ``send/2``.

    ``dest`` is a PID, a name registered on this node, or ``(name, node)``. Sending never
    fails because the receiver is gone — the message is simply dropped, as on the BEAM.
    Sending to a name that is not registered here raises, like Elixir's ``ArgumentError``.
    """
    tracer = runtime.tracer  # read once: a recording may end on another thread meanwhile
    if tracer is not None:
        proc = current_or_none()
        tracer(proc.pid if proc is not None else None, dest, message)
    if type(dest) is Pid:
        if dest.is_local:
            proc = runtime.processes.get(dest.serial)
            if proc is not None and proc.pid.creation == dest.creation:
                proc.mailbox.put(message)
        elif runtime.distribution is not None:
            runtime.distribution.send(dest, message)
        return message
    if isinstance(dest, str):
        proc = runtime.registry.get(dest)
        if proc is None:
            raise NodelabError(
                f"no process is registered as {dest!r} on this node: check the name with "
                "whereis(), or send to a PID"
            )
        proc.mailbox.put(message)
        return message
    if isinstance(dest, tuple) and len(dest) == 2:
        name, node = dest
        if node == pids.local_node():
            proc = runtime.registry.get(name)
            if proc is not None:
                proc.mailbox.put(message)
        elif runtime.distribution is not None:
            runtime.distribution.send_named(name, node, message, current().pid)
        return message
    raise TypeError(f"cannot send to {dest!r}: use a PID, a registered name or (name, node)")


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: In a receive pattern, matches any value (Elixir's ``_``).
ANY: Any = _Any()


@dataclass(frozen=True)
class Clause:
    """One clause of a multi-clause :func:`receive`: a pattern and what to do on a match."""

    pattern: Any
    handler: Callable[[Any], Any]


def on(pattern: Any, handler: Callable[[Any], Any]) -> Clause:
    """A receive clause: ``receive(on(("hi", Pid), reply), on("stop", lambda m: "bye"))``."""
    return Clause(pattern, handler)


def matches(pattern: Any, value: Any) -> bool:
    """True when ``value`` fits ``pattern`` (see :func:`receive` for the pattern language)."""
    if pattern is ANY:
        return True
    if isinstance(pattern, type):
        return isinstance(value, pattern)
    if isinstance(pattern, tuple):
        return (type(value) is tuple and len(value) == len(pattern)
                and all(matches(p, v) for p, v in zip(pattern, value, strict=True)))
    if isinstance(pattern, list):
        return (type(value) is list and len(value) == len(pattern)
                and all(matches(p, v) for p, v in zip(pattern, value, strict=True)))
    if callable(pattern):
        return bool(pattern(value))
    return pattern == value


def _matcher(patterns: tuple) -> Callable[[Any], Any] | None:
    if not patterns:
        return None
    if all(isinstance(p, Clause) for p in patterns):
        def run_clause(message: Any) -> Any:
            for clause in patterns:
                if matches(clause.pattern, message):
                    return _Matched(clause.handler, message)
            return NO_MATCH
        return run_clause
    if any(isinstance(p, Clause) for p in patterns):
        raise TypeError("receive takes either patterns or on(pattern, handler) clauses, not both")
    if len(patterns) == 1:
        pattern = patterns[0]
        return lambda message: message if matches(pattern, message) else NO_MATCH
    return lambda message: message if any(matches(p, message) for p in patterns) else NO_MATCH


class _Matched:
    __slots__ = ("handler", "message")

    def __init__(self, handler: Callable[[Any], Any], message: Any) -> None:
        self.handler = handler
        self.message = message


_NO_AFTER = object()


def receive(*patterns: Any, timeout: float | None = None, after: Any = _NO_AFTER) -> Any:
    """Wait for the first message that matches, and return it — Elixir's ``receive``.

    With no pattern, the oldest message is taken. A pattern is a value compared with
    ``==``, a type (``Pid``, ``str``) that matches its instances, :data:`ANY` that matches
    anything, a tuple or list of patterns that matches element by element, or a predicate
    ``message -> bool``. Messages that match no pattern stay in the mailbox, in order, for
    a later receive. With clauses, ``receive(on(p1, f1), on(p2, f2))`` returns ``f(message)``
    of the first clause that matches.

    ``timeout`` is in seconds (Elixir's ``after`` counts milliseconds). When it passes
    without a match, ``after`` is returned (called first if it is callable), or
    ``TimeoutError`` is raised when no ``after`` was given.
    """
    matcher = _matcher(patterns)
    result = current().mailbox.take(matcher, timeout)
    if result is NO_MATCH:
        if after is not _NO_AFTER:
            return after() if callable(after) else after
        raise TimeoutError(f"no matching message arrived within {timeout} s")
    if type(result) is _Matched:
        return result.handler(result.message)
    return result


def flush() -> str:
    """Print every message in the caller's mailbox, one a line, and empty it; return "ok"."""
    for message in current().mailbox.drain():
        print(repr(message))
    return "ok"


# --- names -------------------------------------------------------------------------------

def register(name: str, pid: Pid | None = None) -> bool:
    """Give a local process a name, so that ``send(name, msg)`` reaches it."""
    if not isinstance(name, str) or not name:
        raise TypeError("a registered name is a non-empty string, like 'Chat.TaskSupervisor'")
    pid = pid if pid is not None else self()
    proc = lookup(pid) if pid.is_local else None
    if proc is None:
        raise NodelabError(f"cannot register {name!r}: {pid!r} is not a live process of this node")
    with runtime.lock:
        holder = runtime.registry.get(name)
        if holder is not None and holder.status != "exited":
            raise NodelabError(f"the name {name!r} is already registered to {holder.pid!r}")
        if proc.name is not None:
            raise NodelabError(f"{pid!r} is already registered as {proc.name!r}")
        runtime.registry[name] = proc
        proc.name = name
    return True


def unregister(name: str) -> bool:
    """Remove a registered name."""
    with runtime.lock:
        proc = runtime.registry.pop(name, None)
        if proc is None:
            raise NodelabError(f"no process is registered as {name!r}")
        proc.name = None
    return True


def whereis(name: str) -> Pid | None:
    """The PID registered as ``name`` on this node, or None."""
    proc = runtime.registry.get(name)
    return proc.pid if proc is not None and proc.status != "exited" else None


def registered() -> list[str]:
    return sorted(runtime.registry)


# --- group leaders -------------------------------------------------------------------------

def group_leader(leader: Pid | None = None, pid: Pid | None = None) -> Pid | None:
    """Without arguments, the caller's group leader; with both, set ``pid``'s group leader."""
    if leader is None:
        return current().group_leader
    target = current() if pid is None else lookup(pid)
    if target is None:
        raise NodelabError(f"{pid!r} is not a live process of this node")
    target.group_leader = leader
    return leader


def io_write_async(group_leader_pid: Pid, text: str, stream: str = "stdout") -> None:
    """Ask a group leader to write ``text`` without waiting for it (for crash reports)."""
    send(group_leader_pid, ("io_request", None, None, ("put_chars", stream, text)))


# --- inspection --------------------------------------------------------------------------

def info(pid: Pid) -> dict[str, Any] | None:
    """What a local process is doing: status, queue length, links, group leader, name."""
    proc = lookup(pid)
    if proc is None:
        return None
    return {
        "status": "waiting" if proc.mailbox.waiting else proc.status,
        "message_queue_len": len(proc.mailbox),
        "links": sorted(proc.links.copy(), key=lambda p: (p.node, p.serial)),
        "group_leader": proc.group_leader,
        "registered_name": proc.name,
        "trap_exit": proc.trap_exit,
    }


def processes() -> list[Pid]:
    """Every live process of this node."""
    return [p.pid for p in runtime.processes.copy().values() if p.status == "running"]


# --- the facade's functions for other layers (no layer touches a process record) ----------

def write_error(text: str) -> None:
    """Write ``text`` where this node writes its errors (its console, or a test's capture)."""
    runtime.error_sink(text)


def set_error_sink(sink: Callable[[str], None] | None) -> Callable[[str], None]:
    """Send this node's error lines to ``sink`` (None: back to stderr); returns the old one."""
    old = runtime.error_sink
    runtime.error_sink = sink if sink is not None else _write_stderr
    return old


def default_group_leader() -> Pid | None:
    """This node's default group leader (where its own processes print), or None."""
    return runtime.default_group_leader


def set_default_group_leader(pid: Pid | None) -> None:
    runtime.default_group_leader = pid


def tracer() -> Callable[[Pid | None, Any, Any], None] | None:
    """The function called as ``tracer(sender, destination, message)`` on every send, or None."""
    return runtime.tracer


def set_tracer(fn: Callable[[Pid | None, Any, Any], None] | None) -> None:
    runtime.tracer = fn


def transport() -> Any:
    """The transport to other nodes while this node is alive, else None (read it once)."""
    return runtime.distribution


def is_alive(pid: Pid) -> bool:
    """True when ``pid`` is a live process of this node."""
    proc = lookup(pid) if pid.is_local else None
    return proc is not None and proc.status == "running"


def status(pid: Pid) -> str | None:
    """``"running"``, ``"waiting"`` or ``"exiting"`` for a local process; None when gone."""
    proc = lookup(pid) if pid.is_local else None
    if proc is None or proc.status == "exited":
        return None
    return "waiting" if proc.mailbox.waiting and proc.status == "running" else proc.status


def registered_name(pid: Pid) -> str | None:
    proc = lookup(pid) if pid.is_local else None
    return proc.name if proc is not None else None


def links(pid: Pid | None = None) -> list[Pid]:
    """The processes linked to ``pid`` (default: the caller)."""
    proc = current() if pid is None else (lookup(pid) if pid.is_local else None)
    return [] if proc is None else list(proc.links.copy())


def set_trap_exit(flag: bool) -> bool:
    """``Process.flag("trap_exit", flag)`` for the caller; returns the old value."""
    me = current()
    old, me.trap_exit = me.trap_exit, bool(flag)
    return old


def trap_exit() -> bool:
    return current().trap_exit


def take(matcher: Callable[[Any], Any] | None, timeout: float | None) -> Any:
    """Selective receive for library code: ``matcher(message)`` returns a value, or
    :data:`NO_MATCH` to leave the message queued; returns NO_MATCH when ``timeout`` passes."""
    return current().mailbox.take(matcher, timeout)


def sleep(seconds: float) -> str:
    """Sleep, but wake up to die when an exit signal arrives."""
    current().mailbox.take(lambda _message: NO_MATCH, seconds)
    return "ok"


def process_dictionary() -> dict[Any, Any]:
    """The caller's process dictionary (``Process.put``/``Process.get``)."""
    return current().dictionary


def is_shell(pid: Pid | None = None) -> bool:
    """True when ``pid`` (default: the caller) is a shell process (an adopted plain thread)."""
    proc = current_or_none() if pid is None else (lookup(pid) if pid.is_local else None)
    return proc is not None and proc.is_shell


def set_group_leader_of_all(old: Pid | None, new: Pid) -> None:
    """Give every live process whose group leader is ``old`` the group leader ``new``."""
    for proc in runtime.processes.copy().values():
        if proc.group_leader == old:
            proc.group_leader = new


def new_placeholder_pid() -> Pid:
    """A PID of this node that no process has (a remote spawn that could not start)."""
    return runtime.new_pid()


def exit_from(pid: Pid, reason: Any) -> None:
    """Act as if the caller were linked to ``pid`` and ``pid`` ended with ``reason``."""
    me = current()
    me.links.add(pid)
    deliver_exit(me, pid, reason, linked=True)


def watch_node(node: str) -> Ref:
    """Record that the caller receives ``("nodedown", node)`` when ``node`` goes down."""
    ref = make_ref()
    with runtime.lock:
        runtime.node_watchers[ref] = (current().pid, node)
    return ref


def unwatch_node(node: str) -> None:
    """Forget every node monitor of ``node`` the caller holds."""
    me = current().pid
    with runtime.lock:
        for ref in [r for r, (p, n) in runtime.node_watchers.items() if p == me and n == node]:
            del runtime.node_watchers[ref]
