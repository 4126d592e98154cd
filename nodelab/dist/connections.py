"""Sending to another node: connections, the frames they carry, ticks and nodedown.

Like the BEAM, a node connects to another the first time it needs to (a send, a spawn, a
link, a ping) and keeps one TCP connection per peer. Messages from one process to another
therefore travel in order over that one connection. Each connection has a reader thread
that decodes frames and hands every message straight to its process's mailbox; the
sending process writes its own frame to the socket, so a message crosses with a single
thread handoff at each end.

A peer that closes its connection (its OS process died, or it called ``Node.stop``) is
noticed at once. A peer that goes silent (stopped, or the network is cut) is noticed when
nothing arrived for ``tick_time`` seconds, although each side sends a tick every quarter of
it. Then every local process linked to a process of that node gets an exit signal
``"noconnection"``, every monitor a ``DOWN`` with ``"noconnection"``, every node monitor
``("nodedown", node)``, and pending spawns and calls fail naming the node.

Every connection starts with the Erlang handshake (:mod:`nodelab.dist.erlang_handshake`). A
peer that proves the cookie with nodelab's HMAC gets a :class:`Connection` (MAC'd pickle
frames); any other peer — a real ``erl``/``iex`` — a :class:`~nodelab.dist.beam_peer.BeamPeer`
(ETF frames, ticks of its own), and both sit in the same table.

One concept, the node's table of peers, in one module: which peer is being dialled,
accepted or connected (one lock), the dial and the accept that move a peer between those
states, the ticks that notice a silent peer, and nodedown. One connection is
:mod:`nodelab.dist.connection`; what a peer asks for is :mod:`nodelab.dist.control`.
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from nodelab.dist import frames, portmapper, shipment
from nodelab.dist.names import NodeName, parse_node_name, resolve_host
from nodelab.runtime import gen_server
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref, make_ref

from .connection import BURST_GAP, MAX_PENDING, Connection  # noqa: F401 - re-exported
from .control import HANDLERS, register_handler  # noqa: F401 - register_handler re-exported

if TYPE_CHECKING:
    from nodelab.dist import erlang_handshake as eh
    from nodelab.dist.beam_peer import BeamPeer

# The handshake and the BEAM interop (erlang_handshake, beam_peer, beam_link, most of
# term_format's use) are imported on the first connection, not with the node: a kernel
# that is a node starts without them (~20 ms of imports, benchmarks/README.md), and a node
# that only ever talks to nodelab peers never loads beam_peer or beam_link at all.

log = logging.getLogger("nodelab")

SEND = 3  # body: serial u64 | creation u32 | pickled message
SEND_NAMED = 4  # body: name length u8 | name | pickled message
_SEND_HEADER = struct.Struct("!QI")

CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 5.0
# What _dial returns when the peer's connection is the one to use (NOK or a live one).
_THEIR_CONNECTION_WINS = object()
DEFAULT_TICK_TIME = 15.0
# A process waiting for another thread's dial checks this often whether it was killed.
_WAIT_SLICE = 0.05


class UndecodableMessage:
    """Put in a mailbox instead of a message that could not be decoded on this node.

    The message is not lost silently: the receiver sees why (e.g. a class that only the
    sending node defines) and the raw bytes.
    """

    def __init__(self, error: str, data: bytes) -> None:
        self.error = error
        self.data = data

    def __repr__(self) -> str:
        return f"UndecodableMessage({self.error!r})"


class Distribution:
    """The distribution layer of one named node."""

    def __init__(self, name: NodeName, cookie: str, *, tick_time: float | None = None,
                 mapper_port: int | None = None) -> None:
        self.name = name
        self.full_name = str(name)
        self.cookie = cookie
        self.peer_cookies: dict[str, str] = {}
        self.tick_time = float(tick_time or DEFAULT_TICK_TIME)
        self.mapper_port = mapper_port
        self.host_ip = resolve_host(name.host)
        self.connections: dict[str, Connection | BeamPeer] = {}
        # A connection to a peer is in one of three states, changed only under the lock so
        # that a dial and an incoming handshake for the same peer see each other: dialling
        # (we run the handshake as initiator), accepting (the peer does), or up.
        self.dialling: set[str] = set()
        self.accepting: dict[str, int] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.node_subscribers: set[Pid] = set()  # Node.monitor_nodes(True)
        self.request_watchers: dict[Ref, tuple[Pid, str]] = {}  # pending requests
        self.stopped = threading.Event()
        self.flush_queue: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        bind_ip = "127.0.0.1" if not name.long else self.host_ip
        self.listener = socket.socket(socket.AF_INET6 if ":" in bind_ip else socket.AF_INET)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((bind_ip, 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.registration: Any = None
        self.creation: int | None = None  # EPMD's, once registered

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Register the name with this host's EPMD and start accepting peers. The
        creation EPMD gives is the node's (``self.creation``)."""
        try:
            portmapper.ensure_portmapper("127.0.0.1", self.mapper_port)
            self.registration = portmapper.register(
                self.name.name, self.port, mapper_port=self.mapper_port, full_name=self.full_name)
        except BaseException:
            self.listener.close()
            raise
        self.creation = self.registration.creation
        threading.Thread(target=self._accept_loop, daemon=True, name="nodelab acceptor").start()
        threading.Thread(target=self._tick_loop, daemon=True, name="nodelab ticker").start()
        threading.Thread(target=self._flush_loop, daemon=True, name="nodelab flusher").start()

    def _flush_loop(self) -> None:
        while True:
            conn = self.flush_queue.get()
            if conn is None:
                return
            conn.flush_pending()

    def stop(self) -> None:
        self.stopped.set()
        with self.changed:
            self.changed.notify_all()  # a connect waiting for a peer's dial gives up now
        for conn in self.connections.copy().values():
            conn.flush_pending()  # what processes sent before the stop still leaves
        self.flush_queue.put(None)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for conn in self.connections.copy().values():
            conn.close("connection_closed")
        for conn in self.connections.copy().values():
            conn.reader.join(timeout=2)
        if self.registration is not None:
            self.registration.close()

    # --- connecting -------------------------------------------------------------------

    def cookie_for(self, node: str) -> str:
        return self.peer_cookies.get(node, self.cookie)

    def connection(self, node: str, *, connect: bool = True) -> Connection | None:
        conn = self.connections.get(node)
        if conn is not None and conn.alive:
            return conn
        if not connect or node == self.full_name or self.stopped.is_set():
            return None
        return self.connect(node)

    def connect(self, node: str) -> Connection | None:
        """Connect to ``node`` (or return the live connection); None when it cannot be reached."""
        try:
            target = parse_node_name(node)
        except ValueError as error:
            log.error("** Cannot connect to %r: %s **", node, error)
            return None
        if target.long != self.name.long:
            log.error("** Cannot connect %s to %s: a node with a %s name only talks to nodes "
                      "with %s names (use --%s) **", self.full_name, node,
                      "long" if self.name.long else "short", "long" if self.name.long else "short",
                      "name" if self.name.long else "sname")
            return None
        # Masked: a kill never leaves this node marked as dialling ``node`` for good.
        token = P.enter_critical()
        try:
            return self._connect(target, node)
        finally:
            P.leave_critical(token)

    def _connect(self, target: NodeName, node: str) -> Connection | None:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT + CONNECT_TIMEOUT
        while True:
            with self.changed:
                conn = self._live(node)
                if conn is not None or self.stopped.is_set():
                    return conn
                if node not in self.dialling and not self.accepting.get(node):
                    self.dialling.add(node)
                    break
                # Another thread dials, or the peer is dialling us: wait for that one.
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(min(remaining, _WAIT_SLICE))
            P.check_exit()  # a kill ends the wait (no lock held, nothing changed yet)
        try:
            outcome = self._dial(target, node)
        finally:
            with self.changed:
                self.dialling.discard(node)
                self.changed.notify_all()
        if outcome is not _THEIR_CONNECTION_WINS:
            return outcome
        with self.changed:
            self.changed.wait_for(lambda: self._live(node) is not None or self.stopped.is_set(),
                                  timeout=HANDSHAKE_TIMEOUT)
            return self._live(node)

    def _live(self, node: str) -> Connection | None:
        conn = self.connections.get(node)
        return conn if conn is not None and conn.alive else None

    def _dial(self, target: NodeName, node: str) -> Connection | object | None:
        from nodelab.dist import erlang_handshake as eh

        try:
            host_ip = resolve_host(target.host)
        except (OSError, ValueError):
            return None
        entry = portmapper.port_please(target.name, host_ip, self.mapper_port)
        if entry is None:
            return None
        try:
            sock = socket.create_connection((host_ip, entry.port), timeout=CONNECT_TIMEOUT)
        except OSError:
            return None
        if sock.getsockname() == sock.getpeername():  # a loopback self-connect: nobody there
            sock.close()
            return None

        def old_connection_is_stale() -> bool:
            # The peer holds a connection from us. If we hold none, and are not accepting
            # one from the peer right now, theirs is half-open or from our previous life.
            with self.lock:
                return self._live(node) is None and not self.accepting.get(node)

        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            result = eh.initiate(
                sock, self.cookie_for(node), self.full_name, node, self.creation or 0,
                python_tag=shipment.PYTHON_TAG, old_connection_is_stale=old_connection_is_stale,
                deadline=time.monotonic() + HANDSHAKE_TIMEOUT)
        except eh.Refused as refused:
            sock.close()
            # nok: both nodes dialled at once and the peer's dial wins (OTP: the greater
            # name's); alive answered "in use": the connection we already have is the one.
            return _THEIR_CONNECTION_WINS if refused.status in (eh.NOK, eh.ALIVE) else None
        except (OSError, eh.HandshakeError):
            sock.close()
            return None
        sock.settimeout(None)
        return self._establish(sock, node, result)

    def _establish(self, sock: socket.socket, node: str,
                   result: eh.HandshakeResult) -> Connection | BeamPeer:
        conn: Connection | BeamPeer
        if result.nodelab:  # it proved the cookie with nodelab's HMAC: pickles and MACs
            conn = Connection(self, sock, node, result.send_key, result.recv_key,
                              result.python_tag)
        else:  # a peer that speaks Erlang: ETF only
            from nodelab.dist.beam_peer import BeamPeer

            conn = BeamPeer(self, sock, result)
        old = self.connections.get(node)
        if old is not None:
            # The peer said the old connection is stale (it restarted, or it gave up on a
            # half-open one): everything that depended on it is told before the new one
            # exists, so no link outlives the connection it was made over.
            old.close("connection_closed")
            self.connection_down(old, "connection_closed")
        with self.changed:
            self.connections[node] = conn
            self.changed.notify_all()
        # nodeup goes out before the first frame of the peer is read: a process that the
        # peer spawns here, and that then monitors nodes, must not see this nodeup.
        for subscriber in self.node_subscribers.copy():
            P.send(subscriber, ("nodeup", node))
        conn.reader.start() if isinstance(conn, Connection) else conn.start()
        return conn

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                if self.stopped.is_set():
                    return
                # Out of file descriptors or a connection aborted before accept: wait a
                # little and keep accepting, or the node would go deaf for good.
                time.sleep(0.1)
                continue
            threading.Thread(target=self._handshake_incoming, args=(sock,), daemon=True,
                             name="nodelab handshake").start()

    def _handshake_incoming(self, sock: socket.socket) -> None:
        from nodelab.dist import erlang_handshake as eh

        counted: list[str] = []

        def decide(hello: eh.NameMessage) -> str:
            # Under the table's lock, so that a dial and this handshake see each other.
            try:
                peer = parse_node_name(hello.name)
            except ValueError:
                return eh.NOT_ALLOWED
            node = str(peer)
            if node != hello.name or node == self.full_name or peer.long != self.name.long:
                return eh.NOT_ALLOWED
            with self.changed:
                if node in self.dialling:
                    # Both dial at once: OTP's rule, the greater name's dial wins.
                    status = eh.simultaneous_status(self.full_name, node)
                elif self._live(node) is not None:
                    status = eh.ALIVE  # the initiator says whether ours is stale
                else:
                    status = eh.OK
                if status != eh.NOK:
                    self.accepting[node] = self.accepting.get(node, 0) + 1
                    counted.append(node)
            return status

        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            hello = eh.recv_name(sock, deadline)
            status = decide(hello)
            try:
                if status in (eh.NOK, eh.NOT_ALLOWED):
                    eh.send_status(sock, status)
                    raise eh.Refused(hello.name, status)
                if status == eh.ALIVE and not hello.missing:
                    if not eh.ask_whether_stale(sock, deadline):
                        raise eh.Refused(hello.name, eh.ALIVE)  # the peer keeps ours
                    status = None
                # A wrong cookie is logged once, in OTP's words, by the handshake itself.
                result = eh.accept(sock, self.cookie_for(hello.name), self.full_name, hello,
                                   self.creation or 0,
                                   status=eh.OK if status == eh.ALIVE else status,
                                   python_tag=shipment.PYTHON_TAG, deadline=deadline)
                sock.settimeout(None)
                self._establish(sock, result.name, result)
            finally:
                for node in counted:
                    with self.changed:
                        self.accepting[node] -= 1
                        if not self.accepting[node]:
                            del self.accepting[node]
                        self.changed.notify_all()
        except (OSError, eh.HandshakeError):
            try:
                sock.close()
            except OSError:
                pass

    # --- ticks and nodedown -------------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self.stopped.wait(self.tick_time / 4):
            now = time.monotonic()
            for conn in self.connections.copy().values():
                if not isinstance(conn, Connection):
                    continue  # a BEAM link ticks by itself
                if now - conn.last_recv > self.tick_time:
                    log.error("** Node %s not responding **\n** Removing (timedout) connection **",
                              conn.peer)
                    conn.close("net_tick_timeout")
                elif now - conn.last_send >= self.tick_time / 4:
                    conn.send_frame(frames.TICK, b"", blocking=False)

    def connection_down(self, conn: Connection, reason: str) -> None:
        """Tell every local process that cared about ``conn.peer`` that it is gone."""
        node = conn.peer
        with self.lock:
            if self.connections.get(node) is conn:
                del self.connections[node]
            else:
                return  # a newer connection replaced this one
        try:
            self._tell_processes(node)
        finally:
            # Node monitors and pending requests are told even if a process's record was
            # in an unexpected state: a nodedown must never be lost.
            self._tell_node_watchers(node)

    def _tell_processes(self, node: str) -> None:
        # Links get "noconnection", monitors a DOWN, Node.monitor a nodedown: the runtime's.
        P.node_down(node)

    def _tell_node_watchers(self, node: str) -> None:
        with self.lock:
            pending = [(r, pid) for r, (pid, n) in self.request_watchers.items() if n == node]
        for ref, pid in pending:
            P.send(pid, ("DOWN", ref, "node", node, P.NOCONNECTION))
        for subscriber in list(self.node_subscribers):
            P.send(subscriber, ("nodedown", node))

    # --- sending ----------------------------------------------------------------------

    def send(self, pid: Pid, message: Any) -> None:
        # Every remote send passes here: the live connection is looked up inline, and
        # connection() (which may dial) runs only when there is none.
        node = pid.node
        conn = self.connections.get(node)
        if conn is None or not conn.alive:
            conn = self.connection(node)
            if conn is None:
                return
        if type(conn) is not Connection:
            conn.send(pid, message)
            return
        body = _SEND_HEADER.pack(pid.serial, pid.creation) + _encode_message(message, node)
        conn.send_frame(SEND, body)

    def send_named(self, name: str, node: str, message: Any, sender: Pid) -> None:
        raw = name.encode()
        if len(raw) > 255:
            raise ValueError(f"registered name {name!r} is too long (255 bytes at most)")
        conn = self.connection(node)
        if conn is None:
            return
        if not isinstance(conn, Connection):
            conn.send_named(name, message, sender)
            return
        conn.send_frame(SEND_NAMED, bytes((len(raw),)) + raw + _encode_message(message, node))

    def control(self, node: str, op: tuple, *, connect: bool = True) -> bool:
        """Send a control operation (link, exit, monitor, spawn, ...) to ``node``."""
        conn = self.connection(node, connect=connect)
        if conn is None:
            return False
        if not isinstance(conn, Connection):
            return conn.control(op)
        return conn.send_frame(frames.DATA, shipment.dumps(op))

    def control_then_send(self, node: str, op: tuple, dest: Pid | str, message: Any,
                          sender: Pid, *, connect: bool = True) -> bool:
        """``control(node, op)``, then send ``message`` to ``dest`` (a PID or a registered
        name on ``node``): one frame to a nodelab peer, which applies ``op`` and then
        delivers the message, exactly as it would two frames in a row. False (and nothing
        sent) when ``node`` cannot be reached.

        Two signals that always leave together — a monitor and the call it watches, a link
        and the reply that announces the linked task — cost one frame instead of two: one
        encode, MAC, write, read and dispatch less on the path of every remote call.
        """
        conn = self.connection(node, connect=connect)
        if conn is None:
            return False
        if type(conn) is not Connection:  # a BEAM peer: its own two signals
            if not conn.control(op):
                return False
            if type(dest) is str:
                conn.send_named(dest, message, sender)
            else:
                conn.send(dest, message)
            return True
        # The message travels encoded on its own, as in a SEND frame: one that this peer
        # cannot decode reaches the mailbox as an UndecodableMessage, and ``op`` still applies.
        data = _encode_message(message, node)
        return conn.send_frame(frames.DATA, shipment.dumps((THEN, op, dest, data)))

    def request(self, node: str, op_builder: Any, timeout: float, *,
                head: str | None = "$reply") -> Any:
        """Send a request that the peer answers with a reply tagged by a fresh ref:
        ``("$reply", ref, value)``, or ``(ref, value)`` with ``head=None`` (a gen_server's
        reply, as the BEAM's servers send it).

        Returns the reply's value, or raises ``ConnectionError`` when the node cannot be
        reached or goes down first.
        """
        caller = P.self()
        ref = make_ref()
        # Masked: a kill never leaves the request's watcher behind. The wait for the reply
        # is a receive, so a kill still ends it at once.
        token = P.enter_critical()
        try:
            # Watched before the request leaves, under this request's own ref, so a node
            # that goes down in between is noticed and a user's own ("nodedown", node) is
            # not taken.
            with self.lock:
                self.request_watchers[ref] = (caller, node)
            try:
                conn = self.connection(node)
                if conn is None or not self._send_op(conn, op_builder(ref, caller)):
                    raise ConnectionError(node)
                try:
                    return gen_server.await_reply(ref, ref, timeout, head=head)
                except gen_server.Down:
                    raise ConnectionError(node) from None
            finally:
                with self.lock:
                    self.request_watchers.pop(ref, None)
        finally:
            P.leave_critical(token)

    @staticmethod
    def _send_op(conn: Connection | BeamPeer, op: tuple) -> bool:
        if isinstance(conn, Connection):
            return conn.send_frame(frames.DATA, shipment.dumps(op))
        return conn.control(op)

    # --- receiving --------------------------------------------------------------------

    def dispatch(self, conn: Connection, kind: int, body: bytes) -> None:
        if kind == SEND:
            serial, creation = _SEND_HEADER.unpack_from(body)
            P.deliver(serial, creation, _decode_message(body, _SEND_HEADER.size))
        elif kind == SEND_NAMED:
            size = body[0]
            name = body[1 : 1 + size].decode("utf-8", "replace")
            P.deliver_named(name, _decode_message(body, 1 + size))
        elif kind == frames.DATA:
            try:
                op = shipment.loads(body)
            except Exception as error:  # noqa: BLE001
                log.error("** %s sent a control message this node cannot decode: %r **",
                          conn.peer, error)
                return
            handler = HANDLERS.get(op[0]) if type(op) is tuple and op else None
            if handler is None:
                raise frames.FrameError(f"an unknown control message {op!r:.80}")
            handler(self, conn, *op[1:])
        elif kind != frames.TICK:
            raise frames.FrameError(f"a frame of unknown kind {kind}")


#: ``(THEN, op, dest, message bytes)``: apply the control ``op``, then deliver the message to
#: ``dest`` (a PID of this node or a registered name), as a DATA frame then a SEND frame would.
THEN = "then"


def _on_then(dist: Distribution, conn: Connection, op: Any, dest: Any, data: bytes) -> None:
    handler = HANDLERS.get(op[0]) if type(op) is tuple and op and op[0] != THEN else None
    if handler is None or not (type(dest) is str or type(dest) is Pid) or type(data) is not bytes:
        raise frames.FrameError(f"a malformed {THEN!r} control message {op!r:.80}")
    handler(dist, conn, *op[1:])
    message = _decode_message(data, 0)
    if type(dest) is str:
        P.deliver_named(dest, message)
    else:
        P.deliver(dest.serial, dest.creation, message)


register_handler(THEN, _on_then)


def _encode_message(message: Any, node: str) -> bytes:
    try:
        return shipment.dumps(message)
    except Exception as error:  # noqa: BLE001 - any pickling error, re-raised in the sender's words
        raise TypeError(f"cannot send {message!r:.80} to {node}: {error}") from None


def _decode_message(body: bytes, offset: int) -> Any:
    try:
        return shipment.loads(body[offset:])  # one copy: loads wants bytes
    except Exception as error:  # noqa: BLE001 - the receiver learns of it, the link survives
        return UndecodableMessage(str(error), body[offset:])
