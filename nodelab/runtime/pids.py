"""Process identifiers and references: values that name a process, or a moment.

A :class:`Pid` names one process on one node. It prints like Elixir's ``#PID<0.112.0>``:
the first number is ``0`` for a process of this node and a small per-node index for a
process of another node (the BEAM does the same), the second is the process's number on its
node, the third a generation that only changes when the numbers wrap around. The full
identity — node name, number, generation and the node's *creation* (which changes every
time a node with that name starts) — is what PIDs compare and hash by, so a PID of a node
that died never matches a process of a new node with the same name.

PIDs and references are values, as on the BEAM: they never change once made, and equality
is an ordinary, transitive comparison of those four fields. One subtlety is borrowed from
the BEAM too. A process of *this* node has a PID that means "this node", whatever this node
is called: the BEAM gives a shell process started before ``net_kernel`` a PID whose node
becomes ``alex@localhost`` once the node is named. So a local PID does not store a node
name or creation; it reads them from the node when asked, and a PID received from another
node that names this node (and its current creation) is equal to it.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

NO_NODE = "nonode@nohost"

_node_index: dict[str, int] = {}
_node_index_lock = threading.Lock()
_local = {"node": NO_NODE, "creation": int.from_bytes(os.urandom(4), "big") | 1}


def local_node() -> str:
    """The name of this node (``nonode@nohost`` until a node is started)."""
    return _local["node"]


def local_creation() -> int:
    """This node's creation: a number that tells this run of the node from earlier ones."""
    return _local["creation"]


def set_local_node(name: str, creation: int | None = None) -> None:
    """Name this node (``Node.start``/``Node.stop``); local PIDs follow, as on the BEAM."""
    _local["node"] = name
    if creation is not None:
        _local["creation"] = creation


def _index_of(node: str) -> int:
    if node == _local["node"] or node == NO_NODE:
        return 0
    with _node_index_lock:
        index = _node_index.get(node)
        if index is None:
            index = _node_index[node] = len(_node_index) + 1
        return index


def _immutable(self: Any, name: str, value: Any) -> None:
    raise AttributeError(f"{type(self).__name__} is a value and cannot be changed: make a new one")


class _OfANode:
    """What a PID and a reference share: the node that made them and its creation, read
    from the node itself when they are this node's (``None`` in the fields), and no
    changing once made."""

    __slots__ = ("_node", "_creation")

    __setattr__ = _immutable

    @property
    def node(self) -> str:
        """The name of the node that made it."""
        node = self._node
        return _local["node"] if node is None else node

    @property
    def creation(self) -> int:
        creation = self._creation
        return _local["creation"] if creation is None else creation


class Pid(_OfANode):
    """The identity of a process: its node, its number there, a generation, and the node's
    creation. ``Pid(node, serial, creation)`` names a process of any node."""

    __slots__ = ("serial", "generation")

    def __init__(self, node: str, serial: int, creation: int, generation: int = 0) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "serial", serial)
        object.__setattr__(self, "_creation", creation)
        object.__setattr__(self, "generation", generation)

    @classmethod
    def of_this_node(cls, serial: int) -> Pid:
        """The PID of this node's process number ``serial``, whatever the node is named."""
        # None: "this node". Built like a received PID (no __init__): one per spawn.
        return _pid(None, serial, None, 0)  # type: ignore[arg-type]

    @property
    def is_local(self) -> bool:
        """True when the process lives on this node (this run of it)."""
        if self._node is None:
            return True
        return self._creation == _local["creation"] and self._node == _local["node"]

    def _key(self) -> tuple:
        node = self._node
        creation = self._creation
        return (_local["node"] if node is None else node, self.serial, self.generation,
                _local["creation"] if creation is None else creation)

    def __eq__(self, other: object) -> bool:
        # Serial and generation first: most PIDs a process compares (a table lookup, a
        # receive pattern, a link) differ there, and need no key. The fields are read
        # without the properties: PIDs are compared on nearly every message's path.
        return (type(other) is Pid and self.serial == other.serial
                and self.generation == other.generation and self._key() == other._key())

    def __hash__(self) -> int:
        # Only the fields that never change: a local PID's node name may (Node.start).
        return hash((self.serial, self.generation))

    def __repr__(self) -> str:
        return f"#PID<{_index_of(self.node)}.{self.serial}.{self.generation}>"

    def __reduce_ex__(self, protocol: object) -> tuple:
        # A PID leaves this process with the node's current name and creation, as four
        # plain fields rebuilt by _pid (no __init__, no properties on the way back): a
        # PID is in nearly every message, so its encoding is on every message's path.
        node = self._node
        creation = self._creation
        return (_pid, (_local["node"] if node is None else node, self.serial,
                       _local["creation"] if creation is None else creation, self.generation))


_ref_counter = itertools.count(1)


def _words_of(number: int) -> tuple[int, int, int]:
    # The BEAM's reference: three 32-bit words, the first of which uses 18 bits.
    return (number & 0x3FFFF, (number >> 18) & 0xFFFFFFFF, (number >> 50) & 0xFFFFFFFF)


class Ref(_OfANode):
    """A unique reference, like Elixir's ``make_ref()``: tags replies and monitors.

    ``words`` are the reference's number as the BEAM writes it: a few 32-bit words.
    """

    __slots__ = ("words",)

    def __init__(self, node: str, words: tuple[int, ...], creation: int) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "words", tuple(words))
        object.__setattr__(self, "_creation", creation)

    def _key(self) -> tuple:
        node = self._node
        creation = self._creation
        return (_local["node"] if node is None else node, self.words,
                _local["creation"] if creation is None else creation)

    def __eq__(self, other: object) -> bool:
        # The number first (as for a PID): a reply matcher compares many references.
        return type(other) is Ref and self.words == other.words and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self.words)

    def __repr__(self) -> str:
        words = ".".join(str(word) for word in reversed(self.words))
        return f"#Reference<{_index_of(self.node)}.{words}>"

    def __reduce_ex__(self, protocol: object) -> tuple:
        node = self._node
        creation = self._creation
        return (_ref, (_local["node"] if node is None else node, self.words,
                       _local["creation"] if creation is None else creation))


# The slots' own setters: they write a field of a new PID or reference without going through
# the immutable ``__setattr__`` (what ``object.__setattr__`` does, at about half the cost).
_set_node = _OfANode._node.__set__  # type: ignore[attr-defined]
_set_creation = _OfANode._creation.__set__  # type: ignore[attr-defined]
_set_serial = Pid.serial.__set__  # type: ignore[attr-defined]
_set_generation = Pid.generation.__set__  # type: ignore[attr-defined]
_set_words = Ref.words.__set__  # type: ignore[attr-defined]
_new = object.__new__


def _pid(node: str, serial: int, creation: int, generation: int) -> Pid:
    # How a PID from another process is rebuilt (see Pid.__reduce_ex__): the fields are
    # already checked values, so the constructor's work is skipped.
    pid = _new(Pid)
    _set_node(pid, node)
    _set_serial(pid, serial)
    _set_creation(pid, creation)
    _set_generation(pid, generation)
    return pid


def _ref(node: str, words: tuple[int, ...], creation: int) -> Ref:
    ref = _new(Ref)
    _set_node(ref, node)
    _set_words(ref, words)
    _set_creation(ref, creation)
    return ref


def make_ref() -> Ref:
    """Return a new reference, unique among all references this node makes."""
    return _ref(None, _words_of(next(_ref_counter)), None)  # type: ignore[arg-type] - this node
