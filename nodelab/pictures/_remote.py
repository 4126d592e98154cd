"""The one control operation the pictures add between nodes: ``"nodelab.pictures"``.

A picture of several nodes needs each node's help: turn tracing on and off there, hand
over what it recorded, walk a supervision tree that lives there. Each such request is a
:class:`Command` object sent as ``("nodelab.pictures", ref, caller, command)`` over the
nodes' existing connection (see ``nodelab.dist.connections.register_handler``).

Why the request carries an *object*: decoding it on the other node imports the module that
defines its class — ``nodelab.pictures`` — and importing that module registers this
operation. So a peer learns the operation from the very first request, before it looks
the operation up, even if nothing on that node imported ``nodelab.pictures`` yet (a peer
that did not know an operation would otherwise close the connection).
"""

from __future__ import annotations

from typing import Any

from nodelab.dist.connections import register_handler
from nodelab.runtime import processes as P

from ..errors import NodelabError, NotAlive

OP = "nodelab.pictures"


class RemoteFailure:
    """What a node answers when it could not do what was asked; the text says why."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RemoteFailure({self.text!r})"


class Command:
    """A request one node makes of another. ``run`` executes on the receiving node.

    ``run`` is called in the connection's reader thread, so it must not block: anything
    that waits (a call to a supervisor) runs in a process it starts.
    """

    def run(self, dist: Any, conn: Any, ref: Any, caller: Any) -> None:
        raise NotImplementedError


def answer(dist: Any, peer: str, ref: Any, caller: Any, value: Any) -> None:
    """Send ``value`` back as the reply to a request (nothing when it was a one-way tell)."""
    if ref is not None:
        dist.control(peer, ("reply", ref, caller, value), connect=False)


def _on_command(dist: Any, conn: Any, ref: Any, caller: Any, command: Any) -> None:
    # Duck-typed, not isinstance: a reloaded module has a new Command class.
    if not callable(getattr(command, "run", None)):
        answer(dist, conn.peer, ref, caller, RemoteFailure(f"not a command: {command!r:.80}"))
        return
    try:
        command.run(dist, conn, ref, caller)
    except Exception as error:  # noqa: BLE001 - the asking node gets the reason, the link lives
        answer(dist, conn.peer, ref, caller,
               RemoteFailure(f"{dist.full_name}: {type(error).__name__}: {error}"))


def ask(node: str, command: Command, timeout: float) -> Any:
    """Run ``command`` on ``node`` and return its answer.

    Raises ``ConnectionError`` when ``node`` cannot be reached or goes down, ``TimeoutError``
    after ``timeout`` seconds, :class:`NodelabError` when the node answered with a failure
    (its text says why, and names the node).
    """
    dist = P.transport()
    if dist is None:
        raise NotAlive(f"asking {node} for a picture")
    value = dist.request(node, lambda ref, caller: (OP, ref, caller, command), timeout)
    if isinstance(value, RemoteFailure):
        raise NodelabError(value.text)
    return value


def tell(node: str, command: Command, *, connect: bool = True) -> bool:
    """Send ``command`` to ``node`` without waiting for an answer; False if it cannot go."""
    dist = P.transport()
    if dist is None:
        return False
    return dist.control(node, (OP, None, None, command), connect=connect)


try:
    register_handler(OP, _on_command)
except ValueError:
    pass  # this module was imported again (importlib.reload): the first registration stays
