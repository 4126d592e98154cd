"""Process identifiers and references.

A :class:`Pid` names one process on one node. It prints like Elixir's ``#PID<0.112.0>``:
the first number is ``0`` for a process of this node and a small per-node index for a
process of another node (the BEAM does the same), the second is the process's serial on
its node. The full identity — node name, serial and the node's *creation* (which changes
every time a node with that name starts) — is what PIDs compare and hash by, so a PID of a
node that died never matches a process of a new node with the same name.
"""

from __future__ import annotations

import itertools
import os
import threading

NO_NODE = "nonode@nohost"

_node_index: dict[str, int] = {}
_node_index_lock = threading.Lock()
_local = {"node": NO_NODE, "creation": int.from_bytes(os.urandom(4), "big") | 1}


def local_node() -> str:
    """The name of this node (``nonode@nohost`` until a node is started)."""
    return _local["node"]


def local_creation() -> int:
    return _local["creation"]


def _set_local_node(name: str, creation: int) -> None:
    _local["node"] = name
    _local["creation"] = creation


def _index_of(node: str) -> int:
    if node == _local["node"] or node == NO_NODE:
        return 0
    with _node_index_lock:
        index = _node_index.get(node)
        if index is None:
            index = _node_index[node] = len(_node_index) + 1
        return index


class Pid:
    """The identity of a process: its node, its serial on that node, the node's creation."""

    __slots__ = ("node", "serial", "creation")

    def __init__(self, node: str, serial: int, creation: int) -> None:
        self.node = node
        self.serial = serial
        self.creation = creation

    @property
    def is_local(self) -> bool:
        """True when the process lives on this node."""
        return self.creation == _local["creation"] and (
            self.node == _local["node"] or self.node == NO_NODE
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pid)
            and self.serial == other.serial
            and self.creation == other.creation
            and (self.node == other.node or NO_NODE in (self.node, other.node))
        )

    def __hash__(self) -> int:
        return hash((self.serial, self.creation))

    def __repr__(self) -> str:
        return f"#PID<{_index_of(self.node)}.{self.serial}.0>"

    def __reduce__(self):
        # A local PID made before Node.start travels with the node's current name.
        node = _local["node"] if self.is_local else self.node
        return (Pid, (node, self.serial, self.creation))


_ref_counter = itertools.count(1)


class Ref:
    """A unique reference, like Elixir's ``make_ref()``: tags replies and monitors."""

    __slots__ = ("node", "id", "creation")

    def __init__(self, node: str, id: int, creation: int) -> None:
        self.node = node
        self.id = id
        self.creation = creation

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ref)
            and self.id == other.id
            and self.creation == other.creation
            and (self.node == other.node or NO_NODE in (self.node, other.node))
        )

    def __hash__(self) -> int:
        return hash((self.id, self.creation))

    def __repr__(self) -> str:
        n = self.id
        return f"#Reference<{_index_of(self.node)}.{n >> 36}.{(n >> 18) & 0x3FFFF}.{n & 0x3FFFF}>"

    def __reduce__(self):
        node = _local["node"] if self.node == NO_NODE else self.node
        return (Ref, (node, self.id, self.creation))


def make_ref() -> Ref:
    """Return a new reference, unique among all references this node makes."""
    return Ref(_local["node"], next(_ref_counter), _local["creation"])
