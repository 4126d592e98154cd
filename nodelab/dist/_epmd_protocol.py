"""EPMD's packets as bytes, for both sides: the client (:mod:`nodelab.dist.portmapper`) and
nodelab's daemon (:mod:`nodelab.dist.portmapper_daemon`).

Each layout is built and parsed here, next to each other, so that the two sides cannot
drift apart (ERTS User's Guide, "Distribution Protocol", section "EPMD Protocol"). A request
is ``u16 length | tag | body``, one per connection. An answer carries no length: it ends
where EPMD closes the connection, except the answer to a registration (``ALIVE2_REQ``),
whose size is fixed and whose connection stays open as long as the node is registered.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

ALIVE2_REQ = ord("x")
ALIVE2_RESP = ord("y")  # 16-bit creation: an EPMD older than OTP 23, or a node of version 5
ALIVE2_X_RESP = ord("v")  # 32-bit creation
PORT_PLEASE2_REQ = ord("z")
PORT2_RESP = ord("w")
NAMES_REQ = ord("n")
DUMP_REQ = ord("d")
KILL_REQ = ord("k")
STOP_REQ = ord("s")
#: nodelab's own request: "are you nodelab's daemon, and which pid?" (epmd closes instead).
NODELAB_INFO_REQ = ord("?")
INFO = "nodelab-epmd 1"

NODE_TYPE_NORMAL = 77
NODE_TYPE_HIDDEN = 72
PROTOCOL_TCP = 0
#: The distribution versions a node registers with (OTP 25: highest 6, lowest 5).
HIGHEST_VERSION = 6
LOWEST_VERSION = 5

#: The longest node name EPMD stores: 255 characters of UTF-8.
MAX_NAME_CHARS = 255
MAX_NAME_BYTES = 4 * MAX_NAME_CHARS
MAX_EXTRA = MAX_NAME_BYTES
#: The longest request the daemon reads (an ALIVE2_REQ with the longest name and extra).
MAX_REQUEST = 13 + MAX_NAME_BYTES + MAX_EXTRA
MAX_REPLY = 1 << 22  # a NAMES answer with thousands of nodes still fits

#: The exit status of ``portmapper_daemon --detach`` when the port is taken (maybe by
#: another EPMD): the node that launched it then knows it lost a race, or why none starts.
EXIT_IN_USE = 3

LENGTH = struct.Struct("!H")
_ALIVE2_HEAD = struct.Struct("!BHBBHHH")  # tag, port, type, protocol, highest, lowest, nlen
_PORT2_HEAD = struct.Struct("!BBHBBHHH")  # tag, result, port, type, protocol, hi, lo, nlen
_NAMES_LINE = re.compile(r"name (.+) at port (\d+)")


class EpmdEntry(NamedTuple):
    """What EPMD knows about a registered node (a ``PORT2_RESP``)."""

    name: str
    port: int
    node_type: int  # 77 normal, 72 hidden
    protocol: int  # 0: TCP
    highest_version: int
    lowest_version: int
    extra: bytes


def packet(body: bytes) -> bytes:
    """A request on the wire: its length, then the request."""
    return LENGTH.pack(len(body)) + body


def decode_name(raw: bytes) -> str | None:
    """A node name as EPMD accepts it: UTF-8, no NUL, 1..255 characters; else None."""
    if not raw or b"\0" in raw or len(raw) > MAX_NAME_BYTES:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if len(name) <= MAX_NAME_CHARS else None


# --- ALIVE2_REQ: a node registers ---------------------------------------------------------


def alive2_request(name: str, port: int, node_type: int, extra: bytes) -> bytes:
    """The body of an ``ALIVE2_REQ`` for ``name`` on ``port``, as OTP 25 registers."""
    raw = name.encode("utf-8")
    return (_ALIVE2_HEAD.pack(ALIVE2_REQ, port, node_type, PROTOCOL_TCP, HIGHEST_VERSION,
                              LOWEST_VERSION, len(raw))
            + raw + LENGTH.pack(len(extra)) + extra)


class Alive2Request(NamedTuple):
    """An ``ALIVE2_REQ`` as read; ``name`` is None when EPMD would not accept it."""

    name: str | None
    port: int
    node_type: int
    protocol: int
    highest: int
    lowest: int
    extra: bytes


def parse_alive2_request(request: bytes) -> Alive2Request | None:
    """An ``ALIVE2_REQ`` (without its length); None when its lengths do not add up."""
    if len(request) < _ALIVE2_HEAD.size + 2:
        return None
    _, port, node_type, protocol, highest, lowest, name_length = \
        _ALIVE2_HEAD.unpack_from(request)
    end_of_name = _ALIVE2_HEAD.size + name_length
    if len(request) < end_of_name + 2:
        return None
    extra_length = LENGTH.unpack_from(request, end_of_name)[0]
    if len(request) != end_of_name + 2 + extra_length:
        return None
    return Alive2Request(decode_name(request[_ALIVE2_HEAD.size:end_of_name]), port, node_type,
                         protocol, highest, lowest, request[end_of_name + 2:])


# --- PORT2_RESP: where a node listens -----------------------------------------------------


def port2_response(entry: EpmdEntry) -> bytes:
    """The answer to ``PORT_PLEASE2_REQ`` for a registered node."""
    raw = entry.name.encode("utf-8")
    return (_PORT2_HEAD.pack(PORT2_RESP, 0, entry.port, entry.node_type, entry.protocol,
                             entry.highest_version, entry.lowest_version, len(raw))
            + raw + LENGTH.pack(len(entry.extra)) + entry.extra)


def parse_port2_response(reply: bytes) -> EpmdEntry | None:
    """A PORT2_RESP with Result 0, or None when ``reply`` is not exactly one."""
    try:
        (tag, result, node_port, node_type, protocol, highest, lowest,
         name_length) = _PORT2_HEAD.unpack_from(reply)
        end_of_name = _PORT2_HEAD.size + name_length
        extra_length = LENGTH.unpack_from(reply, end_of_name)[0]
        name = reply[_PORT2_HEAD.size:end_of_name].decode("utf-8")
    except (struct.error, UnicodeDecodeError):
        return None
    extra = reply[end_of_name + 2:]
    if tag != PORT2_RESP or result != 0 or not 0 < node_port < 65536 or len(extra) != extra_length:
        return None
    return EpmdEntry(name, node_port, node_type, protocol, highest, lowest, extra)


# --- NAMES_REQ: who is registered -----------------------------------------------------------


def names_response(mapper_port: int, ports: dict[str, int]) -> bytes:
    """The answer to ``NAMES_REQ`` (what ``epmd -names`` prints), names sorted."""
    return struct.pack("!I", mapper_port) + b"".join(
        b"name %s at port %d\n" % (name.encode("utf-8"), port)
        for name, port in sorted(ports.items()))


def parse_names_response(reply: bytes) -> dict[str, int]:
    """``{name: port}`` from an answer to ``NAMES_REQ``; lines in another form are skipped."""
    result: dict[str, int] = {}
    for line in reply[4:].decode("utf-8", "replace").splitlines():
        match = _NAMES_LINE.fullmatch(line)
        if match:
            result[match.group(1)] = int(match.group(2))
    return result
