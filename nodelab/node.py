"""``Node``: this OS process as a named node, and the nodes it talks to.

``Node.start("alex")`` makes this process the node ``alex@localhost`` — the analogue of
``iex --sname alex@localhost``. From then on its processes can reach processes of other
nodes by PID or by ``(name, node)``, and spawn processes there with ``Node.spawn_link``.
Nodes only connect when they share a cookie (``cookie=`` or the user's cookie file).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from nodelab.dist import shipment
from nodelab.dist.connections import Distribution
from nodelab.dist.cookie import read_or_create_cookie, validate_cookie
from nodelab.dist.names import parse_node_name
from nodelab.runtime import pids
from nodelab.runtime import processes as P
from nodelab.runtime.group_leader import install_router
from nodelab.runtime.pids import NO_NODE, Pid, Ref

from .errors import AlreadyAlive, NodelabError, NotAlive

log = logging.getLogger("nodelab")
# Starts an application by name; the OTP layer (above this one) sets it when imported.
_application_starter: Callable[[str], Any] | None = None
_start_lock = threading.Lock()

SPAWN_TIMEOUT = 10.0


def _configure_logging() -> None:
    # The BEAM prints its connection errors on the node's console; so do we, once.
    if not log.handlers:
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def set_application_starter(starter: Callable[[str], Any]) -> None:
    """Let ``Node.start(name, app=...)`` start applications (called by ``nodelab.otp``)."""
    global _application_starter
    _application_starter = starter


class _ConsoleHandler(logging.Handler):
    """Writes nodelab's log lines where this node writes its errors (its console, or the
    notebook's stderr), with ``[error]`` before errors and ``[warning]`` before warnings, as
    Elixir's logger does."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                text = "[error] " + text
            elif record.levelno >= logging.WARNING:
                text = "[warning] " + text
            P.write_error(text)
        except Exception:  # noqa: BLE001 - a closed console must not take the logging caller down
            pass


#: How errors about a bad module show the module/function/args form of ``Node.spawn``.
_EXAMPLE = "Node.spawn(node, 'Kate', 'say_name', [])"


def _distribution() -> Distribution | None:
    """This node's distribution while it is alive (read once per call: Node.stop may run
    on another thread)."""
    dist = P.current_transport()
    return dist if isinstance(dist, Distribution) else None


class Node:
    """Functions about nodes, named like Elixir's ``Node`` module."""

    @staticmethod
    def start(name: str, cookie: str | None = None, *, tick_time: float | None = None,
              namespace: dict[str, Any] | None = None, app: str | None = None) -> str:
        """Make this OS process the node ``name`` and return its full name.

        ``"alex"`` is the short name ``alex@localhost`` (loopback only, no DNS needed);
        ``"alex@192.0.2.10"`` a long name, reachable from other hosts at that address.
        ``cookie`` defaults to the one in the user's cookie file (``~/.nodelab/cookie``,
        made on first use, mode 0600). ``tick_time`` (seconds, default 15, or
        ``NODELAB_TICK_TIME``) bounds how long a silent peer goes unnoticed.
        ``namespace`` is where functions shipped to this node find their global names
        (default: ``__main__``'s, or the notebook's). ``app`` starts an application once the
        node is up, like ``iex --sname alex -S mix`` (e.g. ``app="chat"``).
        """
        node_name = parse_node_name(name)
        cookie = validate_cookie(cookie) if cookie is not None else read_or_create_cookie()
        if tick_time is None:
            tick_time = float(os.environ.get("NODELAB_TICK_TIME", "15"))
        with _start_lock:
            dist = _distribution()
            if dist is not None:
                raise AlreadyAlive(
                    f"this process is already the node {dist.full_name}: one OS process is one "
                    "node, so call Node.stop() first, or start another node in another process"
                )
            if namespace is not None:
                shipment.set_namespace_provider(lambda: namespace)
            shipment.install_prelude(shipment.node_namespace())
            _configure_logging()
            install_router()
            dist = Distribution(node_name, cookie, tick_time=tick_time)
            dist.start()  # raises NameInUse when another node has the name
            P.set_transport(dist)
            pids.set_local_node(dist.full_name, dist.creation)  # EPMD's creation
            # Shell processes that had no group leader print where the node prints now.
            P.set_group_leader_of_all(None, P.default_group_leader())
        if app is not None:
            if _application_starter is None:
                raise NodelabError(
                    f"cannot start the application {app!r}: import nodelab.otp first")
            _application_starter(app)
        return dist.full_name

    @staticmethod
    def stop() -> str:
        """Stop being a named node: close every connection and free the name. Returns "ok"."""
        with _start_lock:
            dist = _distribution()
            if dist is None:
                return "ok"
            P.set_transport(None)
            dist.stop()
            pids.set_local_node(NO_NODE)
            return "ok"

    @staticmethod
    def self() -> str:
        """This node's name, or ``"nonode@nohost"`` when it is not a named node."""
        return pids.local_node()

    @staticmethod
    def alive() -> bool:
        """True when this process is a named node (Elixir's ``Node.alive?``)."""
        return P.current_transport() is not None

    @staticmethod
    def list() -> list[str]:
        """The nodes this node is connected to."""
        dist = _distribution()
        if dist is None:
            return []
        return sorted(name for name, conn in dist.connections.items() if conn.alive)

    @staticmethod
    def connect(node: str) -> bool | str:
        """Connect to ``node``; True on success, False when it cannot be reached or the
        cookies differ, ``"ignored"`` when this process is not a named node."""
        dist = _distribution()
        if dist is None:
            return "ignored"
        if node == dist.full_name:
            return True
        return dist.connect(node) is not None

    @staticmethod
    def disconnect(node: str) -> bool:
        """Close the connection to ``node``; both sides see it go down."""
        dist = _distribution()
        conn = dist.connections.get(node) if dist is not None else None
        if conn is None:
            return False
        conn.close("disconnect")
        conn.reader.join(timeout=2)
        return True

    @staticmethod
    def ping(node: str) -> str:
        """``"pong"`` when ``node`` answers (connecting if needed), else ``"pang"``.

        Like ``net_adm:ping``, a ping is a question the other node answers, not only a
        connection: once it returns ``"pong"``, ``node`` has this node in its own
        ``Node.list()`` too. A node that does not answer within ``tick_time`` seconds (it
        is connected, but stopped or hung) is ``"pang"``.
        """
        dist = _distribution()
        if dist is None:
            return "pang"
        if node == dist.full_name:
            return "pong"
        if dist.connection(node) is None:
            return "pang"
        try:
            answer = dist.request(node, lambda ref, caller: ("ping", ref, caller),
                                  dist.tick_time, head=None)
        except (ConnectionError, TimeoutError):
            return "pang"
        return "pong" if answer == "yes" else "pang"

    @staticmethod
    def set_cookie(node_or_cookie: str, cookie: str | None = None) -> bool:
        """``Node.set_cookie(cookie)`` changes this node's cookie;
        ``Node.set_cookie(node, cookie)`` the one used with ``node`` only."""
        dist = _distribution()
        if dist is None:
            raise NotAlive("Node.set_cookie")
        if cookie is None:
            dist.cookie = validate_cookie(node_or_cookie)
        else:
            dist.peer_cookies[node_or_cookie] = validate_cookie(cookie)
        return True

    @staticmethod
    def get_cookie() -> str | None:
        dist = _distribution()
        return dist.cookie if dist is not None else None

    @staticmethod
    def monitor(node: str, flag: bool = True) -> bool:
        """Receive ``("nodedown", node)`` once when ``node`` goes down (Erlang's monitor_node).

        Connects first; if ``node`` cannot be reached, ``("nodedown", node)`` arrives at once.
        ``Node.monitor(node, False)`` removes the caller's monitors of ``node``.
        """
        if not flag:
            P.unwatch_node(node)
            return True
        dist = _distribution()
        if dist is None or dist.connection(node) is None:
            P.send(P.self(), ("nodedown", node))
            return True
        P.watch_node(node)
        if dist.connection(node, connect=False) is None:  # it went down meanwhile
            P.send(P.self(), ("nodedown", node))
        return True

    @staticmethod
    def monitor_nodes(flag: bool = True) -> bool:
        """Receive ``("nodeup", node)`` and ``("nodedown", node)`` for every node."""
        dist = _distribution()
        if dist is None:
            raise NotAlive("Node.monitor_nodes")
        if flag:
            dist.node_subscribers.add(P.self())
        else:
            dist.node_subscribers.discard(P.self())
        return True

    @staticmethod
    def spawn(node: str, fn_or_module: Any, fun: str | None = None, args: Any = None) -> Pid:
        """Start a process on ``node`` and return its PID.

        ``Node.spawn(node, lambda: Kate.say_name())`` ships the function: its global names
        are looked up on ``node``. ``Node.spawn(node, "Kate", "say_name", [])`` names a
        module (or a class of the node's namespace), a function and its arguments.
        The new process's group leader is the caller's, so what it prints appears here.
        """
        return _spawn_on(node, shipment.build(fn_or_module, fun, args, example=_EXAMPLE),
                         link=False)

    @staticmethod
    def spawn_link(node: str, fn_or_module: Any, fun: str | None = None, args: Any = None) -> Pid:
        """Like :meth:`spawn`, and link the new process to the caller.

        If ``node`` cannot be reached, a placeholder PID is returned and the caller receives
        an exit signal ``"noconnection"`` — as on the BEAM.
        """
        return _spawn_on(node, shipment.build(fn_or_module, fun, args, example=_EXAMPLE),
                         link=True)


def _spawn_on(node: str, what: tuple, *, link: bool) -> Pid:
    if node in (pids.local_node(), NO_NODE):
        fn, args = shipment.resolve(what)
        return P.spawn_link(fn, *args) if link else P.spawn(fn, *args)
    parse_node_name(node)
    dist = _distribution()
    if dist is None:
        raise NotAlive(f"Node.spawn{'_link' if link else ''} to {node}")
    leader = P.group_leader()
    blob = shipment.dumps(what)
    try:
        result = dist.request(
            node, lambda ref, caller: ("spawn", ref, caller, leader, link, blob),
            timeout=SPAWN_TIMEOUT)
    except (ConnectionError, TimeoutError):
        placeholder = P.new_placeholder_pid()
        # OTP logs this as a warning (net_kernel's "Can not start ..."), not an error.
        log.warning("** Can not start %s on %s **", shipment.describe(what), node)
        if link:
            P.exit_from(placeholder, P.NOCONNECTION)
        return placeholder
    if not isinstance(result, Pid):
        raise NodelabError(f"{node} could not start the process: {result[1]}")
    return result


class Process:
    """Functions about processes, named like Elixir's ``Process`` module."""

    @staticmethod
    def flag(flag: str, value: Any) -> Any:
        """Set a process flag and return its old value. ``"trap_exit"`` is the one that
        matters: with it, exit signals arrive as ``("EXIT", pid, reason)`` messages."""
        if flag != "trap_exit":
            raise ValueError(f"unknown process flag {flag!r}: nodelab knows 'trap_exit'")
        return P.set_trap_exit(bool(value))

    @staticmethod
    def info(pid: Pid) -> dict[str, Any] | None:
        """A dict about ``pid`` (status, message_queue_len, links, group_leader, ...), on
        any node; None when it is not alive.

        For a pid on another node, that node is asked: a nodelab node answers itself, a
        BEAM node through its ``rex`` server (``:erlang.process_info``), with the same keys.
        Elixir's own ``Process.info/1`` refuses a remote pid ("not a local pid"); nodelab
        asks, because a notebook looks at processes on every node of the lesson."""
        if pid.is_local:
            return P.info(pid)
        dist = _distribution()
        if dist is None:
            return None
        try:
            return dist.request(pid.node, lambda ref, caller: ("info", ref, caller, pid), 5.0)
        except (ConnectionError, TimeoutError):
            return None

    @staticmethod
    def alive(pid: Pid) -> bool:
        """True when ``pid`` is a live process (Elixir's ``Process.alive?``)."""
        return Process.info(pid) is not None

    @staticmethod
    def sleep(seconds: float) -> str:
        """Sleep, but wake up to die when an exit signal arrives (unlike ``time.sleep``)."""
        return P.sleep(seconds)

    @staticmethod
    def exit(pid: Pid, reason: Any) -> None:
        P.exit(pid, reason)

    @staticmethod
    def send(dest: Any, message: Any) -> Any:
        return P.send(dest, message)

    @staticmethod
    def link(pid: Pid) -> bool:
        return P.link(pid)

    @staticmethod
    def unlink(pid: Pid) -> bool:
        return P.unlink(pid)

    @staticmethod
    def monitor(target: Any) -> Ref:
        return P.monitor(target)

    @staticmethod
    def demonitor(ref: Ref, flush: bool = False) -> bool:
        return P.demonitor(ref, flush=flush)

    @staticmethod
    def register(pid: Pid, name: str) -> bool:
        return P.register(name, pid)

    @staticmethod
    def whereis(name: str) -> Pid | None:
        return P.whereis(name)

    @staticmethod
    def list() -> list[Pid]:
        return P.processes()

    @staticmethod
    def group_leader(leader: Pid | None = None, pid: Pid | None = None) -> Pid | None:
        return P.group_leader(leader, pid)

    @staticmethod
    def put(key: Any, value: Any) -> Any:
        """Store a value in the process dictionary; return the old one."""
        dictionary = P.process_dictionary()
        old = dictionary.get(key)
        dictionary[key] = value
        return old

    @staticmethod
    def get(key: Any, default: Any = None) -> Any:
        return P.process_dictionary().get(key, default)
