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
nodelab's. When nothing listens there, the node starts nodelab's daemon
(:mod:`nodelab.dist.portmapper_daemon`), as the first ``iex --sname`` starts ``epmd``. It runs
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

**nodelab's daemon and ``epmd``.** The daemon answers as ``epmd`` does, and one request
more, nodelab's own ``NODELAB_INFO_REQ``, to which ``epmd`` closes the connection: that is
how a node tells them apart (:func:`epmd_kind`, :func:`mapper_pid`). The daemon, its rules
and how it is stricter than ``epmd`` are in :mod:`nodelab.dist.portmapper_daemon`; the
bytes both sides speak in ``nodelab/dist/_epmd_protocol.py``.

This module is one concept, what a node asks of an EPMD, and long because of two promises:
a registration outlives the EPMD it was made with (:class:`Registration` notices the loss
and registers again), and :func:`ensure_portmapper` starts a daemon that every racing node
agrees on, and explains in one line why none could start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from nodelab.dist._epmd_protocol import (
    ALIVE2_RESP,
    ALIVE2_X_RESP,
    EXIT_IN_USE,
    INFO,
    MAX_EXTRA,
    MAX_REPLY,
    NAMES_REQ,
    NODE_TYPE_HIDDEN,
    NODE_TYPE_NORMAL,
    NODELAB_INFO_REQ,
    PORT2_RESP,
    PORT_PLEASE2_REQ,
    EpmdEntry,
    alive2_request,
    packet,
    parse_names_response,
    parse_port2_response,
)
from nodelab.dist.names import check_name_part, is_loopback_host
from nodelab.errors import NodelabError

__all__ = [
    "NODE_TYPE_HIDDEN",
    "NODE_TYPE_NORMAL",
    "EpmdEntry",
    "NameInUse",
    "PortMapperError",
    "PortMapperUnavailable",
    "Registration",
    "default_linger",
    "default_port",
    "ensure_portmapper",
    "epmd_kind",
    "lookup",
    "mapper_pid",
    "names",
    "port_please",
    "register",
]

DEFAULT_PORT = 4369
DEFAULT_LINGER = 10.0

#: How long a node keeps trying to register again after its EPMD died, and the longest
#: pause between two attempts.
REREGISTER_WINDOW = 60.0
REREGISTER_MAX_DELAY = 1.0

log = logging.getLogger("nodelab.dist.portmapper")


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
        sock.sendall(packet(body))
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


# Runs the daemon with only the modules it needs (the daemon's, this one, nodelab.errors
# and nodelab.dist.names): the packages' __init__ (the whole runtime) is skipped, which
# saves most of a second on a loaded machine, when the first node starts and when nodes
# recover from a killed daemon. argv: ROOT nodelab.dist.portmapper_daemon OPTIONS (the
# second word is there for people and tools that look for the daemon in the process list).
_DAEMON_LAUNCHER = """\
import os, sys, types
for name in ("nodelab", "nodelab.dist"):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(sys.argv[1], *name.split("."))]
    sys.modules[name] = package
from nodelab.dist.portmapper_daemon import main
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
    command = [sys.executable, "-c", _DAEMON_LAUNCHER, package_root,
               "nodelab.dist.portmapper_daemon",
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
        sock.sendall(packet(alive2_request(name, port, node_type, extra)))
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
    entry = parse_port2_response(reply)
    if entry is None:
        log.debug("unexpected answer from the EPMD at %s: %r", host_ip, reply[:64])
    return entry


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
    return parse_names_response(reply)


if __name__ == "__main__":
    # The daemon used to be this module: `python -m nodelab.dist.portmapper` still runs it.
    from nodelab.dist.portmapper_daemon import main

    sys.exit(main())
