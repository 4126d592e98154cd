"""What a process carries besides its mailbox: its group leader, its ``trap_exit`` flag
and its process dictionary; and the node's default group leader."""

from __future__ import annotations

from typing import Any

from nodelab.errors import NodelabError
from nodelab.runtime._table import current, current_or_none, lookup, runtime
from nodelab.runtime.pids import Pid


def group_leader(leader: Pid | None = None, pid: Pid | None = None) -> Pid | None:
    """Without arguments, the caller's group leader; with both, set ``pid``'s group leader."""
    if leader is None:
        return current().group_leader
    target = current() if pid is None else lookup(pid)
    if target is None:
        raise NodelabError(f"{pid!r} is not a live process of this node")
    target.group_leader = leader
    return leader


def caller() -> tuple[Pid, Pid | None] | None:
    """``(pid, group_leader)`` of the calling thread's process, or None when the thread is
    not a process or its process has exited (unlike :func:`self`, never adopts a shell)."""
    proc = current_or_none()
    if proc is None or proc.status == "exited":
        return None
    return proc.pid, proc.group_leader


def default_group_leader() -> Pid | None:
    """This node's default group leader (where its own processes print), or None."""
    return runtime.default_group_leader


def set_default_group_leader(pid: Pid | None) -> None:
    """Make ``pid`` this node's default group leader."""
    runtime.default_group_leader = pid


def set_group_leader_of_all(old: Pid | None, new: Pid | None) -> None:
    """Give every live process whose group leader is ``old`` (None: shell processes that
    had none yet) the group leader ``new``."""
    for proc in runtime.processes.copy().values():
        if proc.group_leader == old and proc.status == "running":
            proc.group_leader = new


def led_by(leader: Pid) -> list[Pid]:
    """The live processes whose group leader is ``leader`` (a cell's leader can be stopped
    once no process prints through it any more)."""
    return [proc.pid for proc in runtime.processes.copy().values()
            if proc.group_leader == leader and proc.status == "running"]


def set_trap_exit(flag: bool) -> bool:
    """``Process.flag("trap_exit", flag)`` for the caller; returns the old value."""
    me = current()
    old, me.trap_exit = me.trap_exit, bool(flag)
    return old


def trap_exit() -> bool:
    """Whether the caller traps exits."""
    return current().trap_exit


def process_dictionary() -> dict[Any, Any]:
    """The caller's process dictionary (``Process.put``/``Process.get``)."""
    return current().dictionary


def self() -> Pid:
    """The PID of the calling process, like Elixir's ``self()``."""
    return current().pid


def new_placeholder_pid() -> Pid:
    """A PID of this node that no process has (a remote spawn that could not start)."""
    return runtime.new_pid()
