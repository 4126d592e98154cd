"""The far end of the raw Python baselines: what Python can do with no runtime at all.

``python raw_peer.py socket`` serves length-prefixed frames on a plain blocking TCP socket
(TCP_NODELAY); ``python raw_peer.py zmq`` serves a pyzmq ROUTER socket. Either prints
``READY <port>`` and then serves until its stdin closes (the benchmark holds the other end,
so the peer cannot outlive it) or its lifetime runs out.

Socket protocol: every frame is ``u32 length | body``. The first byte a client sends picks
what the connection does, so one peer serves every figure:

- ``E`` echo: each frame is sent back as it came (figure 1, round trip);
- ``C`` count: frames are counted until an empty one, then ``D`` + the count is sent back
  (figure 2, throughput; the clock stops when that reply arrived);
- ``S`` spawn: each frame starts a new thread that sends the frame back (figure 3's floor:
  the price of a thread per request, which a thread-per-process runtime pays on spawn);
- ``H`` handoff echo: a reader thread hands each frame through a ``SimpleQueue`` to a
  "process" thread, which writes it back itself (the thread-handoff floor of figure 1: what a
  runtime with one reader thread per connection and one thread per process cannot go under);
- ``Q`` handoff count: ``C`` with the same handoff, the counting done by the "process"
  thread (figure 2's handoff floor).

ZMQ protocol (one frame per message, the DEALER's identity added by ROUTER): ``E...`` is
echoed, ``M...`` is counted, ``Z`` answers ``D<count>`` and resets the count.
"""

from __future__ import annotations

import os
import queue
import socket
import struct
import sys
import threading
from typing import BinaryIO

HEADER = struct.Struct("!I")
LIFETIME_S = 300.0


def _exit_with_parent() -> None:
    # The benchmark holds our stdin; EOF means it is done or dead. Either way, we go too.
    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    threading.Timer(LIFETIME_S, os._exit, args=(3,)).start()


def _read_exact(reader: BinaryIO, n: int) -> bytes | None:
    data = reader.read(n)
    return data if data is not None and len(data) == n else None


def _handoff_process(conn: socket.socket, mode: bytes, inbox: queue.SimpleQueue) -> None:
    # The "process" thread of modes H and Q: one handoff from the reader, then it writes
    # the reply itself, as a process thread writes its own frames to the socket.
    count = 0
    get = inbox.get
    try:
        while True:
            item = get()
            if item is None:
                return
            if mode == b"H":
                conn.sendall(item)
            elif item == 0:
                conn.sendall(b"D" + struct.pack("!Q", count))
                count = 0
            else:
                count += 1
    except OSError:
        return


def _serve_socket_connection(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = conn.makefile("rb", buffering=1 << 16)
    mode = reader.read(1)
    write_lock = threading.Lock()
    handoff: queue.SimpleQueue = queue.SimpleQueue()
    if mode in (b"H", b"Q"):
        threading.Thread(target=_handoff_process, args=(conn, mode, handoff), daemon=True).start()
    try:
        _serve_frames(conn, reader, mode, write_lock, handoff)
    finally:
        handoff.put(None)


def _serve_frames(conn: socket.socket, reader: BinaryIO, mode: bytes, write_lock: threading.Lock,
                  handoff: queue.SimpleQueue) -> None:
    count = 0
    while True:
        header = _read_exact(reader, 4)
        if header is None:
            return
        (length,) = HEADER.unpack(header)
        body = _read_exact(reader, length) if length else b""
        if body is None:
            return
        if mode == b"E":
            conn.sendall(header + body)
        elif mode == b"C":
            if length == 0:
                conn.sendall(b"D" + struct.pack("!Q", count))
                count = 0
            else:
                count += 1
        elif mode in (b"H", b"Q"):
            handoff.put(header + body if mode == b"H" else length)
        elif mode == b"S":
            def reply(frame: bytes = header + body) -> None:
                with write_lock:
                    conn.sendall(frame)

            threading.Thread(target=reply).start()
        else:
            return


def serve_socket() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    print(f"READY {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                _serve_socket_connection(conn)
            except OSError:
                pass  # the client went away mid-frame: serve the next one


def serve_zmq() -> None:
    import zmq

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    print(f"READY {port}", flush=True)
    count = 0
    while True:
        identity, frame = router.recv_multipart()
        kind = frame[:1]
        if kind == b"E":
            router.send_multipart([identity, frame])
        elif kind == b"M":
            count += 1
        elif kind == b"Z":
            router.send_multipart([identity, b"D%d" % count])
            count = 0


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("socket", "zmq"):
        print("usage: raw_peer.py socket|zmq", file=sys.stderr)
        return 2
    _exit_with_parent()
    serve_socket() if sys.argv[1] == "socket" else serve_zmq()
    return 0


if __name__ == "__main__":
    sys.exit(main())
