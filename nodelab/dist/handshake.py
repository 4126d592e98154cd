"""The cookie handshake that two nodes run before they trust each other.

Nothing the peer sends is unpickled here: the four handshake messages are fixed binary
layouts, parsed strictly and limited in size. Both sides prove they know the cookie with an
HMAC over fresh random nonces from each side, so a recorded handshake cannot be replayed,
and the cookie itself never crosses the wire::

    initiator                                   acceptor
      HELLO     name, nonce_a, python tag  ->
                                           <-   CHALLENGE  status, name, nonce_b
      REPLY     HMAC(cookie, nonce_b...)   ->   (checked: a wrong cookie is refused here)
                                           <-   ACK        HMAC(cookie, nonce_a...)

The two session keys for the frames' MACs are derived from the cookie and both nonces.

Like the BEAM's handshake, the first answer may instead be a status without a challenge:
``NOK`` when both nodes dial each other at once and the acceptor's own dial wins, or
``ALIVE`` when the acceptor still holds a connection from the initiator's name. The initiator
then says in one byte whether that old connection is stale (it holds no connection of its
own: the old one is half-open, or it is a new incarnation of the node). Only on "stale" does
the acceptor go on with the challenge, and it drops the old connection only after the new one
proved the cookie, so nobody without the cookie can knock a connection down.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
import time
from collections.abc import Callable

MAGIC = b"NLB1"
NONCE_SIZE = 32
DIGEST_SIZE = 32
MAX_HANDSHAKE = 600

#: CHALLENGE statuses.
OK = 0
NOK = 1  # both nodes connect to each other at once; the other connection wins
NOT_ALLOWED = 2  # e.g. the name is not a valid node name
ALIVE = 3  # the acceptor holds a connection from this name: is it stale?

STALE = b"\x01"
STILL_IN_USE = b"\x00"


class HandshakeError(Exception):
    """The peer did not complete the handshake; ``reason`` says why, in a few words."""


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!H", len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        if deadline is not None:
            # One deadline for the whole handshake, not one timeout per read: a peer that
            # sends a byte now and then must not hold the acceptor for ever.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError("the handshake took too long")
            sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(chunks))
        except TimeoutError:
            raise HandshakeError("the handshake took too long") from None
        if not chunk:
            raise HandshakeError("connection closed during the handshake")
        chunks += chunk
    return bytes(chunks)


def _recv(sock: socket.socket, deadline: float | None) -> bytes:
    (size,) = struct.unpack("!H", _recv_exact(sock, 2, deadline))
    if size > MAX_HANDSHAKE:
        raise HandshakeError(f"handshake message of {size} bytes is too large")
    return _recv_exact(sock, size, deadline)


def _pack_name(name: str) -> bytes:
    raw = name.encode("ascii")
    return bytes((len(raw),)) + raw


def _unpack_name(data: bytes, offset: int) -> tuple[str, int]:
    if offset >= len(data):
        raise HandshakeError("malformed handshake: missing node name")
    size = data[offset]
    raw = data[offset + 1 : offset + 1 + size]
    if len(raw) != size or size == 0:
        raise HandshakeError("malformed handshake: truncated node name")
    try:
        return raw.decode("ascii"), offset + 1 + size
    except UnicodeDecodeError:
        raise HandshakeError("malformed handshake: node name is not ASCII") from None


def _proof(cookie: str, label: bytes, *parts: bytes) -> bytes:
    return hmac.digest(cookie.encode(), label + b"".join(parts), "sha256")


def session_keys(cookie: str, initiator: str, acceptor: str, nonce_a: bytes,
                 nonce_b: bytes) -> tuple[bytes, bytes]:
    """Keys for frames initiator->acceptor and acceptor->initiator."""
    names = initiator.encode() + b"\0" + acceptor.encode()
    forward = _proof(cookie, b"nodelab key a->b", nonce_a, nonce_b, names)
    backward = _proof(cookie, b"nodelab key b->a", nonce_a, nonce_b, names)
    return forward, backward


class Hello:
    """What the acceptor learns from the first message: who calls, with which Python."""

    def __init__(self, name: str, nonce: bytes, python_tag: str) -> None:
        self.name = name
        self.nonce = nonce
        self.python_tag = python_tag


def _status(data: bytes) -> int:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 1:
        raise HandshakeError("the peer is not a nodelab node")
    return data[len(MAGIC)]


def initiate(sock: socket.socket, cookie: str, my_name: str, peer_name: str,
             python_tag: str, *,
             old_connection_is_stale: Callable[[], bool] | None = None,
             deadline: float | None = None) -> tuple[int, str, bytes, bytes]:
    """Run the initiator's side; return (status, peer python tag, send key, receive key).

    ``deadline`` (``time.monotonic()`` time) bounds the whole handshake; each function here
    takes one. When the peer answers ``ALIVE``, ``old_connection_is_stale()`` decides the answer (by
    default: stale, as a node that just started would say); if it is not stale, the status
    returned is ``ALIVE`` and the caller uses the connection it already has.

    Raises :class:`HandshakeError` when the peer refuses us (a wrong cookie looks like a
    closed connection here, as on the BEAM, where only the accepting node logs it).
    """
    nonce_a = os.urandom(NONCE_SIZE)
    _send(sock, MAGIC + _pack_name(my_name) + nonce_a + _pack_name(python_tag))
    data = _recv(sock, deadline)
    status = _status(data)
    if status == ALIVE:
        stale = old_connection_is_stale() if old_connection_is_stale is not None else True
        _send(sock, STALE if stale else STILL_IN_USE)
        if not stale:
            return ALIVE, "", b"", b""
        data = _recv(sock, deadline)
        status = _status(data)
        if status == ALIVE:
            raise HandshakeError("the peer asked twice whether its connection is stale")
    if status != OK:
        return status, "", b"", b""
    name, offset = _unpack_name(data, len(MAGIC) + 1)
    nonce_b = data[offset : offset + NONCE_SIZE]
    if len(nonce_b) != NONCE_SIZE:
        raise HandshakeError("malformed challenge")
    peer_tag, _ = _unpack_name(data, offset + NONCE_SIZE)
    if name != peer_name:
        raise HandshakeError(f"reached {name} instead of {peer_name}")
    names = my_name.encode() + b"\0" + peer_name.encode()
    _send(sock, _proof(cookie, b"nodelab reply", nonce_b, nonce_a, names))
    ack = _recv(sock, deadline)
    if not hmac.compare_digest(ack, _proof(cookie, b"nodelab ack", nonce_a, nonce_b, names)):
        raise HandshakeError("the peer could not prove it knows the cookie")
    send_key, recv_key = session_keys(cookie, my_name, peer_name, nonce_a, nonce_b)
    return OK, peer_tag, send_key, recv_key


def read_hello(sock: socket.socket, deadline: float | None = None) -> Hello:
    """The acceptor's first step: read and strictly parse HELLO."""
    data = _recv(sock, deadline)
    if not data.startswith(MAGIC):
        raise HandshakeError("not a nodelab handshake")
    name, offset = _unpack_name(data, len(MAGIC))
    nonce = data[offset : offset + NONCE_SIZE]
    if len(nonce) != NONCE_SIZE:
        raise HandshakeError("malformed hello")
    tag, _ = _unpack_name(data, offset + NONCE_SIZE)
    return Hello(name, nonce, tag)


def refuse(sock: socket.socket, status: int) -> None:
    _send(sock, MAGIC + bytes((status,)))


def ask_whether_stale(sock: socket.socket, deadline: float | None = None) -> bool:
    """The acceptor holds a connection from this name: ask the initiator if it is stale."""
    _send(sock, MAGIC + bytes((ALIVE,)))
    answer = _recv(sock, deadline)
    if answer not in (STALE, STILL_IN_USE):
        raise HandshakeError("malformed answer to ALIVE")
    return answer == STALE


def accept(sock: socket.socket, cookie: str, my_name: str, hello: Hello,
           python_tag: str, deadline: float | None = None) -> tuple[bytes, bytes]:
    """The acceptor's remaining steps; return (send key, receive key).

    Raises :class:`HandshakeError` with reason ``"invalid challenge reply"`` on a wrong cookie.
    """
    nonce_b = os.urandom(NONCE_SIZE)
    _send(sock, MAGIC + bytes((OK,)) + _pack_name(my_name) + nonce_b + _pack_name(python_tag))
    reply = _recv(sock, deadline)
    names = hello.name.encode() + b"\0" + my_name.encode()
    expected = _proof(cookie, b"nodelab reply", nonce_b, hello.nonce, names)
    if not hmac.compare_digest(reply, expected):
        raise HandshakeError("invalid challenge reply")
    _send(sock, _proof(cookie, b"nodelab ack", hello.nonce, nonce_b, names))
    forward, backward = session_keys(cookie, hello.name, my_name, hello.nonce, nonce_b)
    return backward, forward
