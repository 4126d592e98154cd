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
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from typing import Any

from nodelab.dist import frames, handshake, portmapper, shipment
from nodelab.dist.names import NodeName, parse_node_name, resolve_host
from nodelab.errors import MessageTooLarge
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, Ref, make_ref

log = logging.getLogger("nodelab")

SEND = 3  # body: serial u64 | creation u32 | pickled message
SEND_NAMED = 4  # body: name length u8 | name | pickled message
_SEND_HEADER = struct.Struct("!QI")

CONNECT_TIMEOUT = 5.0
#: Frames sent closer together than this are written in batches by the flusher thread.
BURST_GAP = 50e-6
#: A sender waits when this many bytes are queued for one peer.
MAX_PENDING = 8 * 1024 * 1024
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


class Connection:
    """One authenticated TCP connection to one peer node."""

    def __init__(self, dist: Distribution, sock: socket.socket, peer: str,
                 send_key: bytes, recv_key: bytes, peer_tag: str) -> None:
        self.dist = dist
        self.sock = sock
        self.peer = peer
        self.peer_tag = peer_tag
        self.send_mac = frames.mac_state(send_key)
        self.recv_mac = frames.mac_state(recv_key)
        self.send_seq = 0
        self.recv_seq = 0
        self.write_lock = threading.Lock()
        self.pending: list[bytes] = []  # frames of a burst, waiting for the flusher
        self.pending_size = 0
        self.flushing = False
        self.alive = True
        now = time.monotonic()
        self.last_recv = now
        self.last_send = now
        self.down_reason = "connection_closed"
        self.reader = threading.Thread(target=self._read_loop, daemon=True,
                                       name=f"nodelab reader {peer}")

    def send_frame(self, kind: int, body: bytes, *, blocking: bool = True) -> bool:
        """Queue one frame for the peer, in order; False when the connection is gone.

        A frame sent after a pause goes straight to the socket (lowest latency). Frames sent
        in a burst are gathered and written by the node's flusher thread, many per system
        call — the BEAM batches a busy connection the same way.
        """
        if len(body) > frames.MAX_MESSAGE:
            raise MessageTooLarge(
                f"a message of {len(body)} bytes is larger than the limit of "
                f"{frames.MAX_MESSAGE} bytes for {self.peer}: send a smaller message, or raise "
                "NODELAB_MAX_MESSAGE on both nodes"
            )
        # Masked: an exit signal to the sending process never lands between taking the
        # write lock and releasing it, nor between spending a sequence number and writing
        # its frame (the peer would refuse every later frame). The process still exits at
        # once if it is killed while it waits for the lock or for a full queue.
        token = P.enter_critical()
        try:
            if blocking:
                P.wait_lock(self.write_lock)
            elif not self.write_lock.acquire(False):
                return False
            try:
                return self._write(kind, body)
            finally:
                self.write_lock.release()
                if self.pending_size > MAX_PENDING:
                    self._wait_for_flush()
        finally:
            P.leave_critical(token)

    def _write(self, kind: int, body: bytes) -> bool:
        # Called with the write lock held.
        if not self.alive:
            return False
        frame = frames.encode(self.send_mac, self.send_seq, kind, body)
        now = time.monotonic()
        if self.pending or self.flushing or now - self.last_send < BURST_GAP:
            self.pending.append(frame)
            self.pending_size += len(frame)
            self.send_seq += 1
            self.last_send = now
            if not self.flushing:
                self.flushing = True
                self.dist.flush_queue.put(self)
            return True
        try:
            self.sock.sendall(frame)
        except OSError:
            self.alive = False
            return False
        self.send_seq += 1
        self.last_send = time.monotonic()
        return True

    def _wait_for_flush(self) -> None:
        # Back-pressure: a sender that runs far ahead of the socket waits for the flusher
        # (in slices: a kill ends the wait; the frame is queued already).
        deadline = time.monotonic() + 30
        while self.pending_size > MAX_PENDING // 2 and self.alive and time.monotonic() < deadline:
            P.check_exit()
            time.sleep(0.0005)

    def flush_pending(self) -> None:
        """Write the gathered frames (the flusher thread calls this)."""
        while True:
            with self.write_lock:
                if not self.pending or not self.alive:
                    self.pending.clear()
                    self.pending_size = 0
                    self.flushing = False
                    return
                data = b"".join(self.pending)
                self.pending.clear()
                self.pending_size = 0
            try:
                self.sock.sendall(data)
            except OSError:
                self.alive = False

    def close(self, reason: str) -> None:
        if self.alive:
            self.down_reason = reason
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_loop(self) -> None:
        sock = self.sock
        buffer = bytearray()
        header = frames.HEADER
        mac_size = frames.MAC_SIZE
        limit = frames.MAX_MESSAGE + 1 + mac_size
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                self.last_recv = time.monotonic()
                buffer += data
                offset = 0
                size = len(buffer)
                while size - offset >= 4:
                    (length,) = frames.LENGTH.unpack_from(buffer, offset)
                    if length > limit or length < 1 + mac_size:
                        raise frames.FrameError(f"a frame of {length} bytes")
                    if size - offset - 4 < length:
                        break
                    _, kind, mac = header.unpack_from(buffer, offset)
                    body = bytes(buffer[offset + 4 + 1 + mac_size : offset + 4 + length])
                    offset += 4 + length
                    if frames.mac(self.recv_mac, self.recv_seq, kind, body) != mac:
                        raise frames.FrameError("a frame whose MAC does not match")
                    self.recv_seq += 1
                    self.dist.dispatch(self, kind, body)
                if offset:
                    del buffer[:offset]
        except frames.FrameError as error:
            log.error("** Connection to %s closed: received %s **", self.peer, error)
            self.down_reason = "bad_frame"
        except Exception as error:  # noqa: BLE001 - a peer must never take this node down
            log.error("** Connection to %s closed: %r **", self.peer, error)
            self.down_reason = "bad_frame"
        finally:
            self.alive = False
            try:
                sock.close()
            except OSError:
                pass
            self.dist.connection_down(self, self.down_reason)


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
        self.connections: dict[str, Connection] = {}
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
        try:
            host_ip = resolve_host(target.host)
        except (OSError, ValueError):
            return None
        port = portmapper.lookup(target.name, host_ip, self.mapper_port)
        if port is None:
            return None
        try:
            sock = socket.create_connection((host_ip, port), timeout=CONNECT_TIMEOUT)
        except OSError:
            return None

        def old_connection_is_stale() -> bool:
            # The peer holds a connection from us. If we hold none, and are not accepting
            # one from the peer right now, theirs is half-open or from our previous life.
            with self.lock:
                return self._live(node) is None and not self.accepting.get(node)

        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            status, peer_tag, send_key, recv_key = handshake.initiate(
                sock, self.cookie_for(node), self.full_name, node, shipment.PYTHON_TAG,
                old_connection_is_stale=old_connection_is_stale,
                deadline=time.monotonic() + HANDSHAKE_TIMEOUT)
        except (OSError, handshake.HandshakeError):
            sock.close()
            return None
        if status in (handshake.NOK, handshake.ALIVE):
            # Both nodes dialled at once and the peer's dial wins, or the connection we
            # already have is the one to use.
            sock.close()
            return _THEIR_CONNECTION_WINS
        if status != handshake.OK:
            sock.close()
            return None
        sock.settimeout(None)
        return self._establish(sock, node, send_key, recv_key, peer_tag)

    def _establish(self, sock: socket.socket, node: str, send_key: bytes, recv_key: bytes,
                   peer_tag: str) -> Connection:
        conn = Connection(self, sock, node, send_key, recv_key, peer_tag)
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
        conn.reader.start()
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
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            hello = handshake.read_hello(sock, deadline)
            try:
                peer = parse_node_name(hello.name)
            except ValueError:
                handshake.refuse(sock, handshake.NOT_ALLOWED)
                raise handshake.HandshakeError("invalid node name") from None
            node = str(peer)
            if node == self.full_name or peer.long != self.name.long:
                handshake.refuse(sock, handshake.NOT_ALLOWED)
                raise handshake.HandshakeError("not allowed")
            with self.changed:
                if node in self.dialling and self.full_name < node:
                    decision = "refuse"  # both dial at once; ours wins, the peer waits for it
                elif self._live(node) is not None:
                    decision = "ask"
                else:
                    decision = "accept"
                if decision != "refuse":
                    self.accepting[node] = self.accepting.get(node, 0) + 1
            if decision == "refuse":
                handshake.refuse(sock, handshake.NOK)
                sock.close()
                return
            try:
                if decision == "ask" and not handshake.ask_whether_stale(sock, deadline):
                    sock.close()  # the peer keeps using the connection we have
                    return
                try:
                    send_key, recv_key = handshake.accept(
                        sock, self.cookie_for(node), self.full_name, hello, shipment.PYTHON_TAG,
                        deadline)
                except handshake.HandshakeError as error:
                    if str(error) == "invalid challenge reply":
                        log.error("** Connection attempt from node %s rejected. Invalid "
                                  "challenge reply. **", node)
                    raise
                sock.settimeout(None)
                self._establish(sock, node, send_key, recv_key, hello.python_tag)
            finally:
                with self.changed:
                    self.accepting[node] -= 1
                    if not self.accepting[node]:
                        del self.accepting[node]
                    self.changed.notify_all()
        except (OSError, handshake.HandshakeError):
            try:
                sock.close()
            except OSError:
                pass

    # --- ticks and nodedown -------------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self.stopped.wait(self.tick_time / 4):
            now = time.monotonic()
            for conn in self.connections.copy().values():
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
            P.send(pid, ("$nodedown", ref))
        for subscriber in list(self.node_subscribers):
            P.send(subscriber, ("nodedown", node))

    # --- sending ----------------------------------------------------------------------

    def send(self, pid: Pid, message: Any) -> None:
        conn = self.connection(pid.node)
        if conn is None:
            return
        body = _SEND_HEADER.pack(pid.serial, pid.creation) + _encode_message(message, pid.node)
        conn.send_frame(SEND, body)

    def send_named(self, name: str, node: str, message: Any, sender: Pid) -> None:
        raw = name.encode()
        if len(raw) > 255:
            raise ValueError(f"registered name {name!r} is too long (255 bytes at most)")
        conn = self.connection(node)
        if conn is None:
            return
        conn.send_frame(SEND_NAMED, bytes((len(raw),)) + raw + _encode_message(message, node))

    def control(self, node: str, op: tuple, *, connect: bool = True) -> bool:
        """Send a control operation (link, exit, monitor, spawn, ...) to ``node``."""
        conn = self.connection(node, connect=connect)
        if conn is None:
            return False
        return conn.send_frame(frames.DATA, shipment.dumps(op))

    def request(self, node: str, op_builder: Any, timeout: float) -> Any:
        """Send a request that the peer answers with a reply tagged by a fresh ref.

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
                if conn is None or not conn.send_frame(frames.DATA,
                                                       shipment.dumps(op_builder(ref, caller))):
                    raise ConnectionError(node)
                return P.receive(
                    P.on(("$reply", ref, P.ANY), lambda m: m[2]),
                    P.on(("$nodedown", ref), _raise_connection_error(node)),
                    timeout=timeout,
                )
            finally:
                with self.lock:
                    self.request_watchers.pop(ref, None)
        finally:
            P.leave_critical(token)

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
            handler = _HANDLERS.get(op[0]) if type(op) is tuple and op else None
            if handler is None:
                raise frames.FrameError(f"an unknown control message {op!r:.80}")
            handler(self, conn, *op[1:])
        elif kind != frames.TICK:
            raise frames.FrameError(f"a frame of unknown kind {kind}")


def _raise_connection_error(node: str) -> Any:
    def fail(_message: Any) -> Any:
        raise ConnectionError(node)
    return fail


def _encode_message(message: Any, node: str) -> bytes:
    try:
        return shipment.dumps(message)
    except Exception as error:  # noqa: BLE001 - any pickling error, re-raised in the sender's words
        raise TypeError(f"cannot send {message!r:.80} to {node}: {error}") from None


def _decode_message(body: bytes, offset: int) -> Any:
    try:
        return shipment.loads(memoryview(body)[offset:])
    except Exception as error:  # noqa: BLE001 - the receiver learns of it, the link survives
        return UndecodableMessage(str(error), body[offset:])


# --- control operations from a peer ---------------------------------------------------------

def _on_link(dist: Distribution, conn: Connection, sender: Pid, target: Pid) -> None:
    if not P.add_remote_link(sender, target):
        dist.control(conn.peer, ("exit", target, sender, P.NOPROC), connect=False)


def _on_unlink(dist: Distribution, conn: Connection, sender: Pid, target: Pid) -> None:
    P.remove_remote_link(sender, target)


def _on_exit(dist: Distribution, conn: Connection, sender: Pid, target: Pid, reason: Any) -> None:
    P.remote_exit(sender, target, reason, linked=True)


def _on_exit2(dist: Distribution, conn: Connection, sender: Pid, target: Pid, reason: Any) -> None:
    P.remote_exit(sender, target, reason, linked=False)


def _on_monitor(dist: Distribution, conn: Connection, watcher: Pid, target: Any, ref: Ref) -> None:
    if not P.add_remote_monitor(watcher, target, ref):
        dist.control(conn.peer, ("down", target, watcher, ref, P.NOPROC), connect=False)


def _on_demonitor(dist: Distribution, conn: Connection, watcher: Pid, target: Any,
                  ref: Ref) -> None:
    P.remove_remote_monitor(target, ref)


def _on_down(dist: Distribution, conn: Connection, target: Any, watcher: Pid, ref: Ref,
             reason: Any) -> None:
    P.remote_down(watcher, ref, target, reason)


def _on_spawn(dist: Distribution, conn: Connection, ref: Ref, caller: Pid,
              group_leader: Pid | None, linked: bool, blob: bytes) -> None:
    try:
        pid = P.spawn_for_peer(_run_shipped, (blob,), group_leader=group_leader,
                               link_to=caller if linked else None)
        result: Any = pid
    except Exception as error:  # noqa: BLE001
        result = ("error", repr(error))
    dist.control(conn.peer, ("spawn_reply", ref, caller, result, linked), connect=False)


def _run_shipped(blob: bytes) -> None:
    # Decoded in the new process, so a function that cannot be rebuilt here (another
    # Python version, a module this node lacks) becomes this process's crash reason,
    # which reaches the linked caller.
    payload = shipment.loads(blob)
    if payload[0] == "mfa":
        _, module, function, args = payload
        shipment.import_function(module, function)(*args)
    else:
        _, fn, args = payload
        fn(*args)


def _on_spawn_reply(dist: Distribution, conn: Connection, ref: Ref, caller: Pid, result: Any,
                    linked: bool) -> None:
    # The link is recorded by the runtime here, in frame order, so an exit signal that
    # follows is not missed.
    if not P.spawn_reply(caller, ref, result, linked=linked):
        if linked and isinstance(result, Pid):
            dist.control(conn.peer, ("exit", caller, result, P.NOPROC), connect=False)


def _on_info(dist: Distribution, conn: Connection, ref: Ref, caller: Pid, target: Pid) -> None:
    dist.control(conn.peer, ("reply", ref, caller, P.info(target)), connect=False)


def _on_reply(dist: Distribution, conn: Connection, ref: Ref, caller: Pid, value: Any) -> None:
    P.reply(caller, ref, value)


_HANDLERS = {
    "link": _on_link,
    "unlink": _on_unlink,
    "exit": _on_exit,
    "exit2": _on_exit2,
    "monitor": _on_monitor,
    "demonitor": _on_demonitor,
    "down": _on_down,
    "spawn": _on_spawn,
    "spawn_reply": _on_spawn_reply,
    "info": _on_info,
    "reply": _on_reply,
}


def register_handler(op: str, handler: Any) -> None:
    """Teach this node a new control operation from peers (used by tracing).

    ``handler(dist, conn, *args)`` runs in the connection's reader thread, so it must not
    block; to answer a :meth:`Distribution.request`, send
    ``("reply", ref, caller, value)`` back with ``dist.control(conn.peer, ..., connect=False)``.
    """
    if op in _HANDLERS:
        raise ValueError(f"the control operation {op!r} is already defined")
    _HANDLERS[op] = handler

