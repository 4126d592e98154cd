"""Supervisor: strategies, restart types, intensity and escalation, orderly shutdown."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from nodelab import (
    ANY,
    Pid,
    Process,
    ProcessExit,
    monitor,
    receive,
    self,
    send,
    spawn,
    spawn_link,
    whereis,
)
from nodelab import exit as exit_signal
from nodelab.otp import StartError, Supervisor, TaskSupervisor


class Events:
    """What the workers of a test did, in order: ("start", name), ("stop", name)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, kind: str, name: str) -> None:
        with self.lock:
            self.items.append((kind, name))

    def take(self) -> list[tuple[str, str]]:
        with self.lock:
            items, self.items = self.items, []
            return items


def worker(events: Events, name: str, **spec: Any) -> dict[str, Any]:
    """A child spec: a worker that logs its start (in the supervisor, so in start order)
    and, trapping exits, its stop; it crashes on "crash" and ends normally on "quit".
    ``stubborn=True``: it ignores exit "shutdown", so the supervisor has to kill it."""

    stubborn = spec.pop("stubborn", False)

    def body(starter: Pid) -> None:
        Process.flag("trap_exit", True)
        send(starter, ("ready", self()))
        while True:
            message = receive()
            if message == "crash":
                raise RuntimeError(f"{name} crashed")
            if message == "quit":
                return
            if type(message) is tuple and message[0] == "EXIT":
                if message[2] == "shutdown" and stubborn:
                    continue  # ignores the shutdown: the supervisor must kill it
                events.add("stop", name)
                raise ProcessExit(message[2])

    def start() -> tuple[str, Pid]:
        # Like GenServer.start_link, return once the worker is ready (trapping exits).
        events.add("start", name)
        pid = spawn_link(body, self())
        receive(("ready", pid), timeout=5)
        return ("ok", pid)

    return {"id": name, "start": (start, []), **spec}


def pids(sup: Any) -> dict[Any, Any]:
    return {child_id: pid for child_id, pid, _, _ in Supervisor.which_children(sup)}


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def crash(sup: Any, child: str) -> Pid:
    """Crash ``child`` and wait until the supervisor runs a new one."""
    old = pids(sup)[child]
    send(old, "crash")
    wait_until(lambda: pids(sup).get(child) not in (None, old))
    return pids(sup)[child]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def supervise(events):
    """Start a supervisor of workers a, b, c; every supervisor started is stopped after."""
    started: list[Pid] = []

    def start(strategy: str = "one_for_one", names=("a", "b", "c"), **options) -> Pid:
        children = [worker(events, name) for name in names]
        _, pid = Supervisor.start_link(children, strategy, **options)
        started.append(pid)
        events.take()
        return pid

    yield start
    for pid in started:
        if Process.alive(pid):
            Supervisor.stop(pid)


def test_start_link_starts_the_children_in_order(events) -> None:
    _, sup = Supervisor.start_link([worker(events, n) for n in "abc"], name="Test.Sup")
    try:
        assert events.take() == [("start", "a"), ("start", "b"), ("start", "c")]
        assert whereis("Test.Sup") == sup
        # Newest first, as Elixir lists them.
        assert [c[0] for c in Supervisor.which_children("Test.Sup")] == ["c", "b", "a"]
    finally:
        Supervisor.stop(sup)
    assert whereis("Test.Sup") is None


def test_one_for_one_restarts_only_the_crashed_child(supervise, events) -> None:
    sup = supervise("one_for_one")
    before = pids(sup)
    crash(sup, "b")
    after = pids(sup)
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert after["b"] != before["b"]
    assert events.take() == [("start", "b")]


def test_one_for_all_restarts_every_child(supervise, events) -> None:
    sup = supervise("one_for_all")
    before = pids(sup)
    crash(sup, "b")
    wait_until(lambda: all(pids(sup)[n] not in (None, before[n]) for n in "abc"))
    # The others stop in reverse start order, then all start in order.
    assert events.take() == [("stop", "c"), ("stop", "a"),
                             ("start", "a"), ("start", "b"), ("start", "c")]


def test_rest_for_one_restarts_the_children_started_after_it(supervise, events) -> None:
    sup = supervise("rest_for_one")
    before = pids(sup)
    crash(sup, "b")
    wait_until(lambda: pids(sup)["c"] not in (None, before["c"]))
    assert pids(sup)["a"] == before["a"]
    assert events.take() == [("stop", "c"), ("start", "b"), ("start", "c")]


def test_restart_types(events) -> None:
    children = [worker(events, "permanent"), worker(events, "transient", restart="transient"),
                worker(events, "temporary", restart="temporary")]
    _, sup = Supervisor.start_link(children)
    try:
        events.take()
        before = pids(sup)
        send(before["transient"], "quit")  # a normal exit: not restarted
        send(before["temporary"], "crash")  # never restarted, and forgotten
        wait_until(lambda: "temporary" not in pids(sup) and pids(sup)["transient"] is None)
        assert Supervisor.restart_child(sup, "transient")[0] == "ok"
        crash(sup, "transient")  # an abnormal exit: restarted
        send(pids(sup)["permanent"], "quit")  # permanent: restarted even after a normal exit
        wait_until(lambda: pids(sup)["permanent"] not in (None, before["permanent"]))
    finally:
        Supervisor.stop(sup)


def test_too_many_restarts_shut_the_supervisor_down(trapping, events) -> None:
    _, sup = Supervisor.start_link([worker(events, "a"), worker(events, "b")],
                                   max_restarts=2, max_seconds=5)
    crash(sup, "a")
    crash(sup, "a")
    victim = pids(sup)["b"]
    watch = monitor(victim)
    send(pids(sup)["a"], "crash")  # the third restart in 5 s is one too many
    assert receive(("EXIT", sup, ANY), timeout=5)[2] == "shutdown"
    assert receive(("DOWN", watch, "process", victim, ANY), timeout=2)[4] == "shutdown"
    assert not Process.alive(sup)


def test_restarts_older_than_max_seconds_do_not_count(supervise) -> None:
    sup = supervise(max_restarts=1, max_seconds=0.2)
    crash(sup, "a")
    time.sleep(0.3)
    crash(sup, "a")
    assert Process.alive(sup)


def test_a_failure_escalates_to_the_parent_supervisor(events) -> None:
    inner = {"id": "inner", "type": "supervisor",
             "start": (Supervisor.start_link, [[worker(events, "w")]], {"max_restarts": 0})}
    _, outer = Supervisor.start_link([inner])
    try:
        events.take()
        inner_before = pids(outer)["inner"]
        worker_before = pids(inner_before)["w"]
        send(worker_before, "crash")  # inner may not restart anything: it gives up
        wait_until(lambda: pids(outer)["inner"] not in (None, inner_before))
        assert pids(pids(outer)["inner"])["w"] != worker_before
        assert events.take() == [("start", "w")]
    finally:
        Supervisor.stop(outer)


def test_stop_stops_the_children_in_reverse_order(events) -> None:
    _, sup = Supervisor.start_link([worker(events, n) for n in "abc"])
    events.take()
    assert Supervisor.stop(sup) == "ok"
    assert events.take() == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert not Process.alive(sup)


def test_a_child_that_ignores_shutdown_is_killed_after_its_shutdown_time(events) -> None:
    slow = worker(events, "slow", stubborn=True, shutdown=0.2)
    _, sup = Supervisor.start_link([slow])
    child = pids(sup)["slow"]
    watch = monitor(child)
    started = time.monotonic()
    Supervisor.stop(sup)
    assert 0.15 < time.monotonic() - started < 2
    assert receive(("DOWN", watch, "process", child, ANY), timeout=2)[4] == "killed"


def test_brutal_kill_does_not_wait(events) -> None:
    _, sup = Supervisor.start_link([worker(events, "w", shutdown="brutal_kill")])
    events.take()
    Supervisor.stop(sup)
    assert events.take() == []  # killed: it had no chance to log its stop


def test_a_supervisor_stops_its_children_when_its_parent_dies(events) -> None:
    me = self()

    def parent() -> None:
        send(me, Supervisor.start_link([worker(events, "a"), worker(events, "b")]))
        receive()

    owner = spawn(parent)
    _, sup = receive(("ok", Pid), timeout=5)
    watch = monitor(sup)
    events.take()
    exit_signal(owner, "boom")
    assert receive(("DOWN", watch, "process", sup, ANY), timeout=5)[4] == "boom"
    assert events.take() == [("stop", "b"), ("stop", "a")]


def test_child_management_answers_like_elixir(supervise, events) -> None:
    sup = supervise()
    assert Supervisor.count_children(sup) == {"specs": 3, "active": 3, "supervisors": 0,
                                              "workers": 3}
    assert Supervisor.terminate_child(sup, "a") == "ok"
    child = next(c for c in Supervisor.which_children(sup) if c[0] == "a")
    assert child[1:3] == (None, "worker")  # Elixir shows :undefined
    assert Supervisor.count_children(sup)["active"] == 2
    ok, pid = Supervisor.restart_child(sup, "a")
    assert ok == "ok" and isinstance(pid, Pid)
    assert Supervisor.restart_child(sup, "a") == ("error", "running")
    assert Supervisor.delete_child(sup, "a") == ("error", "running")
    assert Supervisor.terminate_child(sup, "zz") == ("error", "not_found")
    assert Supervisor.restart_child(sup, "zz") == ("error", "not_found")
    Supervisor.terminate_child(sup, "a")
    assert Supervisor.delete_child(sup, "a") == "ok"
    assert "a" not in pids(sup)
    ok, pid = Supervisor.start_child(sup, worker(events, "d"))
    assert ok == "ok" and pids(sup)["d"] == pid
    assert Supervisor.start_child(sup, worker(events, "d")) == ("error", ("already_started", pid))


def test_a_child_that_fails_to_start_stops_the_others(events) -> None:
    failing = {"id": "x", "start": (lambda: ("error", "nope"), [])}
    with pytest.raises(StartError) as raised:
        Supervisor.start_link([worker(events, "a"), failing])
    assert raised.value.reason == ("shutdown", ("failed_to_start_child", "x", "nope"))
    assert "could not start child 'x'" in str(raised.value)
    assert events.take() == [("start", "a"), ("stop", "a")]


def test_child_specs(events) -> None:
    assert TaskSupervisor.child_spec({"name": "T"})["id"] == "T"
    spec = Supervisor.child_spec((TaskSupervisor, {}), id="tasks", restart="transient")
    assert (spec["id"], spec["restart"], spec["type"], spec["shutdown"]) == (
        "tasks", "transient", "supervisor", "infinity")
    _, sup = Supervisor.start_link([TaskSupervisor, (TaskSupervisor, {"name": "Test.T"})])
    try:
        assert sorted(map(repr, pids(sup))) == ["'Test.T'", "TaskSupervisor"]
    finally:
        Supervisor.stop(sup)
    with pytest.raises(TypeError, match="is not a child spec"):
        Supervisor.start_link([lambda: None])
    with pytest.raises(ValueError, match="has no 'id'"):
        Supervisor.start_link([{"start": (spawn_link, [print])}])
    with pytest.raises(ValueError, match="distinct ids"):
        Supervisor.start_link([worker(events, "a"), worker(events, "a")])
    with pytest.raises(ValueError, match="unknown strategy"):
        Supervisor.start_link([], strategy="one_for_none")
