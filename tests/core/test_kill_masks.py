"""Masked sections: a kill never interrupts nodelab code in the middle (``_kill.py``).

The masks cost no lock (a counter only the process changes, read by the reaper under the
process's ``kill_lock``). These tests drive the real reaper against processes that enter
and leave masked sections as fast as they can, and check the promise from the inside: an
interruption lands only where the process runs unmasked code, and a kill that comes while
it is masked is acted on when the section ends.
"""

from __future__ import annotations

import time

from nodelab import exit, receive, self, send, spawn
from nodelab.errors import ProcessExit
from nodelab.runtime import processes as P

RUN = 1.0  # seconds each victim runs after its kill
WAIT = 10.0  # every wait for a message from the victims ends after this long


def _work() -> int:
    # Python calls and a loop: places where an asynchronous exception can fire.
    total = 0
    for i in range(200):
        total += abs(i)
    return total


def _victim(seen: list[tuple[str, str]], stop_at: list[float]) -> None:
    """Alternates unmasked work and masked work, and writes down where each exit it caught
    reached it; returns ``RUN`` seconds after its kill. (It reports in a plain list: a
    send would be a checkpoint, where its pending exit ends it.)"""
    where = ["out"]
    while True:
        try:
            if stop_at and time.monotonic() > stop_at[0]:
                return
            _work()
            token = P.enter_critical()
            where[0] = "in"
            _work()
            where[0] = "out"
            P.leave_critical(token)
        except ProcessExit as error:
            seen.append((type(error).__name__, where[0]))
            where[0] = "out"


def test_an_interruption_never_lands_inside_a_masked_section() -> None:
    stop_at: list[float] = []
    reports: list[list[tuple[str, str]]] = [[] for _ in range(3)]
    victims = [spawn(_victim, seen, stop_at) for seen in reports]
    monitors = {P.monitor(pid): pid for pid in victims}
    time.sleep(0.05)  # let them run a while unkilled
    stop_at.append(time.monotonic() + RUN)
    for pid in victims:
        exit(pid, "boom")  # caught by the victims: the reaper keeps interrupting them
    for _ in victims:
        down = receive(("DOWN", object, "process", object, object), timeout=WAIT + RUN,
                       after=None)
        assert down is not None, "a victim did not end"
        assert monitors.pop(down[1]) == down[3] and down[4] == "boom", down
    caught = [entry for seen in reports for entry in seen]
    inside = [entry for entry in caught if entry[1] == "in"]
    assert not inside, f"{len(inside)} of {len(caught)} exits landed inside a masked section"
    kinds = {kind for kind, _ in caught}
    # Both ways a kill reaches a process that never waits: the reaper's interruption of its
    # unmasked code, and the pending exit raised where a masked section ends.
    assert kinds == {"AsyncKill", "ProcessExit"}, (
        f"the victims caught only {kinds} in {RUN} s ({len(caught)} exits)")


def test_a_kill_while_masked_is_acted_on_when_the_section_ends() -> None:
    me = self()
    progress: list[str] = []

    def masked_then_free() -> None:
        token = P.enter_critical()
        try:
            send(me, ("masked", self()))
            # Busy and masked until the kill has surely been requested and the reaper has
            # had many chances to interrupt (it must not).
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                _work()
            progress.append("end of the section")
        finally:
            P.leave_critical(token)
        progress.append("past the section")  # must not happen: the exit comes at leave

    pid = spawn(masked_then_free)
    ref = P.monitor(pid)
    assert receive(("masked", pid), timeout=WAIT, after=None) is not None
    exit(pid, "boom")
    down = receive(("DOWN", ref, "process", pid, object), timeout=WAIT, after=None)
    assert down is not None and down[4] == "boom", down
    assert progress == ["end of the section"], (
        f"{progress}: the masked section was cut short, or the exit came late")
