"""The receive pattern language: values, types, ``ANY``, tuples and lists of patterns,
predicates, and ``on(pattern, handler)`` clauses.

``matcher(patterns)`` turns the arguments of ``receive`` into the one function the mailbox
calls on each message: it returns what ``receive`` should return, or ``NO_MATCH``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodelab.runtime.mailbox import NO_MATCH


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: In a receive pattern, matches any value (Elixir's ``_``).
ANY: Any = _Any()


@dataclass(frozen=True)
class Clause:
    """One clause of a multi-clause ``receive``: a pattern and what to do on a match."""

    pattern: Any
    handler: Callable[[Any], Any]


def on(pattern: Any, handler: Callable[[Any], Any]) -> Clause:
    """A receive clause: ``receive(on(("hi", Pid), reply), on("stop", lambda m: "bye"))``."""
    return Clause(pattern, handler)


#: Patterns compared by value, checked first: the leaves of almost every pattern.
_PLAIN = frozenset({str, int, float, bytes, bool, type(None)})


def matches(pattern: Any, value: Any) -> bool:
    """True when ``value`` fits ``pattern`` (see ``receive`` for the pattern language)."""
    kind = type(pattern)
    if kind in _PLAIN:
        return pattern == value
    if pattern is ANY:
        return True
    if kind is tuple:  # the common compound pattern, before the general checks
        if type(value) is not tuple or len(value) != len(pattern):
            return False
        for part, item in zip(pattern, value, strict=True):
            if not matches(part, item):
                return False
        return True
    if isinstance(pattern, type):
        return isinstance(value, pattern)
    if isinstance(pattern, tuple):
        return (type(value) is tuple and len(value) == len(pattern)
                and all(matches(p, v) for p, v in zip(pattern, value, strict=True)))
    if isinstance(pattern, list):
        return (type(value) is list and len(value) == len(pattern)
                and all(matches(p, v) for p, v in zip(pattern, value, strict=True)))
    if callable(pattern):
        return bool(pattern(value))
    return pattern == value


class Matched:
    """What a clause's matcher returns: the handler to run on the message, after the
    message left the mailbox."""

    __slots__ = ("handler", "message")

    def __init__(self, handler: Callable[[Any], Any], message: Any) -> None:
        self.handler = handler
        self.message = message


def matcher(patterns: tuple) -> Callable[[Any], Any] | None:
    """The mailbox matcher for ``receive(*patterns)`` (None: take any message)."""
    if not patterns:
        return None
    if len(patterns) == 1 and not isinstance(patterns[0], Clause):  # the common case, first
        pattern = patterns[0]
        return lambda message: message if matches(pattern, message) else NO_MATCH
    if all(isinstance(p, Clause) for p in patterns):
        def run_clause(message: Any) -> Any:
            for clause in patterns:
                if matches(clause.pattern, message):
                    return Matched(clause.handler, message)
            return NO_MATCH
        return run_clause
    if any(isinstance(p, Clause) for p in patterns):
        raise TypeError("receive takes either patterns or on(pattern, handler) clauses, not both")
    if len(patterns) == 1:
        pattern = patterns[0]
        return lambda message: message if matches(pattern, message) else NO_MATCH
    return lambda message: message if any(matches(p, message) for p in patterns) else NO_MATCH


def is_down_for(message: Any, ref: Any) -> bool:
    """True for ``("DOWN", ref, ...)`` of the monitor ``ref``."""
    return (type(message) is tuple and len(message) == 5 and message[0] == "DOWN"
            and message[1] == ref)
