"""A process's mailbox, with Erlang's selective receive.

New messages arrive in a lock-free ``SimpleQueue`` (one cheap handoff from the sending
thread). Messages that a ``receive`` looked at and did not want move to the *save queue*
and stay there, in arrival order, for the next ``receive`` — exactly how the BEAM keeps a
mailbox in order while a process waits for one particular message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from time import monotonic
from typing import Any


class Signal:
    """Something other than a message that wakes a waiting process (an exit signal)."""

    __slots__ = ("reason", "origin")

    def __init__(self, reason: object, origin: object = None) -> None:
        self.reason = reason
        self.origin = origin


NO_MATCH = object()


class Mailbox:
    """Messages in arrival order; ``take`` finds the first one a matcher accepts.

    Only the owner takes messages out (``take``, ``drain``); any thread puts them in.
    """

    __slots__ = ("_inbox", "_saved", "waiting", "on_signal", "put")

    def __init__(self, on_signal: Callable[[Signal], None]) -> None:
        self._inbox: SimpleQueue = SimpleQueue()
        self._saved: deque = deque()
        self.waiting = False
        # Called in the owner's thread when a Signal is taken out of the inbox; it raises.
        self.on_signal = on_signal
        #: ``put(message)``: add a message (from any thread). The queue's own method, so a
        #: send to a local process costs one C call, with no Python frame in between.
        self.put: Callable[[Any], None] = self._inbox.put

    def __len__(self) -> int:
        return len(self._saved) + self._inbox.qsize()

    def take(self, matcher: Callable[[Any], Any] | None, timeout: float | None) -> Any:
        """Remove and return ``matcher(message)``'s answer for the first accepted message.

        ``matcher`` returns ``NO_MATCH`` to leave a message queued; ``None`` as matcher takes
        any message. Returns ``NO_MATCH`` when ``timeout`` seconds pass first.
        """
        saved = self._saved
        if saved:
            if matcher is None:
                return saved.popleft()
            for index, message in enumerate(saved):
                result = matcher(message)
                if result is not NO_MATCH:
                    del saved[index]
                    return result
        inbox = self._inbox
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            # Asking first is cheaper than get_nowait() raising Empty, and safe: only this
            # thread takes, so a queue that is not empty stays so until it does.
            if inbox.empty():
                if deadline is None:
                    wait = None
                else:
                    wait = deadline - monotonic()
                    if wait <= 0:
                        return NO_MATCH
                self.waiting = True
                try:
                    message = inbox.get(True, wait)
                except Empty:
                    return NO_MATCH
                finally:
                    self.waiting = False
            else:
                message = inbox.get()
            if type(message) is Signal:
                self.on_signal(message)
                continue
            if matcher is None:
                return message
            result = matcher(message)
            if result is not NO_MATCH:
                return result
            saved.append(message)

    def drain(self) -> list[Any]:
        """Remove and return every queued message (signals are still acted on)."""
        messages = list(self._saved)
        self._saved.clear()
        while True:
            try:
                message = self._inbox.get_nowait()
            except Empty:
                return messages
            if type(message) is Signal:
                self.on_signal(message)
                continue
            messages.append(message)
