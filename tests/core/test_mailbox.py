"""The mailbox keeps arrival order and lets a receive pick one message out of it."""

from __future__ import annotations

import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from nodelab.runtime.mailbox import NO_MATCH, Mailbox, Signal


def _raise(signal: Signal) -> None:
    raise RuntimeError(signal.reason)


def take_equal(box: Mailbox, wanted: object, timeout: float = 0) -> object:
    return box.take(lambda m: m if m == wanted else NO_MATCH, timeout)


@given(st.lists(st.integers(0, 5), max_size=40), st.integers(0, 5))
def test_selective_receive_keeps_the_others_in_order(messages: list[int], wanted: int) -> None:
    box = Mailbox(_raise)
    for message in messages:
        box.put(message)
    got = take_equal(box, wanted)
    rest = [box.take(None, 0) for _ in range(len(box))]
    if wanted in messages:
        assert got == wanted
        expected = list(messages)
        expected.remove(wanted)
        assert rest == expected
    else:
        assert got is NO_MATCH
        assert rest == messages


def test_timeout_returns_no_match_after_the_time() -> None:
    box = Mailbox(_raise)
    box.put("other")
    started = time.monotonic()
    assert take_equal(box, "wanted", timeout=0.05) is NO_MATCH
    assert time.monotonic() - started >= 0.045
    assert box.take(None, 0) == "other"


def test_a_message_from_another_thread_wakes_the_receiver() -> None:
    box = Mailbox(_raise)
    threading.Timer(0.02, box.put, args=("late",)).start()
    assert take_equal(box, "late", timeout=2) == "late"


def test_a_signal_interrupts_a_waiting_receive() -> None:
    box = Mailbox(_raise)
    threading.Timer(0.02, box.put, args=(Signal("stop"),)).start()
    try:
        box.take(None, 2)
    except RuntimeError as error:
        assert str(error) == "stop"
    else:
        raise AssertionError("the signal did not interrupt the receive")


def test_selecting_the_last_of_many_messages() -> None:
    box = Mailbox(_raise)
    for number in range(100_000):
        box.put(number)
    assert take_equal(box, 99_999) == 99_999
    assert len(box) == 99_999
    assert box.take(None, 0) == 0
