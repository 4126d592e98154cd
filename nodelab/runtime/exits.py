"""Exit signals: how a process ends, and how its links and monitors learn of it.

* When a process ends, every linked process gets an *exit signal* with the reason. A
  ``"normal"`` reason is ignored; any other one ends the linked process too, unless it
  called ``Process.flag("trap_exit", True)`` — then it receives ``("EXIT", pid, reason)``.
* A monitor is one-way: the watcher receives ``("DOWN", ref, "process", pid, reason)``.
* A process that an exit signal ends stops at its next checkpoint (``_kill.py``).
* When an exit signal kills a *shell process* (a notebook cell's thread), the shell prints
  ``** (EXIT from #PID<...>) shell process exited with reason: ...`` and the next call to
  ``self()`` on that thread starts a fresh shell process, exactly as iex does.
"""

from __future__ import annotations

from typing import Any

from nodelab.errors import ProcessExit, format_exit
from nodelab.runtime import _kill
from nodelab.runtime._table import LocalProcess, current, current_or_none, lookup, runtime
from nodelab.runtime.mailbox import Signal
from nodelab.runtime.messages import io_write_async
from nodelab.runtime.pids import Pid, Ref
from nodelab.runtime.transport import control

#: Exit reasons with a meaning of their own.
NORMAL = "normal"
KILL = "kill"
KILLED = "killed"
NOPROC = "noproc"
NOCONNECTION = "noconnection"


def exited_shell() -> tuple[Pid, Any] | None:
    """The calling thread's shell process, if an exit signal has ended it and the thread has
    not been given a new one yet (its next ``self()`` does): its PID and its exit reason.

    A caller that waited for something the dead shell owned (``Task.await_`` of a task whose
    crash killed the shell through the link) reports that reason instead of a stranger's.
    """
    proc = current_or_none()
    if proc is not None and proc.is_shell and proc.status == "exited":
        return proc.pid, proc.reason
    return None


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
    _kill.check(me)
    token = _kill.enter(me)
    try:
        signal_exit(me.pid, pid, reason, linked=False)
    finally:
        _kill.leave(token)


def signal_exit(sender: Pid, target: Pid, reason: Any, *, linked: bool) -> None:
    """Send an exit signal from ``sender`` to ``target``, wherever it lives."""
    if target.is_local:
        deliver_exit(lookup(target), sender, reason, linked=linked)
    else:
        control(target.node, ("exit" if linked else "exit2", sender, target, reason),
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


def kill(proc: LocalProcess, reason: Any, sender: Pid | None = None) -> bool:
    """End ``proc`` with ``reason``; False when it is gone already.

    A process waiting in receive wakes and exits; a running one exits at its next
    checkpoint, or is interrupted if it reaches none within a few milliseconds.
    """
    if proc.is_shell:
        if proc.status != "running":
            return False
        _shell_dies(proc, reason)
        return True
    return _kill.request_exit(proc, reason, sender)


def _shell_dies(proc: LocalProcess, reason: Any) -> None:
    line = f"** (EXIT from {proc.pid!r}) shell process exited with reason: {format_exit(reason)}\n"
    # Wake the shell if it waits in receive now, or as soon as it next does.
    proc.mailbox.put(Signal(reason, proc.pid))
    terminate(proc, reason)
    if proc.group_leader is not None:
        io_write_async(proc.group_leader, line, "stderr")
    else:
        runtime.error_sink(line)


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
        # C call. What they add after the clear (or after the emptiness check, for the
        # empty ones most processes end with) is gone with the process.
        links = watchers = watching = None
        if proc.links:
            links = proc.links.copy()
            proc.links.clear()
        if proc.watchers:
            watchers = proc.watchers.copy()
            proc.watchers.clear()
        if proc.watching:
            watching = proc.watching.copy()
            proc.watching.clear()
        if runtime.node_watchers:
            for ref in [r for r, (p, _) in runtime.node_watchers.items() if p == proc.pid]:
                del runtime.node_watchers[ref]
    if links:
        for other in links:
            signal_exit(proc.pid, other, reason, linked=True)
    if watchers:
        for ref, watcher in watchers.items():
            notify_down(watcher, ref, proc.pid, reason)
    if not watching:
        return
    for ref, target in watching.items():
        if isinstance(target, Pid) and not target.is_local:
            control(target.node, ("demonitor", proc.pid, target, ref), connect=False)
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
    else:
        control(watcher.node, ("down", target, watcher, ref, reason), connect=False)
