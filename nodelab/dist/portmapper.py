"""The port mapper: which TCP port does node ``kate`` listen on? Like Erlang's EPMD.

Every named node listens on a TCP port the kernel picks for it. To reach ``kate@localhost``
another node must learn that port, so each host runs one small daemon at a well-known port
(4370 here; EPMD uses 4369) that maps ``NAME`` to port::

    alex ──LOOKUP kate──▶ port mapper (:4370) ◀──REGISTER kate 41234── kate
    alex ◀─PORT 41234───┘
    alex ─────────────── TCP connect :41234, cookie handshake ───────────▶ kate

The first node started on a host starts the port mapper (:func:`ensure_portmapper`), as
the first ``iex --sname`` starts ``epmd``. It runs as its own OS process, outlives the node
that started it, and exits by itself once no node has been registered for a while
(``--linger``, 10 s by default), so nothing is left behind.

A registration lives exactly as long as the TCP connection that made it: when a node
dies, even by ``kill -9``, the kernel closes its sockets and the name is free at once.

The protocol is one ASCII line per request (at most 512 bytes), one line per answer; any
``ERR`` answer closes the connection. Try it with ``nc localhost 4370``::

    PING                 -> PONG nodelab-portmapper 1 [pid=N]   (pid only to loopback peers)
    REGISTER kate 41234  -> OK | ERR in_use                     (loopback peers only)
    UNREGISTER           -> OK                                  (on the registering connection)
    LOOKUP kate          -> PORT 41234 | NONE
    NAMES                -> NAMES alex=40001 kate=41234

It listens on all interfaces so that nodes with long names on other hosts can look names
up, but it accepts ``REGISTER`` only from this host. If the port mapper is killed, nodes
that are already connected keep talking (they do not need it any more); each node notices
that its registration connection closed, starts a new port mapper and registers again,
so new lookups recover within a fraction of a second (see :class:`Registration`).

Run it by hand: ``python -m nodelab.dist.portmapper [--port P] [--linger SECONDS]``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from nodelab.errors import NodelabError
from nodelab.dist.names import InvalidNodeName, check_name_part, is_loopback_host

DEFAULT_PORT = 4370
DEFAULT_LINGER = 10.0
PROTOCOL = "nodelab-portmapper 1"
MAX_LINE = 512  # bytes of one request, newline included
MAX_REPLY = 1 << 20  # a NAMES answer with thousands of nodes still fits
IDLE_TIMEOUT = 10.0  # an unregistered connection that sends nothing is dropped after this
MAX_OUTPUT = 64 * 1024  # a client that does not read its answers is dropped past this
EXIT_IN_USE = 3  # status of ``--detach`` when the port is taken (maybe by another mapper)
#: How long a node keeps trying to register again after its port mapper died, and the
#: longest pause between two attempts.
REREGISTER_WINDOW = 60.0
REREGISTER_MAX_DELAY = 1.0

log = logging.getLogger("nodelab.dist.portmapper")


class PortMapperError(NodelabError):
    """The port mapper could not be reached, or answered something unexpected."""


class PortMapperUnavailable(PortMapperError):
    """No port mapper answers (and none could be started)."""


class NameInUse(PortMapperError):
    """Another node on this host already has this name."""

    def __init__(self, full_name: str) -> None:
        self.node = full_name
        super().__init__(f"node name {full_name} is already in use on this host: pick another "
                         "--sname, or stop the node that has it")


def _env_number(variable: str, default: float, *, integer: bool) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = -1
    if value < 0 or (integer and not 0 < value < 65536):
        kind = "a TCP port number like 4370" if integer else "a number of seconds like 10"
        raise PortMapperError(f"{variable}={text!r} is not {kind}: fix it or unset it")
    return value


def default_port() -> int:
    """The port mapper's port: ``$NODELAB_PORTMAPPER_PORT``, or 4370."""
    return int(_env_number("NODELAB_PORTMAPPER_PORT", DEFAULT_PORT, integer=True))


def default_linger() -> float:
    """Seconds the daemon waits without registrations before it exits
    (``$NODELAB_PORTMAPPER_LINGER``, or 10)."""
    return _env_number("NODELAB_PORTMAPPER_LINGER", DEFAULT_LINGER, integer=False)


def _is_loopback_ip(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 peer of a dual-stack socket: ::ffff:127.0.0.1
    return ip.is_loopback


# --------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------


class _Client:
    """One connection to the daemon."""

    __slots__ = ("closing", "inbuf", "last_active", "loopback", "name", "outbuf", "sock")

    def __init__(self, sock: socket.socket, loopback: bool, now: float) -> None:
        self.sock = sock
        self.loopback = loopback
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.name: str | None = None  # the name this connection registered
        self.last_active = now
        self.closing = False  # close once outbuf is sent (after an ERR)


class PortMapper:
    """The daemon: one thread, one :mod:`selectors` loop, never blocks on a client.

    ``serve_forever`` returns after ``linger`` seconds without any registration.
    """

    def __init__(self, listener: socket.socket, linger: float) -> None:
        self.listener = listener
        self.linger = linger
        self.selector = selectors.DefaultSelector()
        self.clients: dict[socket.socket, _Client] = {}
        self.registry: dict[str, tuple[int, _Client]] = {}
        self.unregistered_since = time.monotonic()
        self.accept_paused_until = 0.0
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
        log.info("port mapper listening on port %d (pid %d, linger %.3g s)",
                 self.listener.getsockname()[1], os.getpid(), self.linger)
        try:
            while True:
                now = time.monotonic()
                if self.registry:
                    self.unregistered_since = now
                elif now - self.unregistered_since >= self.linger:
                    log.info("no node registered for %.3g s: exiting", self.linger)
                    return
                # Wake up at least once a second (idle clients), and when the linger ends.
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
                self._housekeeping()
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
        except Exception:  # one bad client must never take the mapper down
            log.exception("dropping a client after an unexpected error")
            self._drop(client)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.accept_paused_until and now >= self.accept_paused_until:
            self.accept_paused_until = 0.0
            self.selector.register(self.listener, selectors.EVENT_READ)
        for client in self.clients.copy().values():
            if client.name is None and now - client.last_active > IDLE_TIMEOUT:
                self._drop(client)

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
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock, _is_loopback_ip(address[0]), time.monotonic())
            self.clients[sock] = client
            self.selector.register(sock, selectors.EVENT_READ)
            if len(self.clients) > self.max_clients:
                self._error(client, "busy")

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.last_active = time.monotonic()
        client.inbuf += data
        while not client.closing:
            end = client.inbuf.find(b"\n")
            if end < 0:
                if len(client.inbuf) >= MAX_LINE:
                    self._error(client, "line_too_long")
                break
            if end + 1 > MAX_LINE:
                self._error(client, "line_too_long")
                break
            line = bytes(client.inbuf[:end])
            del client.inbuf[:end + 1]
            self._request(client, line)

    def _request(self, client: _Client, raw: bytes) -> None:
        try:
            line = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            self._error(client, "not_ascii")
            return
        words = line.split()
        if not words:
            self._error(client, "empty_line")
            return
        command, args = words[0].upper(), words[1:]
        if command == "LOOKUP" and len(args) == 1:
            if not self._valid_name(client, args[0]):
                return
            entry = self.registry.get(args[0])
            self._reply(client, f"PORT {entry[0]}" if entry else "NONE")
        elif command == "NAMES" and not args:
            pairs = " ".join(f"{name}={port}" for name, (port, _) in sorted(self.registry.items()))
            self._reply(client, f"NAMES {pairs}" if pairs else "NAMES")
        elif command == "REGISTER" and len(args) == 2:
            self._register(client, args[0], args[1])
        elif command == "UNREGISTER" and not args:
            self._unregister(client)
            self._reply(client, "OK")
        elif command == "PING" and not args:
            # A ping says "a node is about to register": it restarts the linger clock, so
            # the mapper does not exit between ensure_portmapper() and register().
            if client.loopback:
                self.unregistered_since = max(self.unregistered_since, time.monotonic())
            pid = f" pid={os.getpid()}" if client.loopback else ""
            self._reply(client, f"PONG {PROTOCOL}{pid}")
        elif command in ("LOOKUP", "NAMES", "REGISTER", "UNREGISTER", "PING"):
            self._error(client, "bad_arguments")
        else:
            self._error(client, "unknown_command")

    def _valid_name(self, client: _Client, name: str) -> bool:
        try:
            check_name_part(name)
        except InvalidNodeName:
            self._error(client, "bad_name")
            return False
        return True

    def _register(self, client: _Client, name: str, port_text: str) -> None:
        if not client.loopback:
            self._error(client, "not_loopback")  # only nodes of this host register here
            return
        if not self._valid_name(client, name):
            return
        if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
            self._error(client, "bad_port")
            return
        if client.name is not None:
            self._error(client, "already_registered")
            return
        if name in self.registry:
            self._error(client, "in_use")
            return
        client.name = name
        self.registry[name] = (int(port_text), client)
        log.info("registered %s on port %s", name, port_text)
        self._reply(client, "OK")

    def _unregister(self, client: _Client) -> None:
        if client.name is not None and self.registry.get(client.name, (0, None))[1] is client:
            del self.registry[client.name]
            log.info("unregistered %s", client.name)
        client.name = None

    # --- output ---------------------------------------------------------------------

    def _reply(self, client: _Client, text: str) -> None:
        client.outbuf += text.encode("ascii") + b"\n"
        if len(client.outbuf) > MAX_OUTPUT:
            self._drop(client)  # it sends requests but never reads the answers
            return
        self._flush(client)

    def _error(self, client: _Client, reason: str) -> None:
        client.closing = True
        self._reply(client, f"ERR {reason}")

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
        # A closing client is not read any more: watching it for input would spin the loop
        # while it keeps sending and does not read our ERR.
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
        description="nodelab's port mapper (like Erlang's epmd): maps node names to ports.")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default $NODELAB_PORTMAPPER_PORT or 4370)")
    parser.add_argument("--linger", type=float, default=None,
                        help="exit after this many seconds without registrations "
                             "(default $NODELAB_PORTMAPPER_LINGER or 10)")
    parser.add_argument("--detach", action="store_true",
                        help="bind, then continue in the background; exit status 0 when "
                             f"listening, {EXIT_IN_USE} when the port is taken")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s portmapper[{os.getpid()}] %(message)s")
    try:
        port = args.port if args.port is not None else default_port()
        linger = args.linger if args.linger is not None else default_linger()
    except PortMapperError as error:
        parser.error(str(error))
    if not 0 < port < 65536 or linger < 0:
        parser.error("--port must be 1..65535 and --linger >= 0")
    try:
        listener = bind_listener(port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            # Usually another port mapper won the race to start: that one serves.
            log.info("port %d is already in use (another port mapper?): exiting", port)
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
    try:
        PortMapper(listener, linger).serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------


def _read_line(sock: socket.socket, deadline: float, limit: int = MAX_REPLY) -> str:
    data = bytearray()
    while True:
        end = data.find(b"\n")
        if end >= 0:
            return data[:end].decode("ascii", "replace").rstrip("\r")
        if len(data) > limit:
            raise PortMapperError("the port mapper's answer is too long")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the port mapper did not answer in time")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the port mapper closed the connection")
        data += chunk


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
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request(host_ip: str, port: int, line: str, timeout: float) -> str:
    """One request, one answer, on a fresh connection (a lookup is rare: once per peer)."""
    deadline = time.monotonic() + timeout
    with _connect(host_ip, port, timeout) as sock:
        sock.sendall(line.encode("ascii") + b"\n")
        return _read_line(sock, deadline)


def mapper_pid(host_ip: str = "127.0.0.1", port: int | None = None, *,
               timeout: float = 1.0) -> int | None:
    """The OS pid of the port mapper on this host, or None when none answers.

    (Only loopback callers are told the pid; a remote mapper answers None too.)
    """
    reply = _ping(host_ip, port if port is not None else default_port(), timeout)
    if reply is None:
        return None
    for word in reply.split():
        if word.startswith("pid=") and word[4:].isdigit():
            return int(word[4:])
    return None


def _ping(host_ip: str, port: int, timeout: float) -> str | None:
    try:
        reply = _request(host_ip, port, "PING", timeout)
    except (OSError, PortMapperError):
        return None
    return reply if reply.startswith(f"PONG {PROTOCOL}") else None


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


def ensure_portmapper(host_ip: str = "127.0.0.1", port: int | None = None, *,
                      timeout: float = 5.0) -> None:
    """Make sure a port mapper answers on ``host_ip:port``; start one if it is this host's.

    Like the first ``iex --sname`` starting ``epmd``: when nothing answers on a loopback
    address, the daemon is started detached from this process (its own session, its log in
    ``$NODELAB_HOME/portmapper-PORT.log``) and this call waits until it answers. Nodes that
    race to start it all succeed: one daemon binds the port, the others exit quietly.
    For another host's address it only checks. Raises :class:`PortMapperUnavailable`.
    """
    port = port if port is not None else default_port()
    deadline = time.monotonic() + timeout
    if _ping(host_ip, port, min(1.0, timeout)) is not None:
        return
    if not is_loopback_host(host_ip):
        raise PortMapperUnavailable(
            f"no nodelab port mapper answers on {host_ip} port {port}: start a node on that "
            "host first (it starts the port mapper), check that the port is not firewalled, "
            "and that both hosts use the same NODELAB_PORTMAPPER_PORT")
    log_path = _log_path(port)
    # -W: the package __init__ imports this module before runpy runs it as __main__,
    # which only earns a RuntimeWarning about double import in the daemon's log.
    command = [sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m",
               "nodelab.dist.portmapper", "--port", str(port), "--detach"]
    # The daemon runs this very copy of nodelab, installed or not (a checkout on sys.path
    # only through the current directory would not be found from the daemon's own cwd).
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
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
        if _ping(host_ip, port, max(0.05, min(1.0, deadline - time.monotonic()))) is not None:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if status == EXIT_IN_USE:
        reason = (f"port {port} is taken by a program that is not a nodelab port mapper, or "
                  f"by a hung one (see `ss -ltnp 'sport = :{port}'`): stop it, or set "
                  "NODELAB_PORTMAPPER_PORT to a free port (the same for all your nodes)")
    elif status is None:
        reason = f"it did not start within {timeout} s (a very slow machine?)"
    else:
        reason = f"it exited with status {status}"
    tail = _log_tail(log_path) if log_path is not None else ""
    raise PortMapperUnavailable(
        f"could not start the port mapper on port {port}: {reason}"
        + (f"; its log {log_path} ends with: {tail}" if tail else ""))


def _open_registration(name: str, port: int, mapper_port: int, full_name: str,
                       timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    try:
        sock = _connect("127.0.0.1", mapper_port, timeout)
    except OSError as error:
        raise PortMapperUnavailable(
            f"no port mapper answers on port {mapper_port} ({error}): call "
            "ensure_portmapper() first (Node.start does)") from None
    try:
        sock.sendall(f"REGISTER {name} {port}\n".encode("ascii"))
        reply = _read_line(sock, deadline, limit=MAX_LINE)
    except (OSError, PortMapperError) as error:
        sock.close()
        raise PortMapperUnavailable(f"the port mapper on port {mapper_port} did not answer "
                                    f"the registration of {full_name}: {error}") from None
    if reply == "OK":
        sock.settimeout(None)
        return sock
    sock.close()
    if reply == "ERR in_use":
        raise NameInUse(full_name)
    raise PortMapperError(f"the port mapper on port {mapper_port} refused to register "
                          f"{full_name}: {reply}")


_live_registrations: weakref.WeakSet[Registration] = weakref.WeakSet()


class Registration:
    """A node's name in the port mapper; it lasts as long as this object's socket.

    Made by :func:`register`. :meth:`close` gives the name back (synchronously, so the
    same name can be registered again at once). If the port mapper dies while the
    registration is wanted, a daemon thread notices (its socket closes), calls the
    :meth:`on_lost` callbacks, logs it, starts a new port mapper if needed and registers
    again, retrying with a growing pause (up to :data:`REREGISTER_MAX_DELAY`) for
    :data:`REREGISTER_WINDOW` seconds. Connections between running nodes are never
    affected: only new lookups need the mapper.
    """

    def __init__(self, name: str, port: int, mapper_port: int, full_name: str,
                 sock: socket.socket) -> None:
        self.name = name
        self.port = port
        self.mapper_port = mapper_port
        self.full_name = full_name
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
                                        name=f"nodelab portmapper watch {name}")
        self._thread.start()

    @property
    def registered(self) -> bool:
        """True while the port mapper knows this name (False after a loss, until re-registered)."""
        return self._registered.is_set() and not self._closing.is_set()

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Wait until the name is registered (again); False on timeout or after close()."""
        return self._registered.wait(timeout) and not self._closing.is_set()

    def on_lost(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (in the watcher thread) each time the port mapper goes away
        while this registration is wanted, before registering again."""
        self._callbacks.append(callback)

    def close(self) -> None:
        """Give the name back. Idempotent; returns once the mapper has forgotten the name
        (at most ~1 s when the mapper does not answer)."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            sock = self._sock
        self._registered.clear()
        try:
            # Unregister explicitly and wait for the answer: closing the socket alone frees
            # the name too, but only once the mapper has read the EOF, so an immediate
            # Node.start with the same name could still see "in use".
            sock.sendall(b"UNREGISTER\n")
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
        """Wait up to ``timeout`` for the automatic re-registration after a lost mapper."""
        return self.wait_registered(timeout)

    # --- the watcher thread -------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._closing.is_set():
                self._wait_for_loss(self._sock)
                if self._closing.is_set():
                    break
                self._registered.clear()
                log.warning("the port mapper (port %d) went away: %s keeps its connections "
                            "and registers again so that new lookups find it",
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
                return  # EOF: the mapper died; or the answer to our UNREGISTER

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
                sock = _open_registration(self.name, self.port, self.mapper_port,
                                          self.full_name, min(5.0, remaining))
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
            self.reregistrations += 1
            self._registered.set()
            log.info("%s is registered again with the port mapper (port %d), after %d "
                     "attempt(s) in %.0f ms", self.full_name, self.mapper_port, attempt,
                     (time.monotonic() - started) * 1000)
            return True
        if not self._closing.is_set():
            log.error("gave up registering %s again after %.0f s: no port mapper on port %d; "
                      "only nodes already connected can reach it (restart the node)",
                      self.full_name, REREGISTER_WINDOW, self.mapper_port)
        return False

    def __repr__(self) -> str:
        state = "closed" if self._closing.is_set() else (
            "registered" if self._registered.is_set() else "lost")
        return f"<Registration {self.full_name} port={self.port} {state}>"


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
             full_name: str | None = None) -> Registration:
    """Register ``name`` -> ``port`` with this host's port mapper; keep the result alive.

    ``full_name`` (``alex@localhost``) is only used in messages. Raises
    :class:`NameInUse` when another node has the name, :class:`PortMapperUnavailable`
    when no port mapper answers (it is started if it just exited).
    """
    check_name_part(name)
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is not a TCP port (1..65535)")
    mapper_port = mapper_port if mapper_port is not None else default_port()
    full_name = full_name or f"{name}@localhost"
    try:
        sock = _open_registration(name, int(port), mapper_port, full_name, timeout)
    except PortMapperUnavailable:
        # The mapper may have exited (linger) just after ensure_portmapper() saw it.
        ensure_portmapper("127.0.0.1", mapper_port, timeout=timeout)
        sock = _open_registration(name, int(port), mapper_port, full_name, timeout)
    return Registration(name, int(port), mapper_port, full_name, sock)


def lookup(name: str, host_ip: str = "127.0.0.1", port: int | None = None, *,
           timeout: float = 2.0) -> int | None:
    """The port node ``name`` listens on at ``host_ip``, or None.

    None means "no such node there": not registered, or no port mapper answers (no node
    runs on that host). Raises :class:`~nodelab.dist.names.InvalidNodeName` for a bad name.
    """
    check_name_part(name)
    try:
        reply = _request(host_ip, port if port is not None else default_port(),
                         f"LOOKUP {name}", timeout)
    except (OSError, PortMapperError):
        return None
    if reply.startswith("PORT ") and reply[5:].isdigit() and 0 < int(reply[5:]) < 65536:
        return int(reply[5:])
    if reply != "NONE":
        log.debug("unexpected answer from the port mapper at %s: %r", host_ip, reply)
    return None


def names(host_ip: str = "127.0.0.1", port: int | None = None,
          timeout: float = 2.0) -> dict[str, int]:
    """All names registered at ``host_ip``'s port mapper, ``{name: port}`` (like
    ``epmd -names``); empty when no port mapper answers."""
    try:
        reply = _request(host_ip, port if port is not None else default_port(),
                         "NAMES", timeout)
    except (OSError, PortMapperError):
        return {}
    words = reply.split()
    if not words or words[0] != "NAMES":
        return {}
    result: dict[str, int] = {}
    for word in words[1:]:
        name, _, number = word.partition("=")
        if number.isdigit():
            result[name] = int(number)
    return result


if __name__ == "__main__":
    sys.exit(main())
