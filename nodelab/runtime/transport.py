"""The one seam between a node's inside and the transport to other nodes.

While the node is alive (``Node.start`` .. ``Node.stop``) a transport is set here; the
runtime knows it only through :class:`Transport`. Every caller reads it **once** into a
local (``dist = current_transport()``; ``if dist is None: ...``; ``dist.send(...)``): the
node may stop on another thread at any moment, and a transport that was read stays a
valid object (its connections are simply closed).

What the transport asks of the runtime in return (deliver a message, apply a link or an
exit signal from a peer, a nodedown) is in :mod:`nodelab.runtime.remote`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from nodelab.runtime.pids import Pid, Ref


class Transport(Protocol):
    """What the runtime needs from the connections to other nodes."""

    @property
    def full_name(self) -> str:
        """This node's full name, e.g. ``alex@localhost``."""
        ...

    def send(self, pid: Pid, message: Any) -> None:
        """Send ``message`` to the process ``pid`` of another node (dropped if unreachable)."""
        ...

    def send_named(self, name: str, node: str, message: Any, sender: Pid) -> None:
        """Send ``message`` to the process registered as ``name`` on ``node``."""
        ...

    def control(self, node: str, op: tuple, *, connect: bool = True) -> bool:
        """Send a control operation (link, exit, monitor, down, ...); False if it cannot go."""
        ...

    def control_then_send(self, node: str, op: tuple, dest: Pid | str, message: Any,
                          sender: Pid, *, connect: bool = True) -> bool:
        """``control(node, op)`` and then a send of ``message`` to ``dest`` (a PID or a name
        registered on ``node``), in that order and together; False if they cannot go."""
        ...

    def request(self, node: str, op_builder: Callable[[Ref, Pid], tuple], timeout: float) -> Any:
        """Send ``op_builder(ref, caller)`` and wait for the reply tagged ``ref``; raises
        ``ConnectionError`` when the node cannot be reached or goes down first."""
        ...


_transport: list[Transport | None] = [None]


def current_transport() -> Transport | None:
    """The transport while this node is alive, else None. Read it once per use."""
    return _transport[0]


def set_transport(transport: Transport | None) -> None:
    """Set by ``Node.start``, cleared by ``Node.stop`` (the only two writers)."""
    _transport[0] = transport


def control(node: str, op: tuple, *, connect: bool) -> bool:
    """Send a control operation if this node is alive; False when it cannot go."""
    dist = _transport[0]
    return dist is not None and dist.control(node, op, connect=connect)
