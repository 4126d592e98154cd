"""Load: many messages among four nodes, ten thousand waiting processes, sixteen idle
nodes, a mailbox of a hundred thousand messages.

These are the CI-sized versions (each well under 20 s on 2 cores); the full-size figures
(1,000,000 messages, peak memory per node, idle CPU over 5 s) come from
``benchmarks/reliability_figures.py``. What must hold at any size: no message lost while
the nodes are up, and the order of every sender-receiver pair kept (SPEC §3).
"""

from __future__ import annotations

import os
import time

import load_workload
import reliability_helpers
from reliability_helpers import HERE, ROOT, live_threads_cpu_seconds, proc_status_kb

from nodelab import ANY, Node, Pid, receive, self, send, spawn

WORKLOAD_PATH = {"PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}


def start_peers(start_peer, names: list[str], **options) -> list:
    """Start several peers of this test at once."""
    return reliability_helpers.start_peers(start_peer, names, timeout=60, **options)


def test_messages_among_four_nodes_are_all_delivered_in_order(alex, start_peer,
                                                              record_property) -> None:
    peers = start_peers(start_peer, ["load1", "load2", "load3"], env=WORKLOAD_PATH)
    nodes = [alex] + [peer.node for peer in peers]
    # 4 nodes x 3 senders x 3 other receivers x 2,800 = 100,800 messages; each receiver
    # hears from 9 senders at once. The nodes are connected pair by pair first (see the
    # next test for what happens when they all connect at once).
    result = load_workload.run_message_load(nodes, senders_per_node=3, per_pair=2_800)
    record_property("load", result)
    print(f"load: {result['expected']} messages in {result['seconds']:.2f} s "
          f"= {result['throughput']:,.0f} msg/s; peak RSS per peer (kB): "
          f"{[proc_status_kb(peer.os_pid, 'VmHWM') for peer in peers]}")
    assert result["lost"] == 0, result
    assert result["order_errors"] == 0, result
    assert result["received"] == result["expected"] == 100_800
    assert set(Node.list()) >= {peer.node for peer in peers}  # nobody was dropped by a tick


def test_ten_thousand_processes_wait_in_receive_on_one_node(alex, start_peer,
                                                           record_property) -> None:
    crowd_node = start_peer("crowd", env=WORKLOAD_PATH)
    crowd = reliability_helpers.start_crowd(crowd_node, 10_000, timeout=60, idle_seconds=1.0)
    count, threads, idle_cpu = crowd["count"], crowd["threads"], crowd["idle_cpu_s"]
    figures = {"processes": count, "start_s": round(crowd["seconds_up"], 2),
               "rss_before_kb": crowd["rss_before_kb"], "rss_with_crowd_kb": crowd["rss_up_kb"],
               "kb_per_process": round((crowd["rss_up_kb"] - crowd["rss_before_kb"]) / count, 1),
               "threads": threads, "idle_cpu_1s": round(idle_cpu, 3)}
    record_property("crowd", figures)
    print(f"10,000 waiting processes: {figures}")
    assert count == 10_000
    assert threads is not None and threads >= 10_000
    assert idle_cpu < 0.2, "processes blocked in receive must not burn CPU"
    # The node still answers, and a message still reaches one of the crowd quickly.
    assert Node.ping(crowd_node.node) == "pong"
    # (Waking all 10,000 at once takes CPython tens of seconds of GIL hand-offs, so the
    # crowd is not released here: the node is stopped with it; the figures script times it.)


def test_nodes_that_first_meet_under_load_lose_no_message(alex, start_peer) -> None:
    peers = start_peers(start_peer, ["meet1", "meet2", "meet3", "meet4"], env=WORKLOAD_PATH)
    nodes = [peer.node for peer in peers]
    for peer in peers:
        assert Node.ping(peer.node) == "pong"
    for _ in range(6):  # each round makes 6 pairs connect at once, under traffic
        result = load_workload.run_message_load(nodes, senders_per_node=2, per_pair=400,
                                                mesh_first=False, idle=2.0)
        assert (result["lost"], result["order_errors"]) == (0, 0), result
        load_workload.disconnect_mesh(nodes, keep=alex)


# A loaded host or a distant one: accepting a handshake takes 30 ms, which widens the
# moment in which a node's own dial and the peer's dial can cross.
SLOW_HANDSHAKE = """
import time as _time
import nodelab.dist.erlang_handshake as _handshake
_accept = _handshake.accept
def _slow_accept(*args, **options):
    _time.sleep(0.03)
    return _accept(*args, **options)
_handshake.accept = _slow_accept
"""


def test_two_nodes_that_dial_each_other_at_the_same_instant_end_with_one_connection(
        alex, start_peer) -> None:
    """Like the BEAM's handshake: when both dial at once, one dial wins (the greater name's;
    NOK for the other)
    and the connection that is up is never replaced: no nodedown, no message lost."""
    kate, moebi = start_peers(start_peer, ["kate", "moebi"], env=WORKLOAD_PATH,
                              eval=SLOW_HANDSHAKE)
    me = self()
    # One dial may also start while the other's handshake is under way: the offsets sweep
    # both orders across the 30 ms the handshake takes on these nodes.
    for attempt, offset_ms in enumerate(range(-40, 41, 5)):
        at = time.time() + 0.3
        for here, there, start in ((kate, moebi, at), (moebi, kate, at + offset_ms / 1000)):
            Node.spawn(here.node, load_workload.meet_at, args=[me, there.node, start, 200])
        reports = [receive(("met", ANY, ANY, ANY, ANY, ANY), timeout=20) for _ in range(2)]
        for _, node, connected, in_order, count, events in reports:
            assert connected, f"attempt {attempt}: {node} could not connect"
            assert in_order, f"attempt {attempt}: {node} got {count} of 200, or out of order"
            assert [event[0] for event in events] == ["nodeup"], (
                f"attempt {attempt}: {node} saw {events}: the first connection was replaced")
        load_workload.disconnect_mesh([kate.node, moebi.node], keep=alex)


def test_sixteen_idle_nodes_use_little_cpu(alex, start_peer, record_property) -> None:
    peers = start_peers(start_peer, [f"idle{i:02d}" for i in range(16)])
    for peer in peers:  # a connected cluster: every connection ticks
        assert Node.ping(peer.node) == "pong"
    time.sleep(0.5)  # let start-up work finish
    before = {peer.os_pid: live_threads_cpu_seconds(peer.os_pid) for peer in peers}
    started = time.monotonic()
    time.sleep(3.0)
    wall = time.monotonic() - started
    used = sum(live_threads_cpu_seconds(pid) - cpu for pid, cpu in before.items())
    percent = 100 * used / wall
    rss = [proc_status_kb(peer.os_pid, "VmRSS") for peer in peers]
    record_property("idle_cpu_percent_16_nodes", round(percent, 2))
    print(f"16 idle nodes: {percent:.2f}% of one CPU together over {wall:.1f} s "
          f"(tick {peers and 1.0} s); RSS per node {min(rss)}-{max(rss)} kB")
    assert percent < 5.0, f"16 idle nodes used {percent:.1f}% of a CPU"


def test_selective_receive_finds_the_last_of_100000_queued_messages(alex,
                                                                    record_property) -> None:
    me = self()
    count = 100_000

    def picky() -> None:
        receive("start")  # passes over every message queued before "start"
        started = time.monotonic()
        last = receive(("last", ANY), timeout=30)
        took = time.monotonic() - started
        rest = [receive(timeout=5) for _ in range(count)]
        send(me, ("picked", last, took, rest == list(range(count))))

    pid = spawn(picky)
    for number in range(count):
        send(pid, number)
    send(pid, ("last", count))
    began = time.monotonic()
    send(pid, "start")
    _, last, took, in_order = receive(("picked", ANY, ANY, ANY), timeout=60)
    total = time.monotonic() - began
    record_property("selective_receive_s", round(took, 4))
    print(f"selective receive past 100,000 queued messages: {took * 1000:.1f} ms "
          f"(including the first scan: {total * 1000:.1f} ms)")
    assert last == ("last", count)
    assert in_order, "the other messages must stay queued in their order"
    assert took < 2.0


def test_a_busy_receiver_on_another_node_gets_every_message_of_many_senders(
        alex, start_peer) -> None:
    """Several senders of one node, one receiver of another, sending as fast as they can."""
    kate = start_peer("kate", env=WORKLOAD_PATH)
    me = self()
    receiver = Node.spawn(kate.node, load_workload.receiver, args=[me, list(range(8)), 5_000])
    receive(("receiver ready", Pid), timeout=10)
    senders = [spawn(load_workload.sender, me, i, [receiver], 5_000) for i in range(8)]
    for _ in senders:
        receive(("sender ready", Pid), timeout=10)
    for pid in senders:
        send(pid, "go")
    _, _, received, errors, examples = receive(("received", ANY, ANY, ANY, ANY), timeout=60)
    assert (received, errors) == (40_000, 0), examples
