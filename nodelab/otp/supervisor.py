"""``Supervisor``: a process that starts other processes and restarts them when they fail.

Like Elixir's ``Supervisor``::

    children = [
        (TaskSupervisor, {"name": "Chat.TaskSupervisor"}),           # module + argument
        {"id": "worker", "start": (start_worker, [])},               # a child spec dict
    ]
    Supervisor.start_link(children, strategy="one_for_one", name="Chat.Supervisor")

A *child spec* says how to start a child and what to do when it exits:

``"id"``
    the child's name inside this supervisor (``which_children`` shows it);
``"start"``
    ``(function, args)`` or ``(function, args, kwargs)`` or ``(module, "fun", args)``:
    called *in the supervisor's process*, it must start a process **linked to the
    caller** (``spawn_link``, or another ``start_link``) and return ``("ok", pid)`` or the
    PID (``"ignore"`` starts nothing);
``"restart"``
    ``"permanent"`` (always restart, the default), ``"transient"`` (only after an
    abnormal exit) or ``"temporary"`` (never);
``"shutdown"``
    seconds the child gets to stop after exit ``"shutdown"`` before it is killed (default
    5; ``"infinity"`` for supervisors; ``"brutal_kill"`` kills at once);
``"type"``
    ``"worker"`` or ``"supervisor"``.

A class or module with ``child_spec(arg)`` stands for ``child_spec({})``, and a tuple
``(module, arg)`` for ``module.child_spec(arg)`` — the way ``{Task.Supervisor, name: ...}``
works in Elixir.

Strategies, when a child exits and must be restarted:

* ``"one_for_one"``: restart that child only;
* ``"one_for_all"``: stop all the others (in reverse start order), restart all of them;
* ``"rest_for_one"``: stop the children started after it, restart it and them.

Restart intensity: more than ``max_restarts`` restarts (default 3) in ``max_seconds``
(default 5) and the supervisor stops all its children and exits with reason
``"shutdown"`` — its own supervisor (it is linked to the process that started it) then
applies *its* strategy: failures escalate up the tree. Stopping a supervisor stops its
children in reverse start order, each within its ``shutdown`` time.

One module, although a little long: child specs, strategies and restart intensity are the
one concept of a supervisor.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

from nodelab.dist import shipment
from nodelab.runtime import gen_server
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref

from ..errors import ProcessExit, format_exit
from . import server
from .errors import StartError

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTARTS = ("permanent", "transient", "temporary")
TYPES = ("worker", "supervisor")
SPEC_KEYS = {"id", "start", "restart", "shutdown", "type", "modules", "significant"}


class Supervisor(metaclass=server.ModuleLike):
    """Functions of Elixir's ``Supervisor`` module."""

    @staticmethod
    def start_link(children: Iterable[Any], strategy: str = "one_for_one", *,
                   name: str | None = None, max_restarts: int = 3,
                   max_seconds: float = 5.0) -> tuple[str, Pid]:
        """Start a supervisor linked to the caller, start its children in order.

        Returns ``("ok", pid)`` once every child has started. If a child fails to start,
        the ones already started are stopped and :class:`StartError` is raised, with
        reason ``("shutdown", ("failed_to_start_child", id, why))`` as in Elixir.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        specs = [child_spec(item) for item in children]
        ids = [spec["id"] for spec in specs]
        duplicates = sorted({repr(i) for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"children must have distinct ids; repeated: {', '.join(duplicates)} "
                             "(give each one its own with Supervisor.child_spec(spec, id=...))")
        intensity = server.Intensity(max_restarts, max_seconds)
        if name is not None and not (isinstance(name, str) and name):
            raise TypeError(f"a name is a non-empty string like 'Chat.Supervisor', not {name!r}")
        label = f"supervisor {name}" if name else "supervisor"
        return server.start_server(_serve, (specs, strategy, intensity), name=name, what=label)

    @staticmethod
    def child_spec(spec: Any, **overrides: Any) -> dict[str, Any]:
        """The full child spec of ``spec`` (a dict, a module/class, ``(module, arg)``), with
        ``overrides`` applied: ``Supervisor.child_spec((TaskSupervisor, {}), id="tasks")``."""
        result = child_spec(spec)
        unknown = set(overrides) - SPEC_KEYS
        if unknown:
            raise TypeError(f"unknown child spec key(s) {sorted(unknown)}: a spec has "
                            f"{', '.join(sorted(SPEC_KEYS - {'significant'}))}")
        result.update(overrides)
        return child_spec(result)

    @staticmethod
    def which_children(supervisor: Any) -> list[tuple[Any, Any, str, list[Any]]]:
        """``[(id, pid, type, modules), ...]``, newest first as in Elixir; a child that is not
        running has ``None`` where Elixir shows ``:undefined``."""
        return _call(supervisor, ("which_children",))

    @staticmethod
    def count_children(supervisor: Any) -> dict[str, int]:
        """``{"specs": n, "active": n, "supervisors": n, "workers": n}``."""
        return _call(supervisor, ("count_children",))

    @staticmethod
    def start_child(supervisor: Any, spec: Any) -> Any:
        """Add a child and start it: ``("ok", pid)`` or ``("error", reason)``."""
        return _call(supervisor, ("start_child", child_spec(spec)), None)

    @staticmethod
    def terminate_child(supervisor: Any, child_id: Any) -> Any:
        """Stop the child ``child_id`` (its spec stays): ``"ok"`` or ``("error", "not_found")``."""
        return _call(supervisor, ("terminate_child", child_id), None)

    @staticmethod
    def restart_child(supervisor: Any, child_id: Any) -> Any:
        """Start a stopped child again: ``("ok", pid)``, ``("error", "running")`` or
        ``("error", "not_found")``."""
        return _call(supervisor, ("restart_child", child_id), None)

    @staticmethod
    def delete_child(supervisor: Any, child_id: Any) -> Any:
        """Forget a stopped child's spec: ``"ok"``, ``("error", "running")`` or
        ``("error", "not_found")``."""
        return _call(supervisor, ("delete_child", child_id))

    @staticmethod
    def stop(supervisor: Any, reason: Any = "normal", timeout: float | None = None) -> str:
        """Stop the supervisor: its children first, in reverse start order; returns ``"ok"``
        once the supervisor process is gone (also a TaskSupervisor)."""
        target = server.normalize(supervisor, "supervisor")
        watch = P.monitor(target)
        try:
            _call(target, ("$stop", reason), timeout)
        except BaseException:
            P.demonitor(watch, flush=True)
            raise
        server.wait_down(watch, server.KILL_WAIT)
        P.demonitor(watch, flush=True)
        return "ok"


def _call(supervisor: Any, request: tuple, timeout: float | None = server.DEFAULT_TIMEOUT
          ) -> Any:
    return server.call(server.normalize(supervisor, "supervisor"), request, timeout,
                       describe=f"Supervisor.{request[0].lstrip('$')}({supervisor!r})")


# --- child specs --------------------------------------------------------------------------------

def child_spec(item: Any) -> dict[str, Any]:
    """Normalize anything a children list may hold into a full child spec dict."""
    if isinstance(item, dict):
        spec = dict(item)
    elif isinstance(item, tuple) and len(item) == 2 and hasattr(item[0], "child_spec"):
        spec = dict(item[0].child_spec(item[1]))
    elif hasattr(item, "child_spec") and isinstance(item, (type, types.ModuleType)):
        spec = dict(item.child_spec({}))
    else:
        raise TypeError(
            f"{item!r} is not a child spec: use a dict like {{'id': 'worker', 'start': "
            "(start_worker, [])}, a class or module with child_spec(arg), or a tuple "
            "(module, arg) like (TaskSupervisor, {'name': 'Chat.TaskSupervisor'})")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown child spec key(s) {sorted(unknown)} in {spec!r}")
    if "id" not in spec:
        raise ValueError(f"the child spec {spec!r} has no 'id': every child needs one")
    if "start" not in spec:
        raise ValueError(f"the child spec {spec!r} has no 'start': say how to start the child, "
                         "e.g. 'start': (start_worker, [])")
    spec["start"] = _start_of(spec["start"])
    spec.setdefault("restart", "permanent")
    spec.setdefault("type", "worker")
    spec.setdefault("shutdown", "infinity" if spec["type"] == "supervisor" else 5)
    spec.setdefault("modules", [_module_of(spec["start"][0])])
    if spec["restart"] not in RESTARTS:
        raise ValueError(f"restart must be one of {', '.join(RESTARTS)}, not {spec['restart']!r}")
    if spec["type"] not in TYPES:
        raise ValueError(f"type must be 'worker' or 'supervisor', not {spec['type']!r}")
    how = spec["shutdown"]
    if how not in ("brutal_kill", "infinity") and (
            isinstance(how, bool) or not isinstance(how, (int, float)) or how < 0):
        raise ValueError(f"shutdown must be seconds >= 0, 'brutal_kill' or 'infinity', not {how!r}")
    return spec


def _start_of(start: Any) -> tuple[Callable[..., Any], tuple, dict]:
    if callable(start):
        return (start, (), {})
    if isinstance(start, tuple):
        if len(start) == 3 and isinstance(start[1], str):
            module, fun, args = start
            if isinstance(module, str):
                fn = shipment.import_function(module, fun)
            else:
                fn = getattr(module, fun)
            return (fn, tuple(args), {})
        if len(start) in (2, 3) and callable(start[0]) and isinstance(start[1], (list, tuple)):
            kwargs = dict(start[2]) if len(start) == 3 else {}
            return (start[0], tuple(start[1]), kwargs)
    raise TypeError(f"'start' must be (function, args), (function, args, kwargs) or "
                    f"(module, 'function', args), not {start!r}")


def _module_of(fn: Any) -> Any:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, (type, types.ModuleType)):
        return owner
    qualname = getattr(fn, "__qualname__", "")
    if "." in qualname and "<" not in qualname:
        return qualname.rsplit(".", 1)[0]
    return getattr(fn, "__module__", None) or repr(fn)


# --- the supervisor process ---------------------------------------------------------------------

class _Child:
    __slots__ = ("id", "start", "restart", "shutdown", "type", "modules", "pid")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.id = spec["id"]
        self.start = spec["start"]
        self.restart = spec["restart"]
        self.shutdown = spec["shutdown"]
        self.type = spec["type"]
        self.modules = spec["modules"]
        self.pid: Pid | None = None


class _ChildStartFailed(Exception):
    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class _Supervisor(gen_server.Server):
    def __init__(self, booting: server.Booting, strategy: str,
                 intensity: server.Intensity) -> None:
        self.pid = P.self()
        self.parent = booting.parent
        self.strategy = strategy
        self.intensity = intensity
        self.children: list[_Child] = []

    @property
    def label(self) -> str:
        return f"Supervisor {P.registered_name(self.pid) or repr(self.pid)}"

    def find(self, child_id: Any) -> _Child | None:
        return next((c for c in self.children if c.id == child_id), None)

    def start(self, child: _Child) -> None:
        fn, args, kwargs = child.start
        try:
            result = fn(*args, **kwargs)
        except ProcessExit:
            raise
        except StartError as error:
            raise _ChildStartFailed(error.reason) from error
        except Exception as error:  # any failure is the child's start failure (re-raised)
            raise _ChildStartFailed(("exception", f"{type(error).__name__}: {error}")) from error
        if result == "ignore":
            child.pid = None
            return
        if isinstance(result, Pid):
            pid = result
        elif type(result) is tuple and len(result) >= 2 and result[0] == "ok" and isinstance(
                result[1], Pid):
            pid = result[1]
        elif type(result) is tuple and len(result) == 2 and result[0] == "error":
            raise _ChildStartFailed(result[1])
        else:
            raise _ChildStartFailed(("bad_return_value", result))
        # The contract says the child links to us; make sure (linking twice changes nothing),
        # or we would never hear of its exit.
        P.link(pid)
        child.pid = pid

    def stop_child(self, child: _Child) -> None:
        if child.pid is not None:
            server.shutdown(child.pid, child.shutdown)
            child.pid = None

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop_child(child)

    # --- restarts -------------------------------------------------------------------------------

    def on_child_exit(self, child: _Child, reason: Any) -> None:
        child.pid = None
        if child.restart == "temporary" or (
                child.restart == "transient" and server.is_normal_exit(reason)):
            if child.restart == "temporary":
                self.children.remove(child)
            return
        self.restart(child, reason)

    def restart(self, child: _Child, reason: Any) -> None:
        if not self.intensity.add():
            P.write_error(
                f"[error] {self.label}: child {child.id!r} exited with reason "
                f"{_short(reason)}, and that is {self.intensity.describe()}: shutting down "
                "(the supervisor's own supervisor decides what happens next)")
            self.stop_all()
            raise ProcessExit("shutdown")
        if self.strategy == "one_for_one":
            group = [child]
        else:
            index = self.children.index(child)
            group = list(self.children if self.strategy == "one_for_all"
                         else self.children[index:])
        for other in reversed(group):
            if other is not child:
                self.stop_child(other)
        for other in group:
            if other is not child and other.restart == "temporary":
                self.children.remove(other)  # OTP does not bring temporary children back
        for other in group:
            if other in self.children and other.pid is None:
                try:
                    self.start(other)
                except _ChildStartFailed as failed:
                    # Try again from the loop (counted against the intensity), as OTP does.
                    P.write_error(f"[error] {self.label}: could not restart child "
                                  f"{other.id!r}: {_short(failed.reason)}")
                    P.send(self.pid, ("$restart", other.id))
                    return

    # --- requests -------------------------------------------------------------------------------

    def describe(self) -> Any:
        return ("Supervisor", self.strategy)  # what a picture of the tree shows beside the name

    def terminate(self, reason: Any) -> None:
        self.stop_all()

    def handle_exit(self, pid: Pid, reason: Any) -> None:
        child = next((c for c in self.children if c.pid == pid), None)
        if child is not None:
            self.on_child_exit(child, reason)

    def handle_info(self, message: Any) -> None:
        if type(message) is tuple and len(message) == 2 and message[0] == "$restart":
            child = self.find(message[1])
            if child is not None and child.pid is None:
                self.restart(child, "restart_failed")

    def handle_call(self, request: Any, caller: tuple[Pid, Ref]) -> Any:
        kind = request[0]
        if kind == "which_children":
            return [(c.id, c.pid, c.type, list(c.modules)) for c in reversed(self.children)]
        if kind == "count_children":
            supervisors = sum(1 for c in self.children if c.type == "supervisor")
            return {"specs": len(self.children),
                    "active": sum(1 for c in self.children if c.pid is not None),
                    "supervisors": supervisors, "workers": len(self.children) - supervisors}
        if kind == "start_child":
            spec = request[1]
            existing = self.find(spec["id"])
            if existing is not None:
                if existing.pid is not None:
                    return ("error", ("already_started", existing.pid))
                return ("error", "already_present")
            child = _Child(spec)
            try:
                self.start(child)
            except _ChildStartFailed as failed:
                return ("error", failed.reason)
            if child.pid is not None or child.restart != "temporary":
                self.children.append(child)
            return ("ok", child.pid)
        child = self.find(request[1]) if len(request) > 1 else None
        if kind == "terminate_child":
            if child is None:
                return ("error", "not_found")
            self.stop_child(child)
            if child.restart == "temporary":
                self.children.remove(child)
            return "ok"
        if kind == "restart_child":
            if child is None:
                return ("error", "not_found")
            if child.pid is not None:
                return ("error", "running")
            try:
                self.start(child)
            except _ChildStartFailed as failed:
                return ("error", failed.reason)
            return ("ok", child.pid)
        if kind == "delete_child":
            if child is None:
                return ("error", "not_found")
            if child.pid is not None:
                return ("error", "running")
            self.children.remove(child)
            return "ok"
        return ("error", ("unknown_request", request))


def _short(reason: Any) -> str:
    return format_exit(reason).replace("\n", " ")


def _serve(booting: server.Booting, specs: list[dict[str, Any]], strategy: str,
           intensity: server.Intensity) -> None:
    P.set_trap_exit(True)
    sup = _Supervisor(booting, strategy, intensity)
    for spec in specs:
        child = _Child(spec)
        try:
            sup.start(child)
        except _ChildStartFailed as failed:
            sup.stop_all()
            reason = ("shutdown", ("failed_to_start_child", child.id, failed.reason))
            booting.fail(reason, f"{sup.label} could not start child {child.id!r}: "
                                 f"{_short(failed.reason)}; the children already started "
                                 "were stopped")
        sup.children.append(child)
    booting.ack(("ok", sup.pid))
    gen_server.serve(sup, parent=sup.parent)
