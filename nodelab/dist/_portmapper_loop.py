"""The connections of nodelab's EPMD daemon (:mod:`nodelab.dist.portmapper_daemon`): one
thread, one :mod:`selectors` loop, and it never blocks on a client.

An EPMD connection is of one of two kinds. Most carry one request and its answer: read one
length-prefixed request, answer it, close. A registration (``ALIVE2_REQ``) stays open for
as long as its node lives, and carries nothing more. :class:`RequestLoop` does that part:
it accepts (and stops accepting for a moment when the process is out of descriptors),
reads exactly one request, writes the answer without blocking, and drops a client that is
malformed, too slow or gone. What a request means, which names are registered and when
the daemon may exit are the daemon's: a subclass answers :meth:`RequestLoop._request`,
forgets a dropped registration in :meth:`RequestLoop._unregister`, and says how long it
may still wait in :meth:`RequestLoop._time_left`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import selectors
import socket
import time

from nodelab.dist._epmd_protocol import LENGTH, MAX_REQUEST

log = logging.getLogger("nodelab.dist.portmapper_daemon")


def _is_loopback_ip(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 peer of a dual-stack socket: ::ffff:127.0.0.1
    return ip.is_loopback


class Client:
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


class RequestLoop:
    """Serve one request per connection on ``listener`` until :meth:`_time_left` says
    ``None`` or ``stopped`` is set; a client must have sent its request and read the answer
    within ``request_timeout`` seconds."""

    def __init__(self, listener: socket.socket, request_timeout: float) -> None:
        self.listener = listener
        self.request_timeout = request_timeout
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, Client] = {}
        self.accept_paused_until = 0.0
        self.stopped = False
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

    # --- what the daemon says ------------------------------------------------------------

    def _request(self, client: Client, request: bytes) -> None:
        """Answer ``request`` (without its length), or drop ``client``."""
        raise NotImplementedError

    def _unregister(self, client: Client) -> None:
        """``client`` is being dropped: forget what it registered."""

    def _time_left(self) -> float | None:
        """Seconds the loop may still wait for work, or None: return now."""
        return 1.0

    # --- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until :meth:`_time_left` is None or ``stopped`` is set; then close every
        connection and the listener."""
        try:
            while not self.stopped:
                time_left = self._time_left()
                if time_left is None:
                    return
                # Wake up at least once a second (slow clients), and when the time is up.
                timeout = min(1.0, time_left)
                if self.accept_paused_until:
                    timeout = min(timeout,
                                  max(0.0, self.accept_paused_until - time.monotonic()))
                for key, mask in self.selector.select(max(0.0, timeout)):
                    if key.fileobj is self.listener:
                        self._accept()
                    else:
                        client = self.clients.get(key.fileobj)  # type: ignore[arg-type]
                        if client is not None:
                            self._service(client, mask)
                    if self.stopped:
                        break
                self._housekeeping()
        finally:
            for client in self.clients.copy().values():
                self._drop(client)
            self.selector.close()
            self.listener.close()

    def _service(self, client: Client, mask: int) -> None:
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
            client = Client(sock, _is_loopback_ip(address[0]),
                            time.monotonic() + self.request_timeout)
            self.clients[sock] = client
            self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, client: Client) -> None:
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
        want = LENGTH.unpack_from(client.inbuf)[0]
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

    # --- output --------------------------------------------------------------------------

    def _send(self, client: Client, data: bytes) -> None:
        client.outbuf += data
        self._flush(client)

    def _answer(self, client: Client, data: bytes) -> None:
        """The whole answer to the connection's one request: send it, then close."""
        client.closing = True
        self._send(client, data)

    def _flush(self, client: Client) -> None:
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

    def _drop(self, client: Client) -> None:
        self._unregister(client)
        if self.clients.pop(client.sock, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.close()
