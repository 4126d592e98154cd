"""The reliability figures of nodelab, measured for real: faults, hostile input, load.

    python benchmarks/reliability_figures.py            # everything, ~2-3 minutes
    python benchmarks/reliability_figures.py --quick    # smaller counts, ~1 minute
    python benchmarks/reliability_figures.py --only sigkill --only load

Every figure comes from real OS processes on this machine, in this run: nodes started with
``nodelab.tools.peer``, killed with real signals, fed real bytes over real sockets, and (as root)
two real "hosts" made of Linux network namespaces. The tests in ``tests/reliability`` check
the same promises with generous bounds; this script measures how well they are kept, and
prints the table for the closing note next to the BEAM's figures (BASELINES.md: a killed
node is noticed in 2.8-5.7 ms, median 3.7; a hung one after ~1.2 x net_ticktime).

The run is sandboxed: its own ``NODELAB_HOME``, its own port mapper port, and every node it
starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TESTS = REPO / "tests" / "reliability"
COOKIE = "secret_token"
SECTIONS = ("load", "sigkill", "sigstop", "portmapper", "parent", "cookie", "fuzz", "crowd",
            "idle", "mailbox", "hosts")


def _sandbox() -> Path:
    """Point nodelab at a private home and a free port-mapper port (before importing it)."""
    home = Path(tempfile.mkdtemp(prefix="nodelab-figures-"))
    os.environ["NODELAB_HOME"] = str(home / "home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        os.environ["ERL_EPMD_PORT"] = str(probe.getsockname()[1])
    os.environ["NODELAB_PORTMAPPER_LINGER"] = "0.5"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                                   else []))
    sys.path[:0] = [str(TESTS), str(REPO)]
    return home


SANDBOX = _sandbox()

import load_workload  # noqa: E402 - after the sandbox: they read its environment
import reliability_helpers  # noqa: E402
from reliability_helpers import (  # noqa: E402
    Canary,
    RawPeer,
    Remote,
    TwoHosts,
    closes_soon,
    cpu_seconds,
    netns_unavailable,
    os_process_gone,
    proc_status_kb,
    send_named_body,
    wait_until,
)

from nodelab import (  # noqa: E402
    ANY,
    Node,
    Process,
    exit,
    monitor,
    receive,
    register,
    self,
    send,
    spawn,
    unregister,
)
from nodelab.dist import (  # noqa: E402
    erlang_handshake,
    frames,
    portmapper,
    shipment,
)
from nodelab.dist.connections import SEND_NAMED  # noqa: E402
from nodelab.runtime import processes as P  # noqa: E402
from nodelab.tools import peer  # noqa: E402

ROWS: list[tuple[str, str, str]] = []
_started: list[peer.Peer] = []


def row(section: str, figure: str, value: str) -> None:
    ROWS.append((section, figure, value))
    print(f"  {figure}: {value}", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(samples: list[float]) -> str:
    # The 9th decile, interpolated between the samples ("inclusive": the range of the data).
    p90 = (statistics.quantiles(samples, n=10, method="inclusive")[-1] if len(samples) > 1
           else samples[0])
    return (f"median {ms(statistics.median(samples))}, p90 {ms(p90)}, "
            f"max {ms(max(samples))} (n={len(samples)})")


def start_peer(name: str, **options: Any) -> peer.Peer:
    options.setdefault("cookie", COOKIE)
    options.setdefault("log_dir", SANDBOX / "logs")
    node = peer.start(name, **options)
    _started.append(node)
    return node


def start_peers(names: list[str], **options: Any) -> list[peer.Peer]:
    return reliability_helpers.start_peers(start_peer, names, timeout=120, **options)


def stop_all() -> None:
    while _started:
        _started.pop().stop()


def flush_mailbox() -> None:
    while receive(timeout=0, after=None) is not None:
        pass


# ------------------------------------------------------------------------------------ faults

def section_sigkill(quick: bool) -> None:
    """SIGKILL of a node: how long until links, monitors and node monitors are told."""
    rounds = 5 if quick else 20
    Process.flag("trap_exit", True)
    samples: dict[str, list[float]] = {"link": [], "monitor": [], "node monitor": []}
    for number in range(rounds):
        kate = start_peer(f"victim{number}")
        linked = Node.spawn_link(kate.node, lambda: receive())
        watched = Node.spawn(kate.node, lambda: receive())
        ref = monitor(watched)
        Node.monitor(kate.node)
        time.sleep(0.05)
        started = time.monotonic()
        os.kill(kate.os_pid, signal.SIGKILL)
        assert receive(("EXIT", linked, ANY), timeout=5)[2] == "noconnection"
        samples["link"].append(time.monotonic() - started)
        assert receive(("DOWN", ref, "process", watched, ANY), timeout=5)[4] == "noconnection"
        samples["monitor"].append(time.monotonic() - started)
        receive(("nodedown", kate.node), timeout=5)
        samples["node monitor"].append(time.monotonic() - started)
        kate.stop()
        _started.remove(kate)
    Process.flag("trap_exit", False)
    for what, values in samples.items():
        row("sigkill", f"SIGKILL -> {what} told (BEAM median 3.7 ms)", summary(values))


def section_sigstop(quick: bool) -> None:
    """SIGSTOP (a silent node): detection by the tick, then SIGCONT and reconnection."""
    rounds = 2 if quick else 5
    for tick in (1.0, 2.0):
        P.current_transport().tick_time = tick
        detections, reconnections = [], []
        Process.flag("trap_exit", True)
        for number in range(rounds):
            kate = start_peer(f"frozen{number}", tick_time=tick)
            linked = Node.spawn_link(kate.node, lambda: receive())
            time.sleep(0.1)
            os.kill(kate.os_pid, signal.SIGSTOP)
            started = time.monotonic()
            try:
                assert receive(("EXIT", linked, ANY), timeout=5 * tick)[2] == "noconnection"
                detections.append(time.monotonic() - started)
            finally:
                os.kill(kate.os_pid, signal.SIGCONT)
            resumed = time.monotonic()
            while Node.ping(kate.node) != "pong":
                time.sleep(0.01)
            reconnections.append(time.monotonic() - resumed)
            kate.stop()
            _started.remove(kate)
        Process.flag("trap_exit", False)
        flush_mailbox()
        row("sigstop", f"frozen node noticed, tick {tick:g} s (BEAM ~1.2 x tick)",
            summary(detections))
        row("sigstop", f"SIGCONT -> Node.ping pong again, tick {tick:g} s", summary(reconnections))
    P.current_transport().tick_time = 1.0


def section_portmapper(quick: bool) -> None:
    """Kill the port mapper: running nodes keep talking, lookups recover by re-registration."""
    rounds = 2 if quick else 3
    kate = start_peer("mapperless")
    me = self()
    echo = Node.spawn(kate.node, lambda: [send(m[0], m[1]) for m in iter(receive, None)])
    recoveries, lost = [], 0
    for _ in range(rounds):
        kate_port = portmapper.lookup("mapperless")
        mapper = portmapper.mapper_pid()
        os.kill(mapper, signal.SIGKILL)
        started = time.monotonic()
        for number in range(1000):
            send(echo, (me, number))
        got = [receive(timeout=5, after=None) for _ in range(1000)]
        lost += sum(1 for a, b in zip(got, range(1000), strict=True) if a != b)
        wait_until(lambda port=kate_port: portmapper.lookup("mapperless") == port
                   and portmapper.lookup("alex") == P.current_transport().port, 30)
        recoveries.append(time.monotonic() - started)
    row("portmapper", "messages lost on a live connection while the mapper was dead",
        f"{lost} of {1000 * rounds}")
    row("portmapper", "mapper SIGKILLed -> both names found again", summary(recoveries))
    kate.stop()
    _started.remove(kate)


def section_parent(quick: bool) -> None:
    """SIGKILL the node that started a node: how long the child outlives it."""
    rounds = 2 if quick else 3
    samples = []
    for number in range(rounds):
        middle = Remote(log_path=SANDBOX / f"middle{number}.log")
        child = None
        try:
            middle(f"Node.start('middle{number}', cookie={COOKIE!r})")
            child = middle("from nodelab.tools import peer\n"
                           f"child = peer.start('orphan{number}', cookie={COOKIE!r}, "
                           f"log_dir={str(SANDBOX)!r})\nchild.os_pid", timeout=30)
            middle.kill(signal.SIGKILL)
            started = time.monotonic()
            wait_until(lambda child=child: os_process_gone(child), 10, interval=0.005)
            samples.append(time.monotonic() - started)
        finally:
            middle.close()
            if child is not None and not os_process_gone(child):
                os.kill(child, signal.SIGKILL)
    row("parent", "parent SIGKILLed -> child node gone (polls every 0.5 s)", summary(samples))


# ------------------------------------------------------------------------------ hostile input

def section_cookie(quick: bool) -> None:
    """Wrong cookies from hand-made peers: refused every time, one log line each."""
    attempts = 50 if quick else 200
    lines: list[str] = []
    old_sink = P.set_error_sink(lines.append)
    refused = 0
    started = time.monotonic()
    try:
        for number in range(attempts):
            with socket.create_connection(("127.0.0.1", P.current_transport().port), 3) as sock:
                try:
                    erlang_handshake.initiate(sock, "wrong_cookie", f"eve{number}@localhost",
                                              Node.self(), 1, python_tag=shipment.PYTHON_TAG)
                except erlang_handshake.HandshakeError:
                    refused += 1
        took = time.monotonic() - started
        wait_until(lambda: len(lines) >= attempts, 3)
        time.sleep(0.2)
    finally:
        P.set_error_sink(old_sink)
    rejected = [line for line in lines if "rejected. Invalid challenge reply." in line]
    row("cookie", "wrong cookie refused", f"{refused}/{attempts} ({100 * refused / attempts:.0f}%)")
    row("cookie", "log lines per refused attempt", f"{len(rejected) / attempts:.2f} "
        f"({len(lines)} lines in all)")
    row("cookie", "time per refused attempt", ms(took / attempts))


def _pre_handshake_input(rng: random.Random) -> bytes:
    family = rng.randrange(4)
    if family == 0:
        return rng.randbytes(rng.randrange(0, 700))
    if family == 1:
        return struct.pack("!H", rng.randrange(65536)) + rng.randbytes(rng.randrange(64))
    name = rng.choice([b"kate@localhost", b"k\xc3\xa4te@localhost", b"bad name@localhost",
                       rng.randbytes(rng.randrange(70))])
    flags = rng.choice([erlang_handshake.DEFAULT_FLAGS, rng.randrange(2**64)])
    payload = (b"N" + struct.pack("!QIH", flags, rng.randrange(2**32), len(name)) + name
               + rng.randbytes(rng.choice([0, 0, 1, 33])))
    data = struct.pack("!H", len(payload)) + payload
    if family == 2:
        return data[: rng.randrange(len(data) + 1)]
    reply = rng.randbytes(rng.randrange(80))
    return data + struct.pack("!H", len(reply)) + reply


def _frame_attack(rng: random.Random, peer_: RawPeer, canary: Canary) -> bytes:
    poison = send_named_body("figures_sentinel", canary)
    family = rng.randrange(6)
    if family == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if family == 1:
        return peer_.frame(SEND_NAMED, poison, state=frames.mac_state(rng.randbytes(32)))
    if family == 2:
        return peer_.frame(SEND_NAMED, poison, seq=peer_.seq + 1 + rng.randrange(1000))
    if family == 3:
        return struct.pack("!I", rng.randrange(frames.MAX_MESSAGE + 18, 2**32)) + b"x"
    if family == 4:
        return struct.pack("!I", rng.randrange(17)) + rng.randbytes(20)
    whole = peer_.frame(SEND_NAMED, poison)
    return whole[: rng.randrange(1, len(whole))]


def section_fuzz(quick: bool) -> None:
    """Random bytes at a live node's port, before and after a handshake."""
    budget = 5.0 if quick else 20.0
    rng = random.Random(int.from_bytes(secrets.token_bytes(4), "big"))
    canary_path = SANDBOX / "canary"
    canary = Canary(canary_path)
    sentinel = spawn(lambda: receive(lambda _m: False))
    register("figures_sentinel", sentinel)
    kate = start_peer("fuzzwatch")
    me = self()
    echo = Node.spawn(kate.node, lambda: [send(m[0], m[1]) for m in iter(receive, None)])
    old_sink = P.set_error_sink(lambda _line: None)
    counts = {"before the handshake": 0, "after the handshake": 0}
    failures = 0
    try:
        for phase in counts:
            deadline = time.monotonic() + budget / 2
            while time.monotonic() < deadline:
                port = P.current_transport().port
                if phase == "before the handshake":
                    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                        try:
                            sock.sendall(_pre_handshake_input(rng))
                        except OSError:
                            pass
                        failures += not closes_soon(sock)
                else:
                    raw = RawPeer(port, COOKIE, "fuzzer@localhost", Node.self())
                    try:
                        try:
                            raw.sock.sendall(_frame_attack(rng, raw, canary))
                        except OSError:
                            pass
                        failures += not raw.closes_soon()
                    finally:
                        raw.close()
                counts[phase] += 1
                send(echo, (me, counts[phase]))
                if receive(counts[phase], timeout=5, after=None) is None:
                    failures += 1
    finally:
        P.set_error_sink(old_sink)
        unregister("figures_sentinel")
    queued = Process.info(sentinel)["message_queue_len"]
    exit(sentinel, "kill")
    for phase, count in counts.items():
        row("fuzz", f"inputs tried {phase} ({budget / 2:g} s)", f"{count:,} "
            f"({count / (budget / 2):,.0f}/s)")
    row("fuzz", "inputs after which the node misbehaved or stopped serving", str(failures))
    row("fuzz", "messages that reached a process / payloads decoded",
        f"{queued} / {int(canary_path.exists())}")
    kate.stop()
    _started.remove(kate)


# -------------------------------------------------------------------------------------- load

def section_load(quick: bool) -> None:
    """1,000,000 messages among 4 nodes, 3 senders per node, 9 senders per receiver."""
    per_pair = 2_778 if quick else 27_778
    peers = start_peers(["loadb", "loadc", "loadd"])
    nodes = [Node.self()] + [p.node for p in peers]
    result = load_workload.run_message_load(nodes, senders_per_node=3, per_pair=per_pair,
                                            timeout=600)
    row("load", "messages (4 nodes x 3 senders x 3 receivers)", f"{result['expected']:,}")
    row("load", "lost / out of order", f"{result['lost']} / {result['order_errors']}")
    row("load", "throughput, all nodes together (BEAM one-way: 488k-651k msg/s)",
        f"{result['throughput']:,.0f} msg/s in {result['seconds']:.2f} s")
    peaks = [proc_status_kb(os.getpid(), "VmHWM")] + [proc_status_kb(p.os_pid, "VmHWM")
                                                     for p in peers]
    row("load", "peak RSS per node (VmHWM; alex is this script)",
        ", ".join(f"{node.split('@')[0]} {kb / 1024:.0f} MiB"
                  for node, kb in zip(nodes, peaks, strict=True)))
    # What happens today when the nodes first meet under load (the connect race).
    load_workload.disconnect_mesh(nodes[1:], keep=Node.self())
    raced = load_workload.run_message_load(nodes[1:], senders_per_node=2, per_pair=400,
                                           mesh_first=False, idle=2.0)
    row("load", "first contact under load, 3 peers, 4,800 messages: lost / out of order",
        f"{raced['lost']} / {raced['order_errors']}")
    for p in peers:
        p.stop()
        _started.remove(p)


def section_crowd(quick: bool) -> None:
    """10,000 processes blocked in receive on one node."""
    count = 2_000 if quick else 10_000
    node = start_peer("crowd")
    crowd = reliability_helpers.start_crowd(node, count, timeout=120, idle_seconds=5.0)
    leader, seconds_up, threads, idle = (crowd["leader"], crowd["seconds_up"], crowd["threads"],
                                         crowd["idle_cpu_s"])
    before, rss = crowd["rss_before_kb"], crowd["rss_up_kb"]
    row("crowd", f"{count:,} processes started, blocked in receive", f"in {seconds_up:.2f} s")
    row("crowd", "node RSS before / with them", f"{before / 1024:.0f} MiB / {rss / 1024:.0f} MiB "
        f"({(rss - before) / count:.1f} KiB per process, {threads} OS threads)")
    row("crowd", "their CPU while idle, over 5 s", f"{100 * idle / 5:.2f}% of one CPU")
    send(leader, "release")
    _, _, seconds_down = receive(("crowd down", ANY, ANY), timeout=600)
    row("crowd", f"waking all {count:,} at once and seeing them end",
        f"{seconds_down:.2f} s (CPython hands the GIL from thread to thread)")
    node.stop()
    _started.remove(node)


def section_idle(quick: bool) -> None:
    """16 idle nodes, connected to this one: CPU over 5 s, with the default tick and 1 s."""
    for tick in (None, 1.0):
        P.current_transport().tick_time = tick or 15.0
        peers = start_peers([f"idle{i:02d}" for i in range(16)], tick_time=tick)
        for p in peers:
            Node.ping(p.node)
        time.sleep(1.0)
        before = {p.os_pid: cpu_seconds(p.os_pid) for p in peers}
        started = time.monotonic()
        time.sleep(2.0 if quick else 5.0)
        wall = time.monotonic() - started
        used = sum(cpu_seconds(pid) - cpu for pid, cpu in before.items())
        rss = [proc_status_kb(p.os_pid, "VmRSS") for p in peers]
        row("idle", f"16 idle connected nodes, tick {tick or 15:g} s: CPU together (goal < 2%)",
            f"{100 * used / wall:.2f}% of one CPU over {wall:.1f} s")
        row("idle", f"RSS per idle node, tick {tick or 15:g} s",
            f"{min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB")
        for p in peers:
            p.stop()
            _started.remove(p)
    P.current_transport().tick_time = 1.0


def section_mailbox(quick: bool) -> None:
    """Selective receive of the last of 100,000 queued messages."""
    count = 100_000
    me = self()
    samples, scans = [], []
    for _ in range(2 if quick else 3):
        def picky() -> None:
            receive("start")
            started = time.monotonic()
            receive(("last", ANY), timeout=60)
            send(me, ("took", time.monotonic() - started))

        pid = spawn(picky)
        for number in range(count):
            send(pid, number)
        send(pid, ("last", count))
        began = time.monotonic()
        send(pid, "start")
        samples.append(receive(("took", ANY), timeout=60)[1])
        scans.append(time.monotonic() - began)
        exit(pid, "kill")
    row("mailbox", "selective receive of the last of 100,000 queued", summary(samples))
    row("mailbox", "...including the first pass over all of them", summary(scans))


# ------------------------------------------------------------------------------ separate hosts

def section_hosts(quick: bool) -> None:
    """Two network namespaces: a cut cable is noticed by the tick; healing reconnects."""
    why = netns_unavailable()
    if why is not None:
        row("hosts", "separate hosts", f"skipped: {why}")
        return
    rounds = 2 if quick else 3
    detections, reconnections = [], []
    with TwoHosts() as hosts:
        alex = Remote(prefix=hosts.prefix(hosts.a), log_path=SANDBOX / "ns-alex.log")
        kate = Remote(prefix=hosts.prefix(hosts.b), log_path=SANDBOX / "ns-kate.log")
        try:
            alex(f"Node.start('alex@{hosts.A_IP}', cookie={COOKIE!r}, tick_time=1.0)")
            kate(f"Node.start('kate@{hosts.B_IP}', cookie={COOKIE!r}, tick_time=1.0)")
            alex("import time\nProcess.flag('trap_exit', True)")
            for _ in range(rounds):
                alex(f"pid = Node.spawn_link('kate@{hosts.B_IP}', lambda: receive())")
                time.sleep(0.3)
                hosts.cut()
                detections.append(alex("t = time.monotonic(); receive(('EXIT', pid, ANY), "
                                       "timeout=10); time.monotonic() - t", timeout=20))
                hosts.heal()
                healed = time.monotonic()
                assert alex(f"Node.ping('kate@{hosts.B_IP}')", timeout=20) == "pong"
                reconnections.append(time.monotonic() - healed)
                time.sleep(1.5)  # let kate's side notice too, before the next cut
        finally:
            alex.close()
            kate.close()
    row("hosts", "cable cut -> link told, tick 1 s (BEAM ~1.2 x tick)", summary(detections))
    row("hosts", "cable healed -> Node.ping pong", summary(reconnections))


# -------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, ~1 minute")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable)")
    args = parser.parse_args(argv)
    chosen = args.only or list(SECTIONS)
    Node.start("alex", cookie=COOKIE, tick_time=1.0)
    P.set_error_sink(lambda _line: None)  # the figures, not the nodes' logs
    failed = []
    try:
        for name in SECTIONS:
            if name not in chosen:
                continue
            function: Callable[[bool], None] = globals()[f"section_{name}"]
            print(f"[{name}] {function.__doc__.strip().splitlines()[0]}", flush=True)
            try:
                function(args.quick)
            except Exception:  # noqa: BLE001 - report it, go on with the other sections
                failed.append(name)
                traceback.print_exc()
                row(name, "section failed", traceback.format_exc().strip().splitlines()[-1])
            finally:
                stop_all()
                flush_mailbox()
    finally:
        stop_all()
        Node.stop()
        shutil.rmtree(SANDBOX, ignore_errors=True)
    width = max(len(figure) for _, figure, _ in ROWS)
    print("\nnodelab reliability figures "
          f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
          f"{', quick' if args.quick else ''})")
    for section, figure, value in ROWS:
        print(f"  {section:<10} {figure:<{width}}  {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
