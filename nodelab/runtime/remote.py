"""What the transport asks of the runtime: the inbound half of the seam in ``transport.py``.

A connection's reader thread calls these for what a peer sent: deliver a message, apply a
link, an unlink, an exit signal, a monitor, a demonitor or a DOWN, start a process for a
remote spawn, hand a reply to the process that waits for it, and — when a peer is gone —
tell every local process that was linked to or monitoring a process of that node. The
transport never touches a process record itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodelab.runtime._table import lookup, lookup_serial, runtime
from nodelab.runtime.exits import NOCONNECTION, deliver_exit, notify_down
from nodelab.runtime.messages import send
from nodelab.runtime.pids import Pid, Ref
from nodelab.runtime.spawning import start_process


def deliver(serial: int, creation: int, message: Any) -> bool:
    """Put ``message`` in the mailbox of this node's process ``serial``; False if gone."""
    proc = lookup_serial(serial, creation)
    if proc is None:
        return False
    proc.mailbox.put(message)
    return True


def deliver_named(name: str, message: Any) -> bool:
    """Put ``message`` in the mailbox of the process registered as ``name``; False if none."""
    proc = runtime.registry.get(name)
    if proc is None:
        return False
    proc.mailbox.put(message)
    return True


def add_remote_link(sender: Pid, target: Pid) -> bool:
    """A peer's process ``sender`` linked to ``target``; False when ``target`` is gone (the
    transport answers with an exit signal ``noproc``)."""
    proc = lookup(target)
    if proc is None or proc.status != "running":
        return False
    proc.links.add(sender)
    return True


def remove_remote_link(sender: Pid, target: Pid) -> None:
    proc = lookup(target)
    if proc is not None:
        proc.links.discard(sender)


def remote_exit(sender: Pid, target: Pid, reason: Any, *, linked: bool) -> None:
    """An exit signal from a peer's process (through a link, or ``exit/2``)."""
    deliver_exit(lookup(target), sender, reason, linked=linked)


def add_remote_monitor(watcher: Pid, target: Pid | tuple, ref: Ref) -> bool:
    """A peer's process monitors ``target`` (a PID or ``(name, node)``); False when it is
    gone (the transport answers with a DOWN ``noproc``)."""
    proc = runtime.registry.get(target[0]) if isinstance(target, tuple) else lookup(target)
    with runtime.lock:
        if proc is None or proc.status != "running":
            return False
        proc.watchers[ref] = watcher
    return True


def remove_remote_monitor(target: Pid | tuple, ref: Ref) -> None:
    proc = runtime.registry.get(target[0]) if isinstance(target, tuple) else lookup(target)
    if proc is not None:
        proc.watchers.pop(ref, None)


def remote_down(watcher: Pid, ref: Ref, target: Any, reason: Any) -> None:
    """A process of a peer that ``watcher`` monitored with ``ref`` has ended."""
    notify_down(watcher, ref, target, reason)


def spawn_for_peer(fn: Callable[..., Any], args: tuple, *, group_leader: Pid | None,
                   link_to: Pid | None) -> Pid:
    """Start a process for a peer's spawn request (linked to the peer's caller if asked)."""
    return start_process(fn, args, group_leader=group_leader, link_to=link_to)


def spawn_reply(caller: Pid, ref: Ref, result: Any, *, linked: bool) -> bool:
    """The answer to ``caller``'s remote spawn arrived: record the link (in frame order, so
    an exit signal that follows is not missed) and hand the answer over; False when the
    caller is gone (the transport then ends the new process)."""
    proc = lookup(caller)
    if proc is None:
        return False
    if linked and isinstance(result, Pid):
        proc.links.add(result)
    proc.mailbox.put(("$reply", ref, result))
    return True


def reply(caller: Pid, ref: Ref, value: Any) -> None:
    """Hand the reply to ``caller``'s request ``ref`` over (dropped when it is gone)."""
    proc = lookup(caller)
    if proc is not None:
        proc.mailbox.put(("$reply", ref, value))


def node_down(node: str) -> None:
    """``node`` is gone: every local process linked to one of its processes gets an exit
    signal ``noconnection``, every monitor of one a DOWN ``noconnection``, every node
    monitor (``Node.monitor``) ``("nodedown", node)``; monitors it held here are dropped."""
    try:
        # .copy() of a dict or set is one C call, so it cannot meet the other threads that
        # link, monitor and exit meanwhile (iterating a live one could: "changed size").
        for proc in runtime.processes.copy().values():
            for pid in [p for p in proc.links.copy() if p.node == node]:
                deliver_exit(proc, pid, NOCONNECTION, linked=True)
            for ref, target in proc.watching.copy().items():
                target_node = target.node if isinstance(target, Pid) else (
                    target[1] if isinstance(target, tuple) else None)
                if target_node == node and proc.watching.pop(ref, None) is not None:
                    proc.mailbox.put(("DOWN", ref, "process", target, NOCONNECTION))
            for ref in [r for r, w in proc.watchers.copy().items() if w.node == node]:
                proc.watchers.pop(ref, None)
    finally:
        # Node monitors are told even if a process's record was in an unexpected state:
        # a nodedown must never be lost.
        with runtime.lock:
            fired = [(r, pid) for r, (pid, n) in runtime.node_watchers.items() if n == node]
            for ref, _ in fired:
                del runtime.node_watchers[ref]
        for _, pid in fired:
            send(pid, ("nodedown", node))
