"""The port mapper: which TCP port does node ``kate`` listen on? nodelab speaks EPMD.

Every named node listens on a TCP port the kernel picks for it. To reach ``kate@localhost``
another node must learn that port, so each host runs one small daemon at a well-known port,
Erlang's EPMD (port 4369, or ``$ERL_EPMD_PORT``), that maps ``NAME`` to port::

    alex ──PORT_PLEASE2_REQ kate──▶ EPMD (:4369) ◀──ALIVE2_REQ kate 41234── kate
    alex ◀──PORT2_RESP 41234──────┘
    alex ────────────── TCP connect :41234, handshake ──────────────▶ kate

nodelab speaks EPMD's own protocol (ERTS User's Guide, "Distribution Protocol", section
"EPMD Protocol"), as a client and as a daemon, so nodelab nodes and BEAM nodes share one
EPMD per host: ``epmd -names`` lists nodelab nodes, and ``erl -sname x`` registers with the
daemon nodelab started.

**Which EPMD.** When a node starts, :func:`ensure_portmapper` asks the port. An EPMD that
answers is used, whichever it is: the real ``epmd`` that ``erl``/``iex`` started, or
nodelab's. When nothing listens there, the node starts nodelab's daemon, this module run as
``python -m nodelab.dist.portmapper``, as the first ``iex --sname`` starts ``epmd``. It runs
as its own OS process (its own session, its log in ``$NODELAB_HOME/portmapper-PORT.log``),
outlives the node that started it, and, unlike ``epmd``, exits by itself once no node
(nodelab's or the BEAM's) has been registered for a while (``--linger``,
``$NODELAB_PORTMAPPER_LINGER``, 10 s by default), so nothing is left behind. Nodes that race
to start it all succeed: one daemon binds the port, the others exit quietly.

**Registrations.** ``ALIVE2_REQ`` registers a name, with node type 77 (normal), protocol 0
(TCP), distribution versions 6 to 5 as OTP 25 does; EPMD answers ``ALIVE2_X_RESP`` with a
32-bit *creation* (``ALIVE2_RESP`` with a 16-bit one from an EPMD older than OTP 23, also
understood), which becomes the node's creation. The registration lives exactly as long as
the TCP connection that made it: when a node dies, even by ``kill -9``, the kernel closes its
sockets and EPMD frees the name at once. A name already registered is refused (``Result``
!= 0), which :func:`register` turns into :class:`NameInUse`. ``PORT_PLEASE2_REQ`` looks a
name up (:func:`port_please`, :func:`lookup`), ``NAMES_REQ`` lists them (:func:`names`); a
lookup of a node on another host asks that host's EPMD, on the same port.

**A dead EPMD.** If the EPMD is killed, nodes that are already connected keep talking (they
do not need it any more). A BEAM node would also keep running but never register again, so
no new node could find it until it restarts. A nodelab node does better: it notices that its
registration connection closed, starts an EPMD if none is back, and registers again, so new
lookups recover within a fraction of a second (see :class:`Registration`). EPMD hands the
new registration a new creation; the node keeps its first one, because creation tells runs
of a node apart and this is the same run: its processes' PIDs stay valid, and peers learn a
node's creation from the handshake only, never from EPMD.

**nodelab's daemon and ``epmd``.** The daemon answers ``ALIVE2_REQ``, ``PORT_PLEASE2_REQ``,
``NAMES_REQ`` and ``DUMP_REQ`` as ``epmd`` does. Like ``epmd`` without
``-relaxed_command_check``, it answers ``KILL_REQ`` (``epmd -kill``) with ``NO`` while any
node is registered (``OK``, and exits, when none is) and ignores ``STOP_REQ`` (``epmd -stop``);
started with ``--relaxed-command-check`` or ``$ERL_EPMD_RELAXED_COMMAND_CHECK`` set, it obeys
both, as ``epmd`` does. It is stricter in three ways: it accepts registrations only from
loopback addresses (``epmd`` also from the host's own address), it refuses port 0, and it
closes a refused registration's connection after answering. Each request gets its own
connection, as with ``epmd``: anything malformed, oversized, or more than one request gets
the connection closed without an answer, and so does a client that has not finished its
request and read the answer within 10 s; the daemon keeps serving. One request is nodelab's
own, :data:`NODELAB_INFO_REQ` (``?``): the daemon answers ``nodelab-epmd 1 pid=N`` (the pid
only to loopback peers); ``epmd`` closes the connection, which is how a node tells them apart.

Run it by hand: ``python -m nodelab.dist.portmapper [--port P] [--linger SECONDS]``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import os
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from nodelab.dist.names import check_name_part, is_loopback_host
from nodelab.errors import NodelabError

DEFAULT_PORT = 4369
DEFAULT_LINGER = 10.0
EXIT_IN_USE = 3  # status of ``--detach`` when the port is taken (maybe by another EPMD)

# --- the EPMD protocol ------------------------------------------------------------------

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
#: A connection must have sent its request and read the answer within this many seconds.
REQUEST_TIMEOUT = 10.0
#: Names kept after their node left, for DUMP_REQ and for the creation of a version-5 node.
MAX_UNUSED = 1000

#: How long a node keeps trying to register again after its EPMD died, and the longest
#: pause between two attempts.
REREGISTER_WINDOW = 60.0
REREGISTER_MAX_DELAY = 1.0

log = logging.getLogger("nodelab.dist.portmapper")

_LENGTH = struct.Struct("!H")
_ALIVE2_HEAD = struct.Struct("!BHBBHHH")  # tag, port, type, protocol, highest, lowest, nlen
_PORT2_HEAD = struct.Struct("!BBHBBHHH")  # tag, result, port, type, protocol, hi, lo, nlen
_NAMES_LINE = re.compile(r"name (.+) at port (\d+)")


class PortMapperError(NodelabError):
    """The EPMD could not be reached, or answered something unexpected."""


class PortMapperUnavailable(PortMapperError):
    """No EPMD answers (and none could be started)."""


class NameInUse(PortMapperError):
    """Another node on this host already has this name."""

    def __init__(self, full_name: str) -> None:
        self.node = full_name
        super().__init__(f"node name {full_name} is already in use on this host: pick another "
                         "--sname, or stop the node that has it")


class EpmdEntry(NamedTuple):
    """What EPMD knows about a registered node (a ``PORT2_RESP``)."""

    name: str
    port: int
    node_type: int  # 77 normal, 72 hidden
    protocol: int  # 0: TCP
    highest_version: int
    lowest_version: int
    extra: bytes


def _env_number(variable: str, default: float, *, integer: bool) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = -1
    if value < 0 or (integer and not 0 < value < 65536):
        kind = "a TCP port number like 4369" if integer else "a number of seconds like 10"
        raise PortMapperError(f"{variable}={text!r} is not {kind}: fix it or unset it")
    return value


def default_port() -> int:
    """The EPMD port: ``$ERL_EPMD_PORT`` (the variable ``erl`` and ``epmd`` read), or 4369."""
    port = int(_env_number("ERL_EPMD_PORT", DEFAULT_PORT, integer=True))
    legacy = os.environ.get("NODELAB_PORTMAPPER_PORT", "").strip()
    if legacy and legacy != str(port):
        # Silently using 4369 instead would put a private setup on the host's shared EPMD.
        raise PortMapperError(
            f"NODELAB_PORTMAPPER_PORT={legacy!r} is no longer read: nodelab's port mapper is "
            f"EPMD now, on $ERL_EPMD_PORT (the variable erl and epmd read too): set "
            f"ERL_EPMD_PORT={legacy} instead, and unset NODELAB_PORTMAPPER_PORT")
    return port


def default_linger() -> float:
    """Seconds nodelab's daemon waits without registrations before it exits
    (``$NODELAB_PORTMAPPER_LINGER``, or 10)."""
    return _env_number("NODELAB_PORTMAPPER_LINGER", DEFAULT_LINGER, integer=False)


def _relaxed_from_environment() -> bool:
    # epmd reads this variable as if -relaxed_command_check were given.
    return bool(os.environ.get("ERL_EPMD_RELAXED_COMMAND_CHECK"))


def _is_loopback_ip(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 peer of a dual-stack socket: ::ffff:127.0.0.1
    return ip.is_loopback


def _decode_name(raw: bytes) -> str | None:
    """A node name as EPMD accepts it: UTF-8, no NUL, 1..255 characters; else None."""
    if not raw or b"\0" in raw or len(raw) > MAX_NAME_BYTES:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if len(name) <= MAX_NAME_CHARS else None


def _packet(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def _alive2_body(name: str, port: int, node_type: int, extra: bytes) -> bytes:
    raw = name.encode("utf-8")
    return (_ALIVE2_HEAD.pack(ALIVE2_REQ, port, node_type, PROTOCOL_TCP, HIGHEST_VERSION,
                              LOWEST_VERSION, len(raw))
            + raw + _LENGTH.pack(len(extra)) + extra)


# --------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------


class _Client:
    """One connection to the daemon: one request, or one registration."""

    __slots__ = ("closing", "deadline", "inbuf", "loopback", "name", "outbuf", "sock")

    def __init__(self, sock: socket.socket, loopback: bool, deadline: float) -> None:
        self.sock = sock
        self.loopback = loopback
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.name: str | None = None  # the name this connection registered
        self.deadline = deadline  # dropped then, unless it registered
        self.closing = False  # close once outbuf is sent (the request is answered)


class _Node:
    """A registered name (or, in ``unused``, one whose node left)."""

    __slots__ = ("client", "creation", "extra", "highest", "lowest", "node_type", "port",
                 "protocol")

    def __init__(self, client: _Client | None, port: int, node_type: int, protocol: int,
                 highest: int, lowest: int, extra: bytes, creation: int) -> None:
        self.client = client
        self.port = port
        self.node_type = node_type
        self.protocol = protocol
        self.highest = highest
        self.lowest = lowest
        self.extra = extra
        self.creation = creation


class PortMapper:
    """nodelab's EPMD daemon: one thread, one :mod:`selectors` loop, never blocks on a client.

    ``serve_forever`` returns after ``linger`` seconds without any registration, or after
    an accepted ``KILL_REQ``.
    """

    def __init__(self, listener: socket.socket, linger: float, *, relaxed: bool = False,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.listener = listener
        self.port = listener.getsockname()[1]
        self.linger = linger
        self.relaxed = relaxed
        self.request_timeout = request_timeout
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, _Client] = {}
        self.registry: dict[str, _Node] = {}
        self.unused: OrderedDict[str, _Node] = OrderedDict()
        # 32-bit creations count up from a random start, so that two runs of a node with
        # the same name never share one, even across restarts of the daemon; never 0.
        self.next_creation = random.SystemRandom().randrange(1, 1 << 32)
        self.unregistered_since = time.monotonic()
        self.accept_paused_until = 0.0
        self.killed = False
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if soft == resource.RLIM_INFINITY:
                soft = 4096
        except (ImportError, OSError, ValueError):
            soft = 1024
        # Refuse connections before the process runs out of descriptors: a flood of idle
        # clients must not stop the nodes of this host from registering.
        self.max_clients = max(16, min(4096, soft - 32))
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ)

    # --- the loop -------------------------------------------------------------------

    def serve_forever(self) -> None:
        log.info("EPMD (nodelab) listening on port %d (pid %d, linger %.3g s%s)", self.port,
                 os.getpid(), self.linger, ", relaxed command check" if self.relaxed else "")
        try:
            while not self.killed:
                now = time.monotonic()
                if self.registry:
                    self.unregistered_since = now
                elif now - self.unregistered_since >= self.linger:
                    log.info("no node registered for %.3g s: exiting", self.linger)
                    return
                # Wake up at least once a second (slow clients), and when the linger ends.
                timeout = 1.0
                if not self.registry:
                    timeout = min(timeout, self.unregistered_since + self.linger - now)
                if self.accept_paused_until:
                    timeout = min(timeout, max(0.0, self.accept_paused_until - now))
                for key, mask in self.selector.select(max(0.0, timeout)):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        client = self.clients.get(key.fileobj)  # type: ignore[arg-type]
                        if client is not None:
                            self._service(client, mask)
                    if self.killed:
                        break
                self._housekeeping()
            log.info("killed by KILL_REQ (epmd -kill): exiting")
        finally:
            for client in self.clients.copy().values():
                self._drop(client)
            self.selector.close()
            self.listener.close()

    def _service(self, client: _Client, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not client.closing:
                self._read(client)
            if client.sock in self.clients and mask & selectors.EVENT_WRITE:
                self._flush(client)
        except Exception:  # one bad client must never take the daemon down
            log.exception("dropping a client after an unexpected error")
            self._drop(client)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.accept_paused_until and now >= self.accept_paused_until:
            self.accept_paused_until = 0.0
            self.selector.register(self.listener, selectors.EVENT_READ)
        for client in self.clients.copy().values():
            if client.name is None and now > client.deadline:
                self._drop(client)  # too slow to ask, or to read the answer

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment instead of spinning.
                    log.warning("cannot accept connections (%s): pausing 0.1 s", error)
                    self.selector.unregister(self.listener)
                    self.accept_paused_until = time.monotonic() + 0.1
                return  # ECONNABORTED and the like: the client is gone already
            if len(self.clients) >= self.max_clients:
                sock.close()  # busy: as epmd, close at once
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, _is_loopback_ip(address[0]),
                             time.monotonic() + self.request_timeout)
            self.clients[sock] = client
            self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)  # for a registered node: it died, or unregistered
            return
        if client.name is not None:
            # A registration connection carries nothing after ALIVE2_REQ: epmd treats
            # anything more as the end of the registration, and so does this daemon.
            log.info("unexpected bytes on the registration of %s: unregistering it",
                     client.name)
            self._drop(client)
            return
        client.inbuf += data
        if len(client.inbuf) < 2:
            return
        want = _LENGTH.unpack_from(client.inbuf)[0]
        if not 0 < want <= MAX_REQUEST:
            self._drop(client)  # an empty or oversized request: epmd closes too
            return
        have = len(client.inbuf) - 2
        if have < want:
            return
        if have > want:
            self._drop(client)  # more than one request on a connection
            return
        request = bytes(client.inbuf[2:])
        client.inbuf.clear()
        self._request(client, request)

    def _request(self, client: _Client, request: bytes) -> None:
        tag = request[0]
        if tag == ALIVE2_REQ:
            self._alive2(client, request)
        elif tag == PORT_PLEASE2_REQ:
            self._port_please2(client, request)
        elif tag == NAMES_REQ:
            self._answer(client, struct.pack("!I", self.port) + b"".join(
                b"name %s at port %d\n" % (name.encode("utf-8"), node.port)
                for name, node in sorted(self.registry.items())))
        elif tag == DUMP_REQ and client.loopback:
            self._answer(client, self._dump())
        elif tag == KILL_REQ and client.loopback:
            if self.registry and not self.relaxed:
                log.info("KILL_REQ refused: %d node(s) registered", len(self.registry))
                self._answer(client, b"NO")
                return
            with contextlib.suppress(OSError):
                client.sock.send(b"OK")
            self._drop(client)
            self.killed = True
        elif tag == STOP_REQ and client.loopback and self.relaxed:
            name = _decode_name(request[1:].rstrip(b"\0"))
            node = self.registry.get(name) if name is not None else None
            if node is None or node.client is None:
                self._answer(client, b"NOEXIST")
                return
            log.info("STOP_REQ: unregistering %s", name)
            self._drop(node.client)
            self._answer(client, b"STOPPED")
        elif tag == NODELAB_INFO_REQ:
            if client.loopback:
                # "A node is about to register": restart the linger clock, so the daemon
                # does not exit between ensure_portmapper() and register().
                self.unregistered_since = max(self.unregistered_since, time.monotonic())
            pid = f" pid={os.getpid()}" if client.loopback else ""
            self._answer(client, f"{INFO}{pid}\n".encode("ascii"))
        else:
            # Unknown, or not allowed from this peer (DUMP/KILL/STOP are for this host, STOP
            # only with the relaxed command check): closed without an answer, as epmd does.
            self._drop(client)

    def _alive2(self, client: _Client, request: bytes) -> None:
        if not client.loopback:
            log.info("ALIVE2_REQ from a non-loopback address: refused")
            self._drop(client)  # only nodes of this host register here
            return
        if len(request) < _ALIVE2_HEAD.size + 2:
            self._drop(client)
            return
        _, port, node_type, protocol, highest, lowest, name_length = \
            _ALIVE2_HEAD.unpack_from(request)
        end_of_name = _ALIVE2_HEAD.size + name_length
        if len(request) < end_of_name + 2:
            self._drop(client)
            return
        extra_length = _LENGTH.unpack_from(request, end_of_name)[0]
        if len(request) != end_of_name + 2 + extra_length:
            self._drop(client)
            return
        extra = request[end_of_name + 2:]
        name = _decode_name(request[_ALIVE2_HEAD.size:end_of_name])
        x_resp = highest >= 6  # both sides know version 6: a 32-bit creation
        if name is None or port == 0 or name in self.registry or len(extra) > MAX_EXTRA:
            log.info("ALIVE2_REQ refused: %s", "name in use" if name in self.registry
                     else "bad name, port or extra")
            reply = (struct.pack("!BBI", ALIVE2_X_RESP, 1, 0) if x_resp
                     else struct.pack("!BBH", ALIVE2_RESP, 1, 0))
            self._answer(client, reply)
            return
        old = self.unused.pop(name, None)
        if x_resp:
            creation = self.next_creation
            self.next_creation = self.next_creation % 0xFFFFFFFF + 1  # 1..2**32-1
            reply = struct.pack("!BBI", ALIVE2_X_RESP, 0, creation)
        else:
            # epmd's way for old nodes: 1..3, another one than the name's previous run.
            creation = (old.creation % 3 + 1) if old is not None else random.randint(1, 3)
            reply = struct.pack("!BBH", ALIVE2_RESP, 0, creation)
        client.name = name
        self.registry[name] = _Node(client, port, node_type, protocol, highest, lowest, extra,
                                    creation)
        log.info("registered %s on port %d (type %d, versions %d..%d, creation %d)", name,
                 port, node_type, lowest, highest, creation)
        self._send(client, reply)

    def _port_please2(self, client: _Client, request: bytes) -> None:
        name = _decode_name(request[1:].removesuffix(b"\0"))
        if name is None:
            self._drop(client)  # epmd closes without an answer too
            return
        node = self.registry.get(name)
        if node is None:
            self._answer(client, bytes([PORT2_RESP, 1]))
            return
        raw = name.encode("utf-8")
        self._answer(client, _PORT2_HEAD.pack(PORT2_RESP, 0, node.port, node.node_type,
                                              node.protocol, node.highest, node.lowest,
                                              len(raw))
                     + raw + _LENGTH.pack(len(node.extra)) + node.extra)

    def _dump(self) -> bytes:
        parts = [struct.pack("!I", self.port)]
        for name, node in sorted(self.registry.items()):
            fd = node.client.sock.fileno() if node.client is not None else -1
            parts.append(b"active name     <%s> at port %d, fd = %d\n\0"
                         % (name.encode("utf-8"), node.port, fd))
        for name, node in self.unused.items():
            parts.append(b"old/unused name <%s>, port = %d, fd = %d \n\0"
                         % (name.encode("utf-8"), node.port, -1))
        return b"".join(parts)

    def _unregister(self, client: _Client) -> None:
        name = client.name
        if name is None:
            return
        client.name = None
        node = self.registry.get(name)
        if node is not None and node.client is client:
            del self.registry[name]
            node.client = None
            self.unused[name] = node
            while len(self.unused) > MAX_UNUSED:
                self.unused.popitem(last=False)
            log.info("unregistered %s", name)

    # --- output ---------------------------------------------------------------------

    def _send(self, client: _Client, data: bytes) -> None:
        client.outbuf += data
        self._flush(client)

    def _answer(self, client: _Client, data: bytes) -> None:
        """The whole answer to the connection's one request: send it, then close."""
        client.closing = True
        self._send(client, data)

    def _flush(self, client: _Client) -> None:
        if client.sock not in self.clients:
            return
        try:
            sent = client.sock.send(client.outbuf) if client.outbuf else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        del client.outbuf[:sent]
        if not client.outbuf and client.closing:
            self._drop(client)
            return
        # An answered client is not read any more: watching it for input would spin the
        # loop while it keeps sending and does not read our answer.
        wanted = ((0 if client.closing else selectors.EVENT_READ)
                  | (selectors.EVENT_WRITE if client.outbuf else 0))
        if self.selector.get_key(client.sock).events != wanted:
            self.selector.modify(client.sock, wanted)

    def _drop(self, client: _Client) -> None:
        self._unregister(client)
        if self.clients.pop(client.sock, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.close()


def bind_listener(port: int, host: str | None = None) -> socket.socket:
    """A listening socket on ``port``: dual-stack ``::`` when the host has IPv6, else
    ``0.0.0.0``. Raises :class:`OSError` with ``errno.EADDRINUSE`` when the port is taken."""
    if host is None and socket.has_dualstack_ipv6():
        try:
            return socket.create_server(("::", port), family=socket.AF_INET6,
                                        dualstack_ipv6=True, backlog=128)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise
            # IPv6 switched off in this container or namespace: IPv4 only, below.
    bind_host = host if host is not None else "0.0.0.0"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    return socket.create_server((bind_host, port), family=family, backlog=128)


def main(argv: list[str] | None = None) -> int:
    """``python -m nodelab.dist.portmapper [--port P] [--linger SECONDS]``."""
    parser = argparse.ArgumentParser(
        prog="python -m nodelab.dist.portmapper",
        description="nodelab's EPMD daemon: maps node names to ports for nodelab and BEAM "
                    "nodes (the protocol of Erlang's epmd).")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default $ERL_EPMD_PORT or 4369)")
    parser.add_argument("--linger", type=float, default=None,
                        help="exit after this many seconds without registrations "
                             "(default $NODELAB_PORTMAPPER_LINGER or 10)")
    parser.add_argument("--detach", action="store_true",
                        help="bind, then continue in the background; exit status 0 when "
                             f"listening, {EXIT_IN_USE} when the port is taken")
    parser.add_argument("--relaxed-command-check", action="store_true",
                        help="obey `epmd -kill` even with nodes registered, and `epmd -stop "
                             "NAME` (like epmd's -relaxed_command_check; also "
                             "$ERL_EPMD_RELAXED_COMMAND_CHECK)")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                        help="close a connection that has not sent its request and read "
                             f"the answer after this many seconds (default {REQUEST_TIMEOUT:g})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s portmapper[{os.getpid()}] %(message)s")
    try:
        port = args.port if args.port is not None else default_port()
        linger = args.linger if args.linger is not None else default_linger()
    except PortMapperError as error:
        parser.error(str(error))
    if not 0 < port < 65536 or linger < 0 or args.request_timeout <= 0:
        parser.error("--port must be 1..65535, --linger >= 0 and --request-timeout > 0")
    try:
        listener = bind_listener(port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            # Usually another EPMD won the race to start: that one serves.
            log.info("port %d is already in use (another EPMD?): exiting", port)
            return EXIT_IN_USE
        log.error("cannot listen on port %d: %s", port, error)
        return 1
    if args.detach and hasattr(os, "fork"):
        # The port is bound before the fork, so the launcher's exit status says who won
        # a race, and the daemon is re-parented to init: no zombie in the node that
        # started it.
        if os.fork() > 0:
            os._exit(0)
        logging.basicConfig(force=True, level=logging.INFO, stream=sys.stderr,
                            format=f"%(asctime)s portmapper[{os.getpid()}] %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    relaxed = args.relaxed_command_check or _relaxed_from_environment()
    try:
        PortMapper(listener, linger, relaxed=relaxed,
                   request_timeout=args.request_timeout).serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------


def _connect(host_ip: str, port: int, timeout: float) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host_ip).version == 6 else socket.AF_INET
    except ValueError:
        # A host name: let create_connection resolve it and try each address.
        sock = socket.create_connection((host_ip, port), timeout=timeout)
    else:
        # An IP address (the usual case): skip getaddrinfo, a third of a lookup's time.
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host_ip, port))
        except BaseException:
            sock.close()
            raise
    try:
        # TCP's self-connect: when nothing listens on a port of the ephemeral range (a test's
        # EPMD port), the kernel may pick that very port as the source of a loopback connect,
        # and the socket is connected to itself. It would hold the port, so the daemon about
        # to be started could not bind it, and it echoes our request as the answer.
        if sock.getsockname()[:2] == sock.getpeername()[:2]:
            raise ConnectionRefusedError(f"nothing listens on port {port} (the connection "
                                         "reached itself)")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _read_until_closed(sock: socket.socket, deadline: float, limit: int = MAX_REPLY) -> bytes:
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the EPMD did not answer in time")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise PortMapperError("the EPMD's answer is too long")


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the EPMD did not answer in time")
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("the EPMD closed the connection without answering")
        data += chunk
    return bytes(data)


def _request(host_ip: str, port: int, body: bytes, timeout: float) -> bytes:
    """One request on a fresh connection; everything EPMD answers before it closes."""
    deadline = time.monotonic() + timeout
    with _connect(host_ip, port, timeout) as sock:
        sock.sendall(_packet(body))
        return _read_until_closed(sock, deadline)


def _info(host_ip: str, port: int, timeout: float) -> str | None:
    """nodelab's daemon's answer to NODELAB_INFO_REQ; None from anything else."""
    try:
        reply = _request(host_ip, port, bytes([NODELAB_INFO_REQ]), timeout)
    except (OSError, PortMapperError):
        return None
    text = reply.decode("ascii", "replace").strip()
    return text if text.startswith(INFO) else None


def _probe(host_ip: str, port: int, timeout: float) -> str:
    """``"nodelab"`` or ``"epmd"`` (which EPMD answers), ``"none"`` (nothing listens, or
    the host cannot be reached), ``"other"`` (a program that does not answer as an EPMD)."""
    deadline = time.monotonic() + timeout
    try:
        reply = _request(host_ip, port, bytes([NODELAB_INFO_REQ]), timeout)
    except (ConnectionRefusedError, socket.gaierror):
        return "none"
    except (OSError, PortMapperError) as error:
        # A timeout after the connection was made: something listens, and says nothing.
        return "other" if isinstance(error, (TimeoutError, PortMapperError)) else "none"
    if reply.startswith(INFO.encode("ascii")):
        return "nodelab"
    if reply:
        return "other"  # it answered, but not as an EPMD would
    # Closed without an answer, as epmd closes an unknown request: ask what any EPMD answers.
    try:
        names_reply = _request(host_ip, port, bytes([NAMES_REQ]),
                               max(0.05, deadline - time.monotonic()))
    except ConnectionRefusedError:
        return "none"
    except (OSError, PortMapperError):
        return "other"
    if len(names_reply) < 4:
        return "other"
    # nodelab's daemon too closes a request without answering when it is full of clients,
    # or exiting after its linger while a new one takes the port: ask once more, so that
    # it is not taken for Erlang's epmd (which never answers this request).
    if _info(host_ip, port, max(0.05, deadline - time.monotonic())) is not None:
        return "nodelab"
    return "epmd"


def epmd_kind(host_ip: str = "127.0.0.1", port: int | None = None, *,
              timeout: float = 1.0) -> str | None:
    """Which EPMD answers on ``host_ip:port``: ``"nodelab"`` (nodelab's daemon), ``"epmd"``
    (another one: Erlang's own), or None when none answers (nothing listens, or a program
    that does not speak EPMD)."""
    kind = _probe(host_ip, port if port is not None else default_port(), timeout)
    return kind if kind in ("nodelab", "epmd") else None


def mapper_pid(host_ip: str = "127.0.0.1", port: int | None = None, *,
               timeout: float = 1.0) -> int | None:
    """The OS pid of nodelab's EPMD daemon on this host, or None when none answers (also
    when the EPMD there is Erlang's own, or on another host: only loopback callers are
    told the pid)."""
    reply = _info(host_ip, port if port is not None else default_port(), timeout)
    if reply is None:
        return None
    for word in reply.split():
        if word.startswith("pid=") and word[4:].isdigit():
            return int(word[4:])
    return None


def _log_path(port: int) -> Path | None:
    from nodelab.dist.cookie import nodelab_home

    home = nodelab_home()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not stop nodes: the daemon runs without a log
    return home / f"portmapper-{port}.log"


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(text)


# Runs the daemon with only the modules it needs (this one, nodelab.errors and
# nodelab.dist.names): the packages' __init__ (the whole runtime) is skipped, which saves
# most of a second on a loaded machine, when the first node starts and when nodes recover
# from a killed daemon. argv: ROOT nodelab.dist.portmapper OPTIONS (the second word is there
# for people and tools that look for the daemon in the process list).
_DAEMON_LAUNCHER = """\
import os, sys, types
for name in ("nodelab", "nodelab.dist"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(sys.argv[1], *name.split("."))]
    sys.modules[name] = package
from nodelab.dist.portmapper import main
sys.exit(main(sys.argv[3:]))
"""


def ensure_portmapper(host_ip: str = "127.0.0.1", port: int | None = None, *,
                      timeout: float = 5.0) -> str:
    """Make sure an EPMD answers on ``host_ip:port``; start nodelab's if it is this host's.

    An EPMD already there is used, Erlang's or nodelab's; the answer says which
    (``"epmd"`` or ``"nodelab"``). Like the first ``iex --sname`` starting ``epmd``: when
    nothing answers on a loopback address, nodelab's daemon is started detached from this
    process (its own session, its log in ``$NODELAB_HOME/portmapper-PORT.log``) and this call
    waits until it answers. Nodes that race to start it all succeed: one daemon binds the
    port, the others exit quietly. For another host's address it only checks. Raises
    :class:`PortMapperUnavailable`.
    """
    port = port if port is not None else default_port()
    deadline = time.monotonic() + timeout
    kind = _probe(host_ip, port, min(1.0, timeout))
    if kind in ("nodelab", "epmd"):
        return kind
    if not is_loopback_host(host_ip):
        raise PortMapperUnavailable(
            f"no EPMD answers on {host_ip} port {port}: start a node on that host first (it "
            "starts one), check that the port is not firewalled, and that both hosts use "
            "the same ERL_EPMD_PORT")
    taken = (f"port {port} is taken by a program that is not an EPMD, or by a hung one (see "
             f"`ss -ltnp 'sport = :{port}'`): stop it, or set ERL_EPMD_PORT to a free port "
             "(the same for all your nodes, nodelab's and the BEAM's)")
    if kind == "other":
        # No daemon of ours could bind the port: wait a little in case the program there
        # is an EPMD that is only slow, then say so.
        while time.monotonic() < deadline:
            kind = _probe(host_ip, port, max(0.05, min(1.0, deadline - time.monotonic())))
            if kind in ("nodelab", "epmd"):
                return kind
            if kind == "none":
                break  # it went away: start ours
            time.sleep(0.05)
        else:
            raise PortMapperUnavailable(f"no EPMD answers on port {port}: {taken}")
    log_path = _log_path(port)
    # The daemon runs this very copy of nodelab, installed or not (a checkout on sys.path
    # only through the current directory would not be found from the daemon's own cwd).
    package_root = str(Path(__file__).resolve().parents[2])
    command = [sys.executable, "-c", _DAEMON_LAUNCHER, package_root, "nodelab.dist.portmapper",
               "--port", str(port), "--detach"]
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        log_file: int | object = subprocess.DEVNULL
        if log_path is not None:
            with contextlib.suppress(OSError):
                # Appended to across runs, started afresh past 1 MiB.
                big = log_path.exists() and log_path.stat().st_size > 1 << 20
                log_file = stack.enter_context(open(log_path, "wb" if big else "ab"))
        launcher = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log_file,
                                    start_new_session=True, close_fds=True, env=env,
                                    cwd="/")
    try:
        status: int | None = launcher.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()
        status = None
    delay = 0.002
    while True:
        kind = _probe(host_ip, port, max(0.05, min(1.0, deadline - time.monotonic())))
        if kind in ("nodelab", "epmd"):
            return kind
        if time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if status == EXIT_IN_USE:
        reason = taken
    elif status is None:
        reason = f"it did not start within {timeout} s (a very slow machine?)"
    else:
        reason = f"it exited with status {status}"
    tail = _log_tail(log_path) if log_path is not None else ""
    raise PortMapperUnavailable(
        f"could not start an EPMD on port {port}: {reason}"
        + (f"; its log {log_path} ends with: {tail}" if tail else ""))


def _open_registration(name: str, port: int, mapper_port: int, full_name: str,
                       timeout: float, node_type: int = NODE_TYPE_NORMAL,
                       extra: bytes = b"") -> tuple[socket.socket, int]:
    """ALIVE2_REQ on a new connection: the connection (to keep open) and the creation."""
    deadline = time.monotonic() + timeout
    try:
        sock = _connect("127.0.0.1", mapper_port, timeout)
    except OSError as error:
        raise PortMapperUnavailable(
            f"no EPMD answers on port {mapper_port} ({error}): call ensure_portmapper() "
            "first (Node.start does)") from None
    try:
        sock.sendall(_packet(_alive2_body(name, port, node_type, extra)))
        tag = _read_exactly(sock, 1, deadline)[0]
        if tag == ALIVE2_X_RESP:
            result, creation = struct.unpack("!BI", _read_exactly(sock, 5, deadline))
        elif tag == ALIVE2_RESP:
            result, creation = struct.unpack("!BH", _read_exactly(sock, 3, deadline))
        else:
            raise PortMapperError(f"it answered with an unknown tag {tag}")
    except (OSError, PortMapperError) as error:
        sock.close()
        raise PortMapperUnavailable(f"the EPMD on port {mapper_port} did not answer the "
                                    f"registration of {full_name}: {error}") from None
    if result != 0:
        # EPMD says no more than "error"; the name is checked before, so it is taken.
        sock.close()
        raise NameInUse(full_name)
    sock.settimeout(None)
    return sock, creation


_live_registrations: weakref.WeakSet[Registration] = weakref.WeakSet()


class Registration:
    """A node's name in EPMD; it lasts as long as this object's socket.

    Made by :func:`register`. ``creation`` is the creation EPMD gave the first registration:
    the node's creation for its whole run. :meth:`close` gives the name back (synchronously,
    so the same name can be registered again at once). If the EPMD dies while the
    registration is wanted, a daemon thread notices (its socket closes), calls the
    :meth:`on_lost` callbacks, logs it, starts nodelab's EPMD if none is back and registers
    again, retrying with a growing pause (up to :data:`REREGISTER_MAX_DELAY`) for
    :data:`REREGISTER_WINDOW` seconds. The new registration's creation is only recorded
    (``epmd_creation``): the node keeps ``creation``. Connections between running nodes are
    never affected: only new lookups need EPMD.
    """

    def __init__(self, name: str, port: int, mapper_port: int, full_name: str,
                 sock: socket.socket, creation: int, node_type: int = NODE_TYPE_NORMAL,
                 extra: bytes = b"") -> None:
        self.name = name
        self.port = port
        self.mapper_port = mapper_port
        self.full_name = full_name
        self.creation = creation
        self.epmd_creation = creation
        self.node_type = node_type
        self.extra = extra
        self._sock = sock
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._done = threading.Event()
        self._registered = threading.Event()
        self._registered.set()
        self._callbacks: list[Callable[[], object]] = []
        self.reregistrations = 0
        _live_registrations.add(self)
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name=f"nodelab epmd watch {name}")
        self._thread.start()

    @property
    def registered(self) -> bool:
        """True while EPMD knows this name (False after a loss, until re-registered)."""
        return self._registered.is_set() and not self._closing.is_set()

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Wait until the name is registered (again); False on timeout or after close()."""
        return self._registered.wait(timeout) and not self._closing.is_set()

    def on_lost(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (in the watcher thread) each time EPMD goes away while this
        registration is wanted, before registering again."""
        self._callbacks.append(callback)

    def close(self) -> None:
        """Give the name back. Idempotent; returns once EPMD has forgotten the name (at
        most ~1 s when EPMD does not answer)."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            sock = self._sock
        self._registered.clear()
        try:
            # Half-close and wait for EPMD to close its end: closing the socket alone frees
            # the name too, but only once EPMD has read the EOF, so an immediate Node.start
            # with the same name could still be refused. EPMD closes right after it has
            # unregistered the name, and the watcher thread sees that.
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        else:
            if threading.current_thread() is not self._thread:
                self._done.wait(1.0)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the watcher thread has finished (after :meth:`close`, or after it gave
        up re-registering); True if it has."""
        return self._done.wait(timeout)

    def reregister(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` for the automatic re-registration after a lost EPMD."""
        return self.wait_registered(timeout)

    # --- the watcher thread -------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._closing.is_set():
                self._wait_for_loss(self._sock)
                if self._closing.is_set():
                    break
                self._registered.clear()
                log.warning("the EPMD (port %d) went away: %s keeps its connections and "
                            "registers again so that new lookups find it",
                            self.mapper_port, self.full_name)
                for callback in list(self._callbacks):
                    try:
                        callback()
                    except Exception:  # a callback must not stop the recovery
                        log.exception("an on_lost callback of %s failed", self.full_name)
                if not self._recover():
                    break
        finally:
            self._done.set()

    def _wait_for_loss(self, sock: socket.socket) -> None:
        """Block until the registration connection closes (or close() was called)."""
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            if not data or self._closing.is_set():
                return  # EOF: EPMD died, or it answered our half-close

    def _recover(self) -> bool:
        started = time.monotonic()
        delay = 0.02
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            remaining = REREGISTER_WINDOW - (time.monotonic() - started)
            if remaining <= 0:
                break
            try:
                ensure_portmapper("127.0.0.1", self.mapper_port, timeout=min(5.0, remaining))
                sock, creation = _open_registration(self.name, self.port, self.mapper_port,
                                                    self.full_name, min(5.0, remaining),
                                                    self.node_type, self.extra)
            except NameInUse:
                log.error("cannot register %s again: another node took the name meanwhile; "
                          "only nodes already connected can reach this node now (restart it "
                          "with another name)", self.full_name)
                return False
            except (OSError, PortMapperError) as error:
                log.debug("re-registering %s, attempt %d failed: %s",
                          self.full_name, attempt, error)
                if self._closing.wait(delay):
                    return False
                delay = min(delay * 2, REREGISTER_MAX_DELAY)
                continue
            with self._lock:
                if self._closing.is_set():
                    sock.close()
                    return False
                old, self._sock = self._sock, sock
            old.close()
            self.epmd_creation = creation
            self.reregistrations += 1
            self._registered.set()
            log.info("%s is registered again with the EPMD (port %d), after %d attempt(s) in "
                     "%.0f ms; EPMD's creation is %d now, the node keeps its creation %d",
                     self.full_name, self.mapper_port, attempt,
                     (time.monotonic() - started) * 1000, creation, self.creation)
            return True
        if not self._closing.is_set():
            log.error("gave up registering %s again after %.0f s: no EPMD on port %d; only "
                      "nodes already connected can reach it (restart the node)",
                      self.full_name, REREGISTER_WINDOW, self.mapper_port)
        return False

    def __repr__(self) -> str:
        state = "closed" if self._closing.is_set() else (
            "registered" if self._registered.is_set() else "lost")
        return (f"<Registration {self.full_name} port={self.port} creation={self.creation} "
                f"{state}>")


def _forget_registrations_in_child() -> None:
    # A forked child (multiprocessing, os.fork) inherits the registration sockets; if it
    # kept them, the name would stay registered after the node itself died. Close the
    # child's copies without unregistering: the parent's registration stays as it is.
    for registration in list(_live_registrations):
        # Fresh lock and event: another thread of the parent may have held the old ones
        # at the moment of the fork, and nothing would ever release them in the child.
        registration._lock = threading.Lock()
        registration._closing = threading.Event()
        registration._closing.set()
        registration._registered = threading.Event()
        with contextlib.suppress(OSError):
            registration._sock.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_registrations_in_child)


def register(name: str, port: int, *, mapper_port: int | None = None, timeout: float = 5.0,
             full_name: str | None = None, node_type: int = NODE_TYPE_NORMAL,
             extra: bytes = b"") -> Registration:
    """Register ``name`` -> ``port`` with this host's EPMD (ALIVE2_REQ); keep the result alive.

    ``full_name`` (``alex@localhost``) is only used in messages. The result's ``creation``
    is the one EPMD gave. Raises :class:`NameInUse` when another node has the name,
    :class:`PortMapperUnavailable` when no EPMD answers (nodelab's is started if it just
    exited).
    """
    check_name_part(name)
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is not a TCP port (1..65535)")
    if len(extra) > MAX_EXTRA:
        raise ValueError(f"extra has {len(extra)} bytes, EPMD keeps at most {MAX_EXTRA}")
    mapper_port = mapper_port if mapper_port is not None else default_port()
    full_name = full_name or f"{name}@localhost"
    try:
        sock, creation = _open_registration(name, int(port), mapper_port, full_name, timeout,
                                            node_type, extra)
    except NameInUse:
        raise
    except PortMapperUnavailable:
        # nodelab's EPMD may have exited (linger) just after ensure_portmapper() saw it.
        ensure_portmapper("127.0.0.1", mapper_port, timeout=timeout)
        sock, creation = _open_registration(name, int(port), mapper_port, full_name, timeout,
                                            node_type, extra)
    return Registration(name, int(port), mapper_port, full_name, sock, creation, node_type,
                        extra)


def port_please(name: str, host_ip: str = "127.0.0.1", port: int | None = None, *,
                timeout: float = 2.0) -> EpmdEntry | None:
    """What the EPMD at ``host_ip`` knows of node ``name`` (PORT_PLEASE2_REQ), or None.

    None means "no such node there": not registered, or no EPMD answers (no node runs on
    that host). Raises :class:`~nodelab.dist.names.InvalidNodeName` for a bad name.
    """
    check_name_part(name)
    try:
        reply = _request(host_ip, port if port is not None else default_port(),
                         bytes([PORT_PLEASE2_REQ]) + name.encode("utf-8"), timeout)
    except (OSError, PortMapperError):
        return None
    if len(reply) >= 2 and reply[0] == PORT2_RESP and reply[1] != 0:
        return None  # not registered there
    entry = _parse_port2(reply)
    if entry is None:
        log.debug("unexpected answer from the EPMD at %s: %r", host_ip, reply[:64])
    return entry


def _parse_port2(reply: bytes) -> EpmdEntry | None:
    """A PORT2_RESP with Result 0, or None when ``reply`` is not exactly one."""
    try:
        (tag, result, node_port, node_type, protocol, highest, lowest,
         name_length) = _PORT2_HEAD.unpack_from(reply)
        end_of_name = _PORT2_HEAD.size + name_length
        extra_length = _LENGTH.unpack_from(reply, end_of_name)[0]
        name = reply[_PORT2_HEAD.size:end_of_name].decode("utf-8")
    except (struct.error, UnicodeDecodeError):
        return None
    extra = reply[end_of_name + 2:]
    if tag != PORT2_RESP or result != 0 or not 0 < node_port < 65536 or len(extra) != extra_length:
        return None
    return EpmdEntry(name, node_port, node_type, protocol, highest, lowest, extra)


def lookup(name: str, host_ip: str = "127.0.0.1", port: int | None = None, *,
           timeout: float = 2.0) -> int | None:
    """The port node ``name`` listens on at ``host_ip``, or None (see :func:`port_please`)."""
    entry = port_please(name, host_ip, port, timeout=timeout)
    return entry.port if entry is not None else None


def names(host_ip: str = "127.0.0.1", port: int | None = None,
          timeout: float = 2.0) -> dict[str, int]:
    """All names registered at ``host_ip``'s EPMD, ``{name: port}`` (NAMES_REQ, like
    ``epmd -names``); empty when no EPMD answers."""
    try:
        reply = _request(host_ip, port if port is not None else default_port(),
                         bytes([NAMES_REQ]), timeout)
    except (OSError, PortMapperError):
        return {}
    result: dict[str, int] = {}
    for line in reply[4:].decode("utf-8", "replace").splitlines():
        match = _NAMES_LINE.fullmatch(line)
        if match:
            result[match.group(1)] = int(match.group(2))
    return result


if __name__ == "__main__":
    sys.exit(main())
