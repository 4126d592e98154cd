"""The lesson's chat, across real nodes: alex, kate and moebi each run ``--app chat``.

This test process drives them (it is the node you type into, like a fourth terminal):
it asks alex to call ``chat.send_message`` and reads what each node printed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from nodelab import ANY, NoConnection, Node, Process, monitor, receive, self, send, spawn
from nodelab.otp import CallError, Task, TaskError, TaskNoConnection, TaskSupervisor

KATE_HAS_A_MODULE = (
    "class KateOnly:\n"
    "    @staticmethod\n"
    "    def who():\n"
    "        return 'only kate knows'\n"
)


@pytest.fixture(scope="module")
def nodes(module_peers) -> dict[str, Any]:
    # This test process may itself be alex@localhost (the core tests' node): then the alex
    # of the lesson gets another name. moebi must be moebi@localhost: chat says so.
    alex = "alex" if Node.self() != "alex@localhost" else "alex2"
    return {
        "alex": module_peers(alex),
        "kate": module_peers("kate", eval=KATE_HAS_A_MODULE),
        "moebi": module_peers("moebi"),
    }


def on(node: str, fun: str, *args: Any, timeout: float = 15) -> Any:
    """Call ``chat.<fun>(*args)`` in a process on ``node``; its result, or its error text."""
    me = self()

    def call() -> None:
        import chat

        try:
            send(me, ("answer", getattr(chat, fun)(*args)))
        except Exception as error:  # noqa: BLE001 - the test reads the error's text
            send(me, ("error", type(error).__name__, str(error)))

    Node.spawn(node, call)
    return receive(lambda m: type(m) is tuple and m[0] in ("answer", "error"), timeout=timeout)


def lines(peer_node, since: int = 0) -> list[str]:
    return peer_node.output[since:].splitlines()


def test_a_message_to_kate_prints_on_kate_not_on_alex(nodes) -> None:
    alex, kate = nodes["alex"], nodes["kate"]
    alex_before, kate_before = len(alex.output), len(kate.output)
    assert on(alex.node, "send_message", kate.node, "hi") == ("answer", "ok")
    assert "hi" in lines(kate, kate_before)
    assert "hi" not in lines(alex, alex_before)


def test_moebi_prints_hi_and_alex_gets_chicken(nodes) -> None:
    alex, kate, moebi = nodes["alex"], nodes["kate"], nodes["moebi"]
    before = {n: len(p.output) for n, p in nodes.items()}
    assert on(alex.node, "send_message", "moebi@localhost", "hi") == ("answer", "ok")
    assert "hi" in lines(moebi, before["moebi"])
    assert "chicken?" in lines(alex, before["alex"])
    assert "chicken?" not in lines(moebi, before["moebi"])
    new_on_kate = lines(kate, before["kate"])
    assert "hi" not in new_on_kate and "chicken?" not in new_on_kate  # sorry, kate


def test_kate_answers_alex(nodes) -> None:
    alex, kate = nodes["alex"], nodes["kate"]
    before = len(alex.output)
    assert on(kate.node, "send_message", alex.node, "how are you?") == ("answer", "ok")
    assert "how are you?" in lines(alex, before)


def test_a_supervised_task_prints_on_the_node_that_runs_it(nodes) -> None:
    kate = nodes["kate"]
    before = len(kate.output)
    task = TaskSupervisor.async_(("Chat.TaskSupervisor", kate.node), lambda: print("from a task"))
    assert Task.await_(task) is None
    assert "from a task" in lines(kate, before)


def test_the_module_function_form_resolves_on_the_remote_node(nodes) -> None:
    kate = ("Chat.TaskSupervisor", nodes["kate"].node)
    assert Task.await_(TaskSupervisor.async_(kate, "KateOnly", "who", [])) == "only kate knows"
    # alex has no KateOnly: the error comes from alex, like Elixir's :undef
    alex = ("Chat.TaskSupervisor", nodes["alex"].node)
    with pytest.raises(TaskError) as raised:
        Task.await_(TaskSupervisor.async_nolink(alex, "KateOnly", "who", []))
    assert raised.value.reason.node == nodes["alex"].node
    assert "KateOnly" in str(raised.value)


def test_a_remote_crash_carries_the_remote_traceback(nodes) -> None:
    kate = ("Chat.TaskSupervisor", nodes["kate"].node)

    def divide() -> float:
        return 1 / 0

    with pytest.raises(TaskError) as raised:
        Task.await_(TaskSupervisor.async_nolink(kate, divide))
    error = raised.value
    assert error.reason.kind == "ZeroDivisionError" and error.reason.node == nodes["kate"].node
    text = str(error)
    assert "an exception was raised on kate@localhost" in text
    assert "in divide" in text and "1 / 0" in text  # the frame, as kate saw it


def test_an_unknown_supervisor_name_says_no_process(nodes) -> None:
    with pytest.raises(CallError) as raised:
        TaskSupervisor.async_(("No.Such.Supervisor", nodes["kate"].node), lambda: 1)
    assert ("no process: the process is not alive or there's no process currently associated "
            "with the given name, possibly because its application isn't started"
            in str(raised.value))


def test_tasks_and_the_supervisor_leave_nothing_behind(nodes) -> None:
    kate = ("Chat.TaskSupervisor", nodes["kate"].node)
    for _ in range(20):
        Task.await_(TaskSupervisor.async_(kate, lambda: 1))
    deadline = time.monotonic() + 5
    while TaskSupervisor.children(kate) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert TaskSupervisor.children(kate) == []


@pytest.mark.parametrize("start", ["async_nolink", "async_"])
def test_await_fails_with_no_connection_when_the_node_dies(test_peers, start) -> None:
    doomed = test_peers("doomed")
    sup = ("Chat.TaskSupervisor", doomed.node)
    task = getattr(TaskSupervisor, start)(sup, lambda: receive())  # waits forever
    doomed.kill()
    started = time.monotonic()
    # Linked (async_), this shell process dies of "noconnection" as in iex; await_ still says
    # why in Elixir's words.
    with pytest.raises(TaskNoConnection) as raised:
        Task.await_(task, 10)
    assert time.monotonic() - started < 5
    assert f"no connection to {doomed.node}" in str(raised.value)
    assert isinstance(raised.value, NoConnection)


def test_the_caller_is_linked_before_the_task_runs(nodes) -> None:
    """A task that crashes at once still takes its (non-trapping) caller down, with the
    task's own reason: the link existed before the function ran."""
    kate = ("Chat.TaskSupervisor", nodes["kate"].node)

    def caller() -> None:
        Task.await_(TaskSupervisor.async_(kate, lambda: 1 / 0))

    pid = spawn(caller)
    watch = monitor(pid)
    reason = receive(("DOWN", watch, "process", pid, ANY), timeout=10)[4]
    assert reason.kind == "ZeroDivisionError" and reason.node == nodes["kate"].node


def test_a_trapping_caller_gets_the_normal_exit_of_its_task(nodes) -> None:
    kate = ("Chat.TaskSupervisor", nodes["kate"].node)
    me = self()

    def caller() -> None:
        Process.flag("trap_exit", True)
        task = TaskSupervisor.async_(kate, lambda: "done")
        result = Task.await_(task)
        send(me, (result, receive(("EXIT", task.pid, ANY), timeout=5)))

    spawn(caller)
    result, exit_message = receive(("done", ANY), timeout=10)
    assert exit_message[2] == "normal"
