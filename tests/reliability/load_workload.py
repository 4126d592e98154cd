"""Process bodies for the load tests, importable on every node.

Like a compiled Elixir module that every node of a release has, this module is on the
``PYTHONPATH`` of the test's peer nodes, so ``Node.spawn(node, load_workload.receiver,
args=[...])`` ships only a reference to the function, and each node runs its own copy.

Messages are ``(sender_index, sequence_number)``: a receiver checks, for every sender, that
the numbers arrive as 0, 1, 2, ... with none missing, none repeated and none out of order.
"""

from __future__ import annotations

import time
from typing import Any

from nodelab import ANY, Node, Pid, monitor, receive, register, self, send, spawn, unregister


def receiver(collector: Any, senders: list[int], per_sender: int, idle: float = 10.0) -> None:
    """Take ``per_sender`` messages from each of ``senders``; report count and order errors
    (also when nothing arrived for ``idle`` seconds: then some were lost)."""
    expected = dict.fromkeys(senders, 0)
    total = len(senders) * per_sender
    errors: list[tuple[int, int, int]] = []
    error_count = 0
    send(collector, ("receiver ready", self()))
    received = 0
    while received < total:
        message = receive(timeout=idle, after=None)
        if message is None:
            break
        received += 1
        index, number = message
        if number != expected.get(index):
            error_count += 1
            if len(errors) < 10:
                errors.append((index, expected.get(index, -1), number))
        expected[index] = number + 1
    send(collector, ("received", Node.self(), received, error_count, errors))


def sender(collector: Any, index: int, receivers: list[Pid], per_receiver: int) -> None:
    """Wait for ``"go"``, then send ``(index, n)`` for n = 0.. to every receiver in turn."""
    send(collector, ("sender ready", self()))
    receive("go")
    for number in range(per_receiver):
        message = (index, number)
        for target in receivers:
            send(target, message)
    send(collector, ("sent", index))


def _block() -> None:
    receive()


def crowd(collector: Any, count: int) -> None:
    """Start ``count`` processes that each block in ``receive``; report when all are up;
    on ``"release"`` send each a message and report when all have ended."""
    started = time.monotonic()
    members = [spawn(_block) for _ in range(count)]
    refs = {monitor(pid) for pid in members}
    send(collector, ("crowd up", len(members), time.monotonic() - started))
    receive("release")
    started = time.monotonic()
    for pid in members:
        send(pid, "wake up")
    for _ in range(len(refs)):
        receive(lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] in refs)
    send(collector, ("crowd down", len(members), time.monotonic() - started))


def _ping_and_report(collector: Any, node: str) -> None:
    send(collector, ("pinged", node, Node.ping(node)))


def connect_mesh(nodes: list[str], timeout: float = 30.0) -> None:
    """Connect every pair of ``nodes``, one pair after the other (from this node)."""
    me = self()
    for i, first in enumerate(nodes):
        for second in nodes[i + 1:]:
            Node.spawn(first, _ping_and_report, args=[me, second])
            answer = receive(("pinged", second, ANY), timeout=timeout)
            if answer[2] != "pong":
                raise ConnectionError(f"{first} cannot reach {second}")


def disconnect_mesh(nodes: list[str], keep: str, timeout: float = 30.0) -> None:
    """On each of ``nodes``, drop the connections to the others (not the one to ``keep``)."""
    me = self()
    for node in nodes:
        Node.spawn(node, _disconnect_others, args=[me, keep])
        receive(("disconnected", node), timeout=timeout)


def _disconnect_others(collector: Any, keep: str) -> None:
    for other in Node.list():
        if other != keep:
            Node.disconnect(other)
    send(collector, ("disconnected", Node.self()))


def meet_at(collector: Any, other: str, at: float, count: int) -> None:
    """At wall-clock time ``at``, connect to ``other`` (which does the same to us) and send
    it ``count`` numbered messages; report every nodeup/nodedown seen meanwhile and what
    arrived from ``other``'s ``meet_at``."""
    Node.monitor_nodes(True)
    register_name = "meeting"
    register(register_name)
    try:
        time.sleep(max(0.0, at - time.time()))
        connected = Node.connect(other)
        for number in range(count):
            send((register_name, other), number)
        received: list[Any] = []
        events: list[tuple[str, str]] = []
        deadline = time.monotonic() + 10
        while len(received) < count and time.monotonic() < deadline:
            message = receive(timeout=max(0.0, deadline - time.monotonic()), after=None)
            if message is None:
                break
            if isinstance(message, tuple) and message[0] in ("nodeup", "nodedown"):
                if message[1] == other:
                    events.append(message)
            else:
                received.append(message)
        # Anything that would still come (a late nodedown) is waited for a moment.
        while (late := receive(timeout=0.2, after=None)) is not None:
            if isinstance(late, tuple) and late[0] in ("nodeup", "nodedown") and late[1] == other:
                events.append(late)
        send(collector, ("met", Node.self(), connected, received == list(range(count)),
                         len(received), events))
    finally:
        unregister(register_name)
        Node.monitor_nodes(False)


def run_message_load(nodes: list[str], senders_per_node: int, per_pair: int,
                     timeout: float = 120.0, *, mesh_first: bool = True,
                     idle: float = 10.0) -> dict[str, Any]:
    """Run the message load among ``nodes`` (this node first) and return its figures.

    Every node gets one receiver and ``senders_per_node`` senders; every sender sends
    ``per_pair`` messages to the receiver of every *other* node, so each receiver has
    ``(len(nodes) - 1) * senders_per_node`` senders and the total is
    ``len(nodes) * senders_per_node * (len(nodes) - 1) * per_pair``.

    With ``mesh_first`` the nodes are connected pair by pair before anything is sent;
    without it, the first messages make every pair of nodes connect at the same moment.
    A receiver that hears nothing for ``idle`` seconds reports what it got.
    """
    me = self()
    if mesh_first:
        connect_mesh(nodes, timeout)
    sender_nodes = {}
    index = 0
    for node in nodes:
        for _ in range(senders_per_node):
            sender_nodes[index] = node
            index += 1
    receivers: dict[str, Pid] = {}
    for node in nodes:
        theirs = [i for i, n in sender_nodes.items() if n != node]
        receivers[node] = Node.spawn(node, receiver, args=[me, theirs, per_pair, idle])
    for _ in nodes:
        receive(("receiver ready", Pid), timeout=timeout)
    senders = []
    for i, node in sender_nodes.items():
        targets = [pid for n, pid in receivers.items() if n != node]
        senders.append(Node.spawn(node, sender, args=[me, i, targets, per_pair]))
    for _ in senders:
        receive(("sender ready", Pid), timeout=timeout)
    started = time.monotonic()
    for pid in senders:
        send(pid, "go")
    reports = [receive(lambda m: type(m) is tuple and m[0] == "received", timeout=timeout)
               for _ in nodes]
    finished = time.monotonic()
    for _ in senders:
        receive(lambda m: type(m) is tuple and m[0] == "sent", timeout=timeout)
    total_expected = len(nodes) * senders_per_node * (len(nodes) - 1) * per_pair
    received = sum(report[2] for report in reports)
    return {
        "expected": total_expected,
        "received": received,
        "lost": total_expected - received,
        "order_errors": sum(report[3] for report in reports),
        "examples": [e for report in reports for e in report[4]],
        "seconds": finished - started,
        "throughput": total_expected / (finished - started),
    }
