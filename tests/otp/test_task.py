"""Task and TaskSupervisor on one node: results, timeouts, crashes, links, group leaders."""

from __future__ import annotations

import math
import sys
import threading
import time

import pytest

from nodelab import (
    ANY,
    Crash,
    NodelabError,
    monitor,
    receive,
    self,
    send,
    spawn,
    start_group_leader,
    whereis,
)
from nodelab import group_leader as gl
from nodelab.otp import (
    CallError,
    Supervisor,
    Task,
    TaskError,
    TaskSupervisor,
    TaskTimeout,
)
from nodelab.runtime.group_leader import OutputRouter

NOPROC = ("no process: the process is not alive or there's no process currently associated "
          "with the given name, possibly because its application isn't started")


class Maths:
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


@pytest.fixture
def tasks() -> str:
    """A task supervisor registered as 'Test.Tasks', stopped after the test."""
    _, pid = TaskSupervisor.start_link(name="Test.Tasks")
    yield "Test.Tasks"
    Supervisor.stop(pid)


def test_async_and_await() -> None:
    task = Task.async_(lambda: 1 + 1)
    assert task.owner == self()
    assert Task.await_(task) == 2
    assert "mfa='<lambda>/0'" in repr(task)


def test_the_module_function_args_forms() -> None:
    assert Task.await_(Task.async_(math, "sqrt", [16])) == 4.0
    assert Task.await_(Task.async_("math", "sqrt", [9])) == 3.0
    assert Task.await_(Task.async_(Maths, "double", [21])) == 42


def test_await_timeout_says_so_and_the_task_keeps_running() -> None:
    task = Task.async_(lambda: time.sleep(0.3) or "late")
    with pytest.raises(TaskTimeout) as raised:
        Task.await_(task, 0.05)
    assert "exited in: Task.await_(" in str(raised.value)
    assert "** (EXIT) time out" in str(raised.value)
    assert isinstance(raised.value, TimeoutError)


def test_yield_returns_none_until_the_result_is_there() -> None:
    task = Task.async_(lambda: time.sleep(0.2) or "done")
    assert Task.yield_(task, 0.01) is None
    assert Task.yield_(task, 5) == "done"


def test_await_many_keeps_the_order() -> None:
    tasks = [Task.async_(lambda n=n: time.sleep(0.05 * (3 - n)) or n) for n in range(3)]
    assert Task.await_many(tasks) == [0, 1, 2]


def test_shutdown_stops_a_running_task() -> None:
    task = Task.async_(lambda: receive())
    watch = monitor(task.pid)
    assert Task.shutdown(task) is None
    assert receive(("DOWN", watch, "process", task.pid, ANY), timeout=2)[4] == "shutdown"


def test_shutdown_returns_a_result_that_was_already_there() -> None:
    task = Task.async_(lambda: "finished")
    time.sleep(0.1)
    assert Task.shutdown(task) == "finished"


def test_only_the_owner_may_await() -> None:
    task = Task.async_(lambda: 1)
    me = self()
    errors: list[str] = []

    def other() -> None:
        try:
            Task.await_(task)
        except NodelabError as error:
            errors.append(str(error))
        send(me, "done")

    spawn(other)
    receive("done", timeout=5)
    assert errors and "must be called by the task's owner" in errors[0]
    assert Task.await_(task) == 1


def test_a_crash_raises_task_error_with_the_traceback_and_the_shell_restarts() -> None:
    def explode() -> None:
        raise ValueError("boom")

    before = self()
    with pytest.raises(TaskError) as raised:
        Task.await_(Task.async_(explode))
    reason = raised.value.reason
    assert isinstance(reason, Crash) and reason.kind == "ValueError"
    assert "** (ValueError) boom" in str(raised.value)
    assert "in explode" in str(raised.value)
    # Linked to the task, this shell process died with it, as iex's does; a new one took over.
    assert self() != before


def test_a_process_that_awaits_a_crashing_task_dies_with_the_same_reason() -> None:
    def owner() -> None:
        Task.await_(Task.async_(lambda: 1 / 0))

    pid = spawn(owner)
    watch = monitor(pid)
    reason = receive(("DOWN", watch, "process", pid, ANY), timeout=5)[4]
    assert isinstance(reason, Crash) and reason.kind == "ZeroDivisionError"


def test_a_trapping_owner_survives_and_gets_both_the_error_and_the_exit(trapping) -> None:
    before = self()
    task = Task.async_(lambda: 1 / 0)
    with pytest.raises(TaskError):
        Task.await_(task)
    assert self() == before
    assert receive(("EXIT", task.pid, ANY), timeout=2)[2].kind == "ZeroDivisionError"


def test_task_supervisor_async_and_the_module_forms(tasks) -> None:
    assert Task.await_(TaskSupervisor.async_(tasks, lambda: "hi")) == "hi"
    assert Task.await_(TaskSupervisor.async_(tasks, math, "sqrt", [25])) == 5.0
    assert Task.await_(TaskSupervisor.async_(whereis(tasks), "math", "floor", [2.5])) == 2


def test_async_nolink_crash_does_not_touch_the_caller(tasks) -> None:
    before = self()
    with pytest.raises(TaskError) as raised:
        Task.await_(TaskSupervisor.async_nolink(tasks, lambda: 1 / 0))
    assert raised.value.reason.kind == "ZeroDivisionError"
    assert self() == before


def test_start_child_and_children(tasks) -> None:
    release = threading.Event()
    ok, pid = TaskSupervisor.start_child(tasks, lambda: release.wait(5))
    assert ok == "ok"
    assert TaskSupervisor.children(tasks) == [pid]
    assert Supervisor.count_children(tasks)["active"] == 1
    release.set()
    deadline = time.monotonic() + 5
    while TaskSupervisor.children(tasks) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert TaskSupervisor.children(tasks) == []


def test_terminate_child(tasks) -> None:
    _, pid = TaskSupervisor.start_child(tasks, lambda: receive())
    watch = monitor(pid)
    assert TaskSupervisor.terminate_child(tasks, pid) == "ok"
    assert receive(("DOWN", watch, "process", pid, ANY), timeout=2)[4] == "shutdown"
    assert TaskSupervisor.terminate_child(tasks, pid) == ("error", "not_found")


def test_a_transient_child_is_restarted_after_a_crash(tasks) -> None:
    me = self()
    runs: list[int] = []

    def flaky() -> None:
        runs.append(1)
        send(me, ("ran", len(runs)))
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    TaskSupervisor.start_child(tasks, flaky, restart="transient")
    receive(("ran", 1), timeout=5)
    receive(("ran", 2), timeout=5)
    time.sleep(0.1)
    assert len(runs) == 2  # the second, normal exit is not restarted


def test_an_unknown_name_fails_at_once_with_elixirs_words() -> None:
    started = time.monotonic()
    with pytest.raises(CallError) as raised:
        TaskSupervisor.async_("No.Such.Supervisor", lambda: 1)
    assert time.monotonic() - started < 1
    assert raised.value.reason == "noproc"
    assert NOPROC in str(raised.value)


def test_passing_what_start_link_returned_is_explained(tasks) -> None:
    with pytest.raises(TypeError, match="unpack it first"):
        TaskSupervisor.async_(("ok", whereis(tasks)), lambda: 1)


def test_a_supervised_task_prints_where_its_supervisor_prints(monkeypatch) -> None:
    supervisor_output: list[str] = []
    caller_output: list[str] = []
    # Route print through group leaders, as a named node does (Node.start installs this).
    monkeypatch.setattr(sys, "stdout", OutputRouter(sys.stdout))
    old = gl()
    gl(start_group_leader(lambda stream, text: supervisor_output.append(text)))
    _, sup = TaskSupervisor.start_link()
    gl(start_group_leader(lambda stream, text: caller_output.append(text)))
    try:
        Task.await_(TaskSupervisor.async_(sup, lambda: print("supervised")))
        Task.await_(Task.async_(lambda: print("plain")))
    finally:
        gl(old)
        Supervisor.stop(sup)
    assert "".join(supervisor_output) == "supervised\n"
    assert "".join(caller_output) == "plain\n"


def test_the_task_supervisor_stops_its_tasks_with_it() -> None:
    _, sup = TaskSupervisor.start_link()
    _, pid = TaskSupervisor.start_child(sup, lambda: receive())
    watch = monitor(pid)
    assert Supervisor.stop(sup) == "ok"
    assert receive(("DOWN", watch, "process", pid, ANY), timeout=2)[4] == "shutdown"


def test_a_name_can_only_be_taken_once(tasks) -> None:
    from nodelab.otp import StartError

    with pytest.raises(StartError, match="already registered"):
        TaskSupervisor.start_link(name=tasks)


def test_shutdown_after_await_returns_at_once() -> None:
    task = Task.async_(lambda: 1)
    assert Task.await_(task) == 1
    started = time.monotonic()
    assert Task.shutdown(task) is None
    assert time.monotonic() - started < 0.5
