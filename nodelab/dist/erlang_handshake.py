"""The Erlang distribution handshake (protocol version 6, OTP 23 and later), both roles.

Before two Erlang nodes exchange one message they run this handshake on the fresh TCP
connection. Every message is ``length u16 | tag | fields`` (``{packet, 2}`` in Erlang); the
initiator ``A`` dialled the acceptor ``B``::

    A (initiator)                                          B (acceptor)
      'N' flags u64, creation u32, name          ->        recv_name
                                                 <-        's' ok | ok_simultaneous | nok
                                                               | not_allowed | alive
      ('s' true | false, only after 'alive'      ->)
                                                 <-        'N' flags, challenge_B u32,
                                                               creation, name
      'r' challenge_A u32, md5(cookie ++ "challenge_B")  ->  checked: a wrong cookie is
                                                               refused (and logged) here
                                                 <-        'a' md5(cookie ++ "challenge_A")

The digest is ``erlang:md5([atom_to_list(Cookie) | integer_to_list(Challenge)])`` in OTP 25's
``dist_util``: the cookie's characters followed by the challenge in decimal, no separator.
After ``'a'`` both sides switch to 4-byte length frames, where a zero-length frame is a tick.

**Two nodelab nodes** use the same messages, so an Erlang node can never be confused, plus
three additions that only a nodelab peer ever sees:

* each side sets :data:`DFLAG_NODELAB` (bit 63, a bit no OTP release uses; OTP keeps the
  flags both sides share and ignores the others) in its ``'N'``. The bit is only a *claim*:
  anybody can set it;
* the acceptor answers a claimant's ``'N'`` with a trailer after its name (``nodelab1``, a
  32-byte nonce, its Python tag): the protocol says extra data there "must be accepted and
  ignored";
* when both claimed, ``'r'`` carries the initiator's nonce, its Python tag and
  HMAC-SHA256(cookie, transcript), and ``'a'`` the acceptor's HMAC over the same transcript.
  The transcript holds both names, both flag words, both creations, both challenges, both
  nonces and both tags, so a flag or trailer changed on the wire fails the proof.

A peer is a nodelab peer (:attr:`HandshakeResult.nodelab`) only once its HMAC proof has been
checked: before that nothing Python-specific is decoded, and a claimant whose MD5 digest is
right but whose proof is wrong is refused outright, never downgraded. The two session keys
for the MACs of nodelab's frames (:mod:`nodelab.dist.frames`) are HMACs of the cookie over
that transcript, one per direction. A peer that made no claim gets plain Erlang distribution.

Simultaneous connects follow OTP's rule (which nodelab's own handshake used the other way
round): the acceptor that is itself dialling the initiator answers ``nok`` when its own name
is greater (its own dial wins), else ``ok_simultaneous`` and gives its own dial up; see
:func:`simultaneous_status`. ``alive`` asks the initiator whether the connection the acceptor
still holds from its name is stale; the initiator answers ``true`` (go on) or ``false``.

One deadline (``time.monotonic()`` time) bounds all the reads of a handshake: a peer that
sends a byte now and then cannot hold a thread. Every connection of a node starts here
(:mod:`nodelab.dist.connections`); nodelab's older private handshake is gone.

One module, although long: it is one concept, the handshake, whose messages, flags and both
roles are read best against each other and against ``erl_dist_protocol``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("nodelab.dist.erlang_handshake")

# --- distribution flags (OTP 25's kernel/include/dist.hrl) ------------------------------

DFLAG_PUBLISHED = 0x01
DFLAG_ATOM_CACHE = 0x02
DFLAG_EXTENDED_REFERENCES = 0x04
DFLAG_DIST_MONITOR = 0x08
DFLAG_FUN_TAGS = 0x10
DFLAG_DIST_MONITOR_NAME = 0x20
DFLAG_HIDDEN_ATOM_CACHE = 0x40
DFLAG_NEW_FUN_TAGS = 0x80
DFLAG_EXTENDED_PIDS_PORTS = 0x100
DFLAG_EXPORT_PTR_TAG = 0x200
DFLAG_BIT_BINARIES = 0x400
DFLAG_NEW_FLOATS = 0x800
DFLAG_UNICODE_IO = 0x1000
DFLAG_DIST_HDR_ATOM_CACHE = 0x2000
DFLAG_SMALL_ATOM_TAGS = 0x4000
DFLAG_UTF8_ATOMS = 0x10000
DFLAG_MAP_TAG = 0x20000
DFLAG_BIG_CREATION = 0x40000
DFLAG_SEND_SENDER = 0x80000
DFLAG_BIG_SEQTRACE_LABELS = 0x100000
DFLAG_EXIT_PAYLOAD = 0x400000
DFLAG_FRAGMENTS = 0x800000
DFLAG_HANDSHAKE_23 = 0x1000000
DFLAG_UNLINK_ID = 0x2000000
#: "Every flag mandatory in OTP 25": 1 << 26 in OTP 25's dist.hrl (a doc page says 1 << 36).
DFLAG_MANDATORY_25_DIGEST = 0x4000000
DFLAG_SPAWN = 1 << 32
DFLAG_NAME_ME = 1 << 33
DFLAG_V4_NC = 1 << 34
DFLAG_ALIAS = 1 << 35
#: nodelab's claim "I speak nodelab frames after the handshake". OTP allocates the second
#: flag word from its lowest bit up (OTP 27 reached 1 << 37); this is the highest bit.
DFLAG_NODELAB = 1 << 63

FLAG_NAMES = {
    DFLAG_PUBLISHED: "PUBLISHED", DFLAG_ATOM_CACHE: "ATOM_CACHE",
    DFLAG_EXTENDED_REFERENCES: "EXTENDED_REFERENCES", DFLAG_DIST_MONITOR: "DIST_MONITOR",
    DFLAG_FUN_TAGS: "FUN_TAGS", DFLAG_DIST_MONITOR_NAME: "DIST_MONITOR_NAME",
    DFLAG_HIDDEN_ATOM_CACHE: "HIDDEN_ATOM_CACHE", DFLAG_NEW_FUN_TAGS: "NEW_FUN_TAGS",
    DFLAG_EXTENDED_PIDS_PORTS: "EXTENDED_PIDS_PORTS", DFLAG_EXPORT_PTR_TAG: "EXPORT_PTR_TAG",
    DFLAG_BIT_BINARIES: "BIT_BINARIES", DFLAG_NEW_FLOATS: "NEW_FLOATS",
    DFLAG_UNICODE_IO: "UNICODE_IO", DFLAG_DIST_HDR_ATOM_CACHE: "DIST_HDR_ATOM_CACHE",
    DFLAG_SMALL_ATOM_TAGS: "SMALL_ATOM_TAGS", DFLAG_UTF8_ATOMS: "UTF8_ATOMS",
    DFLAG_MAP_TAG: "MAP_TAG", DFLAG_BIG_CREATION: "BIG_CREATION",
    DFLAG_SEND_SENDER: "SEND_SENDER", DFLAG_BIG_SEQTRACE_LABELS: "BIG_SEQTRACE_LABELS",
    DFLAG_EXIT_PAYLOAD: "EXIT_PAYLOAD", DFLAG_FRAGMENTS: "FRAGMENTS",
    DFLAG_HANDSHAKE_23: "HANDSHAKE_23", DFLAG_UNLINK_ID: "UNLINK_ID",
    DFLAG_MANDATORY_25_DIGEST: "MANDATORY_25_DIGEST", DFLAG_SPAWN: "SPAWN",
    DFLAG_NAME_ME: "NAME_ME", DFLAG_V4_NC: "V4_NC", DFLAG_ALIAS: "ALIAS",
    DFLAG_NODELAB: "NODELAB",
}

#: What OTP 25 refuses a connection without (``MANDATORY_DFLAGS_25``); a peer may send
#: ``DFLAG_MANDATORY_25_DIGEST`` instead, which stands for all of them.
MANDATORY_25 = (DFLAG_EXTENDED_REFERENCES | DFLAG_FUN_TAGS | DFLAG_EXTENDED_PIDS_PORTS
                | DFLAG_NEW_FUN_TAGS | DFLAG_EXPORT_PTR_TAG | DFLAG_BIT_BINARIES
                | DFLAG_NEW_FLOATS | DFLAG_UTF8_ATOMS | DFLAG_MAP_TAG | DFLAG_BIG_CREATION
                | DFLAG_HANDSHAKE_23)

#: What nodelab requires of a peer: OTP 25's set, and the link protocol with UNLINK_ID
#: (mandatory from OTP 26; nodelab implements only that one).
REQUIRED_FLAGS = MANDATORY_25 | DFLAG_UNLINK_ID

#: What a nodelab node offers. Left out on purpose: the atom caches and FRAGMENTS (so a BEAM
#: sends every message as one plain pass-through frame), and NAME_ME (names are static).
#: V4_NC (mandatory from OTP 26) means pids with full 32-bit fields, V4_PORT_EXT and
#: references of up to 5 words may arrive.
DEFAULT_FLAGS = (DFLAG_PUBLISHED | MANDATORY_25 | DFLAG_MANDATORY_25_DIGEST
                 | DFLAG_DIST_MONITOR | DFLAG_DIST_MONITOR_NAME | DFLAG_UNICODE_IO
                 | DFLAG_SMALL_ATOM_TAGS | DFLAG_SEND_SENDER | DFLAG_BIG_SEQTRACE_LABELS
                 | DFLAG_EXIT_PAYLOAD | DFLAG_UNLINK_ID | DFLAG_SPAWN | DFLAG_V4_NC
                 | DFLAG_ALIAS | DFLAG_NODELAB)

# --- wire constants --------------------------------------------------------------------

#: Protocol versions a node registers with epmd (OTP 25 registers highest 6, lowest 5).
HIGHEST_VERSION = 6
LOWEST_VERSION = 5

#: Statuses (after ``'s'``).
OK = "ok"
OK_SIMULTANEOUS = "ok_simultaneous"
NOK = "nok"
NOT_ALLOWED = "not_allowed"
ALIVE = "alive"
STATUSES = (OK, OK_SIMULTANEOUS, NOK, NOT_ALLOWED, ALIVE)

NODELAB_MAGIC = b"nodelab1"
NONCE_SIZE = 32
PROOF_SIZE = 32
DIGEST_SIZE = 16
MAX_NAME = 1023
MAX_TAG = 255
MAX_MESSAGE = 2048

_NAME_HEAD = struct.Struct("!cQIH")  # 'N', flags, creation, name length
_CHALLENGE_HEAD = struct.Struct("!cQIIH")  # 'N', flags, challenge, creation, name length
_LEN = struct.Struct("!H")


class HandshakeError(Exception):
    """The handshake failed; the message says why in a few words. Close the socket."""


class ConnectionClosed(HandshakeError):
    """The peer closed the connection in the middle of the handshake."""


class Refused(HandshakeError):
    """The acceptor answered a status that ends the handshake: ``status`` is ``"nok"`` (its
    own dial wins: wait for that connection), ``"not_allowed"``, or ``"alive"`` (we said the
    connection it holds from us is still in use: keep using ours)."""

    def __init__(self, peer: str, status: str) -> None:
        self.peer = peer
        self.status = status
        super().__init__(f"{peer} refused the connection: {status}")


class MissingFlags(HandshakeError):
    """The peer lacks capabilities nodelab needs; ``missing`` names them as OTP does."""

    def __init__(self, message: str, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(message)


class CookieMismatch(HandshakeError):
    """The other side does not know our cookie (or refused our proof of it)."""


# --- flags -----------------------------------------------------------------------------

def expand_flags(flags: int) -> int:
    """``flags`` with ``DFLAG_MANDATORY_25_DIGEST`` expanded into the flags it stands for."""
    return flags | MANDATORY_25 if flags & DFLAG_MANDATORY_25_DIGEST else flags


def flag_names(flags: int) -> list[str]:
    """The names of the bits set in ``flags``, lowest first (``UNKNOWN<hex>`` for others)."""
    names = []
    bit = 1
    while bit <= flags:
        if flags & bit:
            names.append(FLAG_NAMES.get(bit, f"UNKNOWN<{bit:X}>"))
        bit <<= 1
    return names


def missing_flags(peer_flags: int, required: int = REQUIRED_FLAGS) -> list[str]:
    """The names of the ``required`` flags that ``peer_flags`` lacks ([] when none)."""
    return flag_names(required & ~expand_flags(peer_flags))


def simultaneous_status(my_name: str, peer_name: str) -> str:
    """OTP's rule when ``peer_name`` dials us while we dial it: the greater name's dial wins.

    Returns the status the acceptor sends: ``"nok"`` (our own dial goes on, the peer waits
    for it) or ``"ok_simultaneous"`` (the peer's dial goes on; give our own up).
    """
    return NOK if my_name > peer_name else OK_SIMULTANEOUS


# --- digests and proofs ----------------------------------------------------------------

def new_challenge() -> int:
    """A random 32-bit challenge (OTP mixes clocks and counters; a CSPRNG is better)."""
    return secrets.randbits(32)


def gen_digest(challenge: int, cookie: str) -> bytes:
    """MD5 of the cookie's characters followed by the challenge in decimal, as OTP does."""
    return hashlib.md5(cookie.encode("latin-1") + str(challenge & 0xFFFFFFFF).encode()).digest()


def _lp(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


@dataclass(frozen=True)
class Transcript:
    initiator: str
    acceptor: str
    initiator_flags: int
    acceptor_flags: int
    initiator_creation: int
    acceptor_creation: int
    acceptor_challenge: int
    initiator_challenge: int
    initiator_nonce: bytes
    acceptor_nonce: bytes
    initiator_tag: str
    acceptor_tag: str

    def data(self, label: bytes) -> bytes:
        return b"".join([
            _lp(label), _lp(self.initiator.encode("latin-1")),
            _lp(self.acceptor.encode("latin-1")),
            struct.pack("!QQIIII", self.initiator_flags, self.acceptor_flags,
                        self.initiator_creation, self.acceptor_creation,
                        self.acceptor_challenge, self.initiator_challenge),
            _lp(self.initiator_nonce), _lp(self.acceptor_nonce),
            _lp(self.initiator_tag.encode()), _lp(self.acceptor_tag.encode())])

    def mac(self, cookie: str, label: bytes) -> bytes:
        return hmac.digest(cookie.encode("latin-1"), self.data(label), "sha256")


def session_keys(cookie: str, transcript: Transcript) -> tuple[bytes, bytes]:
    """Keys for frames initiator->acceptor and acceptor->initiator."""
    return (transcript.mac(cookie, b"nodelab key initiator->acceptor"),
            transcript.mac(cookie, b"nodelab key acceptor->initiator"))


# --- messages --------------------------------------------------------------------------

@dataclass
class NameMessage:
    """The initiator's ``'N'``: who dials, with which capabilities."""

    name: str
    flags: int
    creation: int

    @property
    def claims_nodelab(self) -> bool:
        return bool(self.flags & DFLAG_NODELAB)

    @property
    def missing(self) -> list[str]:
        return missing_flags(self.flags)


@dataclass
class ChallengeMessage:
    """The acceptor's ``'N'`` with its challenge; ``nonce`` and ``python_tag`` come from the
    nodelab trailer (``None`` when there was none)."""

    name: str
    flags: int
    creation: int
    challenge: int
    nonce: bytes | None = None
    python_tag: str | None = None

    @property
    def claims_nodelab(self) -> bool:
        return bool(self.flags & DFLAG_NODELAB) and self.nonce is not None


@dataclass
class ChallengeReply:
    """The initiator's ``'r'``; the last three fields only from a nodelab initiator."""

    challenge: int
    digest: bytes
    nonce: bytes | None = None
    python_tag: str | None = None
    proof: bytes | None = None


@dataclass
class HandshakeResult:
    """What a finished handshake established.

    ``flags`` are the peer's own flags (MANDATORY_25_DIGEST expanded), ``negotiated`` the
    ones both sides share (what OTP uses). ``nodelab`` is true only when the peer proved the
    cookie with the nodelab HMAC; then ``send_key``/``recv_key`` key the frame MACs of each
    direction and ``python_tag`` is the peer's Python.
    """

    name: str
    flags: int
    creation: int
    negotiated: int
    initiator: bool
    status: str = OK
    nodelab: bool = False
    send_key: bytes = field(default=b"", repr=False)
    recv_key: bytes = field(default=b"", repr=False)
    python_tag: str = ""


# --- socket helpers --------------------------------------------------------------------

def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError("the handshake took too long")
            sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(chunks))
        except TimeoutError:
            raise HandshakeError("the handshake took too long") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed("the connection closed during the handshake")
        chunks += chunk
    return bytes(chunks)


def send_message(sock: socket.socket, payload: bytes) -> None:
    """Send one handshake message (``length u16 | payload``)."""
    sock.sendall(_LEN.pack(len(payload)) + payload)


def recv_message(sock: socket.socket, deadline: float | None) -> bytes:
    """Read one handshake message; too large or empty ones are refused."""
    (size,) = _LEN.unpack(_recv_exact(sock, 2, deadline))
    if size == 0 or size > MAX_MESSAGE:
        raise HandshakeError(f"handshake message of {size} bytes")
    return _recv_exact(sock, size, deadline)


def _decode_name(raw: bytes) -> str:
    try:
        name = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HandshakeError("malformed node name") from None
    alive, at, host = name.partition("@")
    if not at or not alive or not host or "@" in host:
        raise HandshakeError(f"malformed node name {name!r}")
    return name


def _split_name(data: bytes, head: struct.Struct) -> tuple[tuple, str, bytes]:
    if len(data) < head.size:
        raise HandshakeError("truncated handshake message")
    fields = head.unpack_from(data)
    size = fields[-1]
    end = head.size + size
    if size == 0 or size > MAX_NAME or end > len(data):
        raise HandshakeError("truncated node name")
    return fields, _decode_name(data[head.size:end]), data[end:]


# --- initiator -------------------------------------------------------------------------

def encode_name(name: str, flags: int, creation: int) -> bytes:
    raw = name.encode("latin-1")
    return _NAME_HEAD.pack(b"N", flags, creation, len(raw)) + raw


def send_name(sock: socket.socket, name: str, flags: int, creation: int) -> None:
    """Step 1 (initiator): ``'N'`` with our flags, creation and full name."""
    send_message(sock, encode_name(name, flags, creation))


def recv_status(sock: socket.socket, deadline: float | None) -> str:
    """Step 2 (initiator): the acceptor's status, one of :data:`STATUSES`."""
    data = recv_message(sock, deadline)
    if data[:1] != b"s":
        raise HandshakeError("expected a status message")
    status = data[1:].decode("latin-1")
    if status.startswith("named:"):
        raise HandshakeError("the peer gave us a dynamic name, which we did not ask for")
    if status not in STATUSES:
        raise HandshakeError(f"unknown status {status[:40]!r}")
    return status


def send_status(sock: socket.socket, status: str) -> None:
    """Send ``'s'`` + status (acceptor), or ``true``/``false`` after ``alive`` (initiator)."""
    send_message(sock, b"s" + status.encode("latin-1"))


def parse_challenge(data: bytes) -> ChallengeMessage:
    if data[:1] != b"N":
        raise HandshakeError("expected a challenge ('N') message")
    (_, flags, challenge, creation, _), name, rest = _split_name(data, _CHALLENGE_HEAD)
    message = ChallengeMessage(name, flags, creation, challenge)
    if flags & DFLAG_NODELAB and rest.startswith(NODELAB_MAGIC):
        rest = rest[len(NODELAB_MAGIC):]
        nonce, tag = rest[:NONCE_SIZE], rest[NONCE_SIZE:]
        if len(nonce) != NONCE_SIZE or not tag or tag[0] != len(tag) - 1:
            raise HandshakeError("malformed nodelab challenge")
        message.nonce = nonce
        message.python_tag = tag[1:].decode("ascii", "replace")
    return message


def recv_challenge(sock: socket.socket, deadline: float | None) -> ChallengeMessage:
    """Step 3 (initiator): the acceptor's ``'N'`` with its flags, challenge and name."""
    return parse_challenge(recv_message(sock, deadline))


def encode_challenge_reply(reply: ChallengeReply) -> bytes:
    data = b"r" + struct.pack("!I", reply.challenge) + reply.digest
    if reply.proof is not None:
        tag = (reply.python_tag or "").encode("ascii")
        data += reply.nonce + bytes((len(tag),)) + tag + reply.proof
    return data


def send_challenge_reply(sock: socket.socket, reply: ChallengeReply) -> None:
    """Step 4 (initiator): ``'r'`` + our challenge + the digest of theirs (+ nodelab proof)."""
    send_message(sock, encode_challenge_reply(reply))


def recv_challenge_ack(sock: socket.socket, peer: str, challenge: int, cookie: str,
                       deadline: float | None,
                       transcript: Transcript | None = None) -> bool:
    """Step 5 (initiator): ``'a'`` + the digest of our challenge; True when it carried a
    valid nodelab proof over ``transcript``. A wrong digest is logged as OTP logs it."""
    try:
        data = recv_message(sock, deadline)
    except ConnectionClosed:
        raise CookieMismatch(f"{peer} closed the connection after our challenge reply: "
                             "it does not accept our cookie") from None
    size = 1 + DIGEST_SIZE + (PROOF_SIZE if transcript is not None else 0)
    if data[:1] != b"a" or len(data) != size:
        raise HandshakeError("malformed challenge ack")
    if not hmac.compare_digest(data[1:1 + DIGEST_SIZE], gen_digest(challenge, cookie)):
        log.error("** Connection attempt to node %s cancelled. Invalid challenge ack. **", peer)
        raise CookieMismatch(f"{peer} does not know our cookie (invalid challenge ack)")
    if transcript is None:
        return False
    if not hmac.compare_digest(data[1 + DIGEST_SIZE:], transcript.mac(cookie, b"nodelab ack")):
        log.error("** Connection attempt to node %s cancelled. Invalid challenge ack. **", peer)
        raise CookieMismatch(f"{peer} sent an invalid nodelab proof")
    return True


def initiate(sock: socket.socket, cookie: str, my_name: str, peer_name: str, creation: int,
             *, flags: int = DEFAULT_FLAGS, python_tag: str = "",
             old_connection_is_stale: Callable[[], bool] | None = None,
             deadline: float | None = None) -> HandshakeResult:
    """Run the initiator's side on a connected socket and return what it established.

    ``old_connection_is_stale()`` answers ``alive`` (default: stale, as a node that just
    started would say). Raises :class:`Refused` for ``nok``/``not_allowed`` and for ``alive``
    answered "still in use", :class:`CookieMismatch` when the acceptor closes the connection
    after our digest (what a BEAM with another cookie does) or its own digest is wrong,
    :class:`MissingFlags` when it lacks a required capability, and :class:`HandshakeError`
    for anything malformed or late.
    """
    send_name(sock, my_name, flags, creation)
    status = recv_status(sock, deadline)
    if status == ALIVE:
        stale = old_connection_is_stale() if old_connection_is_stale is not None else True
        send_status(sock, "true" if stale else "false")
        if not stale:
            raise Refused(peer_name, ALIVE)
    elif status in (NOK, NOT_ALLOWED):
        raise Refused(peer_name, status)
    challenge = recv_challenge(sock, deadline)
    if challenge.name != peer_name:
        raise HandshakeError(f"reached {challenge.name} instead of {peer_name}")
    peer_flags = expand_flags(challenge.flags)
    missing = missing_flags(peer_flags)
    if missing:
        message = (f"** {my_name}: Connection attempt to node {peer_name} aborted since it "
                   f"cannot handle {_erlang_list(missing)}.**")
        log.error("%s", message)
        raise MissingFlags(message, missing)
    python_tag = _check_tag(python_tag)
    my_challenge = new_challenge()
    digest = gen_digest(challenge.challenge, cookie)
    transcript = None
    if flags & DFLAG_NODELAB and challenge.claims_nodelab:
        nonce = secrets.token_bytes(NONCE_SIZE)
        transcript = Transcript(my_name, peer_name, flags, challenge.flags, creation,
                                 challenge.creation, challenge.challenge, my_challenge,
                                 nonce, challenge.nonce or b"",
                                 python_tag, challenge.python_tag or "")
        reply = ChallengeReply(my_challenge, digest, nonce, python_tag,
                               transcript.mac(cookie, b"nodelab reply"))
    else:
        reply = ChallengeReply(my_challenge, digest)
    send_challenge_reply(sock, reply)
    nodelab = recv_challenge_ack(sock, peer_name, my_challenge, cookie, deadline, transcript)
    result = HandshakeResult(peer_name, peer_flags, challenge.creation,
                             expand_flags(flags) & peer_flags, initiator=True, status=status)
    if nodelab and transcript is not None:
        result.nodelab = True
        result.send_key, result.recv_key = session_keys(cookie, transcript)
        result.python_tag = transcript.acceptor_tag
    return result


# --- acceptor --------------------------------------------------------------------------

def parse_name(data: bytes) -> NameMessage:
    if data[:1] == b"n":
        raise HandshakeError("the peer speaks the version 5 handshake only (OTP 22 or older)")
    if data[:1] != b"N":
        raise HandshakeError("not an Erlang distribution handshake")
    (_, flags, creation, _), name, _rest = _split_name(data, _NAME_HEAD)
    return NameMessage(name, flags, creation)


def recv_name(sock: socket.socket, deadline: float | None) -> NameMessage:
    """Step 1 (acceptor): read and strictly parse the initiator's ``'N'``."""
    return parse_name(recv_message(sock, deadline))


def ask_whether_stale(sock: socket.socket, deadline: float | None) -> bool:
    """Send ``alive`` (we hold a connection from this name); True when the initiator says
    ``true``: the old connection is stale and the handshake goes on."""
    send_status(sock, ALIVE)
    data = recv_message(sock, deadline)
    if data == b"strue":
        return True
    if data == b"sfalse":
        return False
    raise HandshakeError("malformed answer to alive")


def encode_challenge(name: str, flags: int, creation: int, challenge: int,
                     nonce: bytes | None = None, python_tag: str = "") -> bytes:
    raw = name.encode("latin-1")
    data = _CHALLENGE_HEAD.pack(b"N", flags, challenge, creation, len(raw)) + raw
    if nonce is not None:
        tag = python_tag.encode("ascii")
        data += NODELAB_MAGIC + nonce + bytes((len(tag),)) + tag
    return data


def send_challenge(sock: socket.socket, name: str, flags: int, creation: int, challenge: int,
                   nonce: bytes | None = None, python_tag: str = "") -> None:
    """Step 2 (acceptor): ``'N'`` with our flags, challenge, creation and name, plus the
    nodelab trailer when ``nonce`` is given (only to a claimant)."""
    send_message(sock, encode_challenge(name, flags, creation, challenge, nonce, python_tag))


def parse_challenge_reply(data: bytes, nodelab: bool) -> ChallengeReply:
    """Parse ``'r'``. With ``nodelab`` (the initiator claimed it and got our trailer) a reply
    may carry the nodelab fields; one without them is a plain Erlang reply."""
    base = 1 + 4 + DIGEST_SIZE
    if data[:1] != b"r" or len(data) < base:
        raise HandshakeError("malformed challenge reply")
    (challenge,) = struct.unpack_from("!I", data, 1)
    reply = ChallengeReply(challenge, data[5:base])
    if len(data) == base:
        return reply
    if not nodelab:
        raise HandshakeError("malformed challenge reply")
    rest = data[base:]
    if len(rest) < NONCE_SIZE + 1 + PROOF_SIZE:
        raise HandshakeError("malformed nodelab challenge reply")
    size = rest[NONCE_SIZE]
    if len(rest) != NONCE_SIZE + 1 + size + PROOF_SIZE:
        raise HandshakeError("malformed nodelab challenge reply")
    reply.nonce = rest[:NONCE_SIZE]
    reply.python_tag = rest[NONCE_SIZE + 1:NONCE_SIZE + 1 + size].decode("ascii", "replace")
    reply.proof = rest[NONCE_SIZE + 1 + size:]
    return reply


def recv_challenge_reply(sock: socket.socket, peer: str, challenge: int, cookie: str,
                         deadline: float | None, nodelab: bool = False) -> ChallengeReply:
    """Step 3 (acceptor): ``'r'``; its digest must be that of our ``challenge``. A wrong one
    is logged as OTP logs it (one line) and raises :class:`CookieMismatch`. The nodelab
    proof, when ``nodelab``, is checked by the caller, who has the whole transcript."""
    reply = parse_challenge_reply(recv_message(sock, deadline), nodelab)
    if not hmac.compare_digest(reply.digest, gen_digest(challenge, cookie)):
        _log_invalid_reply(peer)
        raise CookieMismatch(f"{peer} does not know our cookie (invalid challenge reply)")
    return reply


def _log_invalid_reply(peer: str) -> None:
    log.error("** Connection attempt from node %s rejected. Invalid challenge reply. **", peer)


def send_challenge_ack(sock: socket.socket, digest: bytes, proof: bytes | None = None) -> None:
    """Step 4 (acceptor): ``'a'`` + the digest of the initiator's challenge (+ our proof)."""
    send_message(sock, b"a" + digest + (proof or b""))


def _check_tag(python_tag: str) -> str:
    if len(python_tag) > MAX_TAG or not python_tag.isascii():
        raise ValueError(f"a Python tag is at most {MAX_TAG} ASCII characters")
    return python_tag


def _erlang_list(names: list[str]) -> str:
    return "[" + ",".join(f'"{name}"' for name in names) + "]"


def accept(sock: socket.socket, cookie: str, my_name: str, hello: NameMessage, creation: int,
           *, status: str | None = OK, flags: int = DEFAULT_FLAGS, python_tag: str = "",
           wait_before_ack: Callable[[], None] | None = None,
           deadline: float | None = None) -> HandshakeResult:
    """The acceptor's side after :func:`recv_name` (and after the caller decided).

    ``status`` is what to send (``ok`` or ``ok_simultaneous``), or None when it was sent
    already (``alive`` answered ``true``). A peer lacking a required flag gets
    ``not_allowed`` (when no status went out yet) and :class:`MissingFlags`; a wrong cookie
    is logged in OTP's words and raises :class:`CookieMismatch`. ``wait_before_ack`` runs
    after the peer proved the cookie and before our ack, where OTP waits for an old
    connection to go down after ``alive``.
    """
    missing = hello.missing
    if missing:
        if status is not None:
            send_status(sock, NOT_ALLOWED)
        message = (f"** {my_name}: Connection attempt from node {hello.name} rejected since "
                   f"it cannot handle {_erlang_list(missing)}.**")
        log.error("%s", message)
        raise MissingFlags(message, missing)
    if status is not None:
        send_status(sock, status)
    challenge = new_challenge()
    nodelab = bool(flags & DFLAG_NODELAB) and hello.claims_nodelab
    nonce = secrets.token_bytes(NONCE_SIZE) if nodelab else None
    tag = _check_tag(python_tag)
    send_challenge(sock, my_name, flags, creation, challenge, nonce, tag)
    reply = recv_challenge_reply(sock, hello.name, challenge, cookie, deadline, nodelab)
    transcript = None
    if reply.proof is not None:
        transcript = Transcript(hello.name, my_name, hello.flags, flags, hello.creation,
                                 creation, challenge, reply.challenge, reply.nonce or b"",
                                 nonce or b"", reply.python_tag or "", tag)
        if not hmac.compare_digest(reply.proof or b"", transcript.mac(cookie, b"nodelab reply")):
            _log_invalid_reply(hello.name)
            raise CookieMismatch(f"{hello.name} sent an invalid nodelab proof")
    if wait_before_ack is not None:
        wait_before_ack()
    send_challenge_ack(sock, gen_digest(reply.challenge, cookie),
                       transcript.mac(cookie, b"nodelab ack") if transcript else None)
    peer_flags = expand_flags(hello.flags)
    result = HandshakeResult(hello.name, peer_flags, hello.creation,
                             expand_flags(flags) & peer_flags, initiator=False,
                             status=status or OK)
    if transcript is not None:
        result.nodelab = True
        forward, backward = session_keys(cookie, transcript)
        result.send_key, result.recv_key = backward, forward
        result.python_tag = transcript.initiator_tag
    return result


def accept_connection(sock: socket.socket, cookie: str, my_name: str, creation: int,
                      decide: Callable[[NameMessage], str] | None = None, *,
                      flags: int = DEFAULT_FLAGS, python_tag: str = "",
                      deadline: float | None = None) -> HandshakeResult:
    """The whole acceptor side: read the name, ask ``decide(hello)`` for the status (by
    default ``ok``), then go on as it says.

    ``decide`` returns ``ok``, ``ok_simultaneous``, ``nok`` or ``not_allowed`` (sent, then
    :class:`Refused`), or ``alive`` (the initiator is asked whether our connection from it is
    stale; "still in use" raises :class:`Refused`).
    """
    hello = recv_name(sock, deadline)
    status = decide(hello) if decide is not None else OK
    if status in (NOK, NOT_ALLOWED):
        send_status(sock, status)
        raise Refused(hello.name, status)
    if status == ALIVE:
        if hello.missing:
            return accept(sock, cookie, my_name, hello, creation, flags=flags,
                          python_tag=python_tag, deadline=deadline)  # refused: not_allowed
        if not ask_whether_stale(sock, deadline):
            raise Refused(hello.name, ALIVE)
        status = None
    elif status not in (OK, OK_SIMULTANEOUS):
        raise ValueError(f"decide() returned {status!r}")
    return accept(sock, cookie, my_name, hello, creation, status=status, flags=flags,
                  python_tag=python_tag, deadline=deadline)
