"""nodelab's EPMD daemon: ``python -m nodelab.dist.portmapper_daemon``.

The port mapper every node of a host asks (:mod:`nodelab.dist.portmapper` is the asking
side, and starts this daemon when no EPMD answers). It answers ``ALIVE2_REQ``,
``PORT_PLEASE2_REQ``, ``NAMES_REQ`` and ``DUMP_REQ`` as Erlang's ``epmd`` does, so
``erl -sname x`` registers here and ``epmd -names`` lists nodelab's nodes. Like ``epmd``
without ``-relaxed_command_check``, it answers ``KILL_REQ`` (``epmd -kill``) with ``NO``
while any node is registered (``OK``, and exits, when none is) and ignores ``STOP_REQ``
(``epmd -stop``); started with ``--relaxed-command-check`` or
``$ERL_EPMD_RELAXED_COMMAND_CHECK`` set, it obeys both, as ``epmd`` does.

It is stricter than ``epmd`` in three ways: it accepts registrations only from loopback
addresses (``epmd`` also from the host's own address), it refuses port 0, and it closes a
refused registration's connection after answering. Each request gets its own connection, as
with ``epmd``: anything malformed, oversized, or more than one request gets the connection
closed without an answer, and so does a client that has not finished its request and read
the answer within 10 s; the daemon keeps serving. One request is nodelab's own,
``NODELAB_INFO_REQ`` (``?``): the daemon answers ``nodelab-epmd 1 pid=N`` (the pid only to
loopback peers); ``epmd`` closes the connection, which is how a node tells them apart.

Unlike ``epmd`` it exits by itself once no node has been registered for a while
(``--linger``, ``$NODELAB_PORTMAPPER_LINGER``, 10 s by default), so nothing is left behind.
Nodes that race to start it all succeed: one daemon binds the port, the others exit with
status 3 (``--detach``). Run it by hand:
``python -m nodelab.dist.portmapper_daemon [--port P] [--linger SECONDS]``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import OrderedDict

from nodelab.dist._epmd_protocol import (
    ALIVE2_REQ,
    ALIVE2_RESP,
    ALIVE2_X_RESP,
    DUMP_REQ,
    EXIT_IN_USE,
    INFO,
    KILL_REQ,
    MAX_EXTRA,
    NAMES_REQ,
    NODELAB_INFO_REQ,
    PORT2_RESP,
    PORT_PLEASE2_REQ,
    STOP_REQ,
    EpmdEntry,
    decode_name,
    names_response,
    parse_alive2_request,
    port2_response,
)
from nodelab.dist._portmapper_loop import Client, RequestLoop
from nodelab.dist.portmapper import PortMapperError, default_linger, default_port

__all__ = ["PortMapper", "bind_listener", "main"]

#: A connection must have sent its request and read the answer within this many seconds.
REQUEST_TIMEOUT = 10.0
#: Names kept after their node left, for DUMP_REQ and for the creation of a version-5 node.
MAX_UNUSED = 1000

log = logging.getLogger("nodelab.dist.portmapper_daemon")


def _relaxed_from_environment() -> bool:
    # epmd reads this variable as if -relaxed_command_check were given.
    return bool(os.environ.get("ERL_EPMD_RELAXED_COMMAND_CHECK"))


class _Node:
    """A registered name (or, in ``unused``, one whose node left)."""

    __slots__ = ("client", "creation", "entry")

    def __init__(self, client: Client | None, entry: EpmdEntry, creation: int) -> None:
        self.client = client
        self.entry = entry  # what PORT_PLEASE2_REQ answers
        self.creation = creation


class PortMapper(RequestLoop):
    """nodelab's EPMD daemon: what each request means, and who is registered.

    ``serve_forever`` returns after ``linger`` seconds without any registration, or after
    an accepted ``KILL_REQ``.
    """

    def __init__(self, listener: socket.socket, linger: float, *, relaxed: bool = False,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        super().__init__(listener, request_timeout)
        self.port = listener.getsockname()[1]
        self.linger = linger
        self.relaxed = relaxed
        self.registry: dict[str, _Node] = {}
        self.unused: OrderedDict[str, _Node] = OrderedDict()
        # 32-bit creations count up from a random start, so that two runs of a node with
        # the same name never share one, even across restarts of the daemon; never 0.
        self.next_creation = random.SystemRandom().randrange(1, 1 << 32)
        self.unregistered_since = time.monotonic()

    def serve_forever(self) -> None:
        log.info("EPMD (nodelab) listening on port %d (pid %d, linger %.3g s%s)", self.port,
                 os.getpid(), self.linger, ", relaxed command check" if self.relaxed else "")
        self.serve()
        if self.stopped:
            log.info("killed by KILL_REQ (epmd -kill): exiting")

    def _time_left(self) -> float | None:
        now = time.monotonic()
        if self.registry:
            self.unregistered_since = now
            return float("inf")  # a registered node keeps the daemon up
        if now - self.unregistered_since >= self.linger:
            log.info("no node registered for %.3g s: exiting", self.linger)
            return None
        return self.unregistered_since + self.linger - now

    def _request(self, client: Client, request: bytes) -> None:
        tag = request[0]
        if tag == ALIVE2_REQ:
            self._alive2(client, request)
        elif tag == PORT_PLEASE2_REQ:
            self._port_please2(client, request)
        elif tag == NAMES_REQ:
            self._answer(client, names_response(
                self.port, {name: node.entry.port for name, node in self.registry.items()}))
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
            self.stopped = True
        elif tag == STOP_REQ and client.loopback and self.relaxed:
            name = decode_name(request[1:].rstrip(b"\0"))
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

    def _alive2(self, client: Client, request: bytes) -> None:
        if not client.loopback:
            log.info("ALIVE2_REQ from a non-loopback address: refused")
            self._drop(client)  # only nodes of this host register here
            return
        alive2 = parse_alive2_request(request)
        if alive2 is None:
            self._drop(client)
            return
        name, port, extra = alive2.name, alive2.port, alive2.extra
        x_resp = alive2.highest >= 6  # both sides know version 6: a 32-bit creation
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
        self.registry[name] = _Node(client, EpmdEntry(name, port, alive2.node_type,
                                                      alive2.protocol, alive2.highest,
                                                      alive2.lowest, extra), creation)
        log.info("registered %s on port %d (type %d, versions %d..%d, creation %d)", name,
                 port, alive2.node_type, alive2.lowest, alive2.highest, creation)
        self._send(client, reply)

    def _port_please2(self, client: Client, request: bytes) -> None:
        name = decode_name(request[1:].removesuffix(b"\0"))
        if name is None:
            self._drop(client)  # epmd closes without an answer too
            return
        node = self.registry.get(name)
        if node is None:
            self._answer(client, bytes([PORT2_RESP, 1]))
            return
        self._answer(client, port2_response(node.entry))

    def _dump(self) -> bytes:
        parts = [struct.pack("!I", self.port)]
        for name, node in sorted(self.registry.items()):
            fd = node.client.sock.fileno() if node.client is not None else -1
            parts.append(b"active name     <%s> at port %d, fd = %d\n\0"
                         % (name.encode("utf-8"), node.entry.port, fd))
        for name, node in self.unused.items():
            parts.append(b"old/unused name <%s>, port = %d, fd = %d \n\0"
                         % (name.encode("utf-8"), node.entry.port, -1))
        return b"".join(parts)

    def _unregister(self, client: Client) -> None:
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
    """``python -m nodelab.dist.portmapper_daemon [--port P] [--linger SECONDS]``."""
    parser = argparse.ArgumentParser(
        prog="python -m nodelab.dist.portmapper_daemon",
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


if __name__ == "__main__":
    sys.exit(main())
