"""``TaskSupervisor``: start supervised tasks, on this node or on another one.

Like Elixir's ``Task.Supervisor``. An application starts one in its supervision tree,
under a name, and from then on any node can ask it to run a function *there*::

    # in chat/application.py: children = [(TaskSupervisor, {"name": "Chat.TaskSupervisor"})]
    task = TaskSupervisor.async_(("Chat.TaskSupervisor", "kate@localhost"),
                                 chat, "receive_message", ["hi"])
    Task.await_(task)                           # "ok"; kate printed "hi"

What happens, step by step (the same steps as Elixir's):

1. The caller *calls* the supervisor (see :mod:`nodelab.otp.server`): it monitors
   ``("Chat.TaskSupervisor", "kate@localhost")`` and sends it a ``start_task`` request. If
   kate cannot be reached, the call fails at once with ``no connection to kate@localhost``;
   if nothing is registered under that name there, with ``no process: ...``.
2. The supervisor, on kate, takes a task process (linked to itself, started ahead of time),
   links it to the caller (not with ``async_nolink``), turns the caller's monitor of the
   supervisor into a monitor of the task, answers the call with the task's PID, and only
   then hands the task its job. The link and the monitor therefore exist before the
   function runs, so no exit signal and no DOWN can be lost. (Elixir gets the same
   guarantee with one more round trip: the caller links and monitors, then says "go".)
   The task's *group leader is the supervisor's*, which lives on kate: so what the task
   prints appears on kate — unlike ``Node.spawn_link``, whose process prints on the caller.
3. The task sends ``(tag, result)`` to the caller: ``Task.await_`` returns it. If kate goes
   down first, the monitor says ``noconnection`` and ``await_`` raises
   ``no connection to kate@localhost``.

Across the border with a BEAM node (Elixir 1.14's ``Task.Supervisor`` protocol, both ways):

* nodelab calls an Elixir supervisor (:func:`is_beam` says the node is a BEAM node): a
  ``GenServer.call`` of ``{:start_task, [{owner_node, owner, owner}, :monitor], :temporary,
  shutdown}`` (``shutdown`` ``nil`` for the default 5 s), answered ``{:ok, pid}``; then the
  caller links (``async_``, not ``async_nolink``) and monitors the task and sends it
  ``{owner, ref, owner, [owner], {Elixir.Chat, :receive_message, ["hi"]}}``; the task answers
  ``{ref, result}``, which ``Task.await_`` takes like a nodelab task's. Only the
  module/function/args form can run there (``"Chat"`` is ``Elixir.Chat``, ``Atom("lists")``
  an Erlang module). The print lands on the Elixir node, as between BEAM nodes.
  ``start_child`` is one call, ``{:start_task, [owner_info, [owner], {m, f, a}], restart,
  shutdown}``, answered ``{:ok, pid}``: the task runs at once and answers nobody.
  ``children`` asks ``:which_children``, ``terminate_child`` sends ``{:terminate_child,
  pid}``, as Elixir's ``Task.Supervisor`` (a ``DynamicSupervisor``) is asked.
* an Elixir node calls this supervisor (registered ``"Chat.TaskSupervisor"``, reached as
  ``Chat.TaskSupervisor`` — see :mod:`nodelab.dist.beam_peer`): the same request is answered
  ``{:ok, pid}`` with a task that monitors its owner and waits 5 s for that job message,
  runs ``chat.receive_message("hi")`` in Python (``Elixir.Chat`` is the module ``chat``) and
  sends ``{ref, result}`` to the owner; ``start_child``'s ``[owner_info, callers, {m, f,
  a}]`` runs at once, with no reply, and is restarted when its restart (``:transient``,
  ``:permanent``) says so. ``Task.Supervisor.children``, ``DynamicSupervisor.count_children``
  and ``Task.Supervisor.terminate_child`` from the BEAM get the BEAM's answers
  (``[{:undefined, pid, :worker, [Task.Supervised]}]``, a keyword list, ``:ok``).

The module/function/args form (``chat, "receive_message", ["hi"]``) looks the function up
*on the node that runs it*, like a call to a compiled Elixir module; a function or lambda
travels as code whose global names also resolve there.

One module, although a little long: it is one concept, a task supervisor, speaking nodelab's
protocol and Elixir's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nodelab.dist import shipment as shipping
from nodelab.dist.term_format import Atom
from nodelab.runtime import gen_server, pids
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, make_ref

from ..errors import ProcessExit
from . import server
from .errors import CallError
from .task import JOB, Task, run_for_elixir_owner, run_supervised

#: How long a caller waits for the supervisor to *start* a task (Elixir waits forever; a dead
#: supervisor or node still fails at once, this only bounds a supervisor stuck on something).
START_TASK_TIMEOUT = 30.0
#: Elixir's default: a task gets 5 s to stop when its supervisor shuts down.
DEFAULT_SHUTDOWN = 5.0


class TaskSupervisor(metaclass=server.ModuleLike):
    """Functions of Elixir's ``Task.Supervisor``: a supervisor of tasks started on demand."""

    @staticmethod
    def start_link(options: dict[str, Any] | None = None, *, name: str | None = None,
                   max_restarts: int = 3, max_seconds: float = 5.0) -> tuple[str, Pid]:
        """Start a task supervisor linked to the caller; return ``("ok", pid)``.

        ``name`` registers it (``"Chat.TaskSupervisor"``), so that other nodes can reach it
        as ``(name, node)``. ``options`` is the same as a dict (what a child spec passes):
        ``TaskSupervisor.start_link({"name": "Chat.TaskSupervisor"})``.
        ``max_restarts``/``max_seconds`` bound the restarts of tasks started with
        ``restart="permanent"`` or ``"transient"``.
        """
        opts = dict(options or {})
        unknown = set(opts) - {"name", "max_restarts", "max_seconds"}
        if unknown:
            raise TypeError(f"unknown TaskSupervisor option(s) {sorted(unknown)}: it takes "
                            "name, max_restarts and max_seconds")
        name = opts.get("name", name)
        intensity = server.Intensity(opts.get("max_restarts", max_restarts),
                                     opts.get("max_seconds", max_seconds))
        if name is not None and not (isinstance(name, str) and name):
            raise TypeError(
                f"a name is a non-empty string like 'Chat.TaskSupervisor', not {name!r}")
        return server.start_server(_serve, (intensity,), name=name,
                                   what=f"task supervisor{'' if name is None else ' ' + name}")

    @staticmethod
    def child_spec(options: dict[str, Any] | None = None) -> dict[str, Any]:
        """How a supervisor starts a task supervisor: ``(TaskSupervisor, {"name": ...})``."""
        opts = dict(options or {})
        return {
            "id": opts.get("name", TaskSupervisor),
            "start": (TaskSupervisor.start_link, [opts]),
            "type": "supervisor",
            "modules": [TaskSupervisor],
        }

    # --- starting tasks ------------------------------------------------------------------------

    @staticmethod
    def async_(supervisor: Any, fn_or_module: Any, fun: str | None = None,
               args: Iterable[Any] | None = None, *, shutdown: Any = DEFAULT_SHUTDOWN) -> Task:
        """Start a task under ``supervisor``, linked to the caller; return it for ``Task.await_``.

        ``supervisor`` is a PID, a local name, or ``(name, node)`` for another node.
        Either a function (``lambda: ...``) or a module (module object, class or name), a
        function name and a list of arguments.
        """
        return _start_task(supervisor, shipping.build(fn_or_module, fun, args), link=True,
                           shutdown=shutdown, what="async_")

    @staticmethod
    def async_nolink(supervisor: Any, fn_or_module: Any, fun: str | None = None,
                     args: Iterable[Any] | None = None, *,
                     shutdown: Any = DEFAULT_SHUTDOWN) -> Task:
        """Like :meth:`async_`, without the link: a crash of the task does not touch the caller.

        The caller still monitors the task, so ``Task.await_``/``Task.yield_`` report a crash
        as :class:`TaskError` — the way to run work that may fail.
        """
        return _start_task(supervisor, shipping.build(fn_or_module, fun, args), link=False,
                           shutdown=shutdown, what="async_nolink")

    @staticmethod
    def start_child(supervisor: Any, fn_or_module: Any, fun: str | None = None,
                    args: Iterable[Any] | None = None, *, restart: str = "temporary",
                    shutdown: Any = DEFAULT_SHUTDOWN) -> tuple[str, Pid]:
        """Start a task nobody awaits (fire and forget); return ``("ok", pid)``.

        ``restart="transient"`` restarts it when it crashes, ``"permanent"`` always.
        The task is linked to the supervisor only: the caller neither waits for it nor
        hears of its crash. On a BEAM node, Elixir's ``Task.Supervisor.start_child`` runs
        it (module, function and args only: ``"Chat"`` is ``Elixir.Chat``), and the answer
        is the BEAM's: ``{:ok, pid}``, or ``{:error, :max_children}`` from a full supervisor.
        """
        if restart not in ("temporary", "transient", "permanent"):
            raise ValueError(f"restart must be 'temporary', 'transient' or 'permanent', "
                             f"not {restart!r}")
        payload = shipping.build(fn_or_module, fun, args)
        target = server.normalize(supervisor, "task supervisor")
        if _on_beam(target):
            return _start_beam_child(target, payload, restart=restart, shutdown=shutdown)
        result = server.call(target, ("start_task", _encode(target, payload), "noreply",
                                      None, None, restart, shutdown),
                             START_TASK_TIMEOUT,
                             describe=_describe_call(target, payload, "start_child"),
                             hint=_hint(target))
        return result

    # --- inspecting and stopping ---------------------------------------------------------------

    @staticmethod
    def children(supervisor: Any) -> list[Pid]:
        """The PIDs of the tasks running under ``supervisor`` (on a BEAM node too: there
        it asks ``:which_children``, as Elixir's ``Task.Supervisor.children`` does)."""
        target = server.normalize(supervisor, "task supervisor")
        if _on_beam(target):
            running = server.call(target, Atom("which_children"), hint=_hint(target))
            return [child[1] for child in running
                    if type(child) is tuple and len(child) == 4 and isinstance(child[1], Pid)]
        return server.call(target, ("children",), hint=_hint(target))

    @staticmethod
    def terminate_child(supervisor: Any, pid: Pid) -> Any:
        """Stop the task ``pid``: ``"ok"``, or ``("error", "not_found")`` (from a BEAM node,
        the atoms ``:ok`` and ``{:error, :not_found}``, which compare equal to those)."""
        target = server.normalize(supervisor, "task supervisor")
        if _on_beam(target):
            return server.call(target, (Atom("terminate_child"), pid), None, hint=_hint(target))
        return server.call(target, ("terminate_child", pid), None)


def _encode(target: Any, payload: tuple) -> Any:
    # To another node the function travels encoded, and is decoded in the task process: a
    # function that cannot be rebuilt there becomes the task's crash, which the caller sees,
    # instead of a request the supervisor cannot read.
    remote = isinstance(target, tuple) or (isinstance(target, Pid) and not target.is_local)
    return shipping.dumps(payload) if remote else payload


def _describe_call(target: Any, payload: tuple, what: str) -> str:
    if payload[0] == "mfa":
        call = f"{payload[1]}.{payload[2]}({', '.join(repr(a) for a in payload[3])})"
    else:
        call = shipping.describe(payload)
    return f"TaskSupervisor.{what}({target!r}, {call})"


def _hint(target: Any) -> Any:
    def hint(reason: Any) -> str:
        node = target[1] if isinstance(target, tuple) else (
            target.node if isinstance(target, Pid) else pids.local_node())
        name = target[0] if isinstance(target, tuple) else target
        if reason == "noconnection" or (isinstance(reason, tuple) and reason[:1] == ("nodedown",)):
            short = node.split("@")[0]
            return (f"Is {node} running, with the same cookie? Start it, with the application "
                    f"that starts {name!r}, e.g. nodelab node --sname {short} --app chat")
        if reason == "noproc":
            return (f"Nothing is registered as {name!r} on {node}: start the application that "
                    "starts it there (e.g. --app chat), or check the name.")
        return ""
    return hint


def is_beam(node: str) -> bool:
    """True when ``node`` is a BEAM (Erlang/Elixir) node: the transport connects to it if
    needed and knows the peer's kind from the handshake (a BEAM peer never proves nodelab's
    HMAC). False when this node is not alive or ``node`` cannot be reached."""
    dist = P.transport()
    if dist is None or node == pids.local_node():
        return False
    connection = getattr(dist, "connection", None)
    conn = connection(node) if connection is not None else None
    return getattr(conn, "peer_tag", None) == "beam"


def _on_beam(target: Any) -> bool:
    """Whether a normalised supervisor ``target`` lives on a BEAM node."""
    if isinstance(target, tuple):
        return is_beam(target[1])
    return isinstance(target, Pid) and not target.is_local and is_beam(target.node)


def _from_beam(caller: tuple[Pid, Any]) -> bool:
    pid = caller[0]
    return isinstance(pid, Pid) and not pid.is_local and is_beam(pid.node)


def _target_node(target: Any) -> str:
    return target[1] if isinstance(target, tuple) else target.node


def _require_mfa(target: Any, payload: tuple, what: str) -> None:
    if payload[0] != "mfa":
        raise TypeError(
            f"a Python function cannot run on the BEAM node {_target_node(target)}: pass a "
            f"module, a function name and a list of arguments, like TaskSupervisor.{what}("
            f"{target!r}, 'Chat', 'receive_message', ['hi'])")


def _owner_info(owner: Pid) -> tuple:
    # Elixir's get_owner/1: {node(), registered name or pid, pid}.
    from nodelab.dist.beam_peer import beam_name
    name = P.registered_name(owner)
    return (Atom(pids.local_node()), beam_name(name) if name else owner, owner)


def _beam_mfa(payload: tuple) -> tuple:
    from nodelab.dist.beam_peer import module_atom
    _, module, fun, args = payload
    return (module_atom(module), Atom(fun), list(args))


def _start_beam_child(target: Any, payload: tuple, *, restart: str, shutdown: Any) -> Any:
    # Elixir 1.14's Task.Supervisor.start_child: one call, {:start_task, [owner_info,
    # callers, {m, f, a}], restart, shutdown}; the supervisor starts Task.Supervised.noreply,
    # which runs m.f(a) at once, and answers {:ok, pid}. No link, no monitor, no reply.
    _require_mfa(target, payload, "start_child")
    me = P.self()
    request = (Atom("start_task"), [_owner_info(me), [me], _beam_mfa(payload)],
               Atom(restart), _beam_shutdown(shutdown))
    return server.call(target, request, START_TASK_TIMEOUT,
                       describe=_describe_call(target, payload, "start_child"),
                       hint=_hint(target))


def _beam_shutdown(shutdown: Any) -> Any:
    if shutdown == DEFAULT_SHUTDOWN:
        return None  # Elixir's default (5000 ms), as Task.Supervisor.async sends it
    if shutdown in ("brutal_kill", "infinity"):
        return Atom(shutdown)
    return int(float(shutdown) * 1000)


def _start_beam_task(target: Any, payload: tuple, *, link: bool, shutdown: Any,
                     what: str) -> Task:
    # Elixir 1.14's Task.Supervisor.async, step by step: call the supervisor with
    # {:start_task, [{node, owner, owner}, :monitor], :temporary, shutdown}; it answers
    # {:ok, pid} with the task started and waiting (monitoring its owner); the owner links
    # (async, not async_nolink) and monitors it, then sends it
    # {owner, ref, reply_to, callers, {m, f, a}}; the task runs m.f(a) and sends
    # {ref, result} to reply_to (here the owner itself).
    _require_mfa(target, payload, what)
    node = _target_node(target)
    me = P.self()
    request = (Atom("start_task"), [_owner_info(me), Atom("monitor")],
               Atom("temporary"), _beam_shutdown(shutdown))
    answer = server.call(target, request, START_TASK_TIMEOUT,
                         describe=_describe_call(target, payload, what), hint=_hint(target))
    if not (type(answer) is tuple and len(answer) == 2 and answer[0] == "ok"
            and isinstance(answer[1], Pid)):
        raise CallError(_describe_call(target, payload, what), answer,
                        f"the task supervisor on {node} did not start the task")
    pid = answer[1]
    if link:
        P.link(pid)
    ref = P.monitor(pid)
    P.send(pid, (me, ref, me, [me], _beam_mfa(payload)))
    return Task(pid, ref, me, shipping.describe(payload), ref)


def _start_task(supervisor: Any, payload: tuple, *, link: bool, shutdown: Any, what: str) -> Task:
    target = server.normalize(supervisor, "task supervisor")
    if _on_beam(target):
        return _start_beam_task(target, payload, link=link, shutdown=shutdown, what=what)
    me = P.self()
    tag = make_ref()
    mode = "link" if link else "monitor"
    # The call's text is made only if it fails: every task would pay ~1 us for it.
    (_, pid), ref = server.call(
        target, ("start_task", _encode(target, payload), mode, me, tag, "temporary",
                 shutdown),
        START_TASK_TIMEOUT, describe=lambda: _describe_call(target, payload, what),
        hint=_hint(target), keep_monitor=True)
    # ``ref`` was our monitor of the supervisor; the supervisor made it our monitor of the
    # task (and linked us to it) before it answered.
    return Task(pid, ref, me, shipping.describe(payload), tag)


# --- the supervisor process -------------------------------------------------------------------

class _Child:
    __slots__ = ("payload", "restart", "shutdown")

    def __init__(self, payload: Any, restart: str, shutdown: Any) -> None:
        self.payload = payload
        self.restart = restart
        self.shutdown = shutdown


class _ElixirJob:
    """A ``start_child`` job from a BEAM node, kept to run it again on a restart."""

    __slots__ = ("mfa", "owner")

    def __init__(self, owner: Pid, mfa: tuple) -> None:
        self.owner = owner
        self.mfa = mfa


class _TaskSupervisor(gen_server.Server):
    def __init__(self, parent: Pid, intensity: server.Intensity) -> None:
        self.pid = P.self()
        self.parent = parent
        self.intensity = intensity
        self.children: dict[Pid, _Child] = {}
        # One task process waits, started ahead, for the next job: starting a thread is the
        # slowest step of a task, and this takes it out of the caller's round trip.
        self.spare: list[Pid] = []

    def new_process(self, body: Any = run_supervised, args: tuple = ()) -> Pid:
        # Tasks print where the supervisor prints: on this node (the application's group
        # leader), not on the node of whoever asked for the task. Read it each time: a
        # notebook may replace the node's group leader (and so ours) after we started.
        leader = P.group_leader()
        if leader is None:
            leader = P.default_group_leader()
        return P.start_process(body, args, group_leader=leader, link_to=self.pid)

    def start(self, child: _Child) -> Pid:
        pid = None
        while self.spare and pid is None:
            pid = self.spare.pop()
            if not P.is_alive(pid):
                pid = None  # killed while it waited (by hand): its EXIT is on its way
        if pid is None:
            pid = self.new_process()
        self.children[pid] = child
        return pid

    def stop_all(self) -> None:
        for pid in self.spare:
            server.shutdown(pid, "brutal_kill")
        self.spare.clear()
        for pid in reversed(list(self.children)):
            server.shutdown(pid, self.children.pop(pid).shutdown)

    # --- the server's callbacks ---------------------------------------------------------------

    def describe(self) -> Any:
        # Elixir's Task.Supervisor is a DynamicSupervisor: one_for_one, children on demand.
        return ("TaskSupervisor", "one_for_one")

    def terminate(self, reason: Any) -> None:
        self.stop_all()

    def handle_call(self, request: Any, caller: tuple[Pid, Any]) -> Any:
        kind = request[0] if type(request) is tuple and request else request
        children = self.children
        if kind == "start_task" and len(request) == 4 and type(request[1]) is list:
            return self.start_for_elixir(request)
        if isinstance(kind, Atom) and _from_beam(caller):
            return self.answer_elixir(kind, request)
        if kind == "start_task":
            _, payload, mode, owner, tag, restart, shutdown = request
            pid = self.start(_Child(payload, restart, shutdown))
            # Reply first, then hand over the job: the reply (and the link) are then
            # ahead of anything the task sends the caller, on the same connection. The
            # reply leaves with the link, in one frame, to a caller of another node.
            if mode in ("link", "monitor"):
                P.hand_over_monitor(caller[1], owner, pid, link=mode == "link",
                                    then_send=(caller[0], (caller[1], ("ok", pid))))
            else:
                gen_server.reply(caller, ("ok", pid))
            P.send(pid, (JOB, payload, owner, tag, "reply" if owner else "noreply", caller[1]))
            # The next spare is started when a task ends (below), not now: now this task
            # needs the interpreter more than a thread that nobody waits for yet.
            return gen_server.NOREPLY
        if kind == "children":
            return list(children)
        if kind == "which_children":
            return [(None, pid, "worker", [Task]) for pid in children]
        if kind == "count_children":
            return {"specs": len(children), "active": len(children), "supervisors": 0,
                    "workers": len(children)}
        if kind == "terminate_child":
            pid = request[1]
            child = children.pop(pid, None)
            if child is None:
                return ("error", "not_found")
            server.shutdown(pid, child.shutdown)
            return "ok"
        return ("error", ("unknown_request", request))

    def answer_elixir(self, kind: str, request: Any) -> Any:
        """What Elixir's ``Task.Supervisor``/``DynamicSupervisor`` functions ask, answered in
        their terms: ``:which_children`` (``Task.Supervisor.children``), ``:count_children``
        and ``{:terminate_child, pid}``."""
        children = self.children
        if kind == "which_children":
            return [(Atom("undefined"), pid, Atom("worker"), [Atom("Elixir.Task.Supervised")])
                    for pid in children]
        if kind == "count_children":
            return [(Atom("specs"), len(children)), (Atom("active"), len(children)),
                    (Atom("supervisors"), 0), (Atom("workers"), len(children))]
        if kind == "terminate_child" and type(request) is tuple and len(request) == 2:
            child = children.pop(request[1], None)
            if child is None:
                return (Atom("error"), Atom("not_found"))
            server.shutdown(request[1], child.shutdown)
            return Atom("ok")
        return (Atom("error"), (Atom("unknown_request"), request))

    def start_for_elixir(self, request: tuple) -> Any:
        """Elixir's ``{:start_task, args, restart, shutdown}`` (``Task.Supervisor`` of a BEAM
        node): ``args`` is ``[owner_info, :monitor | :nomonitor]`` for ``async``/
        ``async_nolink`` (the job comes later, from the owner) or ``[owner_info, callers,
        {m, f, a}]`` for ``start_child``. Answers ``{:ok, pid}``."""
        _, args, restart, shutdown = request
        if isinstance(shutdown, int) and not isinstance(shutdown, bool):
            shutdown = shutdown / 1000
        elif shutdown not in ("brutal_kill", "infinity"):
            shutdown = DEFAULT_SHUTDOWN
        if len(args) == 2:
            owner_info, monitor = args
            job: Any = None
        elif len(args) == 3 and type(args[2]) is tuple and len(args[2]) == 3:
            owner_info, job = args[0], args[2]
            monitor = "nomonitor"
        else:
            return (Atom("error"), Atom("badarg"))
        if not (type(owner_info) is tuple and len(owner_info) == 3
                and isinstance(owner_info[2], Pid)):
            return (Atom("error"), Atom("badarg"))
        # async/async_nolink tasks are temporary (a restarted one would have no owner to
        # answer); start_child's may be transient or permanent, as the caller asked.
        if job is None or restart not in ("transient", "permanent"):
            restart = "temporary"
        pid = self.new_process(run_for_elixir_owner, (owner_info[2], monitor == "monitor", job))
        self.children[pid] = _Child(None if job is None else _ElixirJob(owner_info[2], job),
                                    str(restart), shutdown)
        return (Atom("ok"), pid)

    def handle_exit(self, pid: Pid, reason: Any) -> None:
        spare = self.spare
        if not spare:
            spare.append(self.new_process())
        if pid in spare:
            spare.remove(pid)  # killed while idle (by hand): replace it on next use
            return
        child = self.children.pop(pid, None)
        if child is None or child.restart == "temporary":
            return
        if child.restart == "transient" and server.is_normal_exit(reason):
            return
        if not self.intensity.add():
            P.write_error(f"[error] Task supervisor {P.registered_name(self.pid) or self.pid!r}: "
                          f"{self.intensity.describe()}, shutting down")
            self.stop_all()
            raise ProcessExit("shutdown")
        if isinstance(child.payload, _ElixirJob):
            job = child.payload
            restarted = self.new_process(run_for_elixir_owner, (job.owner, False, job.mfa))
            self.children[restarted] = child
            return
        restarted = self.start(child)
        P.send(restarted, (JOB, child.payload, None, None, "noreply", None))


def _serve(booting: server.Booting, intensity: server.Intensity) -> None:
    P.set_trap_exit(True)
    sup = _TaskSupervisor(booting.parent, intensity)
    booting.ack(("ok", sup.pid))
    sup.spare.append(sup.new_process())
    gen_server.serve(sup, parent=sup.parent)
