"""Where a spawn's time goes inside a node (issue 12, runtime side).

    .venv/bin/python benchmarks/runtime_spawn.py [--n 3000] [--rounds 5] [--json PATH]

A spawn hands a new process to a worker thread (a pool: ``_workers.py``) and the process
answers; that is two thread handoffs, the same as handing a job to an idle plain thread
and waiting for its answer, which is this script's *floor*. What the runtime adds on top
is its own CPU: the process record and its PID, the table insert, the masked start, the
link or monitor, and the exit path (exit hooks, leaving the table, telling links and
monitors). Under the GIL the new process's exit path runs before the spawner can go on,
so it is on the critical path too.

Each round measures, interleaved so that the machine's load weighs on all alike (the
median of the rounds is printed, with the ratio to the floor of the same round):

* spawn + first message back, from a process: ``spawn``, ``spawn_link``,
  ``spawn_monitor`` (+ its DOWN), and ``spawn_for_peer`` (a remote spawn request's runtime
  side, linked to a PID of another node); wall time and CPU of this OS process per spawn;
* the floors: an idle plain thread handed a job, and a new thread per job;
* the steps on their own, in one thread: a process record with its PID, the table insert
  and ``terminate``, and the whole exit path of a process with nothing to tell.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodelab import receive, send, spawn, spawn_link
from nodelab import self as self_
from nodelab.runtime import _kill, _workers
from nodelab.runtime import processes as P
from nodelab.runtime._table import LocalProcess, runtime
from nodelab.runtime.exits import terminate
from nodelab.runtime.pids import Pid


def per_op(n: int, batch: Callable[[int], Any]) -> tuple[float, float]:
    """(wall us, CPU us of this OS process) per operation of ``batch(n)``."""
    c0, t0 = time.process_time(), time.perf_counter_ns()
    batch(n)
    return (time.perf_counter_ns() - t0) / n / 1000, (time.process_time() - c0) / n * 1e6


def fastest(n: int, fn: Callable[[], Any], batches: int = 30) -> float:
    """CPU us of this thread per call of ``fn``: the fastest of ``batches`` batches (CPU,
    not wall time: a batch that was descheduled does not count against the step)."""
    best = float("inf")
    for _ in range(batches):
        t0 = time.thread_time_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time_ns() - t0) / n / 1000)
    return best


def _answer(pid: Pid) -> None:
    send(pid, "up")


def spawns(me: Pid) -> dict[str, Callable[[int], None]]:
    remote_caller = Pid("kate@localhost", 42, 7)

    def plain(count: int) -> None:
        for _ in range(count):
            spawn(_answer, me)
            receive()

    def linked(count: int) -> None:
        for _ in range(count):
            spawn_link(_answer, me)
            receive()

    def monitored(count: int) -> None:
        for _ in range(count):
            P.spawn_monitor(_answer, me)
            receive()  # "up"
            receive()  # its DOWN

    def for_peer(count: int) -> None:
        for _ in range(count):
            P.spawn_for_peer(_answer, (me,), group_leader=None, link_to=remote_caller)
            receive()

    return {"spawn + first message back": plain, "spawn_link + first message back": linked,
            "spawn_monitor + first message + DOWN": monitored,
            "spawn_for_peer (remote link) + first message back": for_peer}


def floors() -> tuple[dict[str, Callable[[int], None]], Callable[[], None]]:
    answers: SimpleQueue = SimpleQueue()
    jobs: SimpleQueue = SimpleQueue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            job()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    def idle_thread(count: int) -> None:
        for _ in range(count):
            jobs.put(lambda: answers.put(1))
            answers.get()

    def new_thread(count: int) -> None:
        for _ in range(count):
            threading.Thread(target=answers.put, args=(1,), daemon=True).start()
            answers.get()

    def stop() -> None:
        jobs.put(None)
        thread.join(5)

    return {"floor: an idle thread handed a job + its answer": idle_thread,
            "floor: a new thread per job + its answer": new_thread}, stop


def steps(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    out["a process record with its PID (LocalProcess)"] = fastest(
        n, lambda: LocalProcess(runtime.new_pid(), None))

    def insert_terminate() -> None:
        proc = LocalProcess(runtime.new_pid(), None)
        with runtime.lock:
            runtime.processes[proc.pid.serial] = proc
        terminate(proc, "normal")

    out["record + table insert + terminate (nothing to tell)"] = fastest(n, insert_terminate)

    def exit_path() -> None:
        proc = LocalProcess(runtime.new_pid(), None)
        with runtime.lock:
            runtime.processes[proc.pid.serial] = proc
        _kill.begin_exit(proc)
        _workers._finish(proc, "normal", None)

    out["record + insert + the whole exit path (begin_exit, _finish)"] = fastest(n, exit_path)
    return out


def measure(n: int, rounds: int) -> dict[str, Any]:
    me = self_()
    cases = spawns(me)
    floor_cases, stop = floors()
    everything = {**floor_cases, **cases}
    for batch in everything.values():  # warm the pool and the code
        batch(min(n, 200))
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in everything}
    for _ in range(rounds):
        for label, batch in everything.items():
            samples[label].append(per_op(n, batch))
    stop()
    idle_floor = [wall for wall, _ in samples["floor: an idle thread handed a job + its answer"]]
    out: dict[str, Any] = {}
    for label, values in samples.items():
        walls = [wall for wall, _ in values]
        out[label] = {
            "wall_us": statistics.median(walls),
            "cpu_us": statistics.median(cpu for _, cpu in values),
            "x_idle_floor": statistics.median(w / f for w, f in zip(walls, idle_floor,
                                                                     strict=True)),
        }
    out["steps"] = steps(max(1, n // 4))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3_000, help="spawns per batch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    me = self_()

    def runner() -> None:
        send(me, ("figures", measure(args.n, args.rounds)))

    started = time.time()
    spawn(runner)
    _, figures = receive(("figures", dict), timeout=900)
    load = os.getloadavg()
    print(f"spawn inside a node: median of {args.rounds} interleaved rounds of {args.n}; "
          f"load {load[0]:.2f} {load[1]:.2f}; CPython {sys.version.split()[0]}; "
          f"{time.time() - started:.0f} s")
    print("| what | wall us | CPU us (this OS process) | x idle-thread floor |")
    print("|---|---|---|---|")
    for label, row in figures.items():
        if label != "steps":
            print(f"| {label} | {row['wall_us']:.1f} | {row['cpu_us']:.1f} | "
                  f"{row['x_idle_floor']:.2f}x |")
    print("\nthe steps on their own, one thread (CPU us, fastest of 30 batches):")
    for label, value in figures["steps"].items():
        print(f"  {label:<62} {value:6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
