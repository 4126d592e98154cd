"""Looking at processes from outside: ``Process.info``, the list of processes, whether one
is alive, and a check that the node's tables agree with each other (for tests)."""

from __future__ import annotations

import time
from typing import Any

from nodelab.runtime._table import current, current_or_none, lookup, runtime
from nodelab.runtime._workers import workers
from nodelab.runtime.pids import Pid


def info(pid: Pid) -> dict[str, Any] | None:
    """What a local process is doing: status, queue length, links, group leader, name.

    None when ``pid`` is not a live process of this node. ``Process.info`` of another node's
    pid asks that node for this same dict, a BEAM node too (through its ``rex``, as
    ``:rpc.call(node(pid), :erlang, :process_info, [pid, items])``; see
    :mod:`nodelab.dist.beam_peer`), where Elixir's ``Process.info/1`` raises "not a local
    pid".
    """
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


def links(pid: Pid | None = None) -> list[Pid]:
    """The processes linked to ``pid`` (default: the caller)."""
    proc = current() if pid is None else (lookup(pid) if pid.is_local else None)
    return [] if proc is None else list(proc.links.copy())


def is_shell(pid: Pid | None = None) -> bool:
    """True when ``pid`` (default: the caller) is a shell process (an adopted plain thread)."""
    proc = current_or_none() if pid is None else (lookup(pid) if pid.is_local else None)
    return proc is not None and proc.is_shell


def worker_threads() -> tuple[int, int]:
    """``(busy, idle)``: threads running a process now, and threads kept for the next one."""
    return workers.counts()


def table_problems() -> list[str]:
    """What is inconsistent in this node's tables (empty when all is well): a registered
    name of a dead process, a one-sided link or monitor between two live local processes,
    a process that is listed but runs nowhere."""
    problems: list[str] = []
    with runtime.lock:
        table = runtime.processes.copy()
        for name, proc in runtime.registry.copy().items():
            if proc.status == "exited" or table.get(proc.pid.serial) is not proc:
                problems.append(f"{name!r} names {proc!r}, which is not in the table")
            elif proc.name != name:
                problems.append(f"{name!r} names {proc!r}, which calls itself {proc.name!r}")
    # A process just handed to a worker has no thread for a moment: one second, in all.
    deadline = time.monotonic() + 1.0
    for proc in table.values():
        if proc.status != "running":
            continue
        if not proc.is_shell and not _runs_somewhere(proc, deadline):
            problems.append(f"{proc!r} is listed as running, but no thread runs it")
        for other in proc.links.copy():
            peer = table.get(other.serial) if other.is_local else None
            if other.is_local and peer is None:
                problems.append(f"{proc!r} is linked to {other!r}, which is gone")
            elif peer is not None and peer.status == "running" and proc.pid not in peer.links:
                problems.append(f"{proc!r} is linked to {peer!r}, but not the other way")
        for ref, target in proc.watching.copy().items():
            if isinstance(target, Pid) and target.is_local:
                peer = table.get(target.serial)
                if peer is None:
                    problems.append(f"{proc!r} monitors {target!r}, which is gone (no DOWN)")
                elif peer.status == "running" and ref not in peer.watchers:
                    problems.append(f"{proc!r} monitors {peer!r}, which does not know it")
        for ref, watcher in proc.watchers.copy().items():
            if watcher.is_local:
                peer = table.get(watcher.serial)
                if peer is None:
                    problems.append(f"{proc!r} is monitored by {watcher!r}, which is gone")
                elif peer.status == "running" and ref not in peer.watching:
                    problems.append(f"{peer!r} is listed as monitoring {proc!r}, but is not")
    return problems


def _runs_somewhere(proc: Any, deadline: float) -> bool:
    while proc.ident is None and proc.status == "running" and time.monotonic() < deadline:
        time.sleep(0.001)
    return proc.ident is not None or proc.status != "running"
