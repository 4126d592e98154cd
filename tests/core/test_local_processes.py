"""Processes on one node follow the BEAM's rules for links, monitors and exits."""

from __future__ import annotations

import time

import pytest

from nodelab import (
    ANY,
    Crash,
    Pid,
    Process,
    ProcessExit,
    demonitor,
    exit,
    flush,
    link,
    monitor,
    on,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    unlink,
    whereis,
)


def flush_quietly() -> None:
    while receive(timeout=0, after=None) is not None:
        pass


def test_send_returns_the_message_and_receive_gets_it() -> None:
    assert send(self(), ("hi", 1)) == ("hi", 1)
    assert receive(("hi", int), timeout=1) == ("hi", 1)


def test_receive_with_clauses_runs_the_matching_handler() -> None:
    send(self(), ("add", 1, 2))
    result = receive(on(("mul", ANY, ANY), lambda m: m[1] * m[2]),
                     on(("add", ANY, ANY), lambda m: m[1] + m[2]), timeout=1)
    assert result == 3


def test_receive_timeout_raises_or_returns_after() -> None:
    with pytest.raises(TimeoutError, match="0.01 s"):
        receive("never", timeout=0.01)
    assert receive("never", timeout=0.01, after="timeout") == "timeout"


def test_flush_prints_each_message_and_empties_the_mailbox(capsys) -> None:
    send(self(), "sup?")
    send(self(), ("hi", 2))
    assert flush() == "ok"
    assert capsys.readouterr().out == "'sup?'\n('hi', 2)\n"
    assert receive(timeout=0, after="empty") == "empty"


def test_a_crash_reaches_a_trapping_linked_process(trapping) -> None:
    def crash() -> None:
        raise ValueError("boom")

    pid = spawn_link(crash)
    _, sender, reason = receive(("EXIT", pid, ANY), timeout=2)
    assert isinstance(reason, Crash)
    assert reason.kind == "ValueError" and reason.message == "boom"
    assert "raise ValueError" in reason.traceback


def test_a_normal_exit_does_not_kill_a_linked_process() -> None:
    parent = self()

    def middle() -> None:
        spawn_link(lambda: None)
        time.sleep(0.05)
        send(parent, "still alive")

    spawn(middle)
    assert receive("still alive", timeout=2) == "still alive"


def test_an_abnormal_exit_kills_a_linked_process_that_does_not_trap(trapping) -> None:
    def victim() -> None:
        spawn_link(lambda: exit(self(), "bad"))
        receive()

    pid = spawn_link(victim)
    assert receive(("EXIT", pid, ANY), timeout=2)[2] == "bad"


def test_kill_cannot_be_trapped_and_arrives_as_killed(trapping) -> None:
    def stubborn() -> None:
        Process.flag("trap_exit", True)
        while True:
            pass  # busy: the kill must interrupt running code

    pid = spawn_link(stubborn)
    time.sleep(0.05)
    exit(pid, "kill")
    assert receive(("EXIT", pid, ANY), timeout=2)[2] == "killed"


def test_monitor_gets_down_and_noproc_for_the_dead(trapping) -> None:
    pid, ref = spawn_monitor(lambda: receive("go"))
    send(pid, "go")
    assert receive(("DOWN", ref, "process", pid, ANY), timeout=2)[4] == "normal"
    ref2 = monitor(pid)
    assert receive(("DOWN", ref2, "process", pid, ANY), timeout=2)[4] == "noproc"


def test_demonitor_with_flush_leaves_no_down() -> None:
    pid = spawn(lambda: None)
    ref = monitor(pid)
    time.sleep(0.05)
    demonitor(ref, flush=True)
    assert receive(("DOWN", ref, ANY, ANY, ANY), timeout=0.05, after=None) is None


def test_unlink_stops_exit_signals(trapping) -> None:
    pid = spawn_link(lambda: receive("die") and exit(self(), "bad"))
    unlink(pid)
    send(pid, "die")
    assert receive(("EXIT", pid, ANY), timeout=0.1, after=None) is None


def test_link_to_a_dead_process_gives_noproc(trapping) -> None:
    pid = spawn(lambda: None)
    time.sleep(0.05)
    link(pid)
    assert receive(("EXIT", pid, ANY), timeout=1)[2] == "noproc"


def test_registered_names() -> None:
    pid = spawn(lambda: send(receive(Pid), "pong"))
    register("pinger_test", pid)
    assert whereis("pinger_test") == pid
    send("pinger_test", self())
    assert receive("pong", timeout=1) == "pong"
    time.sleep(0.05)
    assert whereis("pinger_test") is None


def test_exit_signal_to_a_process_blocked_in_receive() -> None:
    pid, ref = spawn_monitor(lambda: receive())
    exit(pid, "shutdown")
    assert receive(("DOWN", ref, "process", pid, ANY), timeout=2)[4] == "shutdown"


def test_process_exit_is_not_swallowed_by_except_exception(trapping) -> None:
    def careless() -> None:
        try:
            receive()
        except Exception:  # noqa: BLE001 - the point of the test
            send(parent, "swallowed")

    parent = self()
    pid = spawn_link(careless)
    time.sleep(0.02)
    exit(pid, "shutdown")
    assert receive(("EXIT", pid, ANY), timeout=2)[2] == "shutdown"
    assert receive("swallowed", timeout=0.05, after=None) is None
    assert issubclass(ProcessExit, BaseException) and not issubclass(ProcessExit, Exception)
