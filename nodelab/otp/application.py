"""``Application``: start and stop an application — a package with a supervision tree.

In Elixir, ``mix new chat --sup`` makes an *application*: code plus a callback module
(``Chat.Application``) whose ``start/2`` starts the top supervisor, and ``iex -S mix``
starts it on the node. In nodelab an application is a Python package ``chat`` with a
module ``chat.application`` that defines::

    def start(type, args):              # returns ("ok", pid) of the top supervisor
        children = [(TaskSupervisor, {"name": "Chat.TaskSupervisor"})]
        return Supervisor.start_link(children, strategy="one_for_one", name="Chat.Supervisor")

    def stop(state):                    # optional: called after the tree has stopped
        ...

``Application.start("chat")`` does what mix does before ``Chat.Application.start/2``:

1. finds the *project directory* (the one holding the package ``chat/`` and ``config/``):
   in each directory of ``NODELAB_APP_PATH`` (``os.pathsep``-separated; a directory may be
   the project itself or contain it as ``<dir>/chat``), then ``./chat``, ``.`` and
   ``./lessons/chat``; an already importable ``chat`` package is used where it is;
2. puts the project directory on ``sys.path``, so ``import chat`` works;
3. loads ``config/config.py`` (see :mod:`nodelab.otp.config`) for the environment
   ``NODELAB_ENV`` (default ``dev``);
4. calls ``chat.application.start("normal", [])`` in a new *application master* process,
   whose group leader is the node's own: what the tree's processes print appears on this
   node's output (a terminal, or a notebook's node output), whoever asked them to work.

A package without an ``application`` module is a library application: it is loaded and
configured, and there is no tree to start (``nodelab new chat`` without ``--sup``).

``nodelab node --sname kate --app chat`` and ``Node.start("kate", app="chat")`` start it
when the node starts, ``Application.stop("chat")`` (and stopping the node) stops the tree
in reverse start order.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import traceback
import types
from pathlib import Path
from typing import Any

from nodelab.runtime import gen_server
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid

from ..errors import ProcessExit, format_exit
from . import config as _config
from . import server
from .errors import ApplicationError, CallError, StartError

#: How long Application.stop waits for the tree to stop (each child has its own shutdown).
STOP_TIMEOUT = server.INFINITY_BOUND + 2 * server.KILL_WAIT


class _Running:
    __slots__ = ("name", "master", "top", "project")

    def __init__(self, name: str, master: Pid | None, top: Pid | None,
                 project: Path | None) -> None:
        self.name = name
        self.master = master
        self.top = top
        self.project = project


_lock = threading.RLock()
_running: dict[str, _Running] = {}  # in start order
_loaded: dict[str, Path | None] = {}


class Application(metaclass=server.ModuleLike):
    """Functions of Elixir's ``Application`` module."""

    # --- configuration ------------------------------------------------------------------------

    @staticmethod
    def get_env(app: str, key: str, default: Any = None) -> Any:
        """``Application.get_env("chat", "remote_supervisor")``: the value, or ``default``."""
        return _config.get_env(app, key, default)

    @staticmethod
    def fetch_env(app: str, key: str) -> Any:
        """Like :meth:`get_env`, raising when the key was never set (Elixir's ``fetch_env!``)."""
        return _config.fetch_env(app, key)

    @staticmethod
    def put_env(app: str, key: str, value: Any) -> str:
        """Set a value in ``app``'s environment on this node; returns ``"ok"``."""
        return _config.put_env(app, key, value)

    @staticmethod
    def delete_env(app: str, key: str) -> str:
        return _config.delete_env(app, key)

    @staticmethod
    def get_all_env(app: str) -> dict[str, Any]:
        return _config.get_all_env(app)

    # --- life cycle ----------------------------------------------------------------------------

    @staticmethod
    def load(app: str) -> str:
        """Find ``app``'s project, put it on ``sys.path`` and load its config (once)."""
        _check_name(app)
        with _lock:
            if app in _loaded:
                return "ok"
            project = find_project(app)
            if project is not None:
                if str(project) not in sys.path:
                    sys.path.insert(0, str(project))
                    importlib.invalidate_caches()
                config_file = project / "config" / "config.py"
                if config_file.is_file():
                    _config.load_config(config_file)
            elif importlib.util.find_spec(app) is None:
                raise ApplicationError(_not_found_text(app))
            _loaded[app] = project
        return "ok"

    @staticmethod
    def start(app: str) -> str:
        """Load ``app`` and start its supervision tree; returns ``"ok"``.

        Raises :class:`ApplicationError` when it cannot be found or is already started, and
        when its ``start`` fails (with the reason and the traceback).
        """
        Application.load(app)
        with _lock:
            if app in _running:
                raise ApplicationError(
                    f"the application {app!r} is already started on this node: stop it first "
                    f"with Application.stop({app!r}), or use Application.ensure_all_started")
            _running[app] = _Running(app, None, None, _loaded.get(app))  # reserve the name
        try:
            package = importlib.import_module(app)
            callbacks = _callback_module(app, package)
            if callbacks is not None:
                result = server.start_server(
                    _master, (app, callbacks), link=False, what=f"application {app}",
                    group_leader=P.default_group_leader())
                _running[app].master = result[1]
                _running[app].top = result[2]
        except StartError as error:
            _forget(app)
            raise ApplicationError(f"the application {app!r} could not start: {error}") from None
        except BaseException:
            _forget(app)
            raise
        return "ok"

    @staticmethod
    def ensure_all_started(app: str) -> tuple[str, list[str]]:
        """Start ``app`` unless it runs already; ``("ok", [names started now])``."""
        with _lock:
            if app in _running:
                return ("ok", [])
        Application.start(app)
        return ("ok", [app])

    @staticmethod
    def ensure_started(app: str) -> str:
        Application.ensure_all_started(app)
        return "ok"

    @staticmethod
    def stop(app: str) -> Any:
        """Stop ``app``'s tree (children in reverse start order), then call its ``stop(state)``.

        Returns ``"ok"``, or ``("error", ("not_started", app))`` as Elixir does.
        """
        with _lock:
            running = _running.get(app)
        if running is None:
            return ("error", ("not_started", app))
        if running.master is not None:
            watch = P.monitor(running.master)
            try:
                server.call(running.master, ("$stop",), STOP_TIMEOUT,
                            describe=f"Application.stop({app!r})")
            except CallError:
                pass  # it was exiting by itself (its tree died): nothing is left to stop
            server.wait_down(watch, server.KILL_WAIT)
            P.demonitor(watch, flush=True)
        _forget(app)
        return "ok"

    @staticmethod
    def started_applications() -> list[str]:
        """The applications running on this node, in start order."""
        with _lock:
            return [name for name, running in _running.items()
                    if running.master is not None or running.top is None]

    @staticmethod
    def project_dir(app: str) -> Path | None:
        """Where ``app``'s project (package + ``config/``) was found, once loaded."""
        return _loaded.get(app)


# --- finding the project --------------------------------------------------------------------

def _check_name(app: Any) -> None:
    if not isinstance(app, str) or not app.isidentifier():
        raise ApplicationError(f"{app!r} is not an application name: use the name of its Python "
                               "package, like 'chat'")


def _candidates(app: str) -> list[Path]:
    # The project in the current directory comes first, as with mix: a notebook that just
    # wrote its own chat app must run that one, whatever NODELAB_APP_PATH says.
    cwd = Path.cwd()
    places: list[Path] = [cwd / app, cwd]
    for entry in os.environ.get("NODELAB_APP_PATH", "").split(os.pathsep):
        if entry.strip():
            base = Path(entry.strip()).expanduser()
            places += [base / app, base]
    places.append(cwd / "lessons" / app)
    return places


def find_project(app: str) -> Path | None:
    """The project directory of ``app`` (the one holding ``app/__init__.py``), or None."""
    module = sys.modules.get(app)
    module_file = getattr(module, "__file__", None)
    if module_file:
        here = Path(module_file).resolve().parent
        return here.parent if hasattr(module, "__path__") else here
    for place in _candidates(app):
        if (place / app / "__init__.py").is_file():
            return place.resolve()
    spec = importlib.util.find_spec(app)
    if spec is not None and spec.origin:
        project = Path(spec.origin).resolve().parent.parent
        return project if (project / "config").is_dir() else None
    return None


def _not_found_text(app: str) -> str:
    looked = ", ".join(str(p) for p in _candidates(app))
    return (f"cannot find the application {app!r}: no {app}/__init__.py in {looked}. Put the "
            f"directory that holds the project on NODELAB_APP_PATH (e.g. NODELAB_APP_PATH="
            f"$PWD/lessons), or run from the project directory.")


def _callback_module(app: str, package: types.ModuleType) -> types.ModuleType | None:
    name = f"{app}.application"
    if importlib.util.find_spec(name) is None:
        return None  # a library application: nothing to start
    module = importlib.import_module(name)
    if not callable(getattr(module, "start", None)):
        raise ApplicationError(f"{name} has no start(type, args) function: define one that "
                               "returns Supervisor.start_link(children, ...)")
    return module


def top_supervisor(app: str) -> Pid | None:
    """The top supervisor of ``app`` when it runs on this node, else None (what OTP's
    ``application_master:get_child/1`` answers; the pictures draw the tree under it)."""
    with _lock:
        running = _running.get(app)
        return None if running is None else running.top


def _forget(app: str) -> None:
    with _lock:
        _running.pop(app, None)


# --- the application master ----------------------------------------------------------------

class _Master(gen_server.Server):
    """The application master: it started the tree, and stops it (then calls ``stop``)."""

    def __init__(self, app: str, callbacks: types.ModuleType, top: Pid, state: Any) -> None:
        self.app = app
        self.callbacks = callbacks
        self.top = top
        self.state = state

    def describe(self) -> Any:
        return ("Application", self.app)

    def terminate(self, reason: Any) -> None:
        server.shutdown(self.top, "infinity")
        stop = getattr(self.callbacks, "stop", None)
        if callable(stop):
            try:
                stop(self.state)
            except Exception as error:  # noqa: BLE001 - the tree is down anyway
                P.write_error(f"[error] {self.callbacks.__name__}.stop raised "
                              f"{type(error).__name__}: {error}")

    def handle_exit(self, pid: Pid, reason: Any) -> None:
        if pid == self.top:
            # The top supervisor gave up (restart intensity) or was killed: the application
            # is over. Elixir logs the same line for a temporary application.
            P.write_error(f"[notice] Application {self.app} exited: {format_exit(reason)}")
            _forget(self.app)
            raise ProcessExit(P.NORMAL)


def _master(booting: server.Booting, app: str, callbacks: types.ModuleType) -> None:
    P.set_trap_exit(True)
    try:
        result = callbacks.start("normal", [])
    except ProcessExit:
        raise
    except StartError as error:
        booting.fail(("bad_start", error.reason), str(error))
    except Exception as error:  # noqa: BLE001 - whatever start raised is the reason
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        booting.fail(("bad_start", repr(error)),
                     f"{callbacks.__name__}.start raised {type(error).__name__}: {error}\n{text}")
    state: Any = None
    if isinstance(result, Pid):
        top = result
    elif type(result) is tuple and len(result) in (2, 3) and result[0] == "ok" and isinstance(
            result[1], Pid):
        top = result[1]
        state = result[2] if len(result) == 3 else None
    else:
        booting.fail(("bad_return", result),
                     f"{callbacks.__name__}.start returned {result!r}: it must return "
                     "('ok', pid) of the top supervisor, e.g. Supervisor.start_link(...)")
    P.link(top)  # the top supervisor links to us already; linking twice changes nothing
    booting.ack(("ok", P.self(), top))
    gen_server.serve(_Master(app, callbacks, top, state))
