"""The runtime's hot paths inside one node, each step on its own (issue 12, runtime side).

    .venv/bin/python benchmarks/runtime_hotpaths.py [--n 20000] [--batches 7] [--json PATH]

What a message costs *inside* a node, with no socket and no codec: ``send`` to a local PID,
``receive`` with and without a pattern or a timeout, the kill machinery's masked sections,
a ping-pong between two local processes (two thread handoffs per round trip), and the
runtime side of a remote spawn (``spawn_for_peer``: a table insert, a link, a worker).
``runtime_spawn.py`` takes spawn apart further.

Every figure is measured inside a real process of this node (spawned, so the kill
machinery takes the path a process takes, not a shell's) and is the fastest of
``--batches`` batches of ``--n`` operations: on a shared machine the slower batches
measure the neighbours, not the step. The load average is printed with the figures;
compare figures of one run, or runs at a similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodelab import ANY, receive, send, spawn
from nodelab import self as self_
from nodelab.runtime import _kill, _table
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid


def timed(n: int, batches: int, fn: Callable[[], Any]) -> float:
    """The fastest of ``batches`` batches, in microseconds per call of ``fn``."""
    best = float("inf")
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n / 1000)
    return best


def timed_batch(n: int, batches: int, batch: Callable[[int], Any]) -> float:
    """Like :func:`timed`, for a ``batch(n)`` that does ``n`` operations itself."""
    best = float("inf")
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        batch(n)
        best = min(best, (time.perf_counter_ns() - t0) / n / 1000)
    return best


def measure(n: int, batches: int) -> dict[str, float]:
    """Run inside a process of this node; returns us per operation for each step."""
    out: dict[str, float] = {}
    me = self_()
    proc = _table.current()
    message = (me, "ping")

    def send_receive() -> None:
        send(me, message)
        receive()

    out["send to self + receive() (message waiting)"] = timed(n, batches, send_receive)

    def send_receive_pattern() -> None:
        send(me, message)
        receive((Pid, "ping"))

    out["send to self + receive((Pid, 'ping'))"] = timed(n, batches, send_receive_pattern)

    def send_receive_timeout() -> None:
        send(me, message)
        receive(timeout=5)

    out["send to self + receive(timeout=5)"] = timed(n, batches, send_receive_timeout)

    def selective_past_one() -> None:
        # One message that does not match stays in the save queue while another is taken.
        send(me, ("other", 1))
        send(me, message)
        receive((ANY, "ping"))
        receive()

    out["selective: skip one, take one, take the skipped"] = timed(
        n // 2, batches, selective_past_one)

    def sends(count: int) -> None:
        for _ in range(count):
            send(me, message)
        proc.mailbox.drain()

    out["send to a local pid (batch, then drain)"] = timed_batch(n, batches, sends)

    def take_any() -> None:
        send(me, message)
        P.take(None, None)

    out["send to self + take(None, None) (library receive)"] = timed(n, batches, take_any)

    def masks() -> None:
        token = _kill.enter(proc)
        _kill.leave(token)

    out["kill machinery: enter + leave (one masked section)"] = timed(n, batches, masks)
    out["kill machinery: check (a checkpoint)"] = timed(n, batches, lambda: _kill.check(proc))

    # A local ping-pong: two threads, two handoffs per round trip.
    def echo() -> None:
        while True:
            sender, msg = receive()
            if msg == "stop":
                return
            send(sender, msg)

    peer = spawn(echo)
    rounds = max(1, n // 4)

    def ping_pong(count: int) -> None:
        for _ in range(count):
            send(peer, message)
            receive()

    out["local ping-pong RTT (two processes)"] = timed_batch(rounds, batches, ping_pong)
    send(peer, (me, "stop"))

    # The runtime side of a remote spawn: what a reader thread does for a spawn request
    # (start a process linked to the peer's caller), and that process's first message.
    remote_caller = Pid("kate@localhost", 42, 7)

    def replies_to(pid: Pid) -> None:
        send(pid, "up")

    def remote_spawn(count: int) -> None:
        for _ in range(count):
            P.spawn_for_peer(replies_to, (me,), group_leader=None, link_to=remote_caller)
            receive()

    out["spawn_for_peer + first message back"] = timed_batch(max(1, n // 20), batches,
                                                             remote_spawn)
    out.update(floors(n, batches))
    return out


def floors(n: int, batches: int) -> dict[str, float]:
    """What the same steps cost with bare threads and queues: the floor under the runtime."""
    out: dict[str, float] = {}
    ping: SimpleQueue = SimpleQueue()
    pong: SimpleQueue = SimpleQueue()

    def echo() -> None:
        while (item := ping.get()) is not None:
            pong.put(item)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()

    def ping_pong(count: int) -> None:
        for _ in range(count):
            ping.put(1)
            pong.get()

    out["floor: SimpleQueue ping-pong, two plain threads"] = timed_batch(
        max(1, n // 4), batches, ping_pong)
    ping.put(None)
    thread.join(5)

    # A pool thread that is handed a job and answers: a spawn's two handoffs, no runtime.
    jobs: SimpleQueue = SimpleQueue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            job()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    answer = pong.put

    def handed(count: int) -> None:
        for _ in range(count):
            jobs.put(lambda: answer(1))
            pong.get()

    out["floor: hand a job to an idle thread + its answer"] = timed_batch(
        max(1, n // 20), batches, handed)
    jobs.put(None)
    thread.join(5)

    def new_thread(count: int) -> None:
        for _ in range(count):
            threading.Thread(target=answer, args=(1,), daemon=True).start()
            pong.get()

    out["floor: a new thread per job + its answer"] = timed_batch(
        max(1, n // 20), batches, new_thread)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per batch")
    parser.add_argument("--batches", type=int, default=7, help="batches; the fastest counts")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    me = self_()

    def runner() -> None:
        send(me, ("figures", measure(args.n, args.batches)))

    started = time.time()
    spawn(runner)
    _, figures = receive(("figures", dict), timeout=600)
    load = os.getloadavg()
    print(f"runtime hot paths, us per operation (fastest of {args.batches} batches of "
          f"{args.n}); load {load[0]:.2f} {load[1]:.2f}; CPython "
          f"{sys.version.split()[0]}; {time.time() - started:.0f} s")
    width = max(len(label) for label in figures)
    for label, value in figures.items():
        print(f"  {label:<{width}}  {value:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
