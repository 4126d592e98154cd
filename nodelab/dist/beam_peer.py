"""A peer that speaks Erlang: nodelab's control vocabulary to and from BEAM signals.

A peer that did not prove the nodelab HMAC in the handshake (a real ``erl``/``iex`` node, or
anything else that only knows the cookie) gets plain Erlang distribution: a
:class:`~nodelab.dist.beam_link.BeamLink` reads and writes its ETF frames, and this module
is the border between that link and the node's runtime. Nothing from such a peer is ever
unpickled, and no Python function is ever sent to it.

Going out (:meth:`BeamPeer.send`, :meth:`BeamPeer.send_named`, :meth:`BeamPeer.control`):

=========================================  =============================================
nodelab                                    Erlang distribution
=========================================  =============================================
``send(pid, msg)``                         SEND (the message encoded as ETF)
``send((name, node), msg)``                REG_SEND
``("link", a, b)`` / ``("unlink", a, b)``  LINK / UNLINK_ID (its ack is awaited by OTP)
``("exit", a, b, r)`` / ``("exit2", ...)`` PAYLOAD_EXIT / PAYLOAD_EXIT2
``("monitor", w, target, ref)``            MONITOR_P (a pid, or a registered name)
``("demonitor", ...)`` / ``("down", ...)`` DEMONITOR_P / PAYLOAD_MONITOR_P_EXIT
``("spawn", ref, caller, gl, link, mfa)``  SPAWN_REQUEST (``[link]`` when linked)
``("info", ref, caller, pid)``             a call to the peer's ``rex``: ``{call, erlang,
                                           process_info, [Pid, Items], user}``
=========================================  =============================================

``Process.info`` of a BEAM pid: Elixir's ``Process.info/1`` raises ``ArgumentError`` ("not a
local pid") for a pid of another node, because ``erlang:process_info`` only sees its own
node. nodelab's ``Process.info`` answers for any node's pid, so for a BEAM pid it asks that
node, as ``:rpc.call(node(pid), :erlang, :process_info, [pid, items])`` would, and gives the
same dict as for a nodelab pid (atoms stay :class:`Atom`; no name is None); None when the
process is not alive.

Exit reasons: the runtime's plain words (``"normal"``, ``"noconnection"``, ``"killed"``,
``"kill"``, ``"noproc"``, ``"shutdown"``) travel as atoms; a :class:`~nodelab.Crash` (an
uncaught Python exception) travels as ``{Kind, Message}``, e.g.
``{:ZeroDivisionError, "division by zero"}``; anything else as its ETF form. A message that
has no Erlang form raises :class:`~nodelab.dist.term_format.TermEncodeError` at ``send``,
naming its type, before a byte is written: the connection is never hurt.

The I/O protocol and calls keep their Erlang shape: ``("io_request", from, ref, ("put_chars",
stream, text))`` goes out as ``{io_request, From, Ref, {put_chars, unicode, Text}}``, an
``io_reply`` and the ``$gen_call``/``$gen_cast`` heads as atoms.

Coming in, each event of the link becomes the runtime call it means (``P.deliver``,
``P.add_remote_link``, ``P.remote_exit``, ...). A SPAWN_REQUEST runs ``module:function(args)``
in Python: a lowercase atom is an importable module (``:greeter`` -> ``greeter``), an Elixir
alias (``Greeter`` = ``Elixir.Greeter``) is looked up in the node's namespace first, as shipped
functions are; an unknown one ends the process with ``{undef, [{M, F, Args, []}]}``, as on the
BEAM. ``erpc:execute_call/4`` (what ``:erpc.call`` and, in OTP 25, ``:rpc.call`` spawn) is
answered the way OTP's ``erpc`` does it.

Registered names cross with one rule (:func:`beam_name`, :func:`local_name`): a nodelab name
that starts with a capital, ``"Chat.TaskSupervisor"``, is the Elixir alias
``:"Elixir.Chat.TaskSupervisor"`` on the BEAM (a REG_SEND, a monitor, a DOWN), and a REG_SEND or
monitor from the BEAM to ``Elixir.X`` reaches the nodelab name ``X`` unless ``Elixir.X`` itself
is registered here. So ``Task.Supervisor.async({Chat.TaskSupervisor, :"alex@localhost"}, ...)``
from Elixir finds the Python chat app's supervisor. A module ``Elixir.Chat`` is the alias
``Chat``, which names the Python module ``chat`` on every node (``MyApp.Chat`` ->
``my_app.chat``, the way Elixir names a module's file: :func:`shipment.import_function
<nodelab.dist.shipment.import_function>`), so the Python chat app, which calls itself
``"Chat"``, and Elixir's run each other's tasks. REG_SENDs to names nobody registered here
(``global_name_server``...) are dropped quietly; ``rex``'s ``features_request`` is answered
``{features_reply, node(), [erpc]}``.

One module, although long: it is the one border between nodelab's vocabulary and the BEAM's,
so that every translation can be found in one place.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from nodelab.dist import beam_link as bl
from nodelab.dist import erlang_handshake as eh
from nodelab.dist import shipment
from nodelab.dist.term_format import (
    Atom,
    ImproperList,
    TermEncodeError,
    encode_dist_frame,
    encode_dist_frame_after,
    encode_dist_message,
)
from nodelab.errors import ProcessExit
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref

if TYPE_CHECKING:
    from nodelab.dist.connections import Distribution

log = logging.getLogger("nodelab")

#: OTP's default ``net_ticktime``: a quiet BEAM ticks only every quarter of it, so a BEAM
#: peer is dropped only after this long without a byte (or nodelab's tick time, if longer).
BEAM_NET_TICKTIME = 60.0

#: At most this many calls to one BEAM peer wait for an alias reply at once; beyond it a call
#: goes out with a plain reference tag (which OTP answers with a message to the caller).
_MAX_ALIASES = 65536

_REASON_ATOMS = frozenset({"normal", "noconnection", "killed", "kill", "noproc", "shutdown",
                           "undef", "badarg", "timeout", "nodedown"})
_HEADS = frozenset({"$gen_call", "$gen_cast", "io_reply", "io_request", "EXIT", "DOWN",
                    "nodeup", "nodedown"})


def erlang_reason(reason: Any) -> Any:
    """An exit reason of this node in the BEAM's terms (see the module's docstring)."""
    if isinstance(reason, Atom):
        return reason
    if isinstance(reason, str) and reason in _REASON_ATOMS:
        return Atom(reason)
    if isinstance(reason, P.Crash):
        return (Atom(reason.kind), reason.message)
    if isinstance(reason, tuple) and reason and isinstance(reason[0], str) \
            and reason[0] in _REASON_ATOMS:
        return (Atom(reason[0]),) + reason[1:]
    return reason


def erlang_message(message: Any) -> Any:
    """The I/O protocol and ``gen`` calls of the runtime in their Erlang spelling."""
    if type(message) is tuple and message and type(message[0]) is str and message[0] in _HEADS:
        if message[0] == "io_request" and len(message) == 4:
            request = message[3]
            if type(request) is tuple and len(request) == 3 and request[0] == "put_chars":
                request = (Atom("put_chars"), Atom("unicode"), str(request[2]))
            return (Atom("io_request"), message[1], message[2], request)
        if message[0] == "io_reply" and len(message) == 3:
            answer = message[2]
            if answer == "ok":
                answer = Atom("ok")
            elif type(answer) is tuple and len(answer) == 2 and answer[0] == "error":
                answer = (Atom("error"), Atom(answer[1]) if isinstance(answer[1], str)
                          else answer[1])
            return (Atom("io_reply"), message[1], answer)
        return (Atom(message[0]),) + message[1:]
    return message


#: What ``Process.info`` asks a BEAM node about one of its processes: the keys of a nodelab
#: process's info (:func:`nodelab.runtime.info.info`).
_INFO_ITEMS = ("status", "message_queue_len", "links", "group_leader", "registered_name",
               "trap_exit")


def process_info_dict(answer: Any) -> dict[str, Any] | None:
    """``erlang:process_info(Pid, Items)``'s answer as ``Process.info`` gives it: a dict with
    the keys of a nodelab process's info, or None when the process is not alive (the BEAM's
    ``undefined``) or the node could not say (``{badrpc, ...}``)."""
    if type(answer) is not list:
        return None
    info = {str(item[0]): item[1] for item in answer if type(item) is tuple and len(item) == 2}
    if set(info) != set(_INFO_ITEMS):
        return None
    if info["registered_name"] == []:
        info["registered_name"] = None  # the BEAM's "no name"; nodelab says None
    return {key: info[key] for key in _INFO_ITEMS}


def module_atom(module: Any) -> Atom:
    """``"Kate"`` -> ``Elixir.Kate`` (an Elixir alias); ``Atom("io")`` or ``"io"`` -> ``io``."""
    if isinstance(module, Atom):
        return module
    if isinstance(module, str) and module:
        if module[0].isupper() and not module.startswith("Elixir."):
            return Atom("Elixir." + module)
        return Atom(module)
    raise TypeError(f"{module!r} is not a module name: pass a module like 'Kate' or Atom('io')")


def beam_name(name: str) -> Atom:
    """A registered name of this node as the BEAM spells it: ``"Chat.TaskSupervisor"`` ->
    ``Elixir.Chat.TaskSupervisor`` (an Elixir alias, like :func:`module_atom`); ``"echo"``
    -> ``echo``. Names that are already atoms go as they are."""
    if isinstance(name, Atom):
        return name
    # Every send to a name asks: the answers are remembered (a name's spelling never
    # changes), in a table emptied when full so that a flood of names cannot grow it.
    atom = _BEAM_NAMES.get(name)
    if atom is None:
        atom = module_atom(name) if name else Atom(name)
        if len(_BEAM_NAMES) >= 4096:
            _BEAM_NAMES.clear()
        _BEAM_NAMES[name] = atom
    return atom


_BEAM_NAMES: dict[str, Atom] = {}


def local_name(name: str) -> str:
    """The name a BEAM's REG_SEND or monitor of ``name`` reaches on this node.

    The rule: a name registered here as it is wins; else ``Elixir.X`` reaches the nodelab name
    ``X`` (``Chat.TaskSupervisor`` from Elixir is ``:"Elixir.Chat.TaskSupervisor"``, the
    Python app registers ``"Chat.TaskSupervisor"``).
    """
    if name.startswith("Elixir.") and P.whereis(name) is None:
        short = name[len("Elixir."):]
        if short and P.whereis(short) is not None:
            return short
    return name


def python_target(module: str, function: str) -> Any:
    """The Python function a BEAM's ``module:function`` names on this node.

    ``Elixir.Chat`` is the alias ``Chat``: the node's namespace first, then the Python module
    ``chat`` (``MyApp.Chat`` -> ``my_app.chat``, the way Elixir names the file of a module;
    see :func:`nodelab.dist.shipment.import_function`). An Erlang module (``:greeter``) is
    the Python module of that name.
    """
    if module.startswith("Elixir."):
        module = module[len("Elixir."):]
    return shipment.import_function(module, function)


def run_for_beam(module: str, function: str, args: list) -> Any:
    try:
        fn = python_target(module, function)
    except (ImportError, AttributeError, NameError):
        raise ProcessExit((Atom("undef"), [(Atom(module), Atom(function), list(args), [])])) \
            from None
    return fn(*args)


def _erpc_execute_call(ref: Any, module: Any, function: Any, args: Any) -> None:
    # OTP 25's erpc:execute_call/4: the caller monitors this process and reads the result
    # from the DOWN's reason.
    try:
        result = run_for_beam(str(module), str(function), list(args))
    except ProcessExit as exit_:
        if isinstance(exit_.reason, tuple) and exit_.reason and exit_.reason[0] == "undef":
            raise ProcessExit((ref, Atom("error"), Atom("undef"), exit_.reason[1])) from None
        raise ProcessExit((ref, Atom("exit"), erlang_reason(exit_.reason))) from None
    except Exception as error:  # noqa: BLE001 - the caller's erpc raises it
        raise ProcessExit((ref, Atom("error"), (Atom(type(error).__name__), str(error)),
                           [])) from None
    raise ProcessExit((ref, Atom("return"), result))


class BeamPeer:
    """A connection to a BEAM node, in the shape the node's table of peers expects."""

    def __init__(self, dist: Distribution, sock: socket.socket,
                 result: eh.HandshakeResult) -> None:
        self.dist = dist
        self.peer = result.name
        self.peer_tag = "beam"
        self._unlink_ids = itertools.count(1)
        #: Aliases of this node's calls to the peer's servers (OTP 24+ reply tags): alias ->
        #: the calling process. The reply comes as an ALIAS_SEND to the alias.
        self._aliases: dict[Ref, Pid] = {}
        #: ``Process.info`` of the peer's pids waiting for rex's answer: alias -> asker.
        self._info_calls: dict[Ref, Pid] = {}
        #: The encoded control message (``112 | 131 control``) of a send to each pid, or
        #: to each (sender, name): the same for every message to it. Bounded like the
        #: codec's caches.
        self._heads: dict[Any, bytes] = {}
        self.link = bl.BeamLink(
            sock, result, dist.full_name, dist.creation or 0, on_event=self._on_event,
            on_send=_deliver, on_down=self._on_down,
            tick_time=max(dist.tick_time, BEAM_NET_TICKTIME), tick_interval=dist.tick_time / 4)
        self.reader = self.link.reader

    @property
    def alive(self) -> bool:
        return self.link.alive

    @property
    def down_reason(self) -> str:
        return self.link.down_reason or "connection_closed"

    def start(self) -> None:
        self.link.start()

    def close(self, reason: str) -> None:
        self.link.close(reason)

    def flush_pending(self) -> None:
        """Nothing to do here: a BEAM link batches a burst itself, in its own flusher
        (``beam_link.py``), and writes the rest as each sender sends it."""

    def _on_down(self, reason: str) -> None:
        self.dist.connection_down(self, reason)

    # --- out ------------------------------------------------------------------------------

    def _send(self, event: bl.Event) -> bool:
        control, message = event.to_wire()
        return self._write(encode_dist_frame(control, message))

    def _write(self, frame: bytes) -> bool:
        # The frame is encoded before the critical section: a TermEncodeError reaches the
        # sender and nothing is written. The write itself is never cut in two by an exit
        # signal.
        token = P.enter_critical()
        try:
            self.link.write_frame(frame)
            return True
        except OSError:
            return False
        finally:
            P.leave_critical(token)

    def send(self, pid: Pid, message: Any) -> bool:
        # The frame of a SEND is written here without an event: the same control message
        # that bl.Unknown((SEND, '', pid), message).to_wire() gives, encoded once per pid.
        if type(message) is tuple and message and isinstance(message[0], str):
            message = erlang_message(self._alias_tag(message))
        head = self._heads.get(pid)
        if head is None:
            head = self._head(pid, (bl.SEND, _NO_SENDER, pid))
        return self._write(encode_dist_frame_after(head, message))

    def send_named(self, name: str, message: Any, sender: Pid) -> bool:
        # bl.RegSend(sender, beam_name(name), message)'s frame, without the event.
        if type(message) is tuple and message and isinstance(message[0], str):
            message = erlang_message(self._alias_tag(message))
        key = (sender, name)
        head = self._heads.get(key)
        if head is None:
            head = self._head(key, (bl.REG_SEND, sender, _NO_SENDER, beam_name(name)))
        return self._write(encode_dist_frame_after(head, message))

    def _head(self, key: Any, control: tuple) -> bytes:
        head = encode_dist_message(control)
        if len(self._heads) >= 4096:
            self._heads.clear()
        self._heads[key] = head
        return head

    def _alias_tag(self, message: Any) -> Any:
        # A call's ``(caller, ref)`` goes out as OTP 24+'s ``{caller, [alias | ref]}``: the
        # ref is the alias, and its reply is handed to the caller as ``(ref, reply)``.
        if (type(message) is tuple and len(message) == 3 and message[0] == "$gen_call"
                and type(message[1]) is tuple and len(message[1]) == 2
                and isinstance(message[1][0], Pid) and isinstance(message[1][1], Ref)
                and len(self._aliases) < _MAX_ALIASES):
            caller, ref = message[1]
            self._aliases[ref] = caller
            return (message[0], (caller, ImproperList([Atom("alias")], ref)), message[2])
        return message

    def control(self, op: tuple) -> bool:
        kind = op[0]
        if kind == "link":
            return self._send(bl.Link(op[1], op[2]))
        if kind == "unlink":
            return self._send(bl.UnlinkId(next(self._unlink_ids), op[1], op[2]))
        if kind in ("exit", "exit2"):
            return self._send(bl.Exit(op[1], op[2], erlang_reason(op[3]), exit2=kind == "exit2"))
        if kind in ("monitor", "demonitor"):
            target = op[2]
            if isinstance(target, tuple):
                target = beam_name(target[0])
            event = bl.Monitor if kind == "monitor" else bl.Demonitor
            return self._send(event(op[1], target, op[3]))
        if kind == "down":
            target = op[1]
            if isinstance(target, tuple):
                target = beam_name(target[0])
            return self._send(bl.MonitorExit(target, op[2], op[3], erlang_reason(op[4])))
        if kind == "spawn":
            _, ref, caller, leader, linked, blob = op
            what = shipment.loads(blob)
            if what[0] != "mfa":
                raise TypeError(
                    f"a Python function cannot run on the BEAM node {self.peer}: pass a module, "
                    f"a function name and a list of arguments, like "
                    f"Node.spawn({self.peer!r}, 'Kate', 'say_name', [])")
            _, module, function, args = what
            options = [Atom("link")] if linked else []
            return self._send(bl.SpawnRequest(ref, caller, leader, module_atom(module),
                                              Atom(function), list(args), options))
        if kind == "info":
            _, ref, caller, pid = op
            return self._ask_process_info(ref, caller, pid)
        if kind == "ping":
            # net_adm:ping's question, {is_auth, this node} to the peer's net_kernel, which
            # answers yes once the connection is its own too. The tag is a plain ref, not
            # an alias: net_kernel sends its reply to the caller's pid ({ref, yes}).
            _, ref, caller = op
            call = (Atom("$gen_call"), (caller, ref),
                    (Atom("is_auth"), Atom(self.dist.full_name)))
            return self._send(bl.RegSend(caller, Atom("net_kernel"), call))
        return False

    def _ask_process_info(self, ref: Ref, caller: Pid, pid: Pid) -> bool:
        # The BEAM's own process_info refuses a remote pid (ArgumentError "not a local
        # pid"), so ask the pid's node, as :rpc.call(node, :erlang, :process_info, [pid,
        # items]) does: a call to its rex server, whose alias reply _on_alias_send turns
        # into the answer Process.info waits for.
        if len(self._info_calls) >= _MAX_ALIASES:
            P.reply(caller, ref, None)
            return True
        self._info_calls[ref] = caller
        request = (Atom("call"), Atom("erlang"), Atom("process_info"),
                   [pid, [Atom(item) for item in _INFO_ITEMS]], Atom("user"))
        call = (Atom("$gen_call"), (caller, ImproperList([Atom("alias")], ref)), request)
        if not self._send(bl.RegSend(caller, Atom("rex"), call)):
            self._info_calls.pop(ref, None)
            return False
        return True

    # --- in -------------------------------------------------------------------------------

    def _on_event(self, event: bl.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _reply(self, event: bl.Event) -> None:
        try:
            self._send(event)
        except TermEncodeError as error:
            log.error("** Cannot answer %s: %s **", self.peer, error)

    def _on_send(self, event: bl.Send) -> None:
        _deliver(event.to_pid, event.message)  # a send that came as an event (traced, ...)

    def _on_reg_send(self, event: bl.RegSend) -> None:
        name, message = str(event.to_name), event.message
        if name == "rex" and self._rex(event):
            return
        name = local_name(name)
        P.deliver_named(name, message)  # a name nobody registered here: dropped, as OTP does

    def _rex(self, event: bl.RegSend) -> bool:
        message = event.message
        if (type(message) is tuple and len(message) == 2 and message[0] == "features_request"
                and isinstance(message[1], Pid)):
            self._reply(bl.Unknown((bl.SEND, Atom(""), message[1]),
                                   (Atom("features_reply"), Atom(self.dist.full_name),
                                    [Atom("erpc")])))
            return True
        return False

    def _on_alias_send(self, event: bl.AliasSend) -> None:
        asked = self._info_calls.pop(event.alias, None)
        if asked is not None:
            message = event.message
            answer = message[1] if type(message) is tuple and len(message) == 2 else None
            P.reply(asked, event.alias, process_info_dict(answer))
            return
        caller = self._aliases.pop(event.alias, None)
        if caller is None:
            return  # an alias that is not active: dropped, as OTP drops it
        message = event.message
        if (type(message) is tuple and len(message) == 2 and isinstance(message[0], ImproperList)
                and message[0].tail == event.alias):
            message = (event.alias, message[1])  # the reply as the caller's call waits for it
        P.deliver(caller.serial, caller.creation, message)

    def _on_link(self, event: bl.Link) -> None:
        if not P.add_remote_link(event.from_pid, event.to_pid):
            self._reply(bl.Exit(event.to_pid, event.from_pid, Atom("noproc")))

    def _on_unlink(self, event: bl.UnlinkId) -> None:
        P.remove_remote_link(event.from_pid, event.to_pid)
        self._reply(event.ack())

    def _on_old_unlink(self, event: bl.Unlink) -> None:
        P.remove_remote_link(event.from_pid, event.to_pid)

    def _on_exit(self, event: bl.Exit) -> None:
        P.remote_exit(event.from_pid, event.to_pid, event.reason, linked=not event.exit2)

    def _target(self, target: Pid | Atom) -> Pid | tuple:
        return target if isinstance(target, Pid) else (local_name(str(target)),
                                                       self.dist.full_name)

    def _on_monitor(self, event: bl.Monitor) -> None:
        if not P.add_remote_monitor(event.from_pid, self._target(event.target), event.ref):
            self._reply(bl.MonitorExit(event.target, event.from_pid, event.ref,
                                       Atom("noproc")))

    def _on_demonitor(self, event: bl.Demonitor) -> None:
        P.remove_remote_monitor(self._target(event.target), event.ref)

    def _on_monitor_exit(self, event: bl.MonitorExit) -> None:
        target = event.target if isinstance(event.target, Pid) else (str(event.target),
                                                                      self.peer)
        P.remote_down(event.to_pid, event.ref, target, event.reason)

    def _on_spawn_request(self, event: bl.SpawnRequest) -> None:
        module, function, args = str(event.module), str(event.function), list(event.args)
        if module == "erpc" and function == "execute_call" and len(args) == 4:
            fn, fn_args = _erpc_execute_call, tuple(args)
        else:
            fn, fn_args = run_for_beam, (module, function, args)
        linked = "link" in event.options
        monitored = "monitor" in event.options
        flags = 0
        # The new process waits at this gate until its SPAWN_REPLY is written: the BEAM
        # sends a spawn's reply before any signal of the new process, and OTP takes a DOWN
        # or an exit of it that comes first (a function that fails at once, e.g. undef) as
        # a broken connection (the caller saw noconnection). The monitor is in place before
        # the process runs, too.
        gate = threading.Event()
        try:
            pid = P.spawn_for_peer(_after, (gate, fn, fn_args), group_leader=event.group_leader,
                                   link_to=event.from_pid if linked else None)
        except Exception:  # noqa: BLE001 - the BEAM gets an atom saying why
            self._reply(bl.SpawnReply(event.req_id, event.from_pid, 0, Atom("system_limit")))
            return
        try:
            if linked:
                flags |= bl.SPAWN_REPLY_LINKED
            if monitored and P.add_remote_monitor(event.from_pid, pid, event.req_id):
                flags |= bl.SPAWN_REPLY_MONITORED
            self._reply(bl.SpawnReply(event.req_id, event.from_pid, flags, pid))
        finally:
            gate.set()

    def _on_spawn_reply(self, event: bl.SpawnReply) -> None:
        result: Any = event.result
        linked = bool(event.flags & bl.SPAWN_REPLY_LINKED)
        if not isinstance(result, Pid):
            result = ("error", f"{self.peer} refused the spawn: {result}")
        if not P.spawn_reply(event.to_pid, event.req_id, result, linked=linked):
            if linked and isinstance(result, Pid):
                self._reply(bl.Exit(event.to_pid, result, Atom("noproc")))


def _after(gate: threading.Event, fn: Any, args: tuple) -> Any:
    # A process spawned for a BEAM peer: it starts once its SPAWN_REPLY is out (see
    # _on_spawn_request, which opens the gate right after writing it).
    gate.wait()
    return fn(*args)


def _deliver(pid: Pid, message: Any) -> None:
    # A send to a pid of this node: the link's on_send for plain sends, and _on_send for
    # one that came as a Send event.
    P.deliver(pid.serial, pid.creation, message)


#: The empty atom: the "no sender" of a SEND's control message and REG_SEND's unused field.
_NO_SENDER = Atom("")

_HANDLERS = {
    bl.Send: BeamPeer._on_send,
    bl.RegSend: BeamPeer._on_reg_send,
    bl.AliasSend: BeamPeer._on_alias_send,
    bl.Link: BeamPeer._on_link,
    bl.UnlinkId: BeamPeer._on_unlink,
    bl.Unlink: BeamPeer._on_old_unlink,
    bl.Exit: BeamPeer._on_exit,
    bl.Monitor: BeamPeer._on_monitor,
    bl.Demonitor: BeamPeer._on_demonitor,
    bl.MonitorExit: BeamPeer._on_monitor_exit,
    bl.SpawnRequest: BeamPeer._on_spawn_request,
    bl.SpawnReply: BeamPeer._on_spawn_reply,
}

__all__ = ["BeamPeer", "beam_name", "erlang_message", "erlang_reason", "local_name",
           "module_atom", "process_info_dict", "python_target", "run_for_beam"]
