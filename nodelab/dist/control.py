"""Control operations from a peer (link, exit, monitor, spawn, replies, ...).

Each runs in the connection's reader thread, in frame order, and asks the runtime to act
through the facade's functions (``P.add_remote_link``, ``P.remote_exit``, ...): the
transport never touches a process record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodelab.dist import shipment
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref

if TYPE_CHECKING:
    from nodelab.dist.connection import Connection
    from nodelab.dist.connections import Distribution


def _on_link(dist: Distribution, conn: Connection, sender: Pid, target: Pid) -> None:
    if not P.add_remote_link(sender, target):
        dist.control(conn.peer, ("exit", target, sender, P.NOPROC), connect=False)


def _on_unlink(dist: Distribution, conn: Connection, sender: Pid, target: Pid) -> None:
    P.remove_remote_link(sender, target)


def _on_exit(dist: Distribution, conn: Connection, sender: Pid, target: Pid, reason: Any) -> None:
    P.remote_exit(sender, target, reason, linked=True)


def _on_exit2(dist: Distribution, conn: Connection, sender: Pid, target: Pid, reason: Any) -> None:
    P.remote_exit(sender, target, reason, linked=False)


def _on_monitor(dist: Distribution, conn: Connection, watcher: Pid, target: Any, ref: Ref) -> None:
    if not P.add_remote_monitor(watcher, target, ref):
        dist.control(conn.peer, ("down", target, watcher, ref, P.NOPROC), connect=False)


def _on_demonitor(dist: Distribution, conn: Connection, watcher: Pid, target: Any,
                  ref: Ref) -> None:
    P.remove_remote_monitor(target, ref)


def _on_down(dist: Distribution, conn: Connection, target: Any, watcher: Pid, ref: Ref,
             reason: Any) -> None:
    P.remote_down(watcher, ref, target, reason)


def _on_spawn(dist: Distribution, conn: Connection, ref: Ref, caller: Pid,
              group_leader: Pid | None, linked: bool, blob: bytes) -> None:
    try:
        pid = P.spawn_for_peer(shipment.run, (blob,), group_leader=group_leader,
                               link_to=caller if linked else None)
        result: Any = pid
    except Exception as error:  # noqa: BLE001
        result = ("error", repr(error))
    dist.control(conn.peer, ("spawn_reply", ref, caller, result, linked), connect=False)


def _on_spawn_reply(dist: Distribution, conn: Connection, ref: Ref, caller: Pid, result: Any,
                    linked: bool) -> None:
    # The link is recorded by the runtime here, in frame order, so an exit signal that
    # follows is not missed.
    if not P.spawn_reply(caller, ref, result, linked=linked):
        if linked and isinstance(result, Pid):
            dist.control(conn.peer, ("exit", caller, result, P.NOPROC), connect=False)


def _on_info(dist: Distribution, conn: Connection, ref: Ref, caller: Pid, target: Pid) -> None:
    dist.control(conn.peer, ("reply", ref, caller, P.info(target)), connect=False)


def _on_ping(dist: Distribution, conn: Connection, ref: Ref, caller: Pid) -> None:
    # Answered by the reader, after the connection is this node's: the pinging node knows,
    # when the answer comes back, that this node lists it. The answer is net_kernel's to
    # {is_auth, node}, ``(ref, "yes")`` sent to the caller, the same from either kind of node.
    dist.send(caller, (ref, "yes"))


def _on_reply(dist: Distribution, conn: Connection, ref: Ref, caller: Pid, value: Any) -> None:
    P.reply(caller, ref, value)


HANDLERS = {
    "link": _on_link,
    "unlink": _on_unlink,
    "exit": _on_exit,
    "exit2": _on_exit2,
    "monitor": _on_monitor,
    "demonitor": _on_demonitor,
    "down": _on_down,
    "spawn": _on_spawn,
    "spawn_reply": _on_spawn_reply,
    "info": _on_info,
    "ping": _on_ping,
    "reply": _on_reply,
}


def register_handler(op: str, handler: Any) -> None:
    """Teach this node a new control operation from peers (used by tracing).

    ``handler(dist, conn, *args)`` runs in the connection's reader thread, so it must not
    block; to answer a :meth:`Distribution.request`, send
    ``("reply", ref, caller, value)`` back with ``dist.control(conn.peer, ..., connect=False)``.
    """
    if op in HANDLERS:
        raise ValueError(f"the control operation {op!r} is already defined")
    HANDLERS[op] = handler
