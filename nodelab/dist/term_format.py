"""The External Term Format: Erlang terms as bytes, the way BEAM nodes send them.

Two Erlang nodes never share memory. When a process on one node sends ``{:ping, self(), 42}``
to a process on another, the runtime turns the term into bytes with ``term_to_binary``,
writes them to the connection, and the other node turns them back with ``binary_to_term``.
That byte layout is the *External Term Format* (ETF), documented in ERTS's ``erl_ext_dist``.
A nodelab node that joins a real Erlang or Elixir cluster speaks it too: this module is the
translation between Python values and those bytes.

Every encoded term starts with the version byte ``131``, then one *tag* byte that says what
follows, then the data::

    >>> encode((Atom("ping"), 42))
    b'\\x83h\\x02w\\x04pinga*'

``h`` (104) is a tuple of two elements, ``w`` (119) an atom of four bytes, ``a`` (97) an
integer that fits in one byte. Containers hold their elements one after the other, each with
its own tag, so decoding is a walk from left to right.

How Python values and Erlang terms correspond (both ways unless a row says otherwise):

=============================  ==============================  ================================
Erlang / Elixir                Python                          tags on the wire
=============================  ==============================  ================================
atom ``:hi``                   ``Atom("hi")`` (a ``str``)      SMALL_ATOM_UTF8_EXT, ATOM_UTF8_EXT
                                                               (decoded too: ATOM_EXT,
                                                               SMALL_ATOM_EXT, Latin-1)
``true``, ``false``            ``True``, ``False``             atoms
``nil``                        ``None``                        atom
binary ``"sup?"`` (UTF-8)      ``str``                         BINARY_EXT
binary that is not UTF-8       ``bytes`` (``bytearray`` and    BINARY_EXT
                               ``memoryview`` encode too)
bitstring ``<<1::3>>``         ``BitBinary(b"\\x20", 3)``       BIT_BINARY_EXT
integer, any size              ``int``                         SMALL_INTEGER_EXT, INTEGER_EXT,
                                                               SMALL_BIG_EXT, LARGE_BIG_EXT
float                          ``float`` (finite only)         NEW_FLOAT_EXT (decoded too:
                                                               FLOAT_EXT)
tuple ``{:ok, 1}``             ``tuple``                       SMALL_TUPLE_EXT, LARGE_TUPLE_EXT
list ``[1, :a]``, ``[]``       ``list``                        LIST_EXT, NIL_EXT
charlist ``'abc'``             ``[97, 98, 99]`` (a ``list``    STRING_EXT (a list of 0..255)
                               of ``int``)
improper list ``[1 | :t]``     ``ImproperList([1], :t)``       LIST_EXT whose tail is not NIL
map ``%{a: 1}``                ``dict``                        MAP_EXT
pid ``#PID<0.112.0>``          ``Pid``                         NEW_PID_EXT (decoded too: PID_EXT)
reference                      ``Ref``                         NEWER_REFERENCE_EXT (decoded too:
                                                               NEW_REFERENCE_EXT, REFERENCE_EXT)
port ``#Port<0.5>``            ``Port``                        NEW_PORT_EXT, V4_PORT_EXT
                                                               (decoded too: PORT_EXT)
``&Kate.hi/0``, ``fun m:f/1``  ``Export(module, fun, arity)``  EXPORT_EXT
``fn x -> x end``              ``Fun`` (opaque: its bytes)     NEW_FUN_EXT
=============================  ==============================  ================================

Three things in that table surprise Python programmers:

* An ``Atom`` *is* a ``str``: ``Atom("ok") == "ok"`` and both hash alike, so a receive
  pattern written with ``"ok"`` matches the atom ``:ok``. The price: a map that has both
  ``:a`` and ``"a"`` as keys (or ``1`` and ``1.0``, or ``true`` and ``1``) has no ``dict``
  form, and decoding it raises :class:`TermDecodeError` rather than drop a value silently.
* A charlist stays a list of code points. ``'abc'`` in Elixir *is* ``[97, 98, 99]``; guessing
  "this list of small integers was meant as text" would turn ``[7, 8, 9]`` into ``"\\a\\b\\t"``.
  Python sends text as ``str``, which is an Elixir string (a UTF-8 binary).
* Map keys must be hashable in Python: a map whose key is a list or a map cannot be decoded.

A value with no Erlang form (a function, a set, an arbitrary object, ``nan``) raises
:class:`TermEncodeError`, a ``TypeError`` whose message says what to send instead. Bytes that
are not a well-formed term raise :class:`TermDecodeError`, a ``ValueError``, and nothing else:
the bytes come from another machine, so every length is checked against what is left of the
buffer *before* anything is allocated, and these limits hold (the BEAM's own where it has one):

* nesting: at most ``MAX_DEPTH`` (500) containers deep, either way, so a hostile
  ``[[[[...]]]]`` or a list that contains itself cannot exhaust Python's stack;
* atoms: at most 255 characters (Erlang's limit);
* integers: at most ``MAX_BIG_BYTES`` (4,194,296 bytes, i.e. 33,554,368 bits) of magnitude,
  the largest integer OTP 25 itself accepts in ``binary_to_term``;
* compressed terms (``term_to_binary(t, [:compressed])``): at most ``MAX_INFLATED_SIZE``
  bytes once inflated, checked while inflating.

Messages between connected nodes come in frames whose body holds two terms: a *control
message* (``{2, :"", to_pid}`` for a send, ``{1, from, to}`` for a link...) and, for sends and
exits, the payload. :func:`decode_dist_message` and :func:`encode_dist_message` handle that
framing; see their docstrings for what OTP 25 puts in front of the terms.

Why a codec of our own: ``erlpack`` (C) cannot encode or decode pids at all, and
``erlang-py`` encodes a ``str`` as a charlist, refuses a buffer holding two terms, and is
several times slower. ``benchmarks/term_format_bench.py`` measures both; the figures are in
``docs/erlang_terms.md``.

One module, although long: it is one concept, the codec, and its encoders and decoders are
one dispatch table each, kept side by side so that every tag's two directions can be read
together.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

from nodelab.runtime.pids import Pid, Ref
from nodelab.runtime.pids import _local as _LOCAL_NODE  # this node's name and creation

__all__ = [
    "MAX_BIG_BYTES",
    "MAX_DEPTH",
    "MAX_INFLATED_SIZE",
    "NO_MESSAGE",
    "PASS_THROUGH",
    "VERSION",
    "Atom",
    "AtomCache",
    "BitBinary",
    "Export",
    "Fun",
    "ImproperList",
    "Port",
    "TermDecodeError",
    "TermEncodeError",
    "decode",
    "decode_body_from",
    "decode_dist_message",
    "decode_from",
    "encode",
    "encode_body",
    "encode_dist_frame",
    "encode_dist_frame_after",
    "encode_dist_message",
]

VERSION = 131
#: The first byte of a distribution frame whose terms are not preceded by a DIST_HEADER.
PASS_THROUGH = 112
DIST_HEADER = 68
DIST_FRAG_HEADER = 69
DIST_FRAG_CONT = 70

MAX_DEPTH = 500
MAX_BIG_BYTES = 4_194_296
MAX_INFLATED_SIZE = 64 * 1024 * 1024
MAX_ATOM_CHARS = 255
# NEWER_REFERENCE_EXT carries at most 5 ID words: OTP 25 rejects 6.
MAX_REF_WORDS = 5

# Tags, named as in erl_ext_dist.
NEW_FLOAT_EXT = 70
BIT_BINARY_EXT = 77
COMPRESSED = 80
ATOM_CACHE_REF = 82
NEW_PID_EXT = 88
NEW_PORT_EXT = 89
NEWER_REFERENCE_EXT = 90
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
FLOAT_EXT = 99
ATOM_EXT = 100
REFERENCE_EXT = 101
PORT_EXT = 102
PID_EXT = 103
SMALL_TUPLE_EXT = 104
LARGE_TUPLE_EXT = 105
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
NEW_FUN_EXT = 112
EXPORT_EXT = 113
NEW_REFERENCE_EXT = 114
SMALL_ATOM_EXT = 115
MAP_EXT = 116
FUN_EXT = 117
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119
V4_PORT_EXT = 120


class TermEncodeError(TypeError):
    """A Python value that has no Erlang form; the message says what to send instead."""


class TermDecodeError(ValueError):
    """Bytes that are not a well-formed term (truncated, unknown tag, over a limit...)."""


# ---------------------------------------------------------------------------------------------
# The Python types that stand for Erlang terms Python has no type for.


class Atom(str):
    """An Erlang atom: a name that stands for itself, like ``:ok`` or ``:noconnection``.

    It is a ``str``, so ``Atom("ok") == "ok"`` and ``hash(Atom("ok")) == hash("ok")``: code
    that matches on ``"ok"`` matches the atom too. Only its type tells the encoder to send an
    atom rather than a binary (``"ok"`` goes out as the Elixir string ``"ok"``).

    ``repr`` spells it as Elixir's ``inspect`` does, since that is what a reader of the lessons
    sees in iex: ``:ok``, ``:"with space"``, ``:kate@localhost``, and a module alias
    ``Atom("Elixir.Kate")`` as ``Kate``. Operator atoms such as ``:+`` are shown quoted
    (``:"+"``), which Elixir also reads back. ``str(atom)`` is the bare name.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return _inspect_atom(str(self))


def _is_plain_name(text: str) -> bool:
    # Elixir prints :name bare when it is an identifier, optionally ending in ? or !,
    # and allows @ after the first character (so node names print bare).
    core = text[:-1] if text[-1:] in ("?", "!") else text
    return bool(core) and core[0] != "@" and core.replace("@", "_").isidentifier()


def _is_alias(text: str) -> bool:
    if text == "Elixir":
        return True
    if not text.startswith("Elixir."):
        return False
    return all(
        part[:1].isascii() and part[:1].isupper() and part.isidentifier()
        for part in text[7:].split(".")
    )


_ESCAPES = {
    "\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\e",
    "\x7f": "\\d", "\0": "\\0", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v",
}


def _inspect_atom(text: str) -> str:
    if text in ("nil", "true", "false"):
        return text
    if _is_alias(text):
        return text[7:] if text != "Elixir" else text
    if _is_plain_name(text):
        return ":" + text
    quoted = "".join(
        _ESCAPES.get(c) or (f"\\x{ord(c):02X}" if ord(c) < 32 else c) for c in text
    )
    return f':"{quoted}"'


class BitBinary:
    """A bitstring whose length is not a whole number of bytes, like Elixir's ``<<1::3>>``.

    ``data`` holds the bits from the most significant bit of the first byte on; ``bits``
    (1..7) says how many bits of the last byte belong to the value. The unused low bits of
    the last byte are cleared, so two equal bitstrings are equal ``BitBinary`` values. A
    bitstring that is whole bytes is an ordinary binary (``str`` or ``bytes``).
    """

    __slots__ = ("data", "bits")

    def __init__(self, data: bytes, bits: int) -> None:
        if not data or not 1 <= bits <= 7:
            raise ValueError(
                "a BitBinary needs at least one byte and 1..7 bits used in the last one "
                "(whole bytes are a plain binary: use bytes)"
            )
        mask = (0xFF << (8 - bits)) & 0xFF
        self.data = bytes(data[:-1]) + bytes((data[-1] & mask,))
        self.bits = bits

    @property
    def bit_size(self) -> int:
        """The length in bits, like Erlang's ``bit_size/1``."""
        return 8 * (len(self.data) - 1) + self.bits

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BitBinary):
            return NotImplemented
        return self.data == other.data and self.bits == other.bits

    def __hash__(self) -> int:
        return hash((BitBinary, self.data, self.bits))

    def __repr__(self) -> str:
        last = f"{self.data[-1] >> (8 - self.bits)}::size({self.bits})"
        return "<<" + ", ".join([*map(str, self.data[:-1]), last]) + ">>"


class ImproperList:
    """A list whose final tail is not ``[]``, like Erlang's ``[1, 2 | tail]``.

    Erlang lists are chains of cells ``[head | tail]``; a proper list ends in ``[]``. Python
    has no such chain, so a proper list is a ``list``, and the rare improper one is this
    value: ``items`` are the heads, ``tail`` the last tail. The BEAM does use them:
    ``Node.ping`` expects ``{[alias | ref], :yes}`` back. A tail that is itself an improper
    list is flattened into this one, as ``[1 | [2 | :t]]`` is ``[1, 2 | :t]`` in Erlang.
    """

    __slots__ = ("items", "tail")
    __hash__ = None  # type: ignore[assignment]  # like list: mutable, so unhashable

    def __init__(self, items: list[Any], tail: Any) -> None:
        if isinstance(tail, ImproperList):
            items, tail = [*items, *tail.items], tail.tail
        if isinstance(tail, list):
            raise ValueError(
                "the tail of an ImproperList cannot be a list: that is a proper list, "
                "use items + tail"
            )
        if not items:
            raise ValueError("an ImproperList needs at least one item before its tail")
        self.items = list(items)
        self.tail = tail

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImproperList):
            return NotImplemented
        return self.items == other.items and self.tail == other.tail

    def __repr__(self) -> str:
        return "[" + ", ".join(map(repr, self.items)) + f" | {self.tail!r}]"


class Port:
    """A port identifier from another node (the BEAM's handle on a file, a socket, ...).

    Python cannot use it, but can keep it and send it back, as a process would.
    """

    __slots__ = ("node", "id", "creation")

    def __init__(self, node: str, id: int, creation: int) -> None:
        self.node = node
        self.id = id
        self.creation = creation

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Port):
            return NotImplemented
        return (self.node, self.id, self.creation) == (other.node, other.id, other.creation)

    def __hash__(self) -> int:
        return hash((Port, self.node, self.id, self.creation))

    def __repr__(self) -> str:
        return f"#Port<{self.node}.{self.id}>"


class Export:
    """An external function value, ``&Kate.say_name/0`` or Erlang's ``fun io:format/2``.

    It names a function by module, name and arity, so it means the same on every node:
    a BEAM node can call it, and Python can send one to be called there.
    """

    __slots__ = ("module", "function", "arity")

    def __init__(self, module: str, function: str, arity: int) -> None:
        self.module = Atom(module)
        self.function = Atom(function)
        self.arity = arity

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Export):
            return NotImplemented
        return (self.module, self.function, self.arity) == (
            other.module, other.function, other.arity)

    def __hash__(self) -> int:
        return hash((Export, self.module, self.function, self.arity))

    def __repr__(self) -> str:
        return f"&{self.module!r}.{self.function}/{self.arity}"


class Fun:
    """A closure from a BEAM node (``fn x -> x end``), kept as its exact bytes.

    Its code lives in a BEAM module, so Python can neither run nor rebuild it; it can hold it
    and send it back unchanged (to a BEAM node that has the module). ``module`` and
    ``arity`` say what it is; ``raw`` is the whole NEW_FUN_EXT, tag included.
    """

    __slots__ = ("module", "arity", "index", "raw")

    def __init__(self, module: str, arity: int, index: int, raw: bytes) -> None:
        self.module = Atom(module)
        self.arity = arity
        self.index = index
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fun):
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash((Fun, self.raw))

    def __repr__(self) -> str:
        return f"#Function<{self.index}/{self.arity} in {self.module!r}>"


class _NoMessage:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_MESSAGE"


#: ``encode_dist_message``'s default: the frame carries a control message only. ``None``
#: cannot mean that, since ``None`` is a message like any other (the atom ``nil``).
NO_MESSAGE: Any = _NoMessage()


# ---------------------------------------------------------------------------------------------
# Encoding. One function per Python type, looked up by exact type; each appends to a shared
# bytearray, so a term costs one buffer however deeply it nests.

_Out = bytearray
_Encoder = Callable[[Any, _Out, int], None]

_U8_U32 = struct.Struct(">BI")
_U8_I32 = struct.Struct(">Bi")
_U8_F64 = struct.Struct(">Bd")
_U8_U16 = struct.Struct(">BH")
_U32 = struct.Struct(">I")
_U32X3 = struct.Struct(">III")
_U32X2 = struct.Struct(">II")
_U64_U32 = struct.Struct(">QI")
_U16 = struct.Struct(">H")
_F64 = struct.Struct(">d")
_I32 = struct.Struct(">i")
# A reference's creation and its 1..5 words, and the words alone, by word count.
_REF_TAILS = [struct.Struct(f">I{n}I") for n in range(MAX_REF_WORDS + 1)]
_REF_WORDS = [struct.Struct(f">{n}I") for n in range(MAX_REF_WORDS + 1)]

_SMALL_INTS = [bytes((SMALL_INTEGER_EXT, n)) for n in range(256)]
_SMALL_TUPLES = [bytes((SMALL_TUPLE_EXT, n)) for n in range(256)]
_NIL = bytes((NIL_EXT,))

# Encoded atoms by name. Bounded: emptied when full, so a flood of names cannot grow it.
_CACHE_LIMIT = 4096
_ATOM_BYTES: dict[str, bytes] = {}


def _atom_bytes(name: str) -> bytes:
    encoded = _ATOM_BYTES.get(name)
    if encoded is None:
        if len(name) > MAX_ATOM_CHARS:
            raise TermEncodeError(
                f"an atom has at most {MAX_ATOM_CHARS} characters (this one has {len(name)}):"
                " send a str (an Elixir string) instead")
        try:
            text = name.encode()
        except UnicodeEncodeError:
            raise TermEncodeError(
                "an atom name with lone surrogates has no UTF-8 form: fix the text") from None
        if len(text) < 256:
            encoded = bytes((SMALL_ATOM_UTF8_EXT, len(text))) + text
        else:
            encoded = _U8_U16.pack(ATOM_UTF8_EXT, len(text)) + text
        if len(_ATOM_BYTES) >= _CACHE_LIMIT:
            _ATOM_BYTES.clear()
        _ATOM_BYTES[name] = encoded
    return encoded


def _enc_atom(term: str, out: _Out, depth: int) -> None:
    out += _ATOM_BYTES.get(term) or _atom_bytes(term)


_TRUE = _atom_bytes("true")
_FALSE = _atom_bytes("false")
_NIL_ATOM = _atom_bytes("nil")


def _enc_bool(term: bool, out: _Out, depth: int) -> None:
    out += _TRUE if term else _FALSE


def _enc_none(term: None, out: _Out, depth: int) -> None:
    out += _NIL_ATOM


def _enc_int(term: int, out: _Out, depth: int) -> None:
    if 0 <= term < 256:
        out += _SMALL_INTS[term]
    elif -0x8000_0000 <= term <= 0x7FFF_FFFF:
        out += _U8_I32.pack(INTEGER_EXT, term)
    else:
        magnitude = -term if term < 0 else term
        size = (magnitude.bit_length() + 7) >> 3
        if size > MAX_BIG_BYTES:
            raise TermEncodeError(
                f"an integer of {magnitude.bit_length()} bits is larger than the BEAM accepts"
                f" ({MAX_BIG_BYTES * 8} bits, else system_limit): send it as a str or bytes")
        if size < 256:
            out += bytes((SMALL_BIG_EXT, size, term < 0))
        else:
            out += _U8_U32.pack(LARGE_BIG_EXT, size)
            out.append(term < 0)
        out += magnitude.to_bytes(size, "little")


def _enc_float(term: float, out: _Out, depth: int) -> None:
    if term - term != 0.0:  # true only for inf and nan
        raise TermEncodeError(
            f"the BEAM has no float {term}: send None or an atom such as Atom('infinity')")
    out += _U8_F64.pack(NEW_FLOAT_EXT, term)


def _enc_str(term: str, out: _Out, depth: int) -> None:
    try:
        data = term.encode()
    except UnicodeEncodeError:
        raise TermEncodeError(
            "a str with lone surrogates has no UTF-8 form: send bytes instead") from None
    out += _U8_U32.pack(BINARY_EXT, len(data))
    out += data


def _enc_bytes(term: bytes | bytearray | memoryview, out: _Out, depth: int) -> None:
    data = term if type(term) is not memoryview else term.tobytes()
    out += _U8_U32.pack(BINARY_EXT, len(data))
    out += data


def _enc_bit_binary(term: BitBinary, out: _Out, depth: int) -> None:
    out += _U8_U32.pack(BIT_BINARY_EXT, len(term.data))
    out.append(term.bits)
    out += term.data


def _enc_tuple(term: tuple, out: _Out, depth: int) -> None:
    if depth <= 0:
        raise _too_deep_to_encode()
    size = len(term)
    if size < 256:
        out += _SMALL_TUPLES[size]
    else:
        out += _U8_U32.pack(LARGE_TUPLE_EXT, size)
    depth -= 1
    get = _ENCODERS.get
    for item in term:
        (get(type(item)) or _encoder_for(item))(item, out, depth)


def _enc_list(term: list, out: _Out, depth: int) -> None:
    size = len(term)
    if not size:
        out += _NIL
        return
    if depth <= 0:
        raise _too_deep_to_encode()
    # The BEAM sends a list of bytes as STRING_EXT (one byte per element); doing the same
    # keeps charlists compact. bool is excluded: True is the atom true, not 1.
    if size <= 0xFFFF and type(term[0]) is int and set(map(type, term)) == {int}:
        try:
            data = bytes(term)
        except ValueError:  # an element outside 0..255
            pass
        else:
            out += _U8_U16.pack(STRING_EXT, size)
            out += data
            return
    out += _U8_U32.pack(LIST_EXT, size)
    depth -= 1
    get = _ENCODERS.get
    for item in term:
        (get(type(item)) or _encoder_for(item))(item, out, depth)
    out += _NIL


def _enc_improper(term: ImproperList, out: _Out, depth: int) -> None:
    if depth <= 0:
        raise _too_deep_to_encode()
    out += _U8_U32.pack(LIST_EXT, len(term.items))
    depth -= 1
    get = _ENCODERS.get
    for item in term.items:
        (get(type(item)) or _encoder_for(item))(item, out, depth)
    tail = term.tail
    (get(type(tail)) or _encoder_for(tail))(tail, out, depth)


def _enc_dict(term: dict, out: _Out, depth: int) -> None:
    if depth <= 0:
        raise _too_deep_to_encode()
    out += _U8_U32.pack(MAP_EXT, len(term))
    depth -= 1
    get = _ENCODERS.get
    for key, value in term.items():
        (get(type(key)) or _encoder_for(key))(key, out, depth)
        (get(type(value)) or _encoder_for(value))(value, out, depth)


def _enc_pid(term: Pid, out: _Out, depth: int) -> None:
    # The slots, not the properties: a pid is in nearly every message to a BEAM, and a
    # field of None means "this node" (pids.py), read from the node as the properties do.
    node = term._node
    if node is None:
        node = _LOCAL_NODE["node"]
    creation = term._creation
    if creation is None:
        creation = _LOCAL_NODE["creation"]
    out.append(NEW_PID_EXT)
    out += _ATOM_BYTES.get(node) or _atom_bytes(node)
    out += _U32X3.pack(term.serial, term.generation, creation)


def _enc_ref(term: Ref, out: _Out, depth: int) -> None:
    words = term.words
    if not 1 <= len(words) <= MAX_REF_WORDS:
        raise TermEncodeError(
            f"a reference has 1 to {MAX_REF_WORDS} ID words, not {len(words)}")
    node = term._node
    if node is None:
        node = _LOCAL_NODE["node"]
    creation = term._creation
    if creation is None:
        creation = _LOCAL_NODE["creation"]
    out += _U8_U16.pack(NEWER_REFERENCE_EXT, len(words))
    out += _ATOM_BYTES.get(node) or _atom_bytes(node)
    out += _REF_TAILS[len(words)].pack(creation, *words)


def _enc_port(term: Port, out: _Out, depth: int) -> None:
    # Like OTP 25: the compact form while the ID fits its 28 significant bits.
    if term.id < 1 << 28:
        out.append(NEW_PORT_EXT)
        out += _atom_bytes(term.node)
        out += _U32X2.pack(term.id, term.creation)
    else:
        out.append(V4_PORT_EXT)
        out += _atom_bytes(term.node)
        out += _U64_U32.pack(term.id, term.creation)


def _enc_export(term: Export, out: _Out, depth: int) -> None:
    if not 0 <= term.arity <= 255:
        raise TermEncodeError(f"a function's arity is 0..255, not {term.arity}")
    out.append(EXPORT_EXT)
    out += _atom_bytes(term.module)
    out += _atom_bytes(term.function)
    out += _SMALL_INTS[term.arity]


def _enc_fun(term: Fun, out: _Out, depth: int) -> None:
    out += term.raw


_ENCODERS: dict[type, _Encoder] = {
    Atom: _enc_atom,
    str: _enc_str,
    int: _enc_int,
    bool: _enc_bool,
    type(None): _enc_none,
    float: _enc_float,
    tuple: _enc_tuple,
    list: _enc_list,
    dict: _enc_dict,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_bytes,
    Pid: _enc_pid,
    Ref: _enc_ref,
    BitBinary: _enc_bit_binary,
    ImproperList: _enc_improper,
    Port: _enc_port,
    Export: _enc_export,
    Fun: _enc_fun,
}

# Checked in this order for a subclass (an IntEnum, a namedtuple, an OrderedDict...): Atom
# before str, since an Atom is a str that must stay an atom.
_BASES: tuple[tuple[type, _Encoder], ...] = (
    (Atom, _enc_atom), (str, _enc_str), (int, _enc_int), (float, _enc_float),
    (tuple, _enc_tuple), (list, _enc_list), (dict, _enc_dict),
    ((bytes, bytearray, memoryview), _enc_bytes),  # type: ignore[arg-type]
    (Pid, _enc_pid), (Ref, _enc_ref),
)


def _encoder_for(term: object) -> _Encoder:
    kind = type(term)
    for base, encoder in _BASES:
        if isinstance(term, base):
            # Remembered per class; classes are few, and only ours are encoded.
            _ENCODERS[kind] = encoder
            return encoder
    raise TermEncodeError(_no_erlang_form(term))


def _no_erlang_form(term: object) -> str:
    name = type(term).__name__
    if callable(term) and not isinstance(term, type):
        return (f"a function ({name}) cannot be sent to a BEAM node: send module, function "
                "and args, e.g. (Atom('io'), Atom('format'), ['hi~n'])")
    if isinstance(term, (set, frozenset)):
        return f"a {name} has no Erlang form: send a list, e.g. sorted(the_set)"
    if isinstance(term, complex):
        return "a complex number has no Erlang form: send a tuple (real, imag)"
    if hasattr(term, "__dataclass_fields__"):
        return (f"a {name} (a dataclass) has no Erlang form: send a dict, "
                "dataclasses.asdict(value), or a tuple")
    if hasattr(term, "__next__"):
        return f"a {name} (an iterator) has no Erlang form: send a list, list(it)"
    if isinstance(term, type):
        return f"a class ({term.__name__}) has no Erlang form: send its name as an Atom"
    return (f"a {name} has no Erlang form: send a tuple, list, dict, str, bytes, int, float,"
            " bool, None, Atom, Pid or Ref made from it")


def _too_deep_to_encode() -> TermEncodeError:
    return TermEncodeError(
        f"a term nested more than {MAX_DEPTH} levels deep cannot be sent"
        " (a list or dict that contains itself?)")


def encode_body(term: object) -> bytes:
    """Encode ``term`` without the leading version byte, as terms follow a DIST_HEADER."""
    out = bytearray()
    _encode_into(term, out)
    return bytes(out)


def encode(term: object) -> bytes:
    """Encode ``term`` as ``term_to_binary`` would: the version byte 131, then the term.

    Raises :class:`TermEncodeError` (a ``TypeError``) for a value with no Erlang form.
    """
    out = bytearray(b"\x83")
    try:
        (_ENCODERS.get(type(term)) or _encoder_for(term))(term, out, MAX_DEPTH)
    except (struct.error, RecursionError) as exc:
        raise _encode_failure(exc) from None
    return bytes(out)


def _encode_failure(exc: Exception) -> TermEncodeError:
    if isinstance(exc, struct.error):  # a pid, ref or port field, or a length, out of range
        return TermEncodeError(f"a number in the term does not fit its field: {exc}")
    return _too_deep_to_encode()  # RecursionError


def _encode_into(term: object, out: _Out) -> None:
    try:
        (_ENCODERS.get(type(term)) or _encoder_for(term))(term, out, MAX_DEPTH)
    except (struct.error, RecursionError) as exc:
        raise _encode_failure(exc) from None


# ---------------------------------------------------------------------------------------------
# Decoding. A table of 256 functions indexed by the tag byte; each takes the buffer, the
# position after the tag, the depth still allowed and the atom cache references of the
# frame (None outside a DIST_HEADER), and returns (term, position after the term).

_Decoder = Callable[[bytes, int, int, "list[Atom] | None"], "tuple[Any, int]"]
_MISSING = object()

# Decoded atoms by their UTF-8 bytes: as a term (true/false/nil become Python's own), and as
# a name (node names, modules). Bounded like _ATOM_BYTES.
_TERM_ATOMS: dict[bytes, Any] = {b"true": True, b"false": False, b"nil": None}
_NAME_ATOMS: dict[bytes, Atom] = {}
_SPECIAL_ATOMS = {"true": True, "false": False, "nil": None}


def _truncated(what: str) -> TermDecodeError:
    return TermDecodeError(f"the term is truncated: the buffer ends inside {what}")


def _atom_from(raw: bytes, utf8: bool) -> Atom:
    if len(raw) > 4 * MAX_ATOM_CHARS:
        raise TermDecodeError(f"an atom of {len(raw)} bytes is longer than Erlang allows"
                              f" ({MAX_ATOM_CHARS} characters)")
    try:
        text = raw.decode("utf-8" if utf8 else "latin-1")
    except UnicodeDecodeError:
        raise TermDecodeError("an atom is not valid UTF-8") from None
    if len(text) > MAX_ATOM_CHARS:
        raise TermDecodeError(f"an atom of {len(text)} characters is longer than Erlang"
                              f" allows ({MAX_ATOM_CHARS})")
    return Atom(text)


def _read_raw_atom(data: bytes, pos: int) -> tuple[bytes, bool, int]:
    """The bytes of the atom whose tag is at ``pos``, whether they are UTF-8, and the end."""
    tag = data[pos]
    if tag == SMALL_ATOM_UTF8_EXT or tag == SMALL_ATOM_EXT:
        start = pos + 2
        end = start + data[pos + 1]
    elif tag == ATOM_UTF8_EXT or tag == ATOM_EXT:
        start = pos + 3
        end = start + _U16.unpack_from(data, pos + 1)[0]
    else:
        raise TermDecodeError(f"expected an atom, found tag {tag}")
    if end > len(data):
        raise _truncated("an atom")
    raw = data[start:end]
    # Latin-1 and UTF-8 agree on ASCII, which is nearly every atom.
    return raw, tag >= ATOM_UTF8_EXT or raw.isascii(), end


def _read_name(data: bytes, pos: int, refs: list[Atom] | None) -> tuple[Atom, int]:
    """An atom used as a name (a node, a module): never turned into True/False/None."""
    if data[pos] == SMALL_ATOM_UTF8_EXT:  # the usual case, kept short
        end = pos + 2 + data[pos + 1]
        name = _NAME_ATOMS.get(data[pos + 2:end])
        if name is not None and end <= len(data):
            return name, end
    elif data[pos] == ATOM_CACHE_REF:
        return _cached_ref(data, pos + 1, refs), pos + 2
    raw, utf8, end = _read_raw_atom(data, pos)
    if utf8:
        name = _NAME_ATOMS.get(raw)
        if name is None:
            name = _atom_from(raw, True)
            if len(_NAME_ATOMS) >= _CACHE_LIMIT:
                _NAME_ATOMS.clear()
            _NAME_ATOMS[raw] = name
        return name, end
    return _atom_from(raw, False), end


def _cached_ref(data: bytes, pos: int, refs: list[Atom] | None) -> Atom:
    index = data[pos]
    if refs is None:
        raise TermDecodeError("an ATOM_CACHE_REF outside a message with a DIST_HEADER")
    if index >= len(refs):
        raise TermDecodeError(f"atom cache reference {index} is not in the DIST_HEADER")
    return refs[index]


def _dec_atom(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Any, int]:
    raw, utf8, end = _read_raw_atom(data, pos - 1)
    if not utf8:
        atom = _atom_from(raw, False)
        return _SPECIAL_ATOMS.get(atom, atom), end
    value = _TERM_ATOMS.get(raw, _MISSING)
    if value is _MISSING:
        value = _atom_from(raw, True)
        if len(_TERM_ATOMS) >= _CACHE_LIMIT:
            _TERM_ATOMS.clear()
            _TERM_ATOMS.update({b"true": True, b"false": False, b"nil": None})
        _TERM_ATOMS[raw] = value
    return value, end


def _dec_small_atom_utf8(data: bytes, pos: int, depth: int,
                         refs: list[Atom] | None) -> tuple[Any, int]:
    # The atom tag every OTP 25 node sends: kept short, the rest is _dec_atom.
    end = pos + 1 + data[pos]
    if end <= len(data):
        value = _TERM_ATOMS.get(data[pos + 1:end], _MISSING)
        if value is not _MISSING:
            return value, end
    return _dec_atom(data, pos, depth, refs)


def _dec_atom_cache_ref(data: bytes, pos: int, depth: int,
                        refs: list[Atom] | None) -> tuple[Any, int]:
    atom = _cached_ref(data, pos, refs)
    return _SPECIAL_ATOMS.get(atom, atom), pos + 1


def _dec_small_int(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[int, int]:
    return data[pos], pos + 1


def _dec_int(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[int, int]:
    return _I32.unpack_from(data, pos)[0], pos + 4


def _big(data: bytes, pos: int, size: int) -> tuple[int, int]:
    if size > MAX_BIG_BYTES:
        raise TermDecodeError(f"an integer of {size} bytes is larger than the BEAM allows"
                              f" ({MAX_BIG_BYTES} bytes)")
    end = pos + 1 + size
    if end > len(data):
        raise _truncated("an integer")
    sign = data[pos]
    if sign > 1:
        raise TermDecodeError(f"an integer's sign byte is {sign}, not 0 or 1")
    value = int.from_bytes(data[pos + 1:end], "little")
    return (-value if sign else value), end


def _dec_small_big(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[int, int]:
    return _big(data, pos + 1, data[pos])


def _dec_large_big(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[int, int]:
    return _big(data, pos + 4, _U32.unpack_from(data, pos)[0])


def _finite(value: float) -> float:
    if value - value != 0.0:
        raise TermDecodeError(f"the BEAM never sends the float {value}")
    return value


def _dec_new_float(data: bytes, pos: int, depth: int,
                   refs: list[Atom] | None) -> tuple[float, int]:
    return _finite(_F64.unpack_from(data, pos)[0]), pos + 8


def _dec_old_float(data: bytes, pos: int, depth: int,
                   refs: list[Atom] | None) -> tuple[float, int]:
    end = pos + 31
    if end > len(data):
        raise _truncated("a float")
    text = data[pos:end].split(b"\0", 1)[0]
    try:
        return _finite(float(text)), end
    except ValueError:
        raise TermDecodeError(f"FLOAT_EXT holds {text!r}, not a number") from None


def _dec_binary(data: bytes, pos: int, depth: int,
                refs: list[Atom] | None) -> tuple[str | bytes, int]:
    start = pos + 4
    end = start + _U32.unpack_from(data, pos)[0]
    if end > len(data):
        raise _truncated("a binary")
    raw = data[start:end]
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return raw, end


def _dec_bit_binary(data: bytes, pos: int, depth: int,
                    refs: list[Atom] | None) -> tuple[Any, int]:
    size = _U32.unpack_from(data, pos)[0]
    bits = data[pos + 4]
    start = pos + 5
    end = start + size
    if end > len(data):
        raise _truncated("a bitstring")
    # The BEAM's own rules: 1..8 bits used in a non-empty last byte, 0 only when empty.
    if size == 0 and bits == 0:
        return "", end
    if size == 0 or not 1 <= bits <= 8:
        raise TermDecodeError(f"a bitstring of {size} bytes cannot use {bits} bits of the last")
    if bits == 8:
        raw = data[start:end]
        try:
            return raw.decode(), end
        except UnicodeDecodeError:
            return raw, end
    return BitBinary(data[start:end], bits), end


def _too_deep() -> TermDecodeError:
    return TermDecodeError(f"the term nests containers more than {MAX_DEPTH} levels deep")


def _too_many(count: int, what: str) -> TermDecodeError:
    # Every element takes at least one byte: a count larger than the rest of the buffer is a
    # lie, caught before a loop (or an allocation) sized by it.
    return _truncated(f"{what} that claims {count} elements")


def _dec_small_tuple(data: bytes, pos: int, depth: int,
                     refs: list[Atom] | None) -> tuple[tuple, int]:
    if depth <= 0:
        raise _too_deep()
    count = data[pos]
    pos += 1
    if count > len(data) - pos:
        raise _too_many(count, "a tuple")
    decoders = _DECODERS
    depth -= 1
    # Pairs and triples written out: nearly every tuple between nodes is one (a control
    # message, {pid, msg}, {tag, value}), and the loop's list costs more than its elements.
    if count == 2:
        first, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        second, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        return (first, second), pos
    if count == 3:
        first, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        second, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        third, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        return (first, second, third), pos
    items = []
    append = items.append
    for _ in range(count):
        item, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        append(item)
    return tuple(items), pos


def _dec_large_tuple(data: bytes, pos: int, depth: int,
                     refs: list[Atom] | None) -> tuple[tuple, int]:
    if depth <= 0:
        raise _too_deep()
    count = _U32.unpack_from(data, pos)[0]
    pos += 4
    if count > len(data) - pos:
        raise _too_many(count, "a tuple")
    items = []
    append = items.append
    decoders = _DECODERS
    depth -= 1
    for _ in range(count):
        item, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        append(item)
    return tuple(items), pos


def _dec_nil(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[list, int]:
    return [], pos


def _dec_string(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[list, int]:
    start = pos + 2
    end = start + _U16.unpack_from(data, pos)[0]
    if end > len(data):
        raise _truncated("a charlist")
    return list(data[start:end]), end


def _dec_list(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Any, int]:
    if depth <= 0:
        raise _too_deep()
    count = _U32.unpack_from(data, pos)[0]
    pos += 4
    if count >= len(data) - pos:  # the elements, then the tail
        raise _too_many(count, "a list")
    # The loop is written out in each container, not shared: one Python frame per level
    # of nesting keeps MAX_DEPTH levels well inside Python's recursion limit.
    items: list[Any] = []
    append = items.append
    decoders = _DECODERS
    depth -= 1
    for _ in range(count):
        item, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        append(item)
    if data[pos] == NIL_EXT:
        return items, pos + 1
    tail, pos = _DECODERS[data[pos]](data, pos + 1, depth, refs)
    # The BEAM reads [a | [b]] as [a, b], and a LIST_EXT of no elements as its tail.
    if type(tail) is list:
        items += tail
        return items, pos
    if not items:
        return tail, pos
    if type(tail) is ImproperList:
        items += tail.items
        tail = tail.tail
    # Checked already: skip the constructor's checks and copy.
    improper = ImproperList.__new__(ImproperList)
    improper.items = items
    improper.tail = tail
    return improper, pos


def _dec_map(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[dict, int]:
    if depth <= 0:
        raise _too_deep()
    count = _U32.unpack_from(data, pos)[0]
    pos += 4
    if 2 * count > len(data) - pos:
        raise _too_many(count, "a map")
    result: dict[Any, Any] = {}
    decoders = _DECODERS
    depth -= 1
    for _ in range(count):
        key, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        value, pos = decoders[data[pos]](data, pos + 1, depth, refs)
        try:
            result[key] = value
        except TypeError:
            raise TermDecodeError(
                f"a map key of type {type(key).__name__} has no Python dict form"
                " (a list or map as a key)") from None
    if len(result) != count:
        raise TermDecodeError(
            "a map's keys collide in Python: two keys are equal (a duplicate, or keys like"
            " :a and \"a\", 1 and 1.0, true and 1, which differ in Erlang)")
    return result, pos


# Decoded pids by their bytes. The same few pids come in message after message (a
# server's callers, a ping's sender), and a Pid is an immutable value, so one can be shared.
_PIDS: dict[bytes, Pid] = {}


def _dec_new_pid(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Pid, int]:
    if data[pos] == SMALL_ATOM_UTF8_EXT:
        end = pos + 14 + data[pos + 1]  # atom tag, length, name, three u32
        key = data[pos:end]
        pid = _PIDS.get(key)
        if pid is not None:
            return pid, end
        if end > len(data):
            raise _truncated("a pid")
    else:
        key = None
    node, pos = _read_name(data, pos, refs)
    ident, serial, creation = _U32X3.unpack_from(data, pos)
    pid = Pid(node, ident, creation, serial)
    if key is not None:
        if len(_PIDS) >= _CACHE_LIMIT:
            _PIDS.clear()
        _PIDS[key] = pid
    return pid, pos + 12


def _dec_old_pid(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Pid, int]:
    node, pos = _read_name(data, pos, refs)
    ident, serial = _U32X2.unpack_from(data, pos)
    return Pid(node, ident, data[pos + 8], serial), pos + 9


def _ref_count(count: int) -> int:
    if not 1 <= count <= MAX_REF_WORDS:
        raise TermDecodeError(f"a reference has 1 to {MAX_REF_WORDS} ID words, not {count}")
    return count


def _dec_newer_ref(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Ref, int]:
    count = _ref_count(_U16.unpack_from(data, pos)[0])
    node, pos = _read_name(data, pos + 2, refs)
    creation, *words = _REF_TAILS[count].unpack_from(data, pos)
    return Ref(node, words, creation), pos + 4 + 4 * count


def _dec_new_ref(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Ref, int]:
    count = _ref_count(_U16.unpack_from(data, pos)[0])
    node, pos = _read_name(data, pos + 2, refs)
    creation = data[pos]
    words = _REF_WORDS[count].unpack_from(data, pos + 1)
    return Ref(node, words, creation), pos + 1 + 4 * count


def _dec_old_ref(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Ref, int]:
    node, pos = _read_name(data, pos, refs)
    word = _U32.unpack_from(data, pos)[0]
    return Ref(node, (word,), data[pos + 4]), pos + 5


def _dec_new_port(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Port, int]:
    node, pos = _read_name(data, pos, refs)
    ident, creation = _U32X2.unpack_from(data, pos)
    return Port(node, ident, creation), pos + 8


def _dec_v4_port(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Port, int]:
    node, pos = _read_name(data, pos, refs)
    ident, creation = _U64_U32.unpack_from(data, pos)
    return Port(node, ident, creation), pos + 12


def _dec_old_port(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Port, int]:
    node, pos = _read_name(data, pos, refs)
    ident = _U32.unpack_from(data, pos)[0]
    return Port(node, ident, data[pos + 4]), pos + 5


def _dec_export(data: bytes, pos: int, depth: int,
                refs: list[Atom] | None) -> tuple[Export, int]:
    module, pos = _read_name(data, pos, refs)
    function, pos = _read_name(data, pos, refs)
    if data[pos] != SMALL_INTEGER_EXT:
        raise TermDecodeError("an EXPORT_EXT's arity is not a SMALL_INTEGER_EXT")
    return Export(module, function, data[pos + 1]), pos + 2


# Size (4), arity (1), uniq (16), index (4), free variable count (4): then the module atom.
_FUN_FIXED = 29


def _dec_new_fun(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Fun, int]:
    size = _U32.unpack_from(data, pos)[0]
    end = pos + size  # Size counts itself, not the tag
    if size < _FUN_FIXED + 2:
        raise TermDecodeError(f"a NEW_FUN_EXT of {size} bytes is shorter than its fixed part")
    if end > len(data):
        raise _truncated("a fun")
    if refs is not None:
        # Its raw bytes would name atoms of this frame's cache: they could not be sent on.
        raise TermDecodeError("a fun inside a DIST_HEADER message is not supported")
    module, module_end = _read_name(data, pos + _FUN_FIXED, None)
    if module_end > end:
        raise TermDecodeError("a NEW_FUN_EXT's module atom runs past the fun's size")
    index = _U32.unpack_from(data, pos + 21)[0]
    return Fun(module, data[pos + 4], index, data[pos - 1:end]), end


def _unknown(tag: int) -> _Decoder:
    if tag == FUN_EXT:
        why = "FUN_EXT (117), the pre-OTP-23 fun format, is not supported"
    elif tag == COMPRESSED:
        why = "a compressed term (80) can only come right after the version byte"
    elif tag == VERSION:
        why = "a version byte (131) inside a term"
    elif tag in (DIST_HEADER, DIST_FRAG_HEADER, DIST_FRAG_CONT):
        why = f"a distribution header ({tag}) inside a term"
    else:
        why = f"unknown tag {tag}"

    def reject(data: bytes, pos: int, depth: int, refs: list[Atom] | None) -> tuple[Any, int]:
        raise TermDecodeError(why)

    return reject


_DECODERS: list[_Decoder] = [_unknown(tag) for tag in range(256)]
_DECODERS[SMALL_ATOM_UTF8_EXT] = _dec_small_atom_utf8
for _tag in (ATOM_UTF8_EXT, ATOM_EXT, SMALL_ATOM_EXT):
    _DECODERS[_tag] = _dec_atom
_DECODERS[ATOM_CACHE_REF] = _dec_atom_cache_ref
_DECODERS[SMALL_INTEGER_EXT] = _dec_small_int
_DECODERS[INTEGER_EXT] = _dec_int
_DECODERS[SMALL_BIG_EXT] = _dec_small_big
_DECODERS[LARGE_BIG_EXT] = _dec_large_big
_DECODERS[NEW_FLOAT_EXT] = _dec_new_float
_DECODERS[FLOAT_EXT] = _dec_old_float
_DECODERS[BINARY_EXT] = _dec_binary
_DECODERS[BIT_BINARY_EXT] = _dec_bit_binary
_DECODERS[SMALL_TUPLE_EXT] = _dec_small_tuple
_DECODERS[LARGE_TUPLE_EXT] = _dec_large_tuple
_DECODERS[NIL_EXT] = _dec_nil
_DECODERS[STRING_EXT] = _dec_string
_DECODERS[LIST_EXT] = _dec_list
_DECODERS[MAP_EXT] = _dec_map
_DECODERS[NEW_PID_EXT] = _dec_new_pid
_DECODERS[PID_EXT] = _dec_old_pid
_DECODERS[NEWER_REFERENCE_EXT] = _dec_newer_ref
_DECODERS[NEW_REFERENCE_EXT] = _dec_new_ref
_DECODERS[REFERENCE_EXT] = _dec_old_ref
_DECODERS[NEW_PORT_EXT] = _dec_new_port
_DECODERS[V4_PORT_EXT] = _dec_v4_port
_DECODERS[PORT_EXT] = _dec_old_port
_DECODERS[EXPORT_EXT] = _dec_export
_DECODERS[NEW_FUN_EXT] = _dec_new_fun
del _tag


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    # Slices of bytes are bytes (what a decoded binary must be); a bytearray's are not.
    return data if type(data) is bytes else bytes(data)


def _guarded(data: bytes, pos: int, refs: list[Atom] | None) -> tuple[Any, int]:
    """Decode the term body at ``pos``, turning every failure into TermDecodeError."""
    try:
        return _DECODERS[data[pos]](data, pos + 1, MAX_DEPTH, refs)
    except Exception as exc:  # noqa: BLE001 - bad bytes must raise TermDecodeError only
        raise _decode_failure(exc) from None


def _decode_failure(exc: Exception) -> TermDecodeError:
    # A promise of this module: bad bytes raise TermDecodeError, whatever went wrong.
    if isinstance(exc, TermDecodeError):
        return exc
    if isinstance(exc, (IndexError, struct.error)):
        return TermDecodeError("the term is truncated: the buffer ends inside it")
    if isinstance(exc, RecursionError):
        return TermDecodeError("the term nests too deeply for Python's stack")
    return TermDecodeError(f"malformed term: {exc!r}")


def decode_body_from(data: bytes | bytearray | memoryview, offset: int = 0,
                     atom_refs: list[Atom] | None = None) -> tuple[Any, int]:
    """Decode one term *without* a version byte at ``offset``; return it and the next offset.

    That is how terms follow a DIST_HEADER; ``atom_refs`` are the atoms its ATOM_CACHE_REFs
    point to.
    """
    data = _as_bytes(data)
    if offset >= len(data):
        raise TermDecodeError("no term: the buffer ends before it")
    return _guarded(data, offset, atom_refs)


def decode_from(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode the term that starts (with its version byte 131) at ``offset`` in ``data``.

    Returns ``(term, next_offset)``, so a buffer that holds several terms one after the
    other (a distribution frame: control message, then message) is read by calling again
    at ``next_offset``. A compressed term (``term_to_binary(t, [:compressed])``) is inflated.
    """
    data = _as_bytes(data)
    if offset >= len(data):
        raise TermDecodeError("no term: the buffer ends before it")
    if data[offset] != VERSION:
        raise TermDecodeError(
            f"a term starts with the version byte 131, not {data[offset]}")
    if offset + 1 < len(data) and data[offset + 1] == COMPRESSED:
        return _inflate(data, offset + 2)
    return _guarded(data, offset + 1, None)


def _inflate(data: bytes, pos: int) -> tuple[Any, int]:
    if pos + 4 > len(data):
        raise _truncated("a compressed term's size")
    size = _U32.unpack_from(data, pos)[0]
    if size > MAX_INFLATED_SIZE:
        raise TermDecodeError(f"a compressed term of {size} bytes inflated is over the limit"
                              f" ({MAX_INFLATED_SIZE})")
    inflater = zlib.decompressobj()
    try:
        # max_length stops a "zip bomb" at the size it announced (+1 to notice a lie).
        body = inflater.decompress(data[pos + 4:], size + 1)
    except zlib.error as exc:
        raise TermDecodeError(f"a compressed term does not inflate: {exc}") from None
    if len(body) != size or not inflater.eof:
        raise TermDecodeError("a compressed term does not inflate to the size it announces")
    term, end = _guarded(body, 0, None)
    if end != size:
        raise TermDecodeError("a compressed term holds bytes after its term")
    return term, len(data) - len(inflater.unused_data)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode the one term that ``data`` holds, as ``binary_to_term`` does.

    Raises :class:`TermDecodeError` (a ``ValueError``) for anything but exactly one
    well-formed term; use :func:`decode_from` for a buffer holding several.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > 1 and data[0] == VERSION and data[1] != COMPRESSED:
        try:
            term, end = _DECODERS[data[1]](data, 2, MAX_DEPTH, None)
        except Exception as exc:  # noqa: BLE001 - bad bytes must raise TermDecodeError only
            raise _decode_failure(exc) from None
    else:
        term, end = decode_from(data, 0)
    if end != len(data):
        raise TermDecodeError(
            f"{len(data) - end} bytes follow the term: use decode_from for several terms")
    return term


# ---------------------------------------------------------------------------------------------
# Distribution messages.


class AtomCache:
    """The atoms a peer has cached on one connection, for frames that use a DIST_HEADER.

    With ``DFLAG_DIST_HDR_ATOM_CACHE`` a node sends each atom's text once and then refers to
    it by a slot number (8 segments of 256 slots). nodelab does not offer that flag, so OTP
    nodes send plain terms; this cache is here for a peer that sends a DIST_HEADER anyway.
    One per connection and direction, used by one reader thread.
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: list[Atom | None] = [None] * 2048

    def _read_header(self, data: bytes, pos: int) -> tuple[list[Atom], int]:
        count = data[pos]
        pos += 1
        if count == 0:
            return [], pos
        flags_end = pos + count // 2 + 1
        if flags_end > len(data):
            raise _truncated("a DIST_HEADER")
        flags = data[pos:flags_end]
        # One half byte per reference, low half first; the half byte after them holds
        # LongAtoms (2-byte lengths) in its lowest bit.
        long_atoms = (flags[count // 2] >> (4 * (count % 2))) & 1
        pos = flags_end
        refs: list[Atom] = []
        for index in range(count):
            flag = (flags[index // 2] >> (4 * (index % 2))) & 0xF
            slot = (flag & 7) * 256 + data[pos]
            pos += 1
            if flag & 8:
                if long_atoms:
                    length = _U16.unpack_from(data, pos)[0]
                    pos += 2
                else:
                    length = data[pos]
                    pos += 1
                if pos + length > len(data):
                    raise _truncated("a DIST_HEADER atom")
                atom = _atom_from(data[pos:pos + length], True)
                pos += length
                self._slots[slot] = atom
            else:
                cached = self._slots[slot]
                if cached is None:
                    raise TermDecodeError(f"a DIST_HEADER refers to atom cache slot {slot},"
                                          " which was never filled")
                atom = cached
            refs.append(atom)
        return refs, pos


def decode_dist_message(data: bytes | bytearray | memoryview,
                        atom_cache: AtomCache | None = None) -> tuple[Any, Any]:
    """Decode a distribution frame's body into ``(control, message)``.

    ``data`` is what follows the 4-byte length of a frame after the handshake (a length of
    0 is a tick and has no body). OTP 25 sends, when ``DFLAG_DIST_HDR_ATOM_CACHE`` and
    ``DFLAG_FRAGMENTS`` were not agreed on in the handshake::

        112 | 131 control | 131 message        (message only for sends, exits, ...)

    ``message`` is ``None`` when the frame holds the control message only; the control
    message's operation says whether one must follow, which tells an absent message from
    a ``nil`` one. A body in the other format, ``131 68 DIST_HEADER control message`` (terms
    without their version byte, atoms by cache reference), is decoded with ``atom_cache``,
    the connection's :class:`AtomCache`. Fragments (69, 70) are refused: they come only
    to a node that offered ``DFLAG_FRAGMENTS``.
    """
    data = _as_bytes(data)
    # What every OTP node sends nodelab, 112 | 131 control | 131 message with neither term
    # compressed, decoded without the checks and calls of decode_from: the same decoders, so
    # the same terms. Anything else, or a failure, takes the full path below, which says
    # what is wrong (it decodes the frame again: only bad frames pay twice).
    if len(data) > 3 and data[0] == PASS_THROUGH and data[1] == VERSION \
            and data[2] != COMPRESSED:
        try:
            if data[2] == SMALL_TUPLE_EXT and data[3] == 3 and data[4] == SMALL_INTEGER_EXT:
                # {Op, A, B} with a small Op: SEND_SENDER, LINK... (what _dec_small_tuple
                # would do, two calls fewer)
                decoders = _DECODERS
                first, pos = decoders[data[6]](data, 7, MAX_DEPTH - 1, None)
                second, pos = decoders[data[pos]](data, pos + 1, MAX_DEPTH - 1, None)
                control = (data[5], first, second)
            else:
                control, pos = _DECODERS[data[2]](data, 3, MAX_DEPTH, None)
            if pos == len(data):
                return control, None
            if data[pos] == VERSION and data[pos + 1] != COMPRESSED:
                message, pos = _DECODERS[data[pos + 1]](data, pos + 2, MAX_DEPTH, None)
                if pos == len(data):
                    return control, message
        except Exception:  # noqa: BLE001, S110 - the full path raises the right error
            pass
    if not data:
        raise TermDecodeError("an empty frame body (a tick has no body to decode)")
    if data[0] == PASS_THROUGH:
        control, pos = decode_from(data, 1)
        if pos == len(data):
            return control, None
        message, pos = decode_from(data, pos)
    elif data[0] == VERSION and len(data) > 1 and data[1] == DIST_HEADER:
        if atom_cache is None:
            raise TermDecodeError("a frame with a DIST_HEADER needs the connection's AtomCache")
        try:
            refs, pos = atom_cache._read_header(data, 2)
        except (IndexError, struct.error):
            raise _truncated("a DIST_HEADER") from None
        control, pos = decode_body_from(data, pos, refs)
        if pos == len(data):
            return control, None
        message, pos = decode_body_from(data, pos, refs)
    elif data[0] == VERSION and len(data) > 1 and data[1] in (DIST_FRAG_HEADER, DIST_FRAG_CONT):
        raise TermDecodeError("a fragmented message, but DFLAG_FRAGMENTS was not agreed on")
    else:
        raise TermDecodeError(f"a distribution frame starts with 112 (or 131 68), not {data[0]}")
    if pos != len(data):
        raise TermDecodeError(f"{len(data) - pos} bytes follow the message in a frame")
    return control, message


def encode_dist_message(control: tuple, message: Any = NO_MESSAGE) -> bytes:
    """Encode a frame body: ``112 | 131 control`` and, unless ``message`` is omitted,
    ``| 131 message``. The caller adds the 4-byte length in front."""
    out = bytearray(b"p\x83")
    _encode_parts(control, message, out)
    return bytes(out)


def encode_dist_frame(control: tuple, message: Any = NO_MESSAGE) -> bytes:
    """The whole frame of :func:`encode_dist_message`'s body: its 4-byte length first, written
    into the same buffer (no second copy of the body to put the length in front)."""
    out = bytearray(b"\0\0\0\0p\x83")
    _encode_parts(control, message, out)
    _U32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def encode_dist_frame_after(head: bytes, message: Any) -> bytes:
    """:func:`encode_dist_frame` for a control message encoded already: ``head`` is
    ``encode_dist_message(control)``. The control message of a send repeats for every
    message to the same process, so a sender can keep its bytes and encode only ``message``.
    """
    out = bytearray(b"\0\0\0\0")
    out += head
    out.append(VERSION)
    try:
        (_ENCODERS.get(type(message)) or _encoder_for(message))(message, out, MAX_DEPTH)
    except (struct.error, RecursionError) as exc:
        raise _encode_failure(exc) from None
    _U32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def _encode_parts(control: tuple, message: Any, out: _Out) -> None:
    # One try for both terms; the encoders are the ones encode() uses.
    try:
        (_ENCODERS.get(type(control)) or _encoder_for(control))(control, out, MAX_DEPTH)
        if message is not NO_MESSAGE:
            out.append(VERSION)
            (_ENCODERS.get(type(message)) or _encoder_for(message))(message, out, MAX_DEPTH)
    except (struct.error, RecursionError) as exc:
        raise _encode_failure(exc) from None
