"""The request/reply protocol OTP servers share (a minimal ``GenServer.call``), in OTP's words.

A *call* is a message ``("$gen_call", (caller_pid, ref), request)``; the server answers
with ``(ref, reply)``. The caller *monitors* the server before it sends, so it learns at
once, instead of hanging, when the server does not exist (``"noproc"``), dies while
handling the request, or lives on a node that cannot be reached (``"noconnection"``):
exactly how ``GenServer.call`` behaves on the BEAM. The wait itself and the loop of every
server are :mod:`nodelab.runtime.gen_server` (the group leaders below this layer use them
too); :func:`call` here adds what the OTP layer says when a call fails
(:class:`~nodelab.otp.CallError` and friends).

It also holds the start-up handshake of a server (:func:`start_server`): the caller waits
until the new process has registered its name and started its children, and learns why
when that fails — Erlang's ``proc_lib:start_link``; stopping a child (:func:`shutdown`);
and the restart intensity of supervisors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nodelab.runtime import gen_server, pids
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref, make_ref

from ..errors import NodelabError, ProcessExit, format_exit
from .errors import CallError, CallNoConnection, CallTimeout, StartError

NO_MATCH = P.NO_MATCH
ACK = "$ack"

#: How long ``call`` waits by default (Elixir waits 5 s too).
DEFAULT_TIMEOUT = 5.0
#: How long a server may take to start (register its name, start its children).
START_TIMEOUT = 30.0

Dest = Pid | str | tuple[str, str]


def _node_of(dest: Dest) -> str:
    if isinstance(dest, Pid):
        return dest.node
    if isinstance(dest, tuple):
        return dest[1]
    return pids.local_node()


def normalize(dest: Any, what: str = "server") -> Dest:
    """Check ``dest`` (a Pid, a registered name, or ``(name, node)``) and simplify it."""
    if isinstance(dest, Pid):
        return dest
    if isinstance(dest, str) and dest:
        return dest
    if isinstance(dest, tuple) and len(dest) == 2:
        first, second = dest
        if first == "ok" and isinstance(second, Pid):
            raise TypeError(
                f"{dest!r} is what start_link returned, not a {what}: unpack it first, "
                f"e.g. _, sup = TaskSupervisor.start_link()")
        if isinstance(first, str) and isinstance(second, str):
            if second == pids.local_node():
                return first
            return (first, second)
    raise TypeError(
        f"{dest!r} is not a {what}: use a PID, a registered name like 'Chat.TaskSupervisor', "
        "or (name, node) like ('Chat.TaskSupervisor', 'kate@localhost')")


def describe_dest(dest: Dest) -> str:
    return repr(dest)


def call(dest: Any, request: Any, timeout: float | None = DEFAULT_TIMEOUT, *,
         describe: str | Callable[[], str] | None = None,
         hint: Callable[[Any], str] | None = None,
         keep_monitor: bool = False) -> Any:
    """Send ``request`` to the server ``dest`` and return its reply (``GenServer.call``).

    Raises :class:`CallNoConnection` when ``dest``'s node cannot be reached or goes down,
    :class:`CallError` when no process has that name or it exits before replying, and
    :class:`CallTimeout` after ``timeout`` seconds (``None``: wait as long as it takes, but
    still fail at once on any of the other two). ``describe`` is how the error message
    shows the call (or a function that says it, called only when the call fails);
    ``hint(reason)`` adds a line saying what to do.

    ``keep_monitor=True`` returns ``(reply, ref)`` and leaves the caller's monitor ``ref``
    in place (a task supervisor hands it over to the task it starts).
    """
    target = normalize(dest)
    try:
        return gen_server.call(target, request, timeout, keep_monitor=keep_monitor)
    except TimeoutError:
        text = _call_text(target, request, describe)
        raise CallTimeout(text, timeout if timeout is not None else 0.0,
                          hint(("timeout",)) if hint else "") from None
    except gen_server.Down as down:
        reason = down.reason
    text = _call_text(target, request, describe)
    extra = hint(reason) if hint else ""
    node = _node_of(target)
    if reason == P.NOCONNECTION and node != pids.local_node():
        if P.transport() is None:
            extra = (f"this process is not a named node, so it cannot reach {node}: start one "
                     "first with Node.start('alex')") + (f"\n{extra}" if extra else "")
        raise CallNoConnection(text, node, extra)
    raise CallError(text, reason, extra)


def _call_text(target: Dest, request: Any, describe: str | Callable[[], str] | None) -> str:
    if callable(describe):
        return describe()
    return describe or f"call({describe_dest(target)}, {request!r:.200})"


class ModuleLike(type):
    """Metaclass of Task, Supervisor, ...: they print as their name, like Elixir modules
    (``[TaskSupervisor]`` in ``which_children``, not ``[<class '...'>]``)."""

    def __repr__(cls) -> str:
        return cls.__name__


# --- starting a server ------------------------------------------------------------------------

class Booting:
    """What a server's ``init`` gets: its parent, and ``ack`` to say it is up (or not)."""

    __slots__ = ("parent", "_ref", "acked")

    def __init__(self, parent: Pid, ref: Ref) -> None:
        self.parent = parent
        self._ref = ref
        self.acked = False

    def ack(self, result: Any) -> None:
        if not self.acked:
            self.acked = True
            P.send(self.parent, (ACK, self._ref, result))

    def fail(self, reason: Any, text: str) -> None:
        """Tell the starter why the server could not start, then end it with ``reason``.

        Unlinks first so that the starter gets an exception, not an exit signal that would
        kill it — a start failure is the starter's to handle.
        """
        self.ack(("error", reason, text))
        P.unlink(self.parent)
        raise ProcessExit(reason)


#: ``start_server(group_leader=INHERIT)``: the new server prints where its starter prints.
INHERIT: Any = object()


def start_server(body: Callable[..., Any], args: tuple, *, link: bool = True,
                 name: str | None = None, what: str = "server",
                 group_leader: Any = INHERIT,
                 timeout: float = START_TIMEOUT) -> Any:
    """Start ``body(booting, *args)`` in a new process linked to the caller; wait for its ack.

    The new process registers ``name`` first (failing when it is taken), and ``body`` must
    call ``booting.ack(("ok", pid, ...))`` once it is ready, or ``booting.fail(reason, text)``.
    Returns what ``body`` acknowledged, or raises :class:`StartError` with the server's own
    explanation.
    """
    me = P.self()
    ack_ref = make_ref()
    watch = make_ref()
    leader = P.group_leader() if group_leader is INHERIT else group_leader
    pid = P.start_process(_boot, (body, args, me, ack_ref, name, what),
                          group_leader=leader, link_to=me if link else None,
                          monitored_by=(me, watch))
    try:
        result = gen_server.await_reply(ack_ref, watch, timeout, head=ACK)
    except TimeoutError:
        P.demonitor(watch, flush=True)
        P.unlink(pid)
        P.exit(pid, "kill")
        raise StartError(f"the {what} did not start within {timeout} s (a child's start "
                         "function may be stuck); it was killed", "timeout") from None
    except gen_server.Down as down:
        raise StartError(f"the {what} exited while starting: {format_exit(down.reason)}",
                         down.reason) from None
    P.demonitor(watch, flush=True)
    if type(result) is tuple and result and result[0] == "error":
        raise StartError(result[2], result[1])
    return result


def _boot(body: Callable[..., Any], args: tuple, parent: Pid, ack_ref: Ref, name: str | None,
          what: str) -> None:
    booting = Booting(parent, ack_ref)
    if name is not None:
        try:
            P.register(name)
        except NodelabError:
            holder = P.whereis(name)
            booting.fail(("already_started", holder),
                         f"cannot start the {what} {name!r}: the name is already registered to "
                         f"{holder!r}; stop that process first, or choose another name")
    try:
        body(booting, *args)
    except ProcessExit:
        raise
    except BaseException as error:
        if not booting.acked:
            # The init code itself failed: the starter gets the exception as a StartError.
            booting.ack(("error", ("init_failed", repr(error)),
                         f"the {what} could not start: {type(error).__name__}: {error}"))
            P.unlink(parent)
        raise


# --- stopping a child -------------------------------------------------------------------------

#: A bound on every wait for a process that ignores even "kill" (a thread stuck in C code).
KILL_WAIT = 5.0
#: "infinity" as a shutdown still ends: after this long the child is killed.
INFINITY_BOUND = 60.0


def shutdown(pid: Pid, how: Any = 5.0) -> Any:
    """Stop a linked child the way a supervisor does; return its exit reason.

    ``how`` is ``"brutal_kill"`` (exit ``"kill"`` at once), a number of seconds (exit
    ``"shutdown"``, then ``"kill"`` if it has not ended by then) or ``"infinity"``. The
    caller must trap exits; the link is removed first so no stray EXIT is left behind.
    """
    watch = P.monitor(pid)
    P.unlink(pid)
    stale = P.take(
        lambda m: m if (type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == pid)
        else NO_MATCH, 0)
    if stale is not NO_MATCH:
        # It had already exited: the DOWN says noproc, the EXIT had the real reason.
        wait_down(watch, KILL_WAIT)
        return stale[2]
    if how == "brutal_kill":
        P.exit(pid, "kill")
        reason = wait_down(watch, KILL_WAIT)
    else:
        wait = INFINITY_BOUND if how == "infinity" else float(how)
        P.exit(pid, "shutdown")
        reason = wait_down(watch, wait)
        if reason is NO_MATCH:
            P.exit(pid, "kill")
            reason = wait_down(watch, KILL_WAIT)
    if reason is NO_MATCH:
        P.demonitor(watch, flush=True)
        P.write_error(f"[error] {pid!r} did not exit even when killed (a thread stuck "
                             "in a blocking call); giving up on it")
        return "killed"
    return reason


def wait_down(watch: Ref, timeout: float) -> Any:
    """The reason in the DOWN of the caller's monitor ``watch``; NO_MATCH after ``timeout``."""
    answer = P.take(
        lambda m: m if (type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == watch)
        else NO_MATCH, max(0.0, timeout))
    return answer if answer is NO_MATCH else answer[4]


# --- restart intensity ------------------------------------------------------------------------

class Intensity:
    """At most ``max_restarts`` restarts in any ``max_seconds`` window (OTP's rule).

    Elixir's defaults are 3 restarts in 5 seconds. One more restart than that means the
    children keep failing for a reason a restart will not fix, so the supervisor gives up
    and exits, and its own supervisor decides what to do (*escalation*).
    """

    def __init__(self, max_restarts: int = 3, max_seconds: float = 5.0) -> None:
        if not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, not {max_restarts!r}")
        if not isinstance(max_seconds, (int, float)) or max_seconds <= 0:
            raise ValueError(f"max_seconds must be a number of seconds > 0, not {max_seconds!r}")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        self.times: list[float] = []

    def add(self) -> bool:
        """Count one restart now; False when that exceeds the intensity."""
        now = time.monotonic()
        self.times = [t for t in self.times if now - t < self.max_seconds]
        self.times.append(now)
        return len(self.times) <= self.max_restarts

    def describe(self) -> str:
        return (f"more than {self.max_restarts} restart{'s' if self.max_restarts != 1 else ''} "
                f"in {self.max_seconds:g} s")


def is_normal_exit(reason: Any) -> bool:
    """Reasons a transient child may exit with without being restarted."""
    return reason in ("normal", "shutdown") or (
        type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown")
