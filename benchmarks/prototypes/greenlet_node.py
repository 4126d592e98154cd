"""Prototype (issue 12): processes as greenlets, scheduled per node on a selector I/O loop.

A delivered message never crosses OS threads: the node's one thread runs the loop (the
*hub*), reads every readable connection (one ``recv`` takes as many frames as have come,
all delivered before anyone runs: one wakeup per batch), and switches to each process that
became runnable. A process that sends to another node appends its frame to the
connection's buffer; with ``batch_writes`` the hub writes each buffer once per pass of the
loop (many frames per ``send``), without it every frame is written at once (one write per
message, today's path for a message sent after a pause).

The wire is today's nodelab wire, so the figures compare runtimes, not codecs: frames
``length u32 | kind u8 | BLAKE2b MAC 16 | body`` from ``nodelab.dist.frames`` and bodies
pickled with ``nodelab.dist.shipment`` (functions travel as code). Not here, because they
cost nothing per message: the handshake, ticks, links, monitors, names, kill, group
leaders — see benchmarks/README.md for what a real adoption would have to keep.

    python greenlet_node.py peer            # prints READY <port> <echo serial>
    python greenlet_node.py driver [--single-writes]   # commands on stdin, JSON on stdout
    python greenlet_node.py mem N           # RSS of N idle processes (each in a receive)

Driver commands, one a line: ``rtt N``, ``spawn N``, ``tput N``; each answers one JSON line.
"""

from __future__ import annotations

import heapq
import json
import os
import pickle
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from greenlet import greenlet

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from nodelab.dist import frames, shipment  # the same wire as today's nodelab
from nodelab.runtime.pids import Pid  # the same PIDs (and their pickling) as today's

SEND = 3
SPAWN = 5
HELLO = 6
SEND_HEADER = struct.Struct("!Q")
KEY = b"prototype-key-prototype-key-0123"  # the handshake would derive it; fixed here
#: --lean: plain pickle and no MAC, to see what the codec and the MAC cost (not a candidate)
LEAN = "--lean" in sys.argv
NO_MAC = bytes(frames.MAC_SIZE)
dumps = (lambda obj: pickle.dumps(obj, 5)) if LEAN else shipment.dumps
loads = pickle.loads if LEAN else shipment.loads


class Proc:
    __slots__ = ("pid", "g", "inbox", "scanned", "waiting", "timer")

    def __init__(self, pid: Pid) -> None:
        self.pid = pid
        self.g: greenlet | None = None
        self.inbox: deque = deque()
        self.scanned = 0  # messages a selective receive already looked at
        self.waiting = False
        self.timer: list | None = None


class Conn:
    def __init__(self, node: Node, sock: socket.socket, peer: str | None) -> None:
        self.node = node
        self.sock = sock
        self.peer = peer
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_mac = frames.mac_state(KEY)
        self.recv_mac = frames.mac_state(KEY)
        self.send_seq = 0
        self.recv_seq = 0
        self.out = bytearray()
        self.dirty = False
        self.want_write = False
        self.blocked: list[Proc] = []  # senders waiting for a full buffer to drain
        self.buffer = bytearray()
        node.sel.register(sock, selectors.EVENT_READ, self._on_event)

    def write(self, kind: int, body: bytes) -> None:
        if LEAN:
            self.out += frames.HEADER.pack(1 + frames.MAC_SIZE + len(body), kind, NO_MAC) + body
        else:
            self.out += frames.encode(self.send_mac, self.send_seq, kind, body)
        self.send_seq += 1
        node = self.node
        if not node.batch_writes or len(self.out) >= 1 << 16:
            self.flush()
        elif not self.dirty:
            self.dirty = True
            node.dirty.append(self)
        while len(self.out) > 1 << 22 and node.current is not None:  # back-pressure
            proc = node.current
            self.blocked.append(proc)
            proc.waiting = True
            node.hub.switch()

    def flush(self) -> None:
        self.dirty = False
        if self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                sent = 0
            del self.out[:sent]
        want = bool(self.out)
        if want != self.want_write:
            self.want_write = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.node.sel.modify(self.sock, events, self._on_event)
        if not want and self.blocked:
            for proc in self.blocked:
                self.node.wake(proc)
            self.blocked.clear()

    def _on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if not mask & selectors.EVENT_READ:
            return
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        if not data:
            self.node.sel.unregister(self.sock)
            self.sock.close()
            self.node.lost(self)
            return
        buffer = self.buffer
        buffer += data
        offset, size = 0, len(buffer)
        header, mac_size = frames.HEADER, frames.MAC_SIZE
        while size - offset >= 4:
            (length,) = frames.LENGTH.unpack_from(buffer, offset)
            if size - offset - 4 < length:
                break
            _, kind, mac = header.unpack_from(buffer, offset)
            body = bytes(buffer[offset + 4 + 1 + mac_size: offset + 4 + length])
            offset += 4 + length
            if not LEAN and frames.mac(self.recv_mac, self.recv_seq, kind, body) != mac:
                raise frames.FrameError("a frame whose MAC does not match")
            self.recv_seq += 1
            self.node.dispatch(self, kind, body)
        if offset:
            del buffer[:offset]


class Node:
    def __init__(self, name: str, *, batch_writes: bool = True) -> None:
        self.name = name
        self.batch_writes = batch_writes
        self.sel = selectors.DefaultSelector()
        self.runq: deque[Proc] = deque()
        self.procs: dict[int, Proc] = {}
        self.serial = 0
        self.conns: dict[str, Conn] = {}
        self.dirty: list[Conn] = []
        self.timers: list = []
        self.current: Proc | None = None
        self.hub = greenlet.getcurrent()
        self.stopped = False
        shipment.set_namespace_provider(lambda: self.namespace)
        self.namespace = {"send": self.send, "receive": self.receive, "self": self.self,
                          "spawn": self.spawn}

    # --- processes ------------------------------------------------------------------

    def self(self) -> Pid:
        assert self.current is not None
        return self.current.pid

    def spawn(self, fn: Any, *args: Any) -> Pid:
        self.serial += 1
        proc = Proc(Pid(self.name, self.serial, 1))

        def body() -> None:
            try:
                fn(*args)
            finally:
                del self.procs[proc.pid.serial]

        proc.g = greenlet(body, parent=self.hub)
        self.procs[self.serial] = proc
        self.runq.append(proc)
        return proc.pid

    def wake(self, proc: Proc) -> None:
        if proc.waiting:
            proc.waiting = False
            self.runq.append(proc)

    def send(self, pid: Pid, message: Any) -> Any:
        if pid.node == self.name:
            proc = self.procs.get(pid.serial)
            if proc is not None:
                proc.inbox.append(message)
                if proc.waiting:
                    proc.waiting = False
                    self.runq.append(proc)
        else:
            conn = self.conns.get(pid.node)
            if conn is not None:
                conn.write(SEND, SEND_HEADER.pack(pid.serial) + dumps(message))
        return message

    def spawn_remote(self, node: str, fn: Any) -> None:
        self.conns[node].write(SPAWN, shipment.dumps(fn))

    def receive(self, match: Any = None, timeout: float | None = None) -> Any:
        proc = self.current
        assert proc is not None, "receive outside a process"
        inbox = proc.inbox
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for index in range(proc.scanned, len(inbox)):
                message = inbox[index]
                if match is None or match == message or (callable(match) and match(message)):
                    del inbox[index]
                    proc.scanned = 0
                    return message
            proc.scanned = len(inbox)
            if deadline is not None:
                if time.monotonic() >= deadline:
                    proc.scanned = 0
                    raise TimeoutError
                proc.timer = [deadline, id(proc), proc]
                heapq.heappush(self.timers, proc.timer)
            proc.waiting = True
            self.hub.switch()
            if proc.timer is not None:
                proc.timer[2] = None  # cancelled
                proc.timer = None

    # --- the wire -------------------------------------------------------------------

    def dispatch(self, conn: Conn, kind: int, body: bytes) -> None:
        if kind == SEND:
            (serial,) = SEND_HEADER.unpack_from(body)
            proc = self.procs.get(serial)
            if proc is not None:
                proc.inbox.append(loads(memoryview(body)[SEND_HEADER.size:]))
                if proc.waiting:
                    proc.waiting = False
                    self.runq.append(proc)
        elif kind == SPAWN:
            self.spawn(shipment.loads(body))
        elif kind == HELLO:
            conn.peer = body.decode()
            self.conns[conn.peer] = conn

    def connect(self, peer: str, port: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        conn = Conn(self, sock, peer)
        self.conns[peer] = conn
        conn.write(HELLO, self.name.encode())
        conn.flush()

    def listen(self) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)

        def accept(_mask: int) -> None:
            sock, _ = listener.accept()
            Conn(self, sock, None)

        self.sel.register(listener, selectors.EVENT_READ, accept)
        return listener.getsockname()[1]

    def lost(self, conn: Conn) -> None:
        if conn.peer and self.conns.get(conn.peer) is conn:
            del self.conns[conn.peer]

    # --- the hub --------------------------------------------------------------------

    def run(self, until: Proc | None = None) -> None:
        """Run the loop (in the node's thread) until ``until`` ends, or forever."""
        runq, sel, dirty, timers = self.runq, self.sel, self.dirty, self.timers
        while not self.stopped:
            while runq:
                proc = runq.popleft()
                self.current = proc
                proc.g.switch()
                self.current = None
                if until is not None and until.g.dead:
                    for conn in dirty:
                        conn.flush()
                    dirty.clear()
                    return
            for conn in dirty:
                conn.flush()
            dirty.clear()
            timeout = None
            while timers and timers[0][2] is None:
                heapq.heappop(timers)
            if timers:
                timeout = max(0.0, timers[0][0] - time.monotonic())
            for key, mask in sel.select(timeout):
                key.data(mask)
            now = time.monotonic()
            while timers and (timers[0][2] is None or timers[0][0] <= now):
                _, _, proc = heapq.heappop(timers)
                if proc is not None:
                    proc.timer = None
                    self.wake(proc)


# ------------------------------------------------------------------------------ roles

def peer_main() -> int:
    node = Node("kate", batch_writes="--single-writes" not in sys.argv)
    port = node.listen()

    def echo() -> None:
        while True:
            sender, msg = node.receive()
            node.send(sender, node.self() if msg == "whoami" else msg)

    echo_pid = node.spawn(echo)
    print(f"READY {port} {echo_pid.serial}", flush=True)

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    threading.Timer(900, os._exit, args=(3,)).start()
    node.run()
    return 0


def bench(node: Node, echo: Pid, figure: str, n: int, result: dict[str, Any]) -> None:
    """One figure, run as a process of alex. Shipped functions name ``send``, ``receive``
    and ``self`` as globals: they resolve in kate's namespace, where they run."""
    me = node.self()
    snd, rcv = node.send, node.receive
    samples = []
    if figure == "rtt":
        message = (me, "ping")
        for _ in range(n):
            t0 = time.perf_counter_ns()
            snd(echo, message)
            rcv()
            samples.append(time.perf_counter_ns() - t0)
    elif figure == "spawn":
        for _ in range(n):
            t0 = time.perf_counter_ns()
            node.spawn_remote("kate", lambda: send(me, "spawned"))  # noqa: F821
            rcv("spawned")
            samples.append(time.perf_counter_ns() - t0)
    elif figure == "tput":
        def counter(n: int = n, me: Pid = me) -> None:
            send(me, ("counter_ready", self()))  # noqa: F821
            for _ in range(n):
                receive()  # noqa: F821
            send(me, "done")  # noqa: F821

        node.spawn_remote("kate", counter)
        _, pid = rcv(lambda m: type(m) is tuple and m[0] == "counter_ready")
        t0 = time.perf_counter()
        for i in range(n):
            snd(pid, ("m", i))
        rcv("done")
        result.update(msgs_per_s=n / (time.perf_counter() - t0))
    if samples:
        samples.sort()
        result.update(p50_us=samples[n // 2] / 1000, p99_us=samples[int(n * .99)] / 1000)


def driver_main() -> int:
    single = "--single-writes" in sys.argv
    node = Node("alex", batch_writes=not single)
    flags = [flag for flag in ("--single-writes", "--lean") if flag in sys.argv]
    child = subprocess.Popen([sys.executable, __file__, "peer", *flags],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _, port, echo_serial = child.stdout.readline().decode().split()
    node.connect("kate", int(port))
    echo = Pid("kate", int(echo_serial), 1)
    print(f"READY {child.pid}", flush=True)
    for line in sys.stdin:
        figure, n = line.split()[0], int(line.split()[1])
        result: dict[str, Any] = {}

        proc_pid = node.spawn(bench, node, echo, figure, n, result)
        node.run(until=node.procs[proc_pid.serial])
        print(json.dumps(result), flush=True)
    child.stdin.close()
    child.wait(5)
    return 0


def mem_main(n: int) -> int:
    node = Node("mem")
    before = rss_kib()
    for _ in range(n):
        node.spawn(node.receive)
    # one pass of the hub: every process runs up to its receive and parks

    def last() -> None:
        pass

    end = node.spawn(last)
    node.run(until=node.procs[end.serial])
    print(json.dumps({"n": n, "rss_kib": rss_kib() - before, "live": len(node.procs)}))
    return 0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "peer":
        sys.exit(peer_main())
    if role == "driver":
        sys.exit(driver_main())
    if role == "mem":
        sys.exit(mem_main(int(sys.argv[2])))
    print(__doc__)
    sys.exit(2)
