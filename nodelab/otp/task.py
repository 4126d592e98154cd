"""``Task``: run one function in its own process and collect its result later.

Like Elixir's ``Task``::

    task = Task.async_(lambda: expensive(42))     # starts at once, linked to the caller
    ...                                           # do something else meanwhile
    Task.await_(task)                             # the result (waits up to 5 s)

(``async`` and ``await`` are Python keywords, hence the trailing underscore, PEP 8's
convention.) A task is a process that runs the function and sends ``(ref, result)`` to
its *owner*, the process that started it; the owner monitors the task, so it also learns
when the task dies without replying. Timeouts are in seconds (Elixir counts
milliseconds).

How ``await_`` ends, compared with Elixir:

* the result arrives: it is returned;
* ``timeout`` passes: :class:`TaskTimeout` (Elixir: ``exited in: Task.await(...) ** (EXIT)
  time out``); the task keeps running — stop it with ``Task.shutdown(task)``;
* the task raises: :class:`TaskError`, whose ``.reason`` is the :class:`~nodelab.Crash` with
  the traceback *as seen on the node that ran it* and that node's name;
* the task's node goes down: :class:`TaskNoConnection` (also a
  :class:`~nodelab.NoConnection`), whose text says ``no connection to kate@localhost``.

The owner is *linked* to the task, as in Elixir. A real process that awaits a task which
crashes therefore dies of the same crash (unless it traps exits), exactly like on the BEAM.
A *shell* process — a notebook cell, a terminal prompt, a test — dies too (its next
``self()`` is a new PID, as in iex), but ``await_`` then raises the friendly
:class:`TaskError` / :class:`TaskNoConnection` above instead of a bare exit, so the cell
shows what went wrong and where. Use ``TaskSupervisor.async_nolink`` for a task whose crash
must not touch the caller at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from nodelab.dist import shipment as shipping
from nodelab.runtime import pids
from nodelab.runtime import processes as P
from nodelab.runtime.mailbox import NO_MATCH
from nodelab.runtime.pids import Pid, Ref, make_ref

from ..errors import NodelabError, ProcessExit
from . import server
from .errors import TaskError, TaskNoConnection, TaskTimeout

#: A task supervisor gives a task process its work:
#: ("$task_job", payload, owner, tag, mode, monitor_ref).
JOB = "$task_job"
#: A shell waiting on a task checks this often whether it was killed meanwhile.
_SHELL_POLL = 0.5

Timeout = float | int | str | None


def module_name(module: Any) -> str:
    """The name a module, class or module name is known by on every node."""
    name = shipping.module_name(module)
    if name:  # an empty name is no module either
        return name
    raise TypeError(
        f"{module!r} is not a module: pass a function, or a module (a module object, a class "
        "or a module name) with a function name and a list of arguments, like "
        "Task.async_(chat, 'receive_message', ['hi'])")


def shipment(fn_or_module: Any, fun: str | None, args: Iterable[Any] | None) -> tuple:
    """``("fn", fn, args)`` or ``("mfa", module_name, fun, args)``: what a task will run."""
    if fun is None:
        if not callable(fn_or_module):
            raise TypeError(f"{fn_or_module!r} is not a function: pass a function or a lambda, "
                            "or a module, a function name and a list of arguments")
        return ("fn", fn_or_module, tuple(args or ()))
    if not isinstance(fun, str):
        raise TypeError(f"the function name must be a string like 'receive_message', not {fun!r}")
    if args is not None and not isinstance(args, (list, tuple)):
        raise TypeError(f"args must be a list of arguments, like ['hi'], not {args!r}")
    module = fn_or_module
    if isinstance(module, type) and module.__module__ not in ("__main__", "builtins"):
        # A class of an importable module: import the module, then find Class.fun in it.
        return ("mfa", module.__module__, f"{module.__qualname__}.{fun}", list(args or ()))
    return ("mfa", module_name(module), fun, list(args or ()))


def describe(payload: tuple) -> str:
    """``chat.receive_message/1``: how errors and reprs name what a task runs."""
    if payload[0] == "mfa":
        return f"{payload[1]}.{payload[2]}/{len(payload[3])}"
    fn = payload[1]
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if "<locals>" in name or "<lambda>" in name:
        return f"{getattr(fn, '__name__', name)}/{len(payload[2])}"  # <lambda>/0
    module = getattr(fn, "__module__", None)
    prefix = f"{module}." if module and module != "__main__" else ""
    return f"{prefix}{name}/{len(payload[2])}"


def resolve(payload: Any) -> tuple[Callable[..., Any], tuple]:
    """Turn a shipment (or its encoded bytes) into ``(function, args)`` *on this node*."""
    if isinstance(payload, (bytes, bytearray)):
        payload = shipping.loads(payload)
    if payload[0] == "mfa":
        _, module, fun, args = payload
        return shipping.import_function(module, fun), tuple(args)
    return payload[1], tuple(payload[2])


class Task(metaclass=server.ModuleLike):
    """A running task: ``pid`` runs it, ``owner`` awaits it, ``ref`` is the owner's monitor.

    The functions that start and await tasks are static methods of this class, as they are
    functions of Elixir's ``Task`` module: ``Task.async_``, ``Task.await_``, ``Task.yield_``,
    ``Task.await_many``, ``Task.shutdown``.
    """

    __slots__ = ("pid", "ref", "owner", "mfa", "tag")

    def __init__(self, pid: Pid, ref: Ref, owner: Pid, mfa: str, tag: Ref | None = None) -> None:
        self.pid = pid
        self.ref = ref
        self.owner = owner
        self.mfa = mfa
        self.tag = ref if tag is None else tag  # the reply is (tag, result)

    @property
    def node(self) -> str:
        """The node the task runs on."""
        return self.pid.node if self.pid.node != pids.NO_NODE else pids.local_node()

    def __repr__(self) -> str:
        return (f"Task(mfa={self.mfa!r}, owner={self.owner!r}, pid={self.pid!r}, "
                f"ref={self.ref!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.pid == self.pid and other.ref == self.ref

    def __hash__(self) -> int:
        return hash((self.pid, self.ref))

    # --- starting ---------------------------------------------------------------------------

    @staticmethod
    def async_(fn_or_module: Any, fun: str | None = None, args: Iterable[Any] | None = None
               ) -> Task:
        """Run ``fn()`` (or ``module.fun(*args)``) in a new process linked to the caller.

        Returns a :class:`Task` to give to :meth:`await_`. The task's output goes where the
        caller's goes (it inherits the group leader). To run it on another node, use
        ``TaskSupervisor.async_(("Chat.TaskSupervisor", node), ...)``.
        """
        payload = shipment(fn_or_module, fun, args)
        owner = P.current()
        ref = make_ref()
        pid = P.start_process(_run_local, (owner.pid, ref, payload),
                              group_leader=owner.group_leader, link_to=owner.pid,
                              monitored_by=(owner.pid, ref))
        return Task(pid, ref, owner.pid, describe(payload))

    # --- waiting ----------------------------------------------------------------------------

    @staticmethod
    def await_(task: Task, timeout: Timeout = 5) -> Any:
        """Wait for ``task``'s result and return it (Elixir's ``Task.await``).

        ``timeout`` is in seconds (default 5, like Elixir's 5000 ms); ``None`` or
        ``"infinity"`` waits as long as it takes (a dead task or node still ends the wait).
        Raises :class:`TaskTimeout`, :class:`TaskError` (the task raised or was killed; the
        remote traceback is in the message) or :class:`TaskNoConnection` (its node went down).
        """
        me = _owner_check(task, "await_")
        answer = _wait(me, task, _seconds(timeout), "await_")
        if answer is NO_MATCH:
            P.forget_monitor(task.ref)
            raise TaskTimeout(_call_text(task, "await_", timeout), _seconds(timeout) or 0, task)
        if len(answer) == 2:
            P.forget_monitor(task.ref)
            return answer[1]
        _raise_down(task, answer[4], "await_", timeout)

    @staticmethod
    def yield_(task: Task, timeout: Timeout = 5) -> Any:
        """The result if ``task`` finishes within ``timeout`` seconds, else ``None``.

        Unlike :meth:`await_`, running out of time is not an error: the task keeps running
        and can be yielded again, awaited or shut down. (Elixir returns ``{:ok, result}`` or
        ``nil``; a task that *exits* raises :class:`TaskError` here, where Elixir returns
        ``{:exit, reason}``.)
        """
        me = _owner_check(task, "yield_")
        answer = _wait(me, task, _seconds(timeout), "yield_")
        if answer is NO_MATCH:
            return None
        if len(answer) == 2:
            P.forget_monitor(task.ref)
            return answer[1]
        _raise_down(task, answer[4], "yield_", timeout)

    @staticmethod
    def await_many(tasks: Iterable[Task], timeout: Timeout = 5) -> list[Any]:
        """Await several tasks, all within one ``timeout``; return their results in order."""
        tasks = list(tasks)
        limit = _seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        results = []
        for task in tasks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                results.append(Task.await_(task, left))
            except TaskTimeout:
                raise TaskTimeout(_call_text(task, "await_many", timeout), limit or 0,
                                  task) from None
        return results

    @staticmethod
    def shutdown(task: Task, timeout: Timeout = 5) -> Any:
        """Stop ``task``: unlink, send exit ``"shutdown"``, kill it after ``timeout`` seconds.

        ``timeout="brutal_kill"`` kills it at once. Returns the task's result if it finished
        before it could be stopped, else ``None``; raises :class:`TaskError` if it had
        crashed (Elixir returns ``{:ok, result}``, ``nil`` or ``{:exit, reason}``).
        """
        me = _owner_check(task, "shutdown")
        brutal = timeout == "brutal_kill"
        answer = _wait(me, task, 0, "shutdown")  # it may have finished already
        if answer is NO_MATCH and not P.is_monitoring(task.ref):
            return None  # already awaited or shut down: nothing is left to stop or report
        if answer is NO_MATCH:
            P.unlink(task.pid)
            me.mailbox.take(
                lambda m: m if (type(m) is tuple and len(m) == 3 and m[0] == "EXIT"
                                and m[1] == task.pid) else NO_MATCH, 0)
            P.exit(task.pid, "kill" if brutal else "shutdown")
            answer = _wait(me, task, 5.0 if brutal else _seconds(timeout), "shutdown")
            if answer is NO_MATCH and not brutal:
                P.exit(task.pid, "kill")
                answer = _wait(me, task, 5.0, "shutdown")
        if answer is NO_MATCH:
            P.forget_monitor(task.ref)
            return None
        if len(answer) == 2:
            P.forget_monitor(task.ref)
            return answer[1]
        reason = answer[4]
        if reason in ("shutdown", "killed", "normal", "noproc"):
            return None
        _raise_down(task, reason, "shutdown", timeout)


# --- the task process ---------------------------------------------------------------------------

def _run_local(owner: Pid, ref: Ref, payload: tuple) -> None:
    fn, args = resolve(payload)
    P.send(owner, (ref, fn(*args)))


def run_supervised() -> None:
    """Body of a process of a task supervisor (on the supervisor's node).

    The process is started ahead of time and waits for its job, so that starting a task
    costs a message instead of a new thread. By the time the job arrives, the supervisor
    has already linked it to its owner and armed the owner's monitor (see
    :mod:`nodelab.otp.task_supervisor`), so it just runs and, for ``async_``, sends
    ``(tag, result)`` to the owner.
    """
    job = P.receive(lambda m: type(m) is tuple and len(m) == 6 and m[0] == JOB)
    _, payload, owner, tag, mode, ref = job
    me = P.current()
    if me.group_leader is None:
        # Started before this process became a node: print where the node prints now.
        me.group_leader = P.runtime.default_group_leader
    fn, args = resolve(payload)
    result = fn(*args)
    if mode == "reply":
        P.send(owner, (tag, result))
        # The owner has its answer and forgets its monitor when it takes it: a DOWN would
        # only be dropped there, so do not send one (it would cost a frame per task).
        P.forget_watcher(ref)


# --- helpers ----------------------------------------------------------------------------------

def _seconds(timeout: Timeout) -> float | None:
    if timeout is None or timeout == "infinity":
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds (>= 0), None or 'infinity', "
                         f"not {timeout!r}")
    return float(timeout)


def _owner_check(task: Any, what: str) -> P.LocalProcess:
    if not isinstance(task, Task):
        raise TypeError(f"Task.{what} takes a Task (what Task.async_ or TaskSupervisor.async_ "
                        f"return), not {task!r}")
    previous = P.current_or_none()
    if (previous is not None and previous.pid == task.owner and previous.is_shell
            and previous.status == "exited"):
        # This thread's shell was the owner and has died since (of the task's own crash,
        # through the link, before we got here): report it the way await would have.
        _raise_down(task, previous.reason, what, None)
    me = P.current()
    if task.owner != me.pid:
        raise NodelabError(
            f"Task.{what} must be called by the task's owner {task.owner!r}, and this is "
            f"{me.pid!r}: only the process that started a task receives its reply (a notebook "
            "shell that crashed meanwhile is a new process; start the task again)")
    return me


def _call_text(task: Task, what: str, timeout: Timeout) -> str:
    if isinstance(timeout, float) and timeout.is_integer():
        timeout = int(timeout)
    return f"Task.{what}({task!r}, {timeout!r})"


def _wait(me: P.LocalProcess, task: Task, timeout: float | None, what: str) -> Any:
    """Take ``(tag, result)`` or the task's DOWN; NO_MATCH after ``timeout``."""
    match = server.reply_or_down(task.tag, task.ref)
    try:
        if not me.is_shell:
            return me.mailbox.take(match, timeout)
        # A shell killed while it is busy between two waits is not woken up (it is only
        # told while it waits), so a shell waits in short slices and checks.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _SHELL_POLL if deadline is None else min(_SHELL_POLL,
                                                            deadline - time.monotonic())
            answer = me.mailbox.take(match, max(0.0, left))
            if answer is not NO_MATCH:
                return answer
            if me.status == "exited":
                raise ProcessExit(me.reason, me.pid)
            if deadline is not None and time.monotonic() >= deadline:
                return NO_MATCH
    except ProcessExit as death:
        if not me.is_shell:
            raise  # a real process dies of its linked task's exit, as on the BEAM
        # The shell was linked to the task and died with it (it printed "** (EXIT from ...)
        # shell process exited ..."); say why in the words of await.
        _raise_down(task, death.reason, what, timeout)


def _raise_down(task: Task, reason: Any, what: str, timeout: Timeout) -> Any:
    # "from None": the exit that woke us is an implementation detail; the message says it all.
    text = _call_text(task, what, timeout)
    if reason == P.NOCONNECTION and task.node != pids.local_node():
        raise TaskNoConnection(text, task.node, task) from None
    raise TaskError(text, reason, task) from None
