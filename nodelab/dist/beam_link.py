"""A connection to a BEAM peer, after :mod:`nodelab.dist.erlang_handshake` succeeded.

After the handshake a distribution connection carries frames ``length u32 | body``. A frame
of length 0 is a *tick*; any other body is, since nodelab offers neither the atom cache nor
fragments, ``112 | 131 control | 131 message`` (:func:`term_format.decode_dist_message`),
where ``control`` is a tuple whose first element says which signal it is (:data:`LINK`,
:data:`SEND_SENDER`, :data:`SPAWN_REQUEST`...). :func:`decode_event` turns each into a small
typed event (:class:`Send`, :class:`Link`, :class:`SpawnRequest`...); each event's
:meth:`~Event.to_wire` is the other way.

:class:`BeamLink` reads frames in one thread (every frame of a ``recv`` at once) and hands
events to a callback, writes frames under a lock (a burst — frames less than
:data:`BURST_GAP` apart — in batches, by a flusher thread), and keeps the connection alive
the way ``net_kernel`` does:

* OTP ticks every ``net_ticktime / 4`` seconds (15 s by default) on a connection it has
  written nothing to since the last tick, and drops a peer it has *read* nothing from for
  ``net_ticktime`` (60 s by default; detected 60-75 s after the last byte, as it checks only
  at its ticks). So a link sends a tick when it wrote nothing for ``tick_interval``
  (default ``tick_time / 4``), answers each tick of the peer when it wrote nothing since the
  peer's previous one (so a BEAM with any ``net_ticktime`` hears from it often enough), and
  gives up on a peer silent for ``tick_time`` — which must not be shorter than the BEAM's
  ``net_ticktime`` (a quiet BEAM ticks only every ``net_ticktime / 4``). The log line is
  OTP's: ``** Node kate@localhost not responding **``.
* ``Node.ping(:"py@localhost")`` (``net_adm:ping``) from a BEAM monitors ``net_kernel`` on
  this node and sends it ``{:"$gen_call", {pid, [:alias | ref]}, {:is_auth, node}}``; the
  link answers ``{[:alias | ref], :yes}`` to the alias itself, so the ping says ``:pong``.

Nothing here touches nodelab's runtime: the callback decides what an event means.

One module, although long: it is one concept, the link's frames and its control messages,
each a small typed event with its two directions next to each other.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodelab.dist import connection, frames
from nodelab.dist import erlang_handshake as eh
from nodelab.dist import term_format as tf
from nodelab.dist.term_format import NO_MESSAGE, Atom, ImproperList
from nodelab.runtime.pids import Pid, Ref

log = logging.getLogger("nodelab.dist.beam_link")

# --- control message operations (erl_dist_protocol, "Protocol between Connected Nodes") --

LINK = 1
SEND = 2
EXIT = 3
UNLINK = 4  # obsolete since UNLINK_ID; refused by OTP 26
NODE_LINK = 5
REG_SEND = 6
GROUP_LEADER = 7
EXIT2 = 8
SEND_TT = 12
EXIT_TT = 13
REG_SEND_TT = 16
EXIT2_TT = 18
MONITOR_P = 19
DEMONITOR_P = 20
MONITOR_P_EXIT = 21
SEND_SENDER = 22
SEND_SENDER_TT = 23
PAYLOAD_EXIT = 24
PAYLOAD_EXIT_TT = 25
PAYLOAD_EXIT2 = 26
PAYLOAD_EXIT2_TT = 27
PAYLOAD_MONITOR_P_EXIT = 28
SPAWN_REQUEST = 29
SPAWN_REQUEST_TT = 30
SPAWN_REPLY = 31
SPAWN_REPLY_TT = 32
ALIAS_SEND = 33
ALIAS_SEND_TT = 34
UNLINK_ID = 35
UNLINK_ID_ACK = 36

#: SPAWN_REPLY flags: a link / a monitor was set up on the spawning node.
SPAWN_REPLY_LINKED = 1
SPAWN_REPLY_MONITORED = 2

#: Operation number -> name, for messages.
OPERATION_NAMES = {
    LINK: "LINK", SEND: "SEND", EXIT: "EXIT", UNLINK: "UNLINK", NODE_LINK: "NODE_LINK",
    REG_SEND: "REG_SEND", GROUP_LEADER: "GROUP_LEADER", EXIT2: "EXIT2", SEND_TT: "SEND_TT",
    EXIT_TT: "EXIT_TT", REG_SEND_TT: "REG_SEND_TT", EXIT2_TT: "EXIT2_TT",
    MONITOR_P: "MONITOR_P", DEMONITOR_P: "DEMONITOR_P", MONITOR_P_EXIT: "MONITOR_P_EXIT",
    SEND_SENDER: "SEND_SENDER", SEND_SENDER_TT: "SEND_SENDER_TT",
    PAYLOAD_EXIT: "PAYLOAD_EXIT", PAYLOAD_EXIT_TT: "PAYLOAD_EXIT_TT",
    PAYLOAD_EXIT2: "PAYLOAD_EXIT2", PAYLOAD_EXIT2_TT: "PAYLOAD_EXIT2_TT",
    PAYLOAD_MONITOR_P_EXIT: "PAYLOAD_MONITOR_P_EXIT", SPAWN_REQUEST: "SPAWN_REQUEST",
    SPAWN_REQUEST_TT: "SPAWN_REQUEST_TT", SPAWN_REPLY: "SPAWN_REPLY",
    SPAWN_REPLY_TT: "SPAWN_REPLY_TT", ALIAS_SEND: "ALIAS_SEND", ALIAS_SEND_TT: "ALIAS_SEND_TT",
    UNLINK_ID: "UNLINK_ID", UNLINK_ID_ACK: "UNLINK_ID_ACK",
}

_LENGTH = struct.Struct("!I")
TICK = b"\x00\x00\x00\x00"
#: Frames written closer together than this are a burst, written in batches by the link's
#: flusher: the same rule as a nodelab peer's (``connection.BURST_GAP``). Shorter than a
#: round trip with a BEAM (~40 us here), so a ping-pong, a call or a tick is never held
#: back; longer than the gap between the messages of a busy sender.
BURST_GAP = connection.BURST_GAP
#: A sender whose burst has queued this many bytes writes them itself (back-pressure).
MAX_PENDING = 4 * 1024 * 1024
# A write that never waits (Linux, macOS); where there is none, a close drops a burst's tail.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class ProtocolError(ValueError):
    """A frame that is not a well-formed distribution message: the connection is closed."""


# --- events ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One signal from (or to) the peer. ``token`` is a sequential trace token (``*_TT``)."""

    def to_wire(self) -> tuple[tuple, Any]:
        """The control tuple and the message (``NO_MESSAGE`` when there is none)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Link(Event):
    from_pid: Pid
    to_pid: Pid

    def to_wire(self) -> tuple[tuple, Any]:
        return (LINK, self.from_pid, self.to_pid), NO_MESSAGE


@dataclass(frozen=True)
class Send(Event):
    """A message to a pid. ``from_pid`` is None for the old SEND (no sender)."""

    to_pid: Pid
    message: Any
    from_pid: Pid | None = None
    token: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        sender = self.from_pid if self.from_pid is not None else Atom("")
        if self.token is not None:
            return (SEND_SENDER_TT, sender, self.to_pid, self.token), self.message
        return (SEND_SENDER, sender, self.to_pid), self.message


@dataclass(frozen=True)
class RegSend(Event):
    """A message to a registered name on the receiving node (``send({name, node}, msg)``)."""

    from_pid: Pid
    to_name: Atom
    message: Any
    token: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        if self.token is not None:
            return (REG_SEND_TT, self.from_pid, Atom(""), self.to_name, self.token), self.message
        return (REG_SEND, self.from_pid, Atom(""), self.to_name), self.message


@dataclass(frozen=True)
class AliasSend(Event):
    """A message to a process alias (a reference): how OTP 24+ answers ``gen`` calls."""

    from_pid: Pid
    alias: Ref
    message: Any
    token: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        if self.token is not None:
            return (ALIAS_SEND_TT, self.from_pid, self.alias, self.token), self.message
        return (ALIAS_SEND, self.from_pid, self.alias), self.message


@dataclass(frozen=True)
class Exit(Event):
    """An exit signal because a link broke (``exit2=False``) or ``exit/2`` (``exit2=True``)."""

    from_pid: Pid
    to_pid: Pid
    reason: Any
    exit2: bool = False
    token: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        if self.exit2:
            op = PAYLOAD_EXIT2_TT if self.token is not None else PAYLOAD_EXIT2
        else:
            op = PAYLOAD_EXIT_TT if self.token is not None else PAYLOAD_EXIT
        control = (op, self.from_pid, self.to_pid)
        return (control + (self.token,) if self.token is not None else control), self.reason


@dataclass(frozen=True)
class Unlink(Event):
    """The old UNLINK (no id, no acknowledgement); OTP 25 still sends it to a peer without
    UNLINK_ID, which nodelab never is."""

    from_pid: Pid
    to_pid: Pid

    def to_wire(self) -> tuple[tuple, Any]:
        return (UNLINK, self.from_pid, self.to_pid), NO_MESSAGE


@dataclass(frozen=True)
class UnlinkId(Event):
    """Remove a link; must be answered with :class:`UnlinkIdAck` (same id, pids swapped)
    before any other signal to the sender."""

    id: int
    from_pid: Pid
    to_pid: Pid

    def to_wire(self) -> tuple[tuple, Any]:
        return (UNLINK_ID, self.id, self.from_pid, self.to_pid), NO_MESSAGE

    def ack(self) -> UnlinkIdAck:
        return UnlinkIdAck(self.id, self.to_pid, self.from_pid)


@dataclass(frozen=True)
class UnlinkIdAck(Event):
    id: int
    from_pid: Pid
    to_pid: Pid

    def to_wire(self) -> tuple[tuple, Any]:
        return (UNLINK_ID_ACK, self.id, self.from_pid, self.to_pid), NO_MESSAGE


@dataclass(frozen=True)
class GroupLeader(Event):
    """Make ``group_leader`` the group leader of ``to_pid`` (``group_leader/2``)."""

    group_leader: Pid
    to_pid: Pid

    def to_wire(self) -> tuple[tuple, Any]:
        return (GROUP_LEADER, self.group_leader, self.to_pid), NO_MESSAGE


@dataclass(frozen=True)
class Monitor(Event):
    """``from_pid`` monitors ``target`` (a pid, or a name registered on the receiver)."""

    from_pid: Pid
    target: Pid | Atom
    ref: Ref

    def to_wire(self) -> tuple[tuple, Any]:
        return (MONITOR_P, self.from_pid, self.target, self.ref), NO_MESSAGE


@dataclass(frozen=True)
class Demonitor(Event):
    from_pid: Pid
    target: Pid | Atom
    ref: Ref

    def to_wire(self) -> tuple[tuple, Any]:
        return (DEMONITOR_P, self.from_pid, self.target, self.ref), NO_MESSAGE


@dataclass(frozen=True)
class MonitorExit(Event):
    """The monitored ``target`` (pid or name) is gone: ``DOWN`` for ``to_pid``'s ``ref``."""

    target: Pid | Atom
    to_pid: Pid
    ref: Ref
    reason: Any

    def to_wire(self) -> tuple[tuple, Any]:
        return (PAYLOAD_MONITOR_P_EXIT, self.target, self.to_pid, self.ref), self.reason


@dataclass(frozen=True)
class SpawnRequest(Event):
    """``spawn_request``: run ``module:function(*args)`` here, for ``from_pid``.

    ``options`` are spawn options (``link``, ``monitor``, ``{:reply, ...}``...); answer with
    :class:`SpawnReply` carrying the same ``req_id``.
    """

    req_id: Ref
    from_pid: Pid
    group_leader: Pid
    module: Atom
    function: Atom
    args: list
    options: list
    token: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        mfa = (self.module, self.function, len(self.args))
        control = (SPAWN_REQUEST, self.req_id, self.from_pid, self.group_leader, mfa,
                   self.options)
        if self.token is not None:
            control = (SPAWN_REQUEST_TT,) + control[1:] + (self.token,)
        return control, list(self.args)


@dataclass(frozen=True)
class SpawnReply(Event):
    """The answer to a spawn request: ``result`` is the new pid, or an atom saying why not
    (``badarg``, ``system_limit``...); ``flags`` say whether a link/monitor was set up."""

    req_id: Ref
    to_pid: Pid
    flags: int
    result: Pid | Atom
    token: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        control = (SPAWN_REPLY, self.req_id, self.to_pid, self.flags, self.result)
        if self.token is not None:
            control = (SPAWN_REPLY_TT,) + control[1:] + (self.token,)
        return control, NO_MESSAGE


@dataclass(frozen=True)
class NodeLink(Event):
    def to_wire(self) -> tuple[tuple, Any]:
        return (NODE_LINK,), NO_MESSAGE


@dataclass(frozen=True)
class Unknown(Event):
    """A control message this module does not know (a newer OTP's); the link ignores it."""

    control: tuple
    message: Any = None

    def to_wire(self) -> tuple[tuple, Any]:
        return self.control, self.message


def _arity(control: tuple, *sizes: int) -> None:
    if len(control) not in sizes:
        name = OPERATION_NAMES.get(control[0], str(control[0]))
        raise ProtocolError(f"{name} with {len(control)} elements")


def _pid(value: Any, what: str) -> Pid:
    if not isinstance(value, Pid):
        raise ProtocolError(f"{what} is not a pid: {value!r}"[:200])
    return value


def _ref(value: Any, what: str) -> Ref:
    if not isinstance(value, Ref):
        raise ProtocolError(f"{what} is not a reference: {value!r}"[:200])
    return value


def _target(value: Any) -> Pid | Atom:
    if isinstance(value, (Pid, Atom)):
        return value
    raise ProtocolError(f"a monitor target is a pid or a name, not {value!r}"[:200])


def _message(message: Any) -> Any:
    return None if message is NO_MESSAGE else message


def decode_event(control: Any, message: Any = NO_MESSAGE) -> Event:
    """Turn a decoded ``(control, message)`` into an :class:`Event`.

    Raises :class:`ProtocolError` for a malformed control message; an operation this module
    does not know becomes :class:`Unknown`.
    """
    if not isinstance(control, tuple) or not control or not isinstance(control[0], int) \
            or isinstance(control[0], bool):
        raise ProtocolError(f"a control message is a tuple that starts with an integer, "
                            f"not {control!r}"[:200])
    op = control[0]
    message = _message(message)
    if op == LINK:
        _arity(control, 3)
        return Link(_pid(control[1], "LINK's sender"), _pid(control[2], "LINK's target"))
    if op in (SEND, SEND_TT):
        _arity(control, 3 if op == SEND else 4)
        return Send(_pid(control[2], "SEND's target"), message,
                    token=control[3] if op == SEND_TT else None)
    if op in (SEND_SENDER, SEND_SENDER_TT):
        _arity(control, 3 if op == SEND_SENDER else 4)
        sender = control[1] if isinstance(control[1], Pid) else None
        return Send(_pid(control[2], "SEND_SENDER's target"), message, sender,
                    token=control[3] if op == SEND_SENDER_TT else None)
    if op in (REG_SEND, REG_SEND_TT):
        _arity(control, 4 if op == REG_SEND else 5)
        if not isinstance(control[3], Atom):
            raise ProtocolError("REG_SEND to a name that is not an atom")
        return RegSend(_pid(control[1], "REG_SEND's sender"), control[3], message,
                       token=control[4] if op == REG_SEND_TT else None)
    if op in (ALIAS_SEND, ALIAS_SEND_TT):
        _arity(control, 3 if op == ALIAS_SEND else 4)
        return AliasSend(_pid(control[1], "ALIAS_SEND's sender"),
                         _ref(control[2], "ALIAS_SEND's alias"), message,
                         token=control[3] if op == ALIAS_SEND_TT else None)
    if op in (EXIT, EXIT_TT, EXIT2, EXIT2_TT):
        traced = op in (EXIT_TT, EXIT2_TT)
        _arity(control, 5 if traced else 4)
        return Exit(_pid(control[1], "EXIT's sender"), _pid(control[2], "EXIT's target"),
                    control[-1], exit2=op in (EXIT2, EXIT2_TT),
                    token=control[3] if traced else None)
    if op in (PAYLOAD_EXIT, PAYLOAD_EXIT_TT, PAYLOAD_EXIT2, PAYLOAD_EXIT2_TT):
        traced = op in (PAYLOAD_EXIT_TT, PAYLOAD_EXIT2_TT)
        _arity(control, 4 if traced else 3)
        return Exit(_pid(control[1], "EXIT's sender"), _pid(control[2], "EXIT's target"),
                    message, exit2=op in (PAYLOAD_EXIT2, PAYLOAD_EXIT2_TT),
                    token=control[3] if traced else None)
    if op == UNLINK:
        _arity(control, 3)
        return Unlink(_pid(control[1], "UNLINK's sender"), _pid(control[2], "UNLINK's target"))
    if op in (UNLINK_ID, UNLINK_ID_ACK):
        _arity(control, 4)
        if not isinstance(control[1], int) or not 0 < control[1] < 1 << 64:
            raise ProtocolError("an unlink id is an integer in 1..2**64-1")
        kind = UnlinkId if op == UNLINK_ID else UnlinkIdAck
        return kind(control[1], _pid(control[2], "UNLINK_ID's sender"),
                    _pid(control[3], "UNLINK_ID's target"))
    if op == GROUP_LEADER:
        _arity(control, 3)
        return GroupLeader(_pid(control[1], "the group leader"),
                           _pid(control[2], "GROUP_LEADER's target"))
    if op in (MONITOR_P, DEMONITOR_P):
        _arity(control, 4)
        kind = Monitor if op == MONITOR_P else Demonitor
        return kind(_pid(control[1], "the monitoring process"), _target(control[2]),
                    _ref(control[3], "the monitor reference"))
    if op == MONITOR_P_EXIT:
        _arity(control, 5)
        return MonitorExit(_target(control[1]), _pid(control[2], "the monitoring process"),
                           _ref(control[3], "the monitor reference"), control[4])
    if op == PAYLOAD_MONITOR_P_EXIT:
        _arity(control, 4)
        return MonitorExit(_target(control[1]), _pid(control[2], "the monitoring process"),
                           _ref(control[3], "the monitor reference"), message)
    if op in (SPAWN_REQUEST, SPAWN_REQUEST_TT):
        _arity(control, 6 if op == SPAWN_REQUEST else 7)
        mfa = control[4]
        if not (isinstance(mfa, tuple) and len(mfa) == 3 and isinstance(mfa[0], Atom)
                and isinstance(mfa[1], Atom) and isinstance(mfa[2], int)):
            raise ProtocolError("SPAWN_REQUEST's entry point is not {module, function, arity}")
        args = message if isinstance(message, list) else [] if message is None else None
        if args is None or len(args) != mfa[2] or not isinstance(control[5], list):
            raise ProtocolError("SPAWN_REQUEST's arguments or options are not proper lists "
                                "of the announced length")
        return SpawnRequest(_ref(control[1], "SPAWN_REQUEST's id"),
                            _pid(control[2], "SPAWN_REQUEST's sender"),
                            _pid(control[3], "SPAWN_REQUEST's group leader"),
                            mfa[0], mfa[1], args, control[5],
                            token=control[6] if op == SPAWN_REQUEST_TT else None)
    if op in (SPAWN_REPLY, SPAWN_REPLY_TT):
        _arity(control, 5 if op == SPAWN_REPLY else 6)
        result = control[4]
        if not isinstance(result, (Pid, Atom)) or not isinstance(control[3], int):
            raise ProtocolError("SPAWN_REPLY's result is neither a pid nor an atom")
        return SpawnReply(_ref(control[1], "SPAWN_REPLY's id"),
                          _pid(control[2], "SPAWN_REPLY's target"), control[3], result,
                          token=control[5] if op == SPAWN_REPLY_TT else None)
    if op == NODE_LINK:
        return NodeLink()
    return Unknown(control, message)


#: Operations followed by a message (or a reason) in the frame.
WITH_MESSAGE = frozenset({SEND, SEND_TT, REG_SEND, REG_SEND_TT, SEND_SENDER, SEND_SENDER_TT,
                          PAYLOAD_EXIT, PAYLOAD_EXIT_TT, PAYLOAD_EXIT2, PAYLOAD_EXIT2_TT,
                          PAYLOAD_MONITOR_P_EXIT, SPAWN_REQUEST, SPAWN_REQUEST_TT,
                          ALIAS_SEND, ALIAS_SEND_TT})


class UndecodableMessage(ProtocolError):
    """A send whose control message is sound but whose message has no Python form here
    (e.g. a map with both ``:a`` and ``"a"`` as keys): that one message is dropped with one
    log line, the connection lives. ``control`` is the decoded control message."""

    def __init__(self, message: str, control: tuple) -> None:
        super().__init__(message)
        self.control = control


def decode_frame(body: bytes, atom_cache: tf.AtomCache | None = None) -> Event:
    """Decode one frame body (not a tick) into an :class:`Event`.

    Raises :class:`UndecodableMessage` when only the message part cannot be decoded, and
    :class:`ProtocolError` for a frame that is broken as a whole.
    """
    control, message = decode_parts(body, atom_cache)
    return decode_event(control, message)


def decode_parts(body: bytes, atom_cache: tf.AtomCache | None = None) -> tuple[Any, Any]:
    """The first half of :func:`decode_frame`: the frame's control message and its message
    (``NO_MESSAGE`` for an operation that takes none), not yet checked as an event."""
    try:
        control, message = tf.decode_dist_message(body, atom_cache)
    except tf.TermDecodeError as error:
        control = _control_of(body)
        if control is not None:
            raise UndecodableMessage(str(error), control) from None
        raise ProtocolError(str(error)) from None
    # isinstance first: an operation that is not a number (a list) cannot be looked up.
    takes_message = (type(control) is tuple and bool(control) and isinstance(control[0], int)
                     and control[0] in WITH_MESSAGE)
    if takes_message:
        return control, message
    if message is not None:
        raise ProtocolError("a message follows a control message that takes none")
    return control, NO_MESSAGE


def _control_of(body: bytes) -> tuple | None:
    """The control message of a pass-through send whose control part decodes."""
    if not body or body[0] != tf.PASS_THROUGH:
        return None
    try:
        control, end = tf.decode_from(body, 1)
    except tf.TermDecodeError:
        return None
    # Only a plain message is dropped: losing an exit signal or a spawn request silently
    # would leave a link or a caller waiting forever, so those close the connection.
    if (isinstance(control, tuple) and control and isinstance(control[0], int)
            and control[0] in _SENDS and end < len(body)):
        return control
    return None


_SENDS = frozenset({SEND, SEND_TT, REG_SEND, REG_SEND_TT, SEND_SENDER, SEND_SENDER_TT,
                    ALIAS_SEND, ALIAS_SEND_TT})


_PLAIN_SENDS = frozenset({SEND, SEND_SENDER})


def encode_frame(event: Event) -> bytes:
    """The whole frame (length included) for ``event``."""
    control, message = event.to_wire()
    return tf.encode_dist_frame(control, message)


# --- is_auth ---------------------------------------------------------------------------

def is_auth_call(event: Event) -> tuple[Pid, Any] | None:
    """``(caller, tag)`` when ``event`` is ``net_kernel``'s ``{is_auth, node}`` call (what
    ``Node.ping`` sends), else None."""
    if not (isinstance(event, RegSend) and event.to_name == "net_kernel"):
        return None
    message = event.message
    if (isinstance(message, tuple) and len(message) == 3 and message[0] == "$gen_call"
            and isinstance(message[1], tuple) and len(message[1]) == 2
            and isinstance(message[1][0], Pid) and isinstance(message[2], tuple)
            and len(message[2]) == 2 and message[2][0] == "is_auth"):
        return message[1][0], message[1][1]
    return None


def gen_reply(from_pid: Pid, caller: Pid, tag: Any, reply: Any) -> Event:
    """The event that answers a ``gen`` call: to the alias when the tag is ``[alias | ref]``
    (OTP 24+), else to the caller, as ``gen:reply/2`` does."""
    if (isinstance(tag, ImproperList) and tag.items == ["alias"]
            and isinstance(tag.tail, Ref)):
        return AliasSend(from_pid, tag.tail, (tag, reply))
    return Send(caller, (tag, reply), from_pid)


# --- the connection --------------------------------------------------------------------

class BeamLink:
    """One handshaken connection to a BEAM node.

    ``on_event(event)`` runs in the reader thread for every signal (except ``is_auth``
    calls, answered here when ``answer_is_auth``, and the plain sends to a pid that
    ``on_send(to_pid, message)`` takes when it is given); ``on_down(reason)`` once when the
    connection ends: ``"connection_closed"``, ``"net_tick_timeout"``, ``"protocol_error"``
    or what :meth:`close` was given. Call :meth:`start` to begin reading and ticking.
    """

    def __init__(self, sock: socket.socket, peer: eh.HandshakeResult, my_name: str,
                 my_creation: int, *, on_event: Callable[[Event], None] | None = None,
                 on_down: Callable[[str], None] | None = None, tick_time: float = 60.0,
                 answer_is_auth: bool = True, net_kernel_pid: Pid | None = None,
                 max_frame: int = frames.MAX_MESSAGE,
                 tick_interval: float | None = None,
                 on_send: Callable[[Pid, Any], None] | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.my_name = my_name
        self.tick_time = float(tick_time)
        #: A tick goes out when nothing was written for this long (default tick_time / 4);
        #: shorter than that for a peer whose net_ticktime may be shorter than tick_time.
        self.tick_interval = float(tick_interval) if tick_interval else self.tick_time / 4
        self.on_event = on_event
        #: When given, a plain SEND or SEND_SENDER to a pid (nearly every frame) is handed
        #: to it as ``(to_pid, message)`` without building a :class:`Send` event for on_event.
        self.on_send = on_send
        self.on_down = on_down
        self.answer_is_auth = answer_is_auth
        self.net_kernel_pid = net_kernel_pid or Pid(my_name, 1, my_creation)
        self.max_frame = max_frame
        self.atom_cache = tf.AtomCache()
        self.write_lock = threading.Lock()
        self.last_recv = self.last_send = time.monotonic()
        self.alive = True
        self.down_reason: str | None = None
        self._stopped = threading.Event()
        self._down_once = threading.Lock()
        self._pending: list[bytes] = []  # frames of a burst, for the flusher
        self._pending_size = 0
        self._flushing = False
        self._flush_wanted = threading.Event()
        self.reader = threading.Thread(target=self._read_loop, daemon=True,
                                       name=f"nodelab beam link {peer.name}")
        self.flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                        name=f"nodelab beam writes {peer.name}")
        self.ticker = threading.Thread(target=self._tick_loop, daemon=True,
                                       name=f"nodelab beam ticks {peer.name}")

    def start(self) -> BeamLink:
        self.sock.settimeout(None)
        self.reader.start()
        self.ticker.start()
        self.flusher.start()
        return self

    # writing

    def send_event(self, event: Event) -> None:
        """Encode and write ``event``; raises ``TermEncodeError`` for a value with no Erlang
        form (nothing is written then) and ``OSError`` when the connection is gone."""
        self._write(encode_frame(event))

    def send_tick(self) -> None:
        self._write(TICK)

    def write_frame(self, data: bytes) -> None:
        """Write a whole frame made by :func:`encode_frame` (``OSError`` when gone)."""
        self._write(data)

    def _write(self, data: bytes) -> None:
        # Every sendall happens under the write lock, so frames never interleave. A frame
        # that follows the previous one within BURST_GAP is part of a burst: it joins the
        # queue that the flusher thread writes in one sendall (the BEAM batches a busy
        # connection the same way); a frame after a pause — a round trip, a tick — goes
        # straight out. A queue past MAX_PENDING is written by the sender itself.
        with self.write_lock:
            if not self.alive:
                raise OSError(f"the connection to {self.peer.name} is closed")
            now = time.monotonic()
            if self._pending or now - self.last_send < BURST_GAP:
                self._pending.append(data)
                self._pending_size += len(data)
                self.last_send = now
                if self._pending_size > MAX_PENDING:
                    self._send_pending()
                elif not self._flushing:
                    self._flushing = True
                    self._flush_wanted.set()
                return
            self.sock.sendall(data)
            self.last_send = now

    def _send_pending(self) -> None:
        # Called with the write lock held.
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self.sock.sendall(data)

    def _flush_loop(self) -> None:
        while True:
            self._flush_wanted.wait()
            self._flush_wanted.clear()
            with self.write_lock:
                self._flushing = False
                if self._stopped.is_set():
                    return
                if self._pending:
                    try:
                        self._send_pending()
                    except OSError:
                        self._pending.clear()  # the reader sees the connection end
                        self._pending_size = 0

    # reading

    def _read_loop(self) -> None:
        # One recv takes whatever the socket holds (up to 64 KiB), and every complete frame
        # in it is handled before the next: a burst costs one system call and one clock
        # read per batch, not two system calls per frame.
        reason = "connection_closed"
        previous_tick = time.monotonic()
        sock = self.sock
        unpack_length = _LENGTH.unpack_from
        max_frame = self.max_frame
        buffer = bytearray()
        needed = 0  # bytes the partial frame in ``buffer`` needs before it is whole
        try:
            while self.alive:
                data = sock.recv(65536)
                if not data:
                    break
                self.last_recv = now = time.monotonic()
                if buffer:
                    buffer += data
                    if len(buffer) < needed:
                        continue  # a large frame still arriving: no copy until it is whole
                    data = bytes(buffer)
                    buffer.clear()
                offset = 0
                size = len(data)
                while self.alive and size - offset >= 4:
                    (length,) = unpack_length(data, offset)
                    if length == 0:
                        offset += 4
                        # A tick is answered when nothing went out since the peer's
                        # previous tick: the peer then reads something every
                        # net_ticktime / 4 of its own, whatever its net_ticktime (OTP
                        # drops a peer silent that long).
                        if (now - self.last_send >= self.tick_interval
                                or self.last_send < previous_tick):
                            self.send_tick()
                        previous_tick = now
                        continue
                    if length > max_frame:
                        raise ProtocolError(f"a frame of {length} bytes (the limit is "
                                            f"{max_frame})")
                    end = offset + 4 + length
                    if end > size:
                        break
                    body = data[offset + 4 : end]
                    offset = end
                    try:
                        control, message = decode_parts(body, self.atom_cache)
                    except UndecodableMessage as error:
                        log.error("** A message from node %s was dropped: %s (%s) **",
                                  self.peer.name, error,
                                  OPERATION_NAMES.get(error.control[0], error.control[0]))
                        continue
                    self._handle(control, message)
                if offset < size:
                    buffer += data[offset:]  # a partial frame: wait for the rest
                    needed = 4 + unpack_length(buffer)[0] if len(buffer) >= 4 else 4
                    if needed - 4 > max_frame:
                        raise ProtocolError(f"a frame of {needed - 4} bytes (the limit is "
                                            f"{max_frame})")
        except ProtocolError as error:
            log.error("** Malformed distribution message from node %s: %s. Closing the "
                      "connection. **", self.peer.name, error)
            reason = "protocol_error"
        except OSError:
            pass
        self._down(reason)

    def _handle(self, control: Any, message: Any) -> None:
        # A plain send to a pid goes straight to on_send: the checks are decode_event's for
        # it (three elements, a pid as target; the sender is not used), and is_auth, the
        # one send the link answers itself, is a REG_SEND.
        on_send = self.on_send
        if (on_send is not None and type(control) is tuple and len(control) == 3
                and type(control[2]) is Pid and type(control[0]) is int
                and control[0] in _PLAIN_SENDS):
            try:
                on_send(control[2], message)
            except Exception:  # one bad message must not stop the reader
                log.exception("** Error handling a message to %r from node %s **", control[2],
                              self.peer.name)
            return
        self._dispatch(decode_event(control, message))

    def _dispatch(self, event: Event) -> None:
        if self.answer_is_auth:
            call = is_auth_call(event)
            if call is not None:
                self.send_event(gen_reply(self.net_kernel_pid, call[0], call[1], Atom("yes")))
                return
            if isinstance(event, (Monitor, Demonitor)) and event.target == "net_kernel":
                return  # the caller's monitor of net_kernel for that call: it exists here
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # one bad event must not stop the reader
                log.exception("** Error handling %r from node %s **", event, self.peer.name)

    # ticks and the end

    def _tick_loop(self) -> None:
        interval = self.tick_interval
        while not self._stopped.wait(min(interval, self.tick_time / 4)):
            now = time.monotonic()
            if now - self.last_recv > self.tick_time:
                log.error("** Node %s not responding **\n** Removing (timedout) connection **",
                          self.peer.name)
                self.close("net_tick_timeout")
                return
            if now - self.last_send >= interval:
                try:
                    self.send_tick()
                except OSError:
                    self.close("connection_closed")
                    return

    def close(self, reason: str = "disconnected") -> None:
        """Close the connection (the peer sees it go down) and report ``reason``. Frames
        still queued in a burst go first, as far as the socket takes them without waiting:
        a close never blocks on a peer that stopped reading (a sender blocked in a write to
        such a peer would not have got its frame through either)."""
        # Not waiting for the lock either: a sender blocked in a write holds it, and the
        # shutdown below is what ends that write.
        if self.write_lock.acquire(blocking=False):
            try:
                if self.alive and self._pending and _DONTWAIT:
                    data = memoryview(b"".join(self._pending))
                    self._pending.clear()
                    self._pending_size = 0
                    while data:
                        try:
                            data = data[self.sock.send(data, _DONTWAIT):]
                        except OSError:  # BlockingIOError included: the socket is full
                            break
            finally:
                self.write_lock.release()
        self._down(reason)

    def _down(self, reason: str) -> None:
        with self._down_once:
            if not self.alive:
                return
            self.alive = False
            self.down_reason = reason
        self._stopped.set()
        self._flush_wanted.set()  # the flusher ends
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.on_down is not None:
            self.on_down(reason)
