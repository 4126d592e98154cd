"""Nodes as real OS processes: connecting, cookies, remote spawn, links across nodes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from nodelab import (
    ANY,
    Crash,
    Node,
    Pid,
    Process,
    group_leader,
    monitor,
    receive,
    self,
    send,
    start_group_leader,
)

KATE_DEFINES_KATE = (
    "class Kate:\n"
    "    @staticmethod\n"
    "    def say_name():\n"
    "        print('Hi, my name is Kate')\n"
)


@pytest.fixture
def cell_output():
    """A group leader for this test's shell process that collects what is printed to it,
    as a notebook cell collects its output."""
    lines: list[str] = []
    old = group_leader()
    leader = start_group_leader(lambda stream, text: lines.append(text))
    group_leader(leader)
    yield lines
    group_leader(old)


def test_ping_and_list(alex, start_peer) -> None:
    kate = start_peer("kate")
    assert Node.ping(kate.node) == "pong"
    assert kate.node in Node.list()
    assert Node.ping("nobody@localhost") == "pang"


def test_a_wrong_cookie_is_refused_and_logged_by_the_acceptor(alex, start_peer) -> None:
    eve = start_peer("eve", cookie="not_the_secret")
    assert Node.connect(eve.node) is False
    assert Node.ping(eve.node) == "pang"
    output = eve.wait_for_output("rejected")
    assert ("** Connection attempt from node alex@localhost rejected. Invalid challenge reply. **"
            in output)
    assert output.count("rejected") == 2  # one line per attempt


def test_spawn_link_prints_on_the_caller(alex, start_peer, cell_output) -> None:
    kate = start_peer("kate", eval=KATE_DEFINES_KATE)
    pid = Node.spawn_link(kate.node, lambda: Kate.say_name())  # noqa: F821 - Kate lives on kate
    assert isinstance(pid, Pid) and pid.node == kate.node
    ref = monitor(pid)
    receive(("DOWN", ref, "process", pid, ANY), timeout=5)  # "noproc" if it ended first
    assert cell_output == ["Hi, my name is Kate\n"]
    assert "Hi, my name is Kate" not in kate.output


def test_settle_waits_for_a_print_still_on_its_way_to_the_cell(alex, start_peer) -> None:
    # A remote print waits in receive for its group leader's io_reply, with an empty
    # mailbox: it looks idle, but its text is not in the cell yet. A crash report is sent
    # without waiting at all. %spawn_link's settle must wait for both, or the cell's result
    # comes out before the text (seen on CI).
    from nodelab.jupyter.magics import settle

    lines: list[str] = []

    def slow_cell(stream: str, text: str) -> None:
        time.sleep(0.5)
        lines.append(text)

    old = group_leader()
    group_leader(start_group_leader(slow_cell))
    try:
        kate = start_peer("kate")
        pid = Node.spawn(kate.node, lambda: (print("Hi from kate"), receive()))
        settle(pid)
        assert lines == ["Hi from kate\n"]
        Process.exit(pid, "kill")

        crashing = Node.spawn(kate.node, lambda: 1 / 0)
        settle(crashing)
        assert len(lines) == 2 and "** (ZeroDivisionError) division by zero" in lines[1]
    finally:
        group_leader(old)


def test_an_unfinished_last_line_reaches_the_caller_without_a_stray_process(
        alex, start_peer, cell_output) -> None:
    # print(..., end="") to a remote group leader is sent as the process exits; that send
    # must not leave a stand-in shell process behind on kate.
    kate = start_peer("kate")
    me = self()

    def count_processes() -> int:
        counter = Node.spawn(kate.node, lambda: send(me, ("count", len(Process.list()))))
        ref = monitor(counter)
        count = receive(("count", int), timeout=5)[1]
        receive(("DOWN", ref, "process", counter, ANY), timeout=5)
        return count

    before = count_processes()
    for _ in range(3):
        pid = Node.spawn(kate.node, lambda: print("no newline", end=""))
        ref = monitor(pid)
        receive(("DOWN", ref, "process", pid, ANY), timeout=5)
    assert cell_output == ["no newline"] * 3
    assert count_processes() == before


def test_a_name_kate_lacks_fails_there_and_reaches_the_linked_caller(alex, start_peer,
                                                                    trapping) -> None:
    moebi = start_peer("moebi")
    pid = Node.spawn_link(moebi.node, lambda: Kate.say_name())  # noqa: F821
    _, sender, reason = receive(("EXIT", pid, ANY), timeout=10)
    assert isinstance(reason, Crash) and reason.kind == "NameError"
    assert reason.node == moebi.node and "Kate" in reason.message
    moebi.wait_for_output("NameError")  # logged on the node where it happened


def test_receive_send_flush_round_trip(alex, start_peer) -> None:
    kate = start_peer("kate")

    def answer() -> None:
        message = receive(("hi", Pid))
        send(message[1], "sup?")

    pid = Node.spawn_link(kate.node, answer)
    send(pid, ("hi", self()))
    assert receive("sup?", timeout=5) == "sup?"


def test_sigkill_of_a_peer_reaches_links_monitors_and_node_monitors(alex, start_peer,
                                                                   trapping) -> None:
    kate = start_peer("kate")
    linked = Node.spawn_link(kate.node, lambda: receive())
    watched = Node.spawn(kate.node, lambda: receive())
    ref = monitor(watched)
    Node.monitor(kate.node)
    kate.kill(signal.SIGKILL)
    assert receive(("EXIT", linked, ANY), timeout=2)[2] == "noconnection"
    assert receive(("DOWN", ref, "process", watched, ANY), timeout=2)[4] == "noconnection"
    assert receive(("nodedown", kate.node), timeout=2)


def test_a_silent_peer_is_noticed_within_the_tick(alex, start_peer, trapping) -> None:
    kate = start_peer("kate")
    linked = Node.spawn_link(kate.node, lambda: receive())
    kate.kill(signal.SIGSTOP)
    started = time.monotonic()
    try:
        assert receive(("EXIT", linked, ANY), timeout=5)[2] == "noconnection"
        assert time.monotonic() - started < 3.0
    finally:
        kate.kill(signal.SIGCONT)


def test_100k_messages_arrive_in_order(alex, start_peer) -> None:
    kate = start_peer("kate")
    count = 100_000

    def counter(parent: Pid, total: int) -> None:
        expected = 0
        while expected < total:
            number = receive()
            if number != expected:
                send(parent, ("out of order", expected, number))
                return
            expected += 1
        send(parent, ("all", expected))

    me = self()
    pid = Node.spawn(kate.node, lambda: counter(me, count))
    for number in range(count):
        send(pid, number)
    assert receive(("all", ANY), ("out of order", ANY, ANY), timeout=60) == ("all", count)


def test_a_node_name_in_use_is_refused(alex, start_peer) -> None:
    kate = start_peer("kate")
    result = subprocess.run(
        [sys.executable, "-m", "nodelab", "node", "--sname", "kate", "--cookie", "x"],
        capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert "kate@localhost is already in use" in result.stderr
    assert Node.ping(kate.node) == "pong"


def test_spawn_link_to_an_unreachable_node_exits_with_noconnection(alex, trapping) -> None:
    pid = Node.spawn_link("nobody@localhost", lambda: None)
    assert receive(("EXIT", pid, ANY), timeout=2)[2] == "noconnection"


def test_spawn_by_module_function_and_args(alex, start_peer, cell_output) -> None:
    kate = start_peer("kate", eval=KATE_DEFINES_KATE)
    pid = Node.spawn(kate.node, "Kate", "say_name", [])
    ref = monitor(pid)
    receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
    assert cell_output == ["Hi, my name is Kate\n"]


TASKS_ON_KATE = (
    "from nodelab.otp import TaskSupervisor\n"
    "TaskSupervisor.start_link(name='Kate.TaskSupervisor')\n"
)


def test_a_remote_call_sends_its_monitor_and_request_in_one_frame(alex, start_peer,
                                                                  trapping) -> None:
    # gen_server.call watches the server, then sends the request: to another node, both
    # signals leave in one frame (the peer applies the monitor, then delivers the call).
    # The task supervisor answers with the link to the task and its reply in one frame
    # too; the link is still recorded before anything of the task arrives.
    from nodelab.dist import frames, shipment
    from nodelab.otp import CallError, Task, TaskError, TaskSupervisor
    from nodelab.otp import server as otp_server
    from nodelab.runtime import processes as P

    kate = start_peer("kate", eval=TASKS_ON_KATE)
    supervisor = ("Kate.TaskSupervisor", kate.node)
    assert Task.await_(TaskSupervisor.async_(supervisor, lambda: "warm")) == "warm"
    conn = P.transport().connections[kate.node]
    sent: list[tuple[int, bytes]] = []
    send_frame = conn.send_frame

    def recording(kind: int, body: bytes, **options):  # observes, and sends as before
        if kind != frames.TICK:
            sent.append((kind, body))
        return send_frame(kind, body, **options)

    conn.send_frame = recording
    try:
        assert Task.await_(TaskSupervisor.async_(supervisor, lambda: 6 * 7)) == 42
    finally:
        del conn.send_frame
    assert len(sent) == 1 and sent[0][0] == frames.DATA
    then, op, dest, request = shipment.loads(sent[0][1])
    assert (then, op[0], op[2], dest) == ("then", "monitor", supervisor, "Kate.TaskSupervisor")
    assert shipment.loads(request)[0] == "$gen_call"

    crashing = TaskSupervisor.async_(supervisor, lambda: 1 / 0)
    with pytest.raises(TaskError, match="ZeroDivisionError"):
        Task.await_(crashing)
    _, _, reason = receive(("EXIT", crashing.pid, ANY), timeout=5)  # the link held
    assert isinstance(reason, Crash) and reason.kind == "ZeroDivisionError"
    with pytest.raises(CallError, match="no process"):
        otp_server.call(("Nobody.Here", kate.node), ("children",), 5)
    # A request that cannot be encoded fails in the sender's words and leaves no monitor.
    import threading

    from nodelab.runtime._table import current

    with pytest.raises(TypeError, match="cannot send"):
        otp_server.call(supervisor, ("children", threading.Lock()), 5)
    assert not current().watching
