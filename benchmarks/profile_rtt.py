"""Where a nodelab round trip's time goes (issue 12): a profile across threads and processes.

    .venv/bin/pip install yappi        # for the profile only; not a dependency of nodelab
    .venv/bin/python benchmarks/profile_rtt.py [--n 20000] [--rounds 3] [--top 30]

One run, two real node processes (this one, alex, and a peer, kate, started from this file
with ``peer``), the same ping-pong as ``run.py``'s figure 1 (``send(echo, (me, "ping"))``,
``receive()``; kate's echo process sends each message back). It measures, in this order:

1. **wall and CPU per round trip, no profiler**: RTT p50 (median of the rounds), and the CPU
   both OS processes spent per round trip (``/proc/<pid>/stat`` utime + stime, all threads);
2. **the same for the thread-handoff floor**: ``raw_peer.py socket`` in mode ``H`` (a reader
   thread hands each frame to the waiting thread through a SimpleQueue, both sides);
3. **a yappi profile** (CPU clock, every thread of both processes, started before the node):
   each function's own time (``tsub``) per round trip, summed over both processes and grouped
   by component (see ``COMPONENTS``). yappi's hooks inflate every Python call, so the table
   gives each component's *share* of the profiled CPU and applies it to the unprofiled CPU of
   step 1; the wall time not spent on a CPU (wakeups, the GIL handed between threads, the
   scheduler) is the RTT minus the CPU on the critical path.

A ping-pong is sequential — at any instant one thread of one process works on it — so CPU per
round trip (both processes) is the critical path's CPU, plus the idle threads' noise (ticks).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _measure import (
    fastest_of,
    handoff_inbox,
    private_portmapper,
    rounds_of,
    start_child,
    yappi_key,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
HEADER = struct.Struct("!I")

# (component, test on "module:function") — the first that matches wins; order matters.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("encode (pickle dumps, Pid.__reduce__)", (
        "shipment.py:dumps", "shipment.py:reducer_override", "pids.py:__reduce__",
        "pids.py:node", "pids.py:creation", "_pickle.Pickler", "connections.py:_encode_message",
        "BytesIO.getvalue", "Pickler.dump", "Pickler.__init__")),
    ("decode (pickle loads, Pid())", (
        "shipment.py:loads", "_pickle.Unpickler", "shipment.py:find_class",
        "connections.py:_decode_message", "pids.py:__init__", "Unpickler.load",
        "Unpickler.__init__")),
    ("MAC (blake2b copy/update/digest, frame header)", (
        "frames.py:", "blake2b", "_blake2")),
    ("socket syscalls (sendall, recv)", ("'sendall'", "'recv'")),
    ("write path (send_frame, lock, burst check, flusher)", (
        "connection.py:send_frame", "connection.py:_write", "connection.py:flush_pending",
        "connections.py:_flush_loop", "_kill.py:wait_lock", "time:monotonic",
        "'acquire' of '_thread.lock'", "'release' of '_thread.lock'")),
    ("kill machinery (checkpoints, masks, kill_lock)", (
        "_kill.py:", "processes.py:enter_critical", "processes.py:leave_critical")),
    ("send (routing: dest kind, transport, connection lookup)", (
        "messages.py:send", "connections.py:send", "connections.py:connection",
        "transport.py:", "pids.py:is_local", "pids.py:_key")),
    ("receive (take, matcher, mailbox, SimpleQueue)", (
        "messages.py:receive", "messages.py:take", "mailbox.py:", "patterns.py:",
        "_table.py:current", "SimpleQueue", "_queue")),
    ("read path (reader loop, framing, dispatch, deliver)", (
        "connection.py:_read_loop", "connections.py:dispatch", "remote.py:deliver",
        "_table.py:lookup_serial", "bytearray", "_struct.Struct", "builtins:len",
        "builtins:getattr", "pids.py:")),
    ("benchmark loop (echo, driver)", ("profile_rtt.py:", "_measure.py:", "perf_counter_ns")),
]


def component_of(key: str) -> str:
    for name, tests in COMPONENTS:
        if any(test in key for test in tests):
            return name
    return "other"


# ---------------------------------------------------------------------------- kate (peer)

def peer(name: str, cookie: str, profile: str) -> int:
    yappi = None
    if profile != "off":
        import yappi

        yappi.set_clock_type(profile)
        yappi.start(builtins=True, profile_threads=True)
    from nodelab import Node, receive, register, self, send, spawn

    def echo() -> None:
        while True:
            sender, msg = receive()
            if msg == "yappi_clear" and yappi is not None:
                yappi.clear_stats()
            elif msg == "yappi_dump" and yappi is not None:
                yappi.stop()
                send(sender, _stats(yappi))
                continue
            send(sender, self() if msg == "whoami" else msg)

    threading.Timer(600, os._exit, args=(3,)).start()
    full_name = Node.start(name, cookie=cookie)
    register("bench_echo", spawn(echo))
    print(f"READY {full_name}", flush=True)
    sys.stdin.buffer.read()
    os._exit(0)


def _stats(yappi: Any) -> list[tuple[str, int, float, float]]:
    return [(yappi_key(stat), stat.ncall, stat.tsub, stat.ttot)
            for stat in yappi.get_func_stats()]


# ------------------------------------------------------------- the steps, each on its own

def micro(n: int = 20_000) -> dict[str, float]:
    """Each step of one direction of the round trip, timed on its own (us per message),
    with the library's own functions, inside a running node's process (so the kill
    machinery takes the process path). The fastest of 7 batches: on a shared machine the
    slower batches measure the neighbours, not the step."""
    from nodelab import Node, receive, send, spawn
    from nodelab import self as me_
    from nodelab.dist import connections as dist_mod
    from nodelab.dist import frames
    from nodelab.runtime import _kill, _table
    from nodelab.runtime.mailbox import Mailbox
    from nodelab.runtime.patterns import matcher

    Node.start(f"prof_micro_{secrets.token_hex(3)}", cookie="micro_" + secrets.token_hex(8))
    me = me_()
    remote_pid = type(me)("kate@localhost", 42, 7)

    def measure() -> None:
        out: dict[str, float] = {}
        proc = _table.current()
        message = (remote_pid, "ping")

        def timed(label: str, fn: Any) -> None:
            out[label] = fastest_of(fn, n)

        body = dist_mod._SEND_HEADER.pack(1, 2) + dist_mod._encode_message(message, "k")
        state = frames.mac_state(b"k" * 32)
        frame = frames.encode(state, 5, dist_mod.SEND, body)
        header = frames.HEADER
        timed("encode: _SEND_HEADER.pack + shipment.dumps((pid, 'ping'))",
              lambda: dist_mod._SEND_HEADER.pack(1, 2) + dist_mod._encode_message(message, "k"))
        timed("decode: unpack + shipment.loads", lambda: (
            dist_mod._SEND_HEADER.unpack_from(body),
            dist_mod._decode_message(body, dist_mod._SEND_HEADER.size)))

        def verify() -> None:
            _, kind, mac = header.unpack_from(frame, 0)
            if frames.mac(state, 5, kind, bytes(frame[4 + 17:])) != mac:
                raise AssertionError

        timed("MAC + header: frames.encode", lambda: frames.encode(state, 5, dist_mod.SEND, body))
        timed("MAC + header: verify on read", verify)

        def masks() -> None:  # send: check + enter_critical/leave; take: check + enter/leave
            _kill.check(proc)
            token = _kill.enter()
            _kill.leave(token)
            token = _kill.enter(proc)
            _kill.leave(token)

        timed("kill machinery: 2 checkpoints + 2 masked sections (kill_lock)", masks)
        lock = threading.Lock()

        def write_lock() -> None:
            _kill.wait_lock(lock)
            lock.release()
            time.monotonic()
            time.monotonic()

        timed("write path: wait_lock + release + 2 monotonic()", write_lock)
        box = Mailbox(lambda signal: None)
        any_ = matcher(())

        def mailbox() -> None:
            box.put(message)
            box.take(any_, 10)

        timed("mailbox: put + take (message already there, no wait)", mailbox)
        timed("lookup_serial (reader's deliver)", lambda: _table.lookup_serial(proc.pid.serial,
                                                                              proc.pid.creation))
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        small = frame

        def syscalls() -> None:
            a.sendall(small)
            b.recv(65536)

        timed("socket: sendall + recv of one frame (socketpair)", syscalls)
        q: queue.SimpleQueue = queue.SimpleQueue()
        timed("SimpleQueue put + get, same thread (the handoff's own CPU)",
              lambda: (q.put(1), q.get()))
        a.close()
        b.close()
        send(me, out)

    spawn(measure)
    result = receive(timeout=600)
    Node.stop()
    return result


# ------------------------------------------------------------------------- alex (driver)

def floor(n: int, rounds: int) -> dict[str, float]:
    child, port = start_child([sys.executable, str(HERE / "raw_peer.py"), "socket"], REPO)
    try:
        sock = socket.create_connection(("127.0.0.1", int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"H")
        reader = sock.makefile("rb", buffering=1 << 16)
        frame = HEADER.pack(32) + b"p" * 32
        inbox = handoff_inbox(reader, len(frame))

        def one() -> None:
            sock.sendall(frame)
            inbox.get()

        for _ in range(2000):
            one()
        result = rounds_of(n, rounds, one, [os.getpid(), child.pid])
        sock.shutdown(socket.SHUT_RDWR)
        return result
    finally:
        child.stdin.close()
        child.wait(5)


def nodelab_rtt(n: int, rounds: int, profile: str) -> tuple[dict[str, float], list | None]:
    yappi = None
    if profile != "off":
        import yappi

        yappi.set_clock_type(profile)
        yappi.clear_stats()
        yappi.start(builtins=True, profile_threads=True)
    from nodelab import Node, receive, send
    from nodelab import self as me_

    tag = secrets.token_hex(3)
    cookie = "prof_" + secrets.token_hex(8)
    Node.start(f"prof_alex_{tag}", cookie=cookie)
    child, kate = start_child([sys.executable, __file__, "peer", f"prof_kate_{tag}", cookie,
                               profile], REPO)
    try:
        me = me_()
        send(("bench_echo", kate), (me, "whoami"))
        echo = receive(timeout=10)
        message = (me, "ping")

        def one() -> None:
            send(echo, message)
            receive(timeout=10)

        for _ in range(2000):
            one()
        stats = None
        if yappi is not None:
            send(echo, (me, "yappi_clear"))
            receive(timeout=10)
            yappi.clear_stats()
        result = rounds_of(n, rounds, one, [os.getpid(), child.pid])
        if yappi is not None:
            yappi.stop()
            stats = _stats(yappi)
            send(echo, (me, "yappi_dump"))
            stats += receive(timeout=60)
        return result, stats
    finally:
        child.stdin.close()
        child.wait(10)
        Node.stop()


def report(stats: list, n_calls: int, plain: dict[str, float], flo: dict[str, float],
           profiled: dict[str, float], top: int) -> None:
    per: dict[str, float] = {}
    funcs: dict[str, list[float]] = {}
    for key, ncall, tsub, ttot in stats:
        per[component_of(key)] = per.get(component_of(key), 0.0) + tsub
        f = funcs.setdefault(key, [0, 0.0, 0.0])
        f[0] += ncall
        f[1] += tsub
        f[2] += ttot
    total = sum(per.values())
    print(f"\nround trips: nodelab p50 {plain['p50_us']:.1f} us, CPU {plain['cpu_us']:.1f} us "
          f"(both processes); handoff floor p50 {flo['p50_us']:.1f} us, CPU "
          f"{flo['cpu_us']:.1f} us; with yappi: p50 {profiled['p50_us']:.1f} us")
    print(f"nodelab adds {plain['p50_us'] - flo['p50_us']:.1f} us wall and "
          f"{plain['cpu_us'] - flo['cpu_us']:.1f} us CPU per round trip over the floor\n")
    print("| component | yappi CPU us / RTT | share | us / RTT unprofiled (share x CPU) |")
    print("|---|---|---|---|")
    for name, seconds in sorted(per.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds / n_calls * 1e6:.1f} | {seconds / total:.0%} | "
              f"{seconds / total * plain['cpu_us']:.1f} |")
    off_cpu = plain["p50_us"] - plain["cpu_us"]
    print(f"| not on a CPU (wakeups, GIL handoffs, scheduler): RTT - CPU | — | — | "
          f"{off_cpu:.1f} |")
    print(f"\ntop {top} functions by own time (both processes, every thread), per round trip:")
    print("| function | calls / RTT | own us / RTT | incl. us / RTT | component |")
    print("|---|---|---|---|---|")
    for key, (ncall, tsub, ttot) in sorted(funcs.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"| `{key[:70]}` | {ncall / n_calls:.2f} | {tsub / n_calls * 1e6:.2f} | "
              f"{ttot / n_calls * 1e6:.2f} | {component_of(key)} |")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "peer":
        return peer(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    private_portmapper()
    print(f"load average {os.getloadavg()}", flush=True)
    flo = floor(args.n, args.rounds)
    plain, _ = nodelab_rtt(args.n, args.rounds, "off")
    profiled, stats = nodelab_rtt(args.n, 1, args.clock)
    report(stats or [], args.n, plain, flo, profiled, args.top)
    steps = micro()
    print("\neach step on its own, one direction (us per message; x2 per round trip):")
    print("| step | us / message | us / RTT (x2) |")
    print("|---|---|---|")
    for label, us in steps.items():
        print(f"| {label} | {us:.2f} | {2 * us:.2f} |")
    print(f"| sum | {sum(steps.values()):.2f} | {2 * sum(steps.values()):.2f} |")
    print(f"\nload average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"floor": flo, "nodelab": plain, "profiled": profiled,
                                         "stats": stats, "steps": steps}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
