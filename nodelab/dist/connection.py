"""One authenticated TCP connection to one peer node: frames out (in order, batched in a
burst, with back-pressure) and frames in (checked, then handed to the node's dispatch).

Writing a frame is a critical section of the sending process (``P.enter_critical``): an
exit signal never lands between taking the write lock and releasing it, nor between
spending a sequence number and writing its frame — the peer would refuse every later
frame. A process killed while it waits for the lock or for a full queue still exits at
once (the waits are sliced, with ``P.check_exit`` between slices).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from nodelab.dist import frames
from nodelab.errors import MessageTooLarge
from nodelab.runtime import processes as P

if TYPE_CHECKING:
    from nodelab.dist.connections import Distribution

log = logging.getLogger("nodelab")

#: Frames sent closer together than this are written in batches by the flusher thread.
#: Shorter than a round trip between two nodes (~40-60 us here): at 50 us, a ping-pong
#: whose round trip fell under the gap went through the flusher on every frame, and its
#: RTT stayed above 50 us (4 interleaved quick runs: 69 us at 50, 49 us at 20).
BURST_GAP = 20e-6
#: A sender waits when this many bytes are queued for one peer.
MAX_PENDING = 8 * 1024 * 1024
#: A batch carries at most this many bytes of frames (a larger frame leaves on its own):
#: enough for a thousand small messages, and never more than a node accepts in one frame.
BATCH_BYTES = min(64 * 1024, frames.MAX_MESSAGE)
_INNER_OVERHEAD = frames.INNER.size


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
        self.flush_lock = threading.Lock()
        self.pending: list[tuple[int, bytes]] = []  # a burst's frames, waiting for the flusher
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
        # Called with the write lock held. One clock read per frame: it decides the burst
        # and stamps the send (the write of one small frame takes microseconds, far below
        # BURST_GAP and the tick interval, so stamping before it changes neither).
        if not self.alive:
            return False
        now = time.monotonic()
        if self.pending or self.flushing or now - self.last_send < BURST_GAP:
            # Part of a burst: the flusher sends it in a batch, under one sequence number
            # and one MAC (taken then, in this same order: nothing is written directly
            # while frames wait or the flusher writes).
            self.pending.append((kind, body))
            self.pending_size += len(body) + _INNER_OVERHEAD
            self.last_send = now
            if not self.flushing:
                self.flushing = True
                self.dist.flush_queue.put(self)
            return True
        frame = frames.encode(self.send_mac, self.send_seq, kind, body)
        try:
            self.sock.sendall(frame)
        except OSError:
            self.alive = False
            return False
        self.send_seq += 1
        self.last_send = now
        return True

    def _wait_for_flush(self) -> None:
        # Back-pressure: a sender that runs far ahead of the socket waits for the flusher
        # (in slices: a kill ends the wait; the frame is queued already).
        deadline = time.monotonic() + 30
        while self.pending_size > MAX_PENDING // 2 and self.alive and time.monotonic() < deadline:
            P.check_exit()
            time.sleep(0.0005)

    def flush_pending(self) -> None:
        """Write the gathered frames (the flusher thread calls this, and a stopping node):
        as batches of at most ``BATCH_BYTES`` each (a frame that is larger leaves alone),
        each with one MAC."""
        # One flusher at a time: batches are sealed (given their sequence numbers) under the
        # write lock and written after it, so two flushers could otherwise write them out of
        # order, and the peer would refuse the later one.
        with self.flush_lock:
            while True:
                with self.write_lock:
                    if not self.pending or not self.alive:
                        self.pending.clear()
                        self.pending_size = 0
                        self.flushing = False
                        return
                    items = self.pending
                    self.pending = []
                    self.pending_size = 0
                    data = self._seal(items)
                try:
                    self.sock.sendall(data)
                except OSError:
                    self.alive = False

    def _seal(self, items: list[tuple[int, bytes]]) -> bytes:
        # Called with the write lock held: spends the sequence numbers, in order.
        out = []
        batch: list[tuple[int, bytes]] = []
        batch_size = 0
        for kind, body in items:
            if batch and batch_size + len(body) + _INNER_OVERHEAD > BATCH_BYTES:
                out.append(self._frame_of(batch))
                batch, batch_size = [], 0
            batch.append((kind, body))
            batch_size += len(body) + _INNER_OVERHEAD
        if batch:
            out.append(self._frame_of(batch))
        return b"".join(out)

    def _frame_of(self, batch: list[tuple[int, bytes]]) -> bytes:
        seq = self.send_seq
        self.send_seq += 1
        if len(batch) == 1:
            return frames.encode(self.send_mac, seq, *batch[0])
        return frames.encode_batch(self.send_mac, seq, batch)

    def close(self, reason: str) -> None:
        if self.alive:
            self.down_reason = reason
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_loop(self) -> None:
        # Every complete frame of one recv is checked and dispatched before the next recv:
        # a burst costs one system call and one clock read per batch, not per frame.
        sock = self.sock
        buffer = bytearray()
        unpack_length = frames.LENGTH.unpack_from
        unpack_header = frames.HEADER.unpack_from
        mac = frames.mac
        recv_mac = self.recv_mac
        dispatch = self.dist.dispatch
        split = frames.split_batch
        batch_kind = frames.BATCH
        start_of_body = 4 + 1 + frames.MAC_SIZE
        shortest = 1 + frames.MAC_SIZE
        limit = frames.MAX_MESSAGE + shortest
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                self.last_recv = time.monotonic()
                if buffer:
                    buffer += data
                    view = memoryview(buffer)
                else:
                    view = memoryview(data)  # the common case: no partial frame waiting
                offset = 0
                size = len(view)
                body = view
                try:
                    while size - offset >= 4:
                        (length,) = unpack_length(view, offset)
                        if length > limit or length < shortest:
                            raise frames.FrameError(f"a frame of {length} bytes")
                        end = offset + 4 + length
                        if end > size:
                            break
                        _, kind, tag = unpack_header(view, offset)
                        body = view[offset + start_of_body : end]
                        offset = end
                        if mac(recv_mac, self.recv_seq, kind, body) != tag:
                            raise frames.FrameError("a frame whose MAC does not match")
                        self.recv_seq += 1
                        if kind == batch_kind:
                            for inner_kind, inner_body in split(body.tobytes()):
                                dispatch(self, inner_kind, inner_body)
                        else:
                            dispatch(self, kind, body.tobytes())
                finally:
                    body.release()  # both views, before the buffer is resized below
                    view.release()
                if buffer:
                    del buffer[:offset]
                elif offset < size:
                    buffer += data[offset:]  # a partial frame: wait for the rest
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
