"""Spawning: the one place where processes are born (local spawns and spawns from peers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from nodelab.errors import NodelabError
from nodelab.runtime import _kill
from nodelab.runtime._table import LocalProcess, current, current_or_none, lookup, runtime
from nodelab.runtime._workers import workers
from nodelab.runtime.exits import NOPROC, deliver_exit, terminate
from nodelab.runtime.pids import Pid, Ref, make_ref


def spawn(fn: Callable[..., Any], *args: Any) -> Pid:
    """Start a process on this node that runs ``fn(*args)``; return its PID at once."""
    me = current()
    return _spawn(me, fn, args, me.group_leader, None, None, None)


def spawn_link(fn: Callable[..., Any], *args: Any) -> Pid:
    """Like :func:`spawn`, and link the new process to the caller in the same step."""
    me = current()
    return _spawn(me, fn, args, me.group_leader, me.pid, None, None)


def spawn_monitor(fn: Callable[..., Any], *args: Any) -> tuple[Pid, Ref]:
    """Like :func:`spawn`, and monitor the new process; return ``(pid, ref)``."""
    me = current()
    ref = make_ref()
    return _spawn(me, fn, args, me.group_leader, None, (me.pid, ref), None), ref


def start_process(fn: Callable[..., Any], args: Iterable[Any] = (), *,
                  group_leader: Pid | None, link_to: Pid | None = None,
                  monitored_by: tuple[Pid, Ref] | None = None,
                  name: str | None = None) -> Pid:
    """Start a process; the table insert and the hand-off to a worker are one masked step,
    so a spawner killed meanwhile never leaves a child that is listed but never runs."""
    return _spawn(current_or_none(), fn, tuple(args), group_leader, link_to, monitored_by,
                  name)


def _spawn(me: LocalProcess | None, fn: Callable[..., Any], args: tuple,
           group_leader: Pid | None, link_to: Pid | None,
           monitored_by: tuple[Pid, Ref] | None, name: str | None) -> Pid:
    # The caller's process (None for a plain thread, such as a connection's reader) is read
    # once by the public functions: a checkpoint, then the masked start.
    if me is not None:
        _kill.check(me)
    token = _kill.enter(me) if me is not None else None
    try:
        return _start(fn, args, group_leader, link_to, monitored_by, name)
    finally:
        _kill.leave(token)


def _start(fn: Callable[..., Any], args: tuple, group_leader: Pid | None, link_to: Pid | None,
           monitored_by: tuple[Pid, Ref] | None, name: str | None) -> Pid:
    proc = LocalProcess(runtime.new_pid(), group_leader)
    if link_to is not None:
        proc.links.add(link_to)
    if monitored_by is not None:
        watcher, ref = monitored_by
        proc.watchers[ref] = watcher
    with runtime.lock:
        if name is not None and name in runtime.registry:
            raise NodelabError(f"the name {name!r} is already registered")
        runtime.processes[proc.pid.serial] = proc
        if name is not None:
            runtime.registry[name] = proc
            proc.name = name
    if link_to is not None:
        _add_link_on_other_side(link_to, proc)
    if monitored_by is not None:
        watcher, ref = monitored_by
        owner = lookup(watcher)
        if owner is not None:
            owner.watching[ref] = proc.pid
    try:
        workers.run(proc, fn, args)
    except BaseException as error:  # no thread for it (the OS refused one): it never ran
        terminate(proc, repr(error))
        raise
    return proc.pid


def _add_link_on_other_side(other: Pid, proc: LocalProcess) -> None:
    if other.is_local:
        target = lookup(other)
        if target is not None:
            target.links.add(proc.pid)
        else:
            deliver_exit(proc, other, NOPROC, linked=True)
    # a remote caller records the link itself when the spawn reply reaches it
