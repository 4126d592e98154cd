"""Requests and replies between processes: the one call primitive and the one server loop.

Every request in nodelab is answered the same way, Erlang's ``gen:call``: the caller
*monitors* whoever should answer before it sends, then waits for whichever comes first —
the reply, or the ``DOWN`` of its monitor. So it learns at once, instead of hanging, that
the server does not exist (``"noproc"``), died while handling the request, or lives on a
node that cannot be reached (``"noconnection"``). :func:`await_reply` is that wait, and
:func:`call` sends a request and waits. Two envelopes travel this way, both Erlang's:

* a call: ``("$gen_call", (caller, ref), request)``, answered with ``(ref, reply)``;
* an I/O request to a group leader (``io=True``): ``("io_request", caller, ref, request)``,
  answered with ``("io_reply", ref, reply)``.

:func:`serve` is the loop of a process that answers requests (``GenServer``'s): the
supervisors, the task supervisor, the application master and the group leaders are
:class:`Server` objects run by it. It also answers the requests every server knows:
``("$describe",)`` (what kind of server this is, for the pictures) and ``("$stop",
reason)``; and when the server traps exits, the exit of its parent stops it.

It lives at the bottom (in the runtime), because the group leaders — a node's own
output — are servers too, and every layer above uses the same wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from nodelab.errors import ProcessExit
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref

CALL = "$gen_call"
IO_REQUEST = "io_request"
IO_REPLY = "io_reply"

#: What :meth:`Server.handle_call` returns when it has replied itself (or will, later).
NOREPLY: Any = object()


class Down(Exception):
    """Whoever should have answered ended first, or its node cannot be reached.

    ``.reason`` is the exit reason of the ``DOWN`` (``"noproc"``, ``"noconnection"``, a
    :class:`~nodelab.Crash`, ...). The caller turns it into an error in its own words.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def reply_or_down(tag: Any, ref: Ref, head: str | None = None) -> Callable[[Any], Any]:
    """A mailbox matcher for the reply tagged ``tag`` — ``(tag, value)``, or ``(head, tag,
    value)`` — or the DOWN of the monitor ``ref``: it answers ``(True, value)`` or
    ``(False, reason)``, and leaves anything else queued."""

    def match(message: Any) -> Any:
        if type(message) is tuple:
            size = len(message)
            if head is None:
                if size == 2 and message[0] == tag:
                    return (True, message[1])
            elif size == 3 and message[1] == tag and message[0] == head:
                return (True, message[2])
            if size == 5 and message[0] == "DOWN" and message[1] == ref:
                return (False, message[4])
        return P.NO_MATCH

    return match


def await_reply(tag: Any, ref: Ref, timeout: float | None, *, head: str | None = None) -> Any:
    """Wait for the reply tagged ``tag`` and return its value — the one wait for an answer.

    Raises :class:`Down` when the DOWN of the caller's monitor ``ref`` comes first, and
    ``TimeoutError`` after ``timeout`` seconds (``None``: no limit, but a DOWN still ends
    the wait). The monitor is left as it is: the caller decides what to do with it.
    """
    answer = P.take(reply_or_down(tag, ref, head), timeout)
    if answer is P.NO_MATCH:
        raise TimeoutError(f"no reply within {timeout} s")
    replied, value = answer
    if replied:
        return value
    raise Down(value)


def call(dest: Pid | str | tuple[str, str], request: Any, timeout: float | None, *,
         io: bool = False, keep_monitor: bool = False) -> Any:
    """Send ``request`` to ``dest`` and return the reply: monitor, send, :func:`await_reply`.

    ``dest`` is a PID, a registered name or ``(name, node)``. ``io=True`` sends an I/O
    request to a group leader instead of a call. Raises :class:`Down` or ``TimeoutError``
    (the monitor is gone in both cases). ``keep_monitor=True`` returns ``(reply, ref)`` and
    leaves the caller's monitor ``ref`` on ``dest`` in place.
    """
    me = P.self()
    # The monitor first, then the request (to another node: both in one frame).
    if io:
        ref = P.monitor(dest, lambda ref: (IO_REQUEST, me, ref, request))
    else:
        ref = P.monitor(dest, lambda ref: (CALL, (me, ref), request))
    try:
        value = await_reply(ref, ref, timeout, head=IO_REPLY if io else None)
    except TimeoutError:
        P.demonitor(ref, flush=True)
        raise
    if keep_monitor:
        return value, ref
    P.demonitor(ref, flush=True)
    return value


def reply(caller: tuple[Pid, Ref], value: Any) -> None:
    """Answer a call: ``caller`` is the ``(pid, ref)`` that came with the request."""
    pid, ref = caller
    P.send(pid, (ref, value))


def is_call(message: Any) -> bool:
    return type(message) is tuple and len(message) == 3 and message[0] == CALL


# --- the server loop --------------------------------------------------------------------------

class Server:
    """What a server does with what it receives; :func:`serve` runs it.

    Override the callbacks it needs, like those of Elixir's ``GenServer``. Each runs in the
    server's own process, one message at a time.
    """

    def describe(self) -> Any:
        """The answer to ``("$describe",)``: what kind of server this is, e.g.
        ``("Supervisor", "one_for_one")`` (what a picture shows beside its name)."""
        return (type(self).__name__.lstrip("_"), None)

    def handle_call(self, request: Any, caller: tuple[Pid, Ref]) -> Any:
        """Answer ``request``: the value returned is the reply (or :data:`NOREPLY`, after
        answering with :func:`reply` itself)."""
        return ("error", ("unknown_request", request))

    def handle_exit(self, pid: Pid, reason: Any) -> None:
        """``("EXIT", pid, reason)`` of a linked process other than the parent (a server
        that traps exits gets them)."""

    def handle_info(self, message: Any) -> None:
        """Any other message: dropped, as a GenServer drops a stray message."""

    def terminate(self, reason: Any) -> None:
        """Called before the server ends: asked to stop, or its parent exited."""


def serve(server: Server, *, parent: Pid | None = None) -> NoReturn:
    """Run ``server`` in the calling process until it stops (it ends the process).

    Calls go to ``handle_call`` and are replied to; ``("$describe",)`` is answered by
    ``describe`` and ``("$stop", reason)`` stops the server (``terminate``, then the reply
    ``"ok"``, then the process ends with ``reason``, default ``"normal"``). An exit signal
    from ``parent`` (received as ``("EXIT", parent, reason)`` by a server that traps exits)
    stops it with that reason; other ``EXIT`` messages go to ``handle_exit``, anything else
    to ``handle_info``. A callback may end the server by raising ``ProcessExit(reason)``.
    """
    while True:
        message = P.take(None, None)
        if type(message) is tuple and len(message) == 3:
            head = message[0]
            if head == CALL:
                _, caller, request = message
                kind = request[0] if type(request) is tuple and request else None
                if kind == "$describe":
                    reply(caller, server.describe())
                elif kind == "$stop":
                    reason = request[1] if len(request) > 1 else P.NORMAL
                    server.terminate(reason)
                    reply(caller, "ok")
                    raise ProcessExit(reason)
                else:
                    value = server.handle_call(request, caller)
                    if value is not NOREPLY:
                        reply(caller, value)
                continue
            if head == "EXIT":
                _, pid, reason = message
                if parent is not None and pid == parent:
                    server.terminate(reason)
                    raise ProcessExit(reason)
                server.handle_exit(pid, reason)
                continue
        server.handle_info(message)
