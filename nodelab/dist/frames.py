"""Frames on a node-to-node connection.

After the handshake every frame is ``length u32 | kind u8 | mac 16 bytes | body``. The MAC
is a keyed BLAKE2b over the frame's sequence number, kind and body, with a key of that
direction that only the two authenticated nodes know, so an injected, replayed or reordered
frame is refused *before* its body is unpickled.

A burst travels as one :data:`BATCH` frame whose body is the burst's frames without their
MACs (``length u32 | kind u8 | body`` each): one sequence number and one MAC for all of
them, checked — MAC and structure — before the first of them is decoded. A batch is a frame
like any other, so the argument above holds for it unchanged.

A frame's MAC is one ``copy()`` of the direction's keyed state (copying skips BLAKE2b's key
setup, which costs more than hashing a small frame), one ``update`` with the sequence
number and kind packed together, one with the body. Measured on a quiet machine
(``benchmarks/README.md``, profile after): 0.33 us for a 70-byte body, against 0.44 us for
the three updates it replaced and 0.53 us for a one-shot keyed ``blake2b(data, key=...)``.
"""

from __future__ import annotations

import hashlib
import os
import struct

DATA = 1  # body: a pickled control tuple (see distribution.py)
TICK = 2  # body: empty; keeps a quiet connection alive
#: body: several frames without their MACs, ``length u32 | kind u8 | body`` each, in order.
#: A burst leaves as one batch: one sequence number and one MAC cover every frame in it, and
#: the batch is checked as a whole before the first of its frames is looked at.
BATCH = 5

HEADER = struct.Struct("!IB16s")
LENGTH = struct.Struct("!I")
#: A frame inside a batch: its length (kind and body) and its kind.
INNER = struct.Struct("!IB")
MAC_SIZE = 16
SEQ = struct.Struct("!Q")
# What a MAC covers before the body: the sequence number and the kind, in one update.
_SEQ_KIND = struct.Struct("!QB")

#: Largest frame body a node sends or accepts; bigger messages are refused to the sender.
MAX_MESSAGE = int(os.environ.get("NODELAB_MAX_MESSAGE", 16 * 1024 * 1024))


class FrameError(Exception):
    """A frame that is malformed, too large, or fails its MAC: the connection is closed."""


def mac_state(key: bytes) -> hashlib.blake2b:
    """The keyed MAC state of one direction; each frame's MAC starts from a copy of it
    (copying skips the key setup, which costs more than hashing a small frame)."""
    return hashlib.blake2b(key=key, digest_size=MAC_SIZE)


def mac(state: hashlib.blake2b, seq: int, kind: int, body: bytes | memoryview) -> bytes:
    """The MAC of frame number ``seq`` of this direction: over ``seq | kind | body``."""
    h = state.copy()
    h.update(_SEQ_KIND.pack(seq, kind))
    h.update(body)
    return h.digest()


def encode(state: hashlib.blake2b, seq: int, kind: int, body: bytes) -> bytes:
    """The whole frame, ``length | kind | mac | body``, ready for the socket."""
    return HEADER.pack(1 + MAC_SIZE + len(body), kind, mac(state, seq, kind, body)) + body


def encode_batch(state: hashlib.blake2b, seq: int, items: list[tuple[int, bytes]]) -> bytes:
    """One :data:`BATCH` frame carrying ``items`` (``(kind, body)`` pairs, in order)."""
    pack = INNER.pack
    parts = []
    for kind, body in items:
        parts.append(pack(1 + len(body), kind))
        parts.append(body)
    return encode(state, seq, BATCH, b"".join(parts))


def split_batch(body: bytes) -> list[tuple[int, bytes]]:
    """The ``(kind, body)`` frames of a checked batch; FrameError when it is malformed."""
    items = []
    unpack = INNER.unpack_from
    offset = 0
    size = len(body)
    while offset < size:
        if size - offset < INNER.size:
            raise FrameError("a batch that ends inside a frame's header")
        length, kind = unpack(body, offset)
        end = offset + 4 + length
        if length < 1 or end > size:
            raise FrameError(f"a frame of {length} bytes in a batch of {size}")
        if kind == BATCH:
            raise FrameError("a batch inside a batch")
        items.append((kind, body[offset + INNER.size : end]))
        offset = end
    return items
