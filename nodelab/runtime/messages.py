"""Messages: ``send``, ``receive`` (selective, with a timeout), ``flush`` and ``sleep``.

Each of them is a checkpoint: a process with a pending exit stops here (see ``_kill.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodelab.errors import NodelabError
from nodelab.runtime import _kill, pids
from nodelab.runtime._table import current, runtime
from nodelab.runtime.mailbox import NO_MATCH
from nodelab.runtime.patterns import Matched, matcher
from nodelab.runtime.pids import Pid
from nodelab.runtime.transport import _transport, current_transport

# Read once here, used on every message (both live as long as the process does).
_thread = runtime.current  # which process the calling thread is: ``_thread.proc``
_processes = runtime.processes


def send(dest: Pid | str | tuple[str, str], message: Any) -> Any:
    """Send ``message`` to ``dest`` and return the message, like Elixir's ``send/2``.

    ``dest`` is a PID, a name registered on this node, or ``(name, node)``. Sending never
    fails because the receiver is gone — the message is simply dropped, as on the BEAM.
    Sending to a name that is not registered here raises, like Elixir's ``ArgumentError``.
    """
    me = getattr(_thread, "proc", None)
    if me is not None and me.pending_exit is not None and not me.exiting:
        _kill.check(me)
    tracer = runtime.tracer  # read once: a recording may end on another thread meanwhile
    if tracer is not None:
        tracer(me.pid if me is not None else None, dest, message)
    if type(dest) is Pid:
        if dest.is_local:
            proc = _processes.get(dest.serial)
            if proc is not None:  # dest.is_local: same node, same creation
                proc.mailbox.put(message)
        else:
            dist = _transport[0]  # current_transport(), read once, without a call
            if dist is not None:
                dist.send(dest, message)  # the transport masks its own critical sections
        return message
    if isinstance(dest, str):
        proc = runtime.registry.get(dest)
        if proc is None:
            raise NodelabError(
                f"no process is registered as {dest!r} on this node: check the name with "
                "whereis(), or send to a PID"
            )
        proc.mailbox.put(message)
        return message
    if isinstance(dest, tuple) and len(dest) == 2:
        name, node = dest
        if node == pids.local_node():
            proc = runtime.registry.get(name)
            if proc is not None:
                proc.mailbox.put(message)
        else:
            dist = current_transport()
            if dist is not None:
                dist.send_named(name, node, message, current().pid)
        return message
    raise TypeError(f"cannot send to {dest!r}: use a PID, a registered name or (name, node)")


_NO_AFTER = object()


def take(match: Callable[[Any], Any] | None, timeout: float | None) -> Any:
    """Selective receive for library code: ``match(message)`` returns a value, or
    ``NO_MATCH`` to leave the message queued; returns ``NO_MATCH`` when ``timeout`` passes.

    A checkpoint; an exit signal that arrives while it waits ends the caller.
    """
    # current(), _kill.check and enter, written out: every message a process receives
    # passes here, and each of those calls would cost more than its work. leave() stays a
    # call: it is where a pending exit is acted on, one rule in one place.
    me = getattr(_thread, "proc", None)
    if me is None or me.status != "running":
        me = current()
    if me.pending_exit is not None:
        _kill.check(me)
    if me.is_shell:  # never interrupted asynchronously: no mask needed (see _kill.enter)
        return me.mailbox.take(match, timeout)
    me.mask += 1
    if me.injected:
        _kill.cancel_injection(me)
    try:
        return me.mailbox.take(match, timeout)
    finally:
        _kill.leave(me)


def receive(*patterns: Any, timeout: float | None = None, after: Any = _NO_AFTER) -> Any:
    """Wait for the first message that matches, and return it — Elixir's ``receive``.

    With no pattern, the oldest message is taken. A pattern is a value compared with
    ``==``, a type (``Pid``, ``str``) that matches its instances, ``ANY`` that matches
    anything, a tuple or list of patterns that matches element by element, or a predicate
    ``message -> bool``. Messages that match no pattern stay in the mailbox, in order, for
    a later receive. With clauses, ``receive(on(p1, f1), on(p2, f2))`` returns ``f(message)``
    of the first clause that matches.

    ``timeout`` is in seconds (Elixir's ``after`` counts milliseconds). When it passes
    without a match, ``after`` is returned (called first if it is callable), or
    ``TimeoutError`` is raised when no ``after`` was given.
    """
    if not patterns:  # the common case: the oldest message, no matcher to build or call
        result = take(None, timeout)
        if result is NO_MATCH:
            return _timed_out(timeout, after)
        return result
    result = take(matcher(patterns), timeout)
    if result is NO_MATCH:
        return _timed_out(timeout, after)
    if type(result) is Matched:
        return result.handler(result.message)
    return result


def _timed_out(timeout: float | None, after: Any) -> Any:
    if after is not _NO_AFTER:
        return after() if callable(after) else after
    raise TimeoutError(f"no matching message arrived within {timeout} s")


def sleep(seconds: float) -> str:
    """Sleep, but wake up to die when an exit signal arrives (unlike ``time.sleep``)."""
    take(lambda _message: NO_MATCH, seconds)
    return "ok"


def flush() -> str:
    """Print every message in the caller's mailbox, one a line, and empty it; return "ok"."""
    me = current()
    _kill.check(me)
    token = _kill.enter(me)
    try:
        messages = me.mailbox.drain()
    finally:
        _kill.leave(token)
    for message in messages:
        print(repr(message))
    return "ok"


def io_write_async(group_leader_pid: Pid, text: str, stream: str = "stdout") -> None:
    """Ask a group leader to write ``text`` without waiting for it (for crash reports)."""
    send(group_leader_pid, ("io_request", None, None, ("put_chars", stream, text)))
