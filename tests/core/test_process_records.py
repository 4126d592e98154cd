"""A process that has ended leaves nothing behind for the cyclic garbage collector: its
record, mailbox and tables are freed by reference counting as soon as nothing names them
(a record that its own mailbox referred to was a cycle of ten objects per process, kept
until the collector ran: with many short processes, the collector's work and the memory of
finished processes grow with them)."""

from __future__ import annotations

import gc

from nodelab import receive, self, send, spawn

SPAWNS = 200


def test_ended_processes_are_freed_without_the_cycle_collector() -> None:
    me = self()

    def answer() -> None:
        send(me, "up")

    gc.collect()
    gc.disable()
    try:
        for _ in range(SPAWNS):
            spawn(answer)
            assert receive("up", timeout=5, after=None) == "up"
        found = gc.collect()
    finally:
        gc.enable()
    # Without the cycle: nothing of theirs is unreachable garbage (other threads of the
    # node may leave a little). With it: about ten objects per process.
    assert found < SPAWNS, f"{found} unreachable objects after {SPAWNS} processes ended"
