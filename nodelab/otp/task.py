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
from collections.abc import Iterable
from typing import Any

from nodelab.dist import shipment as shipping
from nodelab.runtime import gen_server, pids
from nodelab.runtime import processes as P
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
NO_MATCH = P.NO_MATCH


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
        payload = shipping.build(fn_or_module, fun, args)
        owner = P.self()
        ref = make_ref()
        pid = P.start_process(_run_local, (owner, ref, payload), group_leader=P.group_leader(),
                              link_to=owner, monitored_by=(owner, ref))
        return Task(pid, ref, owner, shipping.describe(payload))

    # --- waiting ----------------------------------------------------------------------------

    @staticmethod
    def await_(task: Task, timeout: Timeout = 5) -> Any:
        """Wait for ``task``'s result and return it (Elixir's ``Task.await``).

        ``timeout`` is in seconds (default 5, like Elixir's 5000 ms); ``None`` or
        ``"infinity"`` waits as long as it takes (a dead task or node still ends the wait).
        Raises :class:`TaskTimeout`, :class:`TaskError` (the task raised or was killed; the
        remote traceback is in the message) or :class:`TaskNoConnection` (its node went down).
        """
        _owner_check(task, "await_")
        answer = _wait(task, _seconds(timeout), "await_")
        if answer is NO_MATCH:
            P.forget_monitor(task.ref)
            raise TaskTimeout(_call_text(task, "await_", timeout), _seconds(timeout) or 0, task)
        replied, value = answer
        if replied:
            P.forget_monitor(task.ref)
            return value
        _raise_down(task, value, "await_", timeout)

    @staticmethod
    def yield_(task: Task, timeout: Timeout = 5) -> Any:
        """The result if ``task`` finishes within ``timeout`` seconds, else ``None``.

        Unlike :meth:`await_`, running out of time is not an error: the task keeps running
        and can be yielded again, awaited or shut down. (Elixir returns ``{:ok, result}`` or
        ``nil``; a task that *exits* raises :class:`TaskError` here, where Elixir returns
        ``{:exit, reason}``.)
        """
        _owner_check(task, "yield_")
        answer = _wait(task, _seconds(timeout), "yield_")
        if answer is NO_MATCH:
            return None
        replied, value = answer
        if replied:
            P.forget_monitor(task.ref)
            return value
        _raise_down(task, value, "yield_", timeout)

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
        _owner_check(task, "shutdown")
        brutal = timeout == "brutal_kill"
        answer = _wait(task, 0, "shutdown")  # it may have finished already
        if answer is NO_MATCH and not P.is_monitoring(task.ref):
            return None  # already awaited or shut down: nothing is left to stop or report
        if answer is NO_MATCH:
            P.unlink(task.pid)
            P.take(lambda m: m if (type(m) is tuple and len(m) == 3 and m[0] == "EXIT"
                                   and m[1] == task.pid) else NO_MATCH, 0)
            P.exit(task.pid, "kill" if brutal else "shutdown")
            answer = _wait(task, 5.0 if brutal else _seconds(timeout), "shutdown")
            if answer is NO_MATCH and not brutal:
                P.exit(task.pid, "kill")
                answer = _wait(task, 5.0, "shutdown")
        if answer is NO_MATCH:
            P.forget_monitor(task.ref)
            return None
        replied, reason = answer
        if replied:
            P.forget_monitor(task.ref)
            return reason
        if reason in ("shutdown", "killed", "normal", "noproc"):
            return None
        _raise_down(task, reason, "shutdown", timeout)


# --- the task process ---------------------------------------------------------------------------

def _run_local(owner: Pid, ref: Ref, payload: tuple) -> None:
    P.send(owner, (ref, shipping.run(payload)))


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
    if P.group_leader() is None:
        # Started before this process became a node: print where the node prints now.
        leader = P.default_group_leader()
        if leader is not None:
            P.group_leader(leader, P.self())
    result = shipping.run(payload)
    if mode == "reply":
        P.send(owner, (tag, result))
        # The owner has its answer and forgets its monitor when it takes it: a DOWN would
        # only be dropped there, so do not send one (it would cost a frame per task).
        P.forget_watcher(ref)


#: How long a task started for a BEAM owner waits for its job (Elixir's Task.Supervised
#: waits 5 s for the owner's ``{owner, ref, reply_to, callers, mfa}`` too).
ELIXIR_JOB_TIMEOUT = 5.0


def run_for_elixir_owner(owner: Pid, monitor: bool, job: Any) -> None:
    """Body of a task that a BEAM node's ``Task.Supervisor`` started here.

    ``async``: the task monitors its owner and waits for ``{owner, ref, reply_to, callers,
    {m, f, a}}``, runs ``m.f(*a)`` in Python (``Elixir.Chat`` is the module ``chat``, see
    :func:`nodelab.dist.beam_peer.python_target`) and sends ``{ref, result}`` to the owner
    (``reply_to`` is an alias of the owner; the owner itself receives the same message).
    The owner gone first: exit ``{shutdown, reason}``; no job in 5 s: exit ``timeout``, as
    Elixir's ``Task.Supervised`` does. ``start_child``: ``job`` is ``{m, f, a}``, no reply.
    """
    from nodelab.dist.beam_peer import run_for_beam
    if P.group_leader() is None:
        leader = P.default_group_leader()
        if leader is not None:
            P.group_leader(leader, P.self())
    if job is not None:
        module, function, args = job
        run_for_beam(str(module), str(function), list(args))
        return
    watch = P.monitor(owner) if monitor else None

    def match(m: Any) -> Any:
        if type(m) is tuple:
            if len(m) == 5 and m[0] == owner and type(m[4]) is tuple and len(m[4]) == 3:
                return m
            if watch is not None and len(m) == 5 and m[0] == "DOWN" and m[1] == watch:
                return m
        return NO_MATCH

    message = P.take(match, ELIXIR_JOB_TIMEOUT)
    if message is NO_MATCH:
        raise ProcessExit("timeout")
    if message[0] == "DOWN":
        raise ProcessExit(("shutdown", message[4]))
    if watch is not None:
        P.demonitor(watch, flush=True)
    _, ref, _reply_to, _callers, (module, function, args) = message
    result = run_for_beam(str(module), str(function), list(args))
    P.send(owner, (ref, result))


# --- helpers ----------------------------------------------------------------------------------

def _seconds(timeout: Timeout) -> float | None:
    if timeout is None or timeout == "infinity":
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds (>= 0), None or 'infinity', "
                         f"not {timeout!r}")
    return float(timeout)


def _owner_check(task: Any, what: str) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"Task.{what} takes a Task (what Task.async_ or TaskSupervisor.async_ "
                        f"return), not {task!r}")
    dead = P.exited_shell()
    if dead is not None and dead[0] == task.owner:
        # This thread's shell was the owner and has died since (of the task's own crash,
        # through the link, before we got here): report it the way await would have.
        _raise_down(task, dead[1], what, None)
    me = P.self()
    if task.owner != me:
        raise NodelabError(
            f"Task.{what} must be called by the task's owner {task.owner!r}, and this is "
            f"{me!r}: only the process that started a task receives its reply (a notebook "
            "shell that crashed meanwhile is a new process; start the task again)")


def _call_text(task: Task, what: str, timeout: Timeout) -> str:
    if isinstance(timeout, float) and timeout.is_integer():
        timeout = int(timeout)
    return f"Task.{what}({task!r}, {timeout!r})"


def _wait(task: Task, timeout: float | None, what: str) -> Any:
    """``(True, result)`` or ``(False, the task's exit reason)``; NO_MATCH after ``timeout``."""
    try:
        return (True, _await_reply(task, timeout))
    except gen_server.Down as down:
        return (False, down.reason)
    except TimeoutError:
        return NO_MATCH
    except ProcessExit as death:
        if not P.is_shell():
            raise  # a real process dies of its linked task's exit, as on the BEAM
        # The shell was linked to the task and died with it (it printed "** (EXIT from ...)
        # shell process exited ..."); say why in the words of await.
        _raise_down(task, death.reason, what, timeout)


def _await_reply(task: Task, timeout: float | None) -> Any:
    if not P.is_shell():
        return gen_server.await_reply(task.tag, task.ref, timeout)
    # A shell killed while it is busy between two waits is not woken up (it is only told
    # while it waits), so a shell waits in short slices and checks.
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if not P.is_alive(task.owner):
            dead = P.exited_shell()
            raise ProcessExit(dead[1] if dead is not None else P.NOPROC, task.owner)
        left = _SHELL_POLL if deadline is None else min(_SHELL_POLL, deadline - time.monotonic())
        try:
            return gen_server.await_reply(task.tag, task.ref, max(0.0, left))
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def _raise_down(task: Task, reason: Any, what: str, timeout: Timeout) -> Any:
    # "from None": the exit that woke us is an implementation detail; the message says it all.
    text = _call_text(task, what, timeout)
    if reason == P.NOCONNECTION and task.node != pids.local_node():
        raise TaskNoConnection(text, task.node, task) from None
    raise TaskError(text, reason, task) from None
