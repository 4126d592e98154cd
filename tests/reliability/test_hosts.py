"""Two hosts for real: nodes with long names in two Linux network namespaces.

Each namespace is a host of its own — its own loopback and port mapper, its own address
on a veth cable (``10.77.0.1`` and ``10.77.0.2``) — so ``alex@10.77.0.1`` reaches
``kate@10.77.0.2`` exactly as across a LAN: it asks kate's host's port mapper for kate's
port, then connects. Cutting the cable (``ip link set ... down``) makes a peer *silent*
(nobody is told; only the tick can notice), which a loopback test cannot do.

Needs root and ``ip`` (Debian package ``iproute2``); skipped with the reason otherwise.
Both nodes are driven from this test through ``remote_control.py``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from reliability_helpers import Remote, TwoHosts, netns_unavailable

_why = netns_unavailable()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"no separate hosts: {_why}")

ALEX = f"alex@{TwoHosts.A_IP}"
KATE = f"kate@{TwoHosts.B_IP}"
COOKIE = "secret_token"

#: Defined on both nodes: a process that links to ``parent``, traps exits, and reports
#: the exit signal it gets (and its links then) to ``reporter`` — a (name, node) pair.
REPORT_EXIT = """
import time
from nodelab.dist import portmapper
from nodelab.runtime import processes as P

def report_exit(parent, reporter):
    Process.flag("trap_exit", True)
    link(parent)
    send(parent, ("linked", self()))
    exit_signal = receive(("EXIT", parent, ANY))
    send(reporter, ("saw", Node.self(), exit_signal, Process.info(self())["links"]))

def forward_node_events(reporter):
    Node.monitor_nodes(True)
    while True:
        send(reporter, ("node event", receive(), time.monotonic()))
"""


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    with TwoHosts() as made:
        yield made


def start_node(hosts: TwoHosts, ns: str, name: str, tick: float, tmp_path) -> Remote:
    node = Remote(prefix=hosts.prefix(ns), log_path=tmp_path / f"{name.split('@')[0]}.log")
    try:
        node(f"Node.start({name!r}, cookie={COOKIE!r}, tick_time={tick})")
        node(REPORT_EXIT)
    except BaseException:
        node.close()
        raise
    return node


@pytest.fixture
def two_nodes(hosts, tmp_path) -> Iterator[tuple[TwoHosts, Remote, Remote]]:
    alex = start_node(hosts, hosts.a, ALEX, 1.0, tmp_path)
    try:
        kate = start_node(hosts, hosts.b, KATE, 1.0, tmp_path)
    except BaseException:
        alex.close()
        raise
    try:
        yield hosts, alex, kate
    finally:
        alex.close()
        kate.close()


def test_long_name_nodes_on_two_hosts_connect_and_spawn(two_nodes) -> None:
    hosts, alex, kate = two_nodes
    # Each host has its own port mapper; alex finds kate's port by asking kate's host.
    kate_port = kate("P.current_transport().port")
    assert alex(f"portmapper.lookup('kate', {TwoHosts.B_IP!r})") == kate_port
    assert alex("portmapper.lookup('kate', '127.0.0.1')") is None  # not on alex's host
    assert alex(f"Node.ping({KATE!r})") == "pong"
    assert alex("Node.list()") == [KATE]
    assert kate("Node.list()") == [ALEX]
    # A remote spawn runs on kate, and its message comes back to alex.
    # (A shipped function's global names resolve on kate: pass alex's pid as an argument.)
    assert alex(f"Node.spawn({KATE!r}, lambda to: send(to, ('hi from', Node.self())), "
                "args=[self()]); receive(('hi from', ANY), timeout=5)") == ["hi from", KATE]
    # Short names are for one host only: a short-name node cannot reach a long one.
    assert alex("Node.ping('kate@localhost')") == "pang"


def test_a_cut_cable_is_noticed_within_the_tick_and_heals_cleanly(two_nodes) -> None:
    hosts, alex, kate = two_nodes
    alex(f"""
Process.flag("trap_exit", True)
me = self()
register("reporter")
plain = Node.spawn_link({KATE!r}, lambda: receive())
trapper = Node.spawn({KATE!r}, report_exit, args=[me, ("reporter", {ALEX!r})])
receive(("linked", trapper), timeout=5)
ref = monitor(plain)
Node.monitor({KATE!r})
""")
    kate(f"Node.monitor({ALEX!r}); 'ok'")
    time.sleep(0.3)  # let every segment in flight be acknowledged before the cut
    hosts.cut()
    cut_at = time.monotonic()
    seen = alex("""
import time
started = time.monotonic()
events = {}
events["link"] = (receive(("EXIT", plain, ANY), timeout=5)[2], time.monotonic() - started)
events["trapper link"] = (receive(("EXIT", trapper, ANY), timeout=5)[2],
                          time.monotonic() - started)
events["monitor"] = (receive(("DOWN", ref, "process", plain, ANY), timeout=5)[4],
                     time.monotonic() - started)
events["node monitor"] = (receive(("nodedown", ANY), timeout=5)[0], time.monotonic() - started)
events
""", timeout=20)
    detected = time.monotonic() - cut_at
    assert {what: reason for what, (reason, _) in seen.items()} == {
        "link": "noconnection", "trapper link": "noconnection", "monitor": "noconnection",
        "node monitor": "nodedown"}
    # The tick is 1 s: silence is noticed after 1-1.25 s (plus a loaded machine's delay).
    assert max(seconds for _, seconds in seen.values()) < 2.5, seen
    assert detected < 3.0
    # kate, on her side of the cut, notices too, by her own tick.
    assert kate(f"receive(('nodedown', {ALEX!r}), timeout=5)") == ["nodedown", ALEX]
    assert kate("Node.list()") == [] and alex("Node.list()") == []

    hosts.heal()
    healed_at = time.monotonic()
    assert alex(f"Node.ping({KATE!r})", timeout=15) == "pong"
    reconnect = time.monotonic() - healed_at
    assert reconnect < 2.0, f"reconnecting took {reconnect:.2f} s"
    # Nothing of the old connection came back: the process killed by the lost link stays
    # dead, alex's shell holds no link, and kate's trapper was told and keeps no link.
    assert alex("Process.info(plain)") is None
    assert alex("Process.info(self())['links']") == []
    saw = alex("_, node, exit_signal, links = receive(('saw', ANY, ANY, ANY), timeout=5)\n"
               "node, exit_signal[2], len(links)")
    assert saw == [KATE, "noconnection", 0]
    # And the new connection works like the first one.
    assert alex(f"Node.spawn({KATE!r}, lambda to: send(to, 'fresh'), args=[me]); "
                "receive('fresh', timeout=5)") == "fresh"


def test_a_half_open_connection_is_taken_down_before_the_new_one(hosts, tmp_path) -> None:
    # kate's tick is long: she does not notice the cut; alex (tick 1 s) does and closes.
    alex = start_node(hosts, hosts.a, ALEX, 1.0, tmp_path)
    kate = start_node(hosts, hosts.b, KATE, 120.0, tmp_path)
    try:
        alex(f"""
Process.flag("trap_exit", True)
me = self()
register("reporter")
trapper = Node.spawn({KATE!r}, report_exit, args=[me, ("reporter", {ALEX!r})])
receive(("linked", trapper), timeout=5)
Node.spawn({KATE!r}, forward_node_events, args=[("reporter", {ALEX!r})])
""")
        time.sleep(0.3)
        hosts.cut()
        assert alex("receive(('EXIT', trapper, ANY), timeout=5)[2]", timeout=10) == "noconnection"
        # alex's closing FIN is lost on the cut cable; drop alex's side of the socket for
        # good (its retransmissions would otherwise reach kate after the heal), leaving
        # kate with a half-open connection, as after a crash of alex's host network.
        subprocess.run([*hosts.prefix(hosts.a), "ss", "-tnK", "dst", TwoHosts.B_IP],
                       check=True, capture_output=True, timeout=10)
        assert kate("Node.list()") == [ALEX]  # kate still believes in the old connection
        hosts.heal()
        assert alex(f"Node.ping({KATE!r})", timeout=15) == "pong"
        # kate must see the old connection go down (nodedown) before the new one comes up,
        # and her trapper must be told its link to alex broke.
        events = alex("""
events = []
while (message := receive(timeout=0.5, after=None)) is not None:
    if message[0] == "node event":
        events.append(message[1][0])  # "nodeup" / "nodedown", as kate saw them
    elif message[0] == "saw":
        events.append("kate's trapper: " + str(message[2][2]))
events
""", timeout=10)
        node_events = [event for event in events if event in ("nodedown", "nodeup")]
        assert node_events[:2] == ["nodedown", "nodeup"], events
        assert "kate's trapper: noconnection" in events, events
    finally:
        alex.close()
        kate.close()
