"""Registered names: ``register``, ``unregister``, ``whereis`` (names of this node)."""

from __future__ import annotations

from nodelab.errors import NodelabError
from nodelab.runtime._table import current, lookup, runtime
from nodelab.runtime.pids import Pid


def register(name: str, pid: Pid | None = None) -> bool:
    """Give a local process a name, so that ``send(name, msg)`` reaches it."""
    if not isinstance(name, str) or not name:
        raise TypeError("a registered name is a non-empty string, like 'Chat.TaskSupervisor'")
    pid = pid if pid is not None else current().pid
    proc = lookup(pid) if pid.is_local else None
    if proc is None:
        raise NodelabError(f"cannot register {name!r}: {pid!r} is not a live process of this node")
    with runtime.lock:
        holder = runtime.registry.get(name)
        if holder is not None and holder.status != "exited":
            raise NodelabError(f"the name {name!r} is already registered to {holder.pid!r}")
        if proc.name is not None:
            raise NodelabError(f"{pid!r} is already registered as {proc.name!r}")
        if proc.status == "exited":
            raise NodelabError(f"cannot register {name!r}: {pid!r} is not a live process "
                               "of this node")
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
    """Every name registered on this node, sorted."""
    return sorted(runtime.registry)


def registered_name(pid: Pid) -> str | None:
    """The name ``pid`` (a local process) is registered as, or None."""
    proc = lookup(pid) if pid.is_local else None
    return proc.name if proc is not None else None
