"""Errors of the OTP layer, worded like Elixir's exits and saying what to do next.

In Elixir a failed ``GenServer.call`` or ``Task.await`` *exits* the caller with a reason
such as ``{:nodedown, :moebi@localhost}``, and iex shows it as::

    ** (exit) exited in: GenServer.call({Chat.TaskSupervisor, :moebi@localhost}, ...)
        ** (EXIT) no connection to moebi@localhost

nodelab raises an exception with the same text instead, because in a notebook or a test an
exception is what you can read, catch and assert on. ``.reason`` holds the exit reason
(``"noproc"``, ``("nodedown", node)``, ``"timeout"``, a :class:`~nodelab.Crash`, ...).
"""

from __future__ import annotations

from typing import Any

from ..errors import NoConnection, NodelabError, format_exit


class ExitError(NodelabError):
    """A process we called or awaited exited (or could not be reached) instead of replying.

    ``.reason`` is the exit reason, ``.call`` a description of the call that failed.
    """

    def __init__(self, call: str, reason: Any, hint: str = "") -> None:
        self.call = call
        self.reason = reason
        self.hint = hint
        text = f"exited in: {call}\n    ** (EXIT) {format_exit(reason, indent=' ' * 8)}"
        crash_tb = getattr(reason, "traceback", None)
        if isinstance(crash_tb, str) and crash_tb:
            text += f"\n\nThe traceback on {reason.node}:\n{crash_tb.rstrip()}"
        if hint:
            text += f"\n{hint}"
        NodelabError.__init__(self, text)


class CallError(ExitError):
    """``call`` to a server failed: no such process, or it exited before it replied."""


class CallNoConnection(CallError, NoConnection):
    """``call`` to a server on a node that cannot be reached, or that went down.

    It is also a :class:`~nodelab.NoConnection`, so ``except NoConnection`` catches it.
    """

    def __init__(self, call: str, node: str, hint: str = "") -> None:
        self.node = node
        CallError.__init__(self, call, ("nodedown", node), hint)


class CallTimeout(CallError, TimeoutError):
    """``call`` got no reply in time (the server is busy, or stuck)."""

    def __init__(self, call: str, timeout: float, hint: str = "") -> None:
        self.timeout = timeout
        CallError.__init__(self, call, "timeout", hint)


class TaskError(ExitError):
    """The task exited without a result: it raised (``.reason`` is a Crash), or was killed.

    The message carries the remote traceback and the node it ran on.
    """

    def __init__(self, call: str, reason: Any, task: Any = None) -> None:
        self.task = task
        ExitError.__init__(self, call, reason)


class TaskTimeout(TaskError, TimeoutError):
    """``Task.await_`` waited ``timeout`` seconds and the task had not replied.

    Like Elixir, the task is not stopped: stop it with ``Task.shutdown(task)``, or wait with
    ``Task.yield_(task)`` instead when a slow task is not an error.
    """

    def __init__(self, call: str, timeout: float, task: Any = None) -> None:
        self.timeout = timeout
        TaskError.__init__(self, call, "timeout", task)


class TaskNoConnection(TaskError, NoConnection):
    """The node running the task went down (or was cut off) before the task replied.

    Its text is Elixir's: ``no connection to kate@localhost``.
    """

    def __init__(self, call: str, node: str, task: Any = None) -> None:
        self.node = node
        TaskError.__init__(self, call, ("nodedown", node), task)


class StartError(NodelabError):
    """A supervisor, task supervisor or application could not start; ``.reason`` says why."""

    def __init__(self, text: str, reason: Any = None) -> None:
        self.reason = reason
        super().__init__(text)


class ApplicationError(NodelabError):
    """An application could not be found, loaded, started or stopped."""
