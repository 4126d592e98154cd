"""Faults with real OS processes: SIGKILL, SIGSTOP/SIGCONT, a dead port mapper, a dead parent.

The bar is the BEAM's (``/work/shared/BASELINES.md``): when a node's OS process is killed,
every process that cared is told at once, with Erlang's reasons — links get an exit signal
``noconnection``, monitors ``("DOWN", ref, "process", pid, "noconnection")``, node monitors
``("nodedown", node)``, and calls waiting for that node fail. A *silent* node (stopped, or
a cut cable) is noticed within the tick. Timing bounds here are generous (2-3 s) so that a
loaded CI machine does not flake; the real figures come from
``benchmarks/reliability_figures.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from reliability_helpers import COOKIE, TICK, RawPeer, Remote, os_process_gone, wait_until

from nodelab import (
    ANY,
    Node,
    Pid,
    Process,
    link,
    monitor,
    receive,
    register,
    self,
    send,
    spawn,
    unregister,
)
from nodelab.dist import portmapper
from nodelab.runtime import processes as P


def timed_receive(pattern: object, started: float, timeout: float = 3.0) -> tuple[object, float]:
    """Receive a message matching ``pattern``; return it and the seconds since ``started``."""
    message = receive(pattern, timeout=timeout)
    return message, time.monotonic() - started


def wait_until_waiting(pid: Pid, timeout: float = 5.0) -> None:
    """Wait until local process ``pid`` is blocked in a receive (e.g. inside a remote call)."""
    assert wait_until(lambda: (Process.info(pid) or {}).get("status") == "waiting", timeout), (
        f"{pid!r} never blocked: {Process.info(pid)}")


# --- SIGKILL --------------------------------------------------------------------------------

def test_sigkill_tells_links_monitors_node_monitors_and_pending_calls(
        alex, start_peer, trapping, sigcont_after) -> None:
    kate = start_peer("kate")
    me = self()

    linked = Node.spawn_link(kate.node, lambda: receive())
    watched = Node.spawn(kate.node, lambda: receive())
    ref = monitor(watched)
    Node.monitor(kate.node)

    # A local process that does not trap exits dies with the link's reason.
    def linked_worker() -> None:
        link(Node.spawn(kate.node, lambda: receive()))
        send(me, "worker linked")
        receive()

    worker = spawn(linked_worker)
    receive("worker linked", timeout=5)
    worker_ref = monitor(worker)

    # Calls in flight when the node dies: freeze kate first so that they cannot be
    # answered, then start them, each in its own process.
    kate.kill(signal.SIGSTOP)
    sigcont_after(kate.os_pid)

    def call(kind: str) -> None:
        if kind == "info":
            send(me, ("result", kind, Process.info(watched)))
        elif kind == "spawn":
            send(me, ("result", kind, Node.spawn(kate.node, lambda: None)))
        else:
            Process.flag("trap_exit", True)
            pid = Node.spawn_link(kate.node, lambda: None)
            send(me, ("result", kind, (pid, receive(("EXIT", pid, ANY), timeout=5)[2])))

    callers = [spawn(call, kind) for kind in ("info", "spawn", "spawn_link")]
    for caller in callers:
        wait_until_waiting(caller)

    started = time.monotonic()
    kate.kill(signal.SIGKILL)

    timings: dict[str, float] = {}
    message, timings["link"] = timed_receive(("EXIT", linked, ANY), started)
    assert message[2] == "noconnection"
    message, timings["monitor"] = timed_receive(("DOWN", ref, "process", watched, ANY), started)
    assert message[4] == "noconnection"
    _, timings["node monitor"] = timed_receive(("nodedown", kate.node), started)
    message, timings["linked local process"] = timed_receive(
        ("DOWN", worker_ref, "process", worker, ANY), started)
    assert message[4] == "noconnection"
    results = {}
    for _ in callers:
        (_, kind, value), seconds = timed_receive(("result", ANY, ANY), started)
        results[kind], timings[f"pending {kind}"] = value, seconds
    assert results["info"] is None  # Process.info of a process on a dead node
    placeholder = results["spawn"]  # like the BEAM: a PID that is already dead
    assert isinstance(placeholder, Pid) and Process.info(placeholder) is None
    placeholder, reason = results["spawn_link"]
    assert isinstance(placeholder, Pid) and reason == "noconnection"
    slow = {what: round(seconds, 3) for what, seconds in timings.items() if seconds > 2.0}
    assert not slow, f"notified later than 2 s after SIGKILL: {slow}"
    assert kate.node not in Node.list()


KATE_SUPERVISES_TASKS = """
from nodelab.otp import TaskSupervisor
TaskSupervisor.start_link(name="Rel.TaskSupervisor")
"""


def test_sigkill_fails_pending_task_awaits_with_no_connection(alex, start_peer,
                                                             clean_mailbox) -> None:
    from nodelab.otp import Task, TaskNoConnection, TaskSupervisor

    kate = start_peer("kate", eval=KATE_SUPERVISES_TASKS)
    supervisor = ("Rel.TaskSupervisor", kate.node)
    me = self()

    def awaiting(linked: bool, trap: bool) -> None:
        Process.flag("trap_exit", trap)
        start = TaskSupervisor.async_ if linked else TaskSupervisor.async_nolink
        task = start(supervisor, lambda: receive())
        send(me, ("waiting", self()))
        try:
            Task.await_(task, 10)
        except TaskNoConnection as error:
            send(me, ("await raised", linked, trap, str(error).splitlines()[-1].strip()))

    cases = [(False, False), (True, True), (True, False)]
    waiters = []
    for linked, trap in cases:
        pid = spawn(awaiting, linked, trap)
        receive(("waiting", pid), timeout=10)
        waiters.append((pid, monitor(pid)))
    started = time.monotonic()
    kate.kill(signal.SIGKILL)
    raised = {(m[1], m[2]): m[3] for m in
              [receive(("await raised", ANY, ANY, ANY), timeout=3) for _ in range(2)]}
    assert raised == {(False, False): "** (EXIT) no connection to kate@localhost",
                      (True, True): "** (EXIT) no connection to kate@localhost"}
    # Linked to the task and not trapping exits: the caller dies of "noconnection" before
    # its await returns, as on the BEAM.
    reasons = [receive(("DOWN", ref, "process", pid, ANY), timeout=3)[4] for pid, ref in waiters]
    assert reasons == ["normal", "normal", "noconnection"]
    assert time.monotonic() - started < 3.0


def test_a_stale_nodedown_message_does_not_fail_a_later_remote_call(alex, start_peer,
                                                                   clean_mailbox) -> None:
    kate = start_peer("kate")
    Node.monitor(kate.node)
    kate.kill(signal.SIGKILL)
    kate.process.wait(5)
    # The learner never reads the ("nodedown", ...) message: it stays in the mailbox, as
    # it would in iex. A new kate starts with the same name.
    assert wait_until(lambda: Node.ping(kate.node) == "pang", 3)
    kate = start_peer("kate")
    pid = Node.spawn(kate.node, lambda: receive())
    assert pid.node == kate.node, "Node.spawn gave up on a node that is up"
    assert Process.info(pid) is not None


def test_node_down_is_reported_while_other_processes_monitor_and_demonitor(
        alex, start_peer, trapping) -> None:
    me = self()
    watched = spawn(lambda: receive())  # visited first by connection_down (lowest serial)
    stop = []

    def churn() -> None:
        # Ordinary activity elsewhere on the node: monitors being added while the node
        # goes down. 50k of them make connection_down's walk take a few milliseconds.
        for _ in range(50_000):
            monitor(watched)
        send(me, "churning")
        while not stop:
            monitor(watched)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # switch threads often, as a loaded machine does
    churner = spawn(churn)
    try:
        receive("churning", timeout=30)
        for _ in range(8):  # each round fails with high probability while the bug exists
            kate = start_peer("kate")
            linked = Node.spawn_link(kate.node, lambda: receive())
            Node.monitor(kate.node)
            kate.kill(signal.SIGKILL)
            assert receive(("EXIT", linked, ANY), timeout=2, after=None) is not None, (
                "a link to a process of the killed node was never told")
            # Generous: the churner has made connection_down's walk long on purpose.
            assert receive(("nodedown", kate.node), timeout=15, after=None) is not None
            kate.stop()
    finally:
        stop.append(True)
        sys.setswitchinterval(old_interval)
        P.exit(churner, "kill")
        P.exit(watched, "kill")


def test_a_new_connection_from_a_connected_node_takes_the_old_one_down_first(
        alex, start_peer, trapping) -> None:
    kate = start_peer("kate")
    linked = Node.spawn_link(kate.node, lambda: receive())
    watched = Node.spawn(kate.node, lambda: receive())
    ref = monitor(watched)
    Node.monitor(kate.node)
    # kate connects again while alex still holds the old connection: what alex sees when
    # kate's host lost the connection without telling (a half-open connection) and kate
    # dials anew. A hand-made peer that knows the cookie plays that new connection.
    again = RawPeer(P.current_transport().port, COOKIE, kate.node, alex)
    try:
        # Before anything else uses the new connection, the old one's processes are gone
        # for alex: the BEAM delivers nodedown for the old connection first. (Answer
        # quickly: alex's own tick would take the silent new connection down after 1 s.)
        assert receive(("nodedown", kate.node), timeout=0.5, after=None) is not None
        assert receive(("EXIT", linked, ANY), timeout=0.5, after=None) is not None
        assert receive(("DOWN", ref, "process", watched, "noconnection"), timeout=0.5,
                       after=None) is not None
    finally:
        again.close()


# --- SIGSTOP / SIGCONT ----------------------------------------------------------------------

KATE_REPORTS_HER_EXIT = """
def sink():
    while True:
        receive()

def report_exit(parent, reporter):
    Process.flag("trap_exit", True)
    link(parent)
    send(parent, ("linked", self()))
    exit_signal = receive(("EXIT", parent, ANY))
    links = Process.info(self())["links"]
    send(reporter, ("kate saw", exit_signal, links))
    raise RuntimeError("a crash after the link broke must not reach alex")
"""


def test_a_frozen_node_is_noticed_within_the_tick_and_sigcont_resurrects_nothing(
        alex, start_peer, trapping, sigcont_after) -> None:
    kate = start_peer("kate", eval=KATE_REPORTS_HER_EXIT)
    me = self()
    register("reliability_reporter")
    try:
        plain = Node.spawn_link(kate.node, lambda: receive())  # dies of noconnection
        reporter = Node.spawn(kate.node, "__main__", "report_exit",
                              [me, ("reliability_reporter", alex)])
        receive(("linked", reporter), timeout=5)
        ref = monitor(plain)
        Node.monitor(kate.node)

        # A process that writes big messages to kate: once kate is frozen its socket
        # buffers fill and the send blocks; the tick must release it too.
        sink = Node.spawn(kate.node, "__main__", "sink", [])

        def flooder() -> None:
            blob = b"x" * (1 << 20)
            send(me, "flooding")
            receive("go")
            while True:
                began = time.monotonic()
                send(sink, blob)
                if time.monotonic() - began > 0.3:
                    send(me, ("flooder released", time.monotonic()))
                    return


        flooding = spawn(flooder)
        receive("flooding", timeout=5)
        kate.kill(signal.SIGSTOP)
        sigcont_after(kate.os_pid)
        started = time.monotonic()
        send(flooding, "go")
        bound = TICK * 1.25 + 1.0  # the tick, its check interval, and a loaded machine
        message, seconds = timed_receive(("EXIT", plain, ANY), started, timeout=5)
        assert message[2] == "noconnection" and seconds < bound
        message, seconds = timed_receive(("EXIT", reporter, ANY), started, timeout=5)
        assert message[2] == "noconnection" and seconds < bound
        message, seconds = timed_receive(("DOWN", ref, "process", plain, ANY), started)
        assert message[4] == "noconnection" and seconds < bound
        _, seconds = timed_receive(("nodedown", kate.node), started)
        assert seconds < bound
        released_at = receive(("flooder released", ANY), timeout=5)[1]
        assert released_at - started < bound, "a sender stayed blocked on the frozen node"

        kate.kill(signal.SIGCONT)
        # Kate notices too once she runs again: her process linked to alex was told
        # "noconnection" and its link is gone. Telling us makes kate connect as new.
        _, exit_signal, links_left = receive(("kate saw", ANY, ANY), timeout=10)
        assert exit_signal == ("EXIT", me, "noconnection")
        assert me not in links_left
        # The reporter crashes after reporting: with the link gone, nothing reaches alex.
        assert receive(("EXIT", reporter, ANY), timeout=0.5, after=None) is None
        assert Node.ping(kate.node) == "pong"
        assert Process.info(plain) is None, "a process killed by the lost link came back"
        my_links = Process.info(me)["links"]
        assert plain not in my_links and reporter not in my_links
        fresh = Node.spawn(kate.node, lambda: send(me, ("fresh", self())))
        assert receive(("fresh", fresh), timeout=5)
    finally:
        unregister("reliability_reporter")


# --- the port mapper --------------------------------------------------------------------------

def test_killing_the_port_mapper_keeps_connections_and_lookups_recover(
        alex, start_peer, clean_mailbox) -> None:
    kate = start_peer("kate")
    me = self()
    echo = Node.spawn(kate.node, lambda: [send(m[0], m[1]) for m in iter(receive, None)])
    send(echo, (me, "before"))
    assert receive("before", timeout=5)
    kate_port = portmapper.lookup("kate")
    alex_port = P.current_transport().port
    old_mapper = portmapper.mapper_pid()
    assert old_mapper is not None

    os.kill(old_mapper, signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: os_process_gone(old_mapper), 5)

    # Running nodes keep talking: they no longer need the mapper.
    for number in range(100):
        send(echo, (me, number))
    assert [receive(timeout=5) for _ in range(100)] == list(range(100))
    assert kate.node in Node.list()

    # New lookups recover: each node registers again with a new port mapper.
    recovered = wait_until(
        lambda: portmapper.lookup("kate") == kate_port and portmapper.lookup("alex") == alex_port,
        10)
    assert recovered, f"names not registered again: {portmapper.names()}"
    recovery = time.monotonic() - killed
    new_mapper = portmapper.mapper_pid()
    assert new_mapper not in (None, old_mapper)
    assert recovery < 5, f"lookups recovered only after {recovery:.2f} s"

    # A reconnection needs a lookup; a brand-new node needs the mapper too.
    Node.disconnect(kate.node)
    assert Node.ping(kate.node) == "pong"
    moebi = start_peer("moebi")
    kate_node = kate.node
    probe = Node.spawn(moebi.node, lambda: send(me, ("moebi sees", Node.ping(kate_node),
                                                   Node.ping(alex))))
    assert receive(("moebi sees", ANY, ANY), timeout=10) == ("moebi sees", "pong", "pong")
    assert isinstance(probe, Pid)


# --- a parent that dies -----------------------------------------------------------------------

def test_nodes_started_by_a_node_exit_when_it_is_sigkilled(alex, tmp_path) -> None:
    """A kernel node starts child nodes (nodelab.tools.peer, --exit-with-parent); SIGKILL of the
    parent cannot run any cleanup, yet the children must not outlive it."""
    middle = Remote(log_path=tmp_path / "middle.log")
    child_pid = None
    try:
        middle(f"Node.start('middle', cookie={COOKIE!r}, tick_time={TICK})")
        child_pid = middle(
            "from nodelab.tools import peer\n"
            f"child = peer.start('orphan', cookie={COOKIE!r}, log_dir={str(tmp_path)!r})\n"
            "child.os_pid", timeout=30)
        assert Node.ping("orphan@localhost") == "pong"
        Node.monitor("orphan@localhost")
        middle.kill(signal.SIGKILL)
        started = time.monotonic()
        assert wait_until(lambda: os_process_gone(child_pid), 3.0), (
            "the child node outlived its SIGKILLed parent by 3 s")
        assert receive(("nodedown", "orphan@localhost"), timeout=3)
        assert wait_until(lambda: portmapper.lookup("orphan") is None, 3.0)
        assert time.monotonic() - started < 3.0
    finally:
        middle.close()
        if child_pid is not None and not os_process_gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)  # the test failed: do not leak the child
