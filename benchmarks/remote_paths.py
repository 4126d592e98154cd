"""Where a remote spawn's and a remote supervised task's time goes (issue 12, rows 3 and 4).

    .venv/bin/pip install yappi        # for the profile only; not a dependency of nodelab
    .venv/bin/python benchmarks/remote_paths.py [--n 2000] [--rounds 3] [--top 25]
    .venv/bin/python benchmarks/remote_paths.py --steps-only     # step 3 alone, no peer
    .venv/bin/python benchmarks/remote_paths.py --no-profile --no-steps   # step 1 alone
    .venv/bin/python benchmarks/remote_paths.py --trace --n 1000         # the time line

Two real node processes (this one, alex, and a peer, kate, started from this file), the
same two operations as ``run.py``'s rows 3 and 4:

* **spawn**: ``Node.spawn(kate, lambda: send(me, "spawned"))``, then ``receive("spawned")``;
* **task**: ``Task.await_(TaskSupervisor.async_(("Bench.TaskSupervisor", kate),
  lambda: "ok"))``.

It measures, in this order:

1. **wall and CPU per operation, no profiler**: p50 (median of the rounds) and the CPU both
   OS processes spent per operation (``/proc/<pid>/stat``, every thread);
2. **a yappi profile** (CPU clock, every thread of both processes, started before the
   node): each function's own time per operation, summed over both processes and grouped
   by component (``COMPONENTS``). yappi inflates every Python call, so each component is
   given as its *share* of the profiled CPU, applied to the unprofiled CPU of step 1;
3. **the steps on their own**, in one process (CPU us, fastest of 7 batches): encoding and
   decoding the spawn request and the task's call, rebuilding the shipped function, the
   runtime's ``spawn_for_peer``, a frame's MAC.

``--trace`` replaces step 2 with a time line: the steps of both paths (a frame written, a
frame dispatched, a control operation handled, a process woken in ``take``, the shipment
run, a process started and its exit path) are wrapped in the benchmark's own processes to
record when they start and end, on the clock both processes share, and each event's
median offset from the start of its operation is printed in order: where the wall time of
one operation goes, thread by thread, including what is left over after it.

An operation is sequential (one thread of one process works on it at a time), so the CPU
of both processes per operation is its critical path's CPU, plus the idle threads' ticks
and the work left over after the reply (a task's exit, its supervisor's next spare).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _measure import private_portmapper, rounds_of, start_child, yappi_key

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from nodelab import Node, receive, register, send, spawn  # noqa: E402 - after sys.path
from nodelab import self as me_  # noqa: E402

# (component, tests on "file:function") — the first that matches wins; order matters.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("shipment: pickle the function (build, code-shipping Pickler, marshal)", (
        "shipment.py:build", "shipment.py:_ship", "shipment.py:reducer_override",
        "shipment.py:_function_reduction", "shipment.py:_findable_by_reference",
        "shipment.py:describe", "marshal.dumps", "Pickler.dump", "Pickler.__init__",
        "BytesIO.getvalue", "'dump' of '_pickle.Pickler'", "shipment.py:_dumps_shipment",
        "shipment.py:_marshalled", "shipment.py:__reduce_ex__", "shipment.py:__init__")),
    ("node name check (parse_node_name, ipaddress)", ("names.py:", "ipaddress.py:")),
    ("shipment: rebuild the function (loads, marshal, FunctionType)", (
        "shipment.py:_rebuild_function", "shipment.py:resolve", "shipment.py:run",
        "shipment.py:node_namespace", "shipment.py:find_class", "marshal.loads",
        "'load' of '_pickle.Unpickler'", "Unpickler.__init__", "shipment.py:<lambda>",
        "shipment.py:_code_of")),
    ("encode (pickle.dumps of messages and control ops, PIDs)", (
        "shipment.py:dumps", "_pickle:dumps", "pids.py:__reduce__",
        "connections.py:_encode_message")),
    ("decode (pickle.loads, PIDs rebuilt)", (
        "shipment.py:loads", "_pickle:loads", "connections.py:_decode_message",
        "pids.py:_pid", "pids.py:_ref", "pids.py:_rebuild")),
    ("MAC (blake2b, frame header)", ("frames.py:", "blake2b", "_blake2")),
    ("socket syscalls (sendall, recv)", ("'sendall'", "'recv'", "socket.sendall",
                                          "socket.recv")),
    ("write path (send_frame, lock, burst check)", (
        "connection.py:send_frame", "connection.py:_write", "connection.py:flush_pending",
        "connections.py:_flush_loop", "time.monotonic")),
    ("read path (reader loop, dispatch, control handlers)", (
        "connection.py:_read_loop", "connection.py:_handle", "connections.py:dispatch",
        "control.py:", "remote.py:deliver", "remote.py:spawn_reply", "remote.py:reply",
        "_table.py:lookup_serial")),
    ("request/call (request, monitor, await_reply, reply, server, task supervisor)", (
        "connections.py:request", "connections.py:_send_op", "connections.py:control",
        "connections.py:connection", "gen_server.py:", "server.py:", "task_supervisor.py:",
        "task.py:", "links.py:", "node.py:", "pids.py:make_ref", "remote.py:add_remote",
        "remote.py:remove_remote", "remote.py:remote_down", "transport.py:control")),
    ("runtime: spawn, run, exit (record, table, workers, exit path)", (
        "spawning.py:", "_workers.py:", "_table.py:", "exits.py:", "hooks.py:",
        "group_leader.py:", "remote.py:spawn_for_peer", "attributes.py:", "crash.py:",
        "pids.py:", "info.py:", "registry.py:")),
    ("kill machinery (checkpoints, masks)", ("_kill.py:",)),
    ("send (routing)", ("messages.py:send", "connections.py:send", "transport.py:")),
    ("receive (take, matcher, mailbox, SimpleQueue)", (
        "messages.py:", "mailbox.py:", "patterns.py:", "SimpleQueue", "_queue")),
    ("builtins called everywhere (getattr, len, isinstance, struct, dict.get)", (
        "builtins:getattr", "builtins:len", "builtins:isinstance", "_struct.Struct",
        "'get' of 'dict'", "builtins:hasattr", "builtins:type", "builtins:callable")),
    ("threads and locks (acquire, release, Thread, Condition)", (
        "_thread.lock", "_thread.RLock", "threading.py:", "'acquire'", "'release'")),
    ("benchmark loop", ("remote_paths.py:", "_measure.py:", "perf_counter_ns")),
]


def component_of(key: str) -> str:
    for name, tests in COMPONENTS:
        if any(test in key for test in tests):
            return name
    return "other"


# ------------------------------------------------------------------- the timeline (--trace)

#: (time ns, side, thread, event): appended by the wrappers below (list.append is atomic).
_events: list[tuple[int, str, str, str]] = []


def _thread_label() -> str:
    thread = threading.current_thread().name
    if thread.startswith("nodelab reader"):
        return "reader"
    if thread == "nodelab process":
        from nodelab.runtime._table import runtime

        proc = getattr(runtime.current, "proc", None)
        return (proc.name or "process") if proc is not None else "worker"
    return {"MainThread": "main", "nodelab flusher": "flusher"}.get(thread, thread)


def install_trace(side: str) -> None:
    """Wrap the steps of both paths so that each records when it starts and ends.

    Only the benchmark's own process is changed, at run time (no file of the library): a
    wrapper costs ~0.5 us, small beside the steps it times. Both processes read the same
    clock (``perf_counter_ns`` is CLOCK_MONOTONIC), so their events fall on one time line.
    """
    from nodelab.dist import connection, connections, control, shipment
    from nodelab.runtime import _workers, spawning
    from nodelab.runtime.mailbox import Mailbox

    clock = time.perf_counter_ns
    record = _events.append

    def wrap(fn: Callable[..., Any], name: str, *, label: Callable[..., str] | None = None
             ) -> Callable[..., Any]:
        def traced(*args: Any, **kwargs: Any) -> Any:
            event = label(*args) if label is not None else name
            record((clock(), side, _thread_label(), event + " >"))
            try:
                return fn(*args, **kwargs)
            finally:
                record((clock(), side, _thread_label(), event + " <"))
        return traced

    kinds = {1: "DATA", 3: "SEND", 4: "SEND_NAMED", 2: "TICK", 5: "BATCH"}
    connection.Connection.send_frame = wrap(
        connection.Connection.send_frame, "", label=lambda conn, kind, body, *rest:
        f"send_frame {kinds.get(kind, kind)}")
    connections.Distribution.dispatch = wrap(
        connections.Distribution.dispatch, "", label=lambda dist, conn, kind, body:
        f"dispatch {kinds.get(kind, kind)}")
    for op, handler in list(control.HANDLERS.items()):
        control.HANDLERS[op] = wrap(handler, f"handle {op}")
    Mailbox.take = wrap(Mailbox.take, "take")
    shipment.run = wrap(shipment.run, "shipment.run")
    spawning._start = wrap(spawning._start, "start process")
    _workers._finish = wrap(_workers._finish, "exit path")


def timeline(events: list[tuple[int, str, str, str]], what: str) -> None:
    """The median time line of one operation: every event's offset from the start of the
    operation it falls in (up to the next one's start, so work left over after an
    operation shows too), by its occurrence in that operation."""
    starts = sorted(t for t, side, _, event in events if event == f"op {what} >")
    ends = sorted(t for t, side, _, event in events if event == f"op {what} <")
    if len(starts) < 10:
        print(f"(no time line for {what}: {len(starts)} operations traced)")
        return
    import bisect

    offsets: dict[str, list[float]] = {}
    order: list[str] = []
    per_op: dict[int, dict[str, int]] = {}
    for t, side, thread, event in sorted(events):
        i = bisect.bisect_right(starts, t) - 1
        if i < 0 or i >= len(starts) - 1:
            continue  # before the first operation, or in the last one's tail
        seen = per_op.setdefault(i, {})
        label = f"{side} {thread}: {event}"
        seen[label] = seen.get(label, 0) + 1
        key = f"{label} #{seen[label]}" if seen[label] > 1 else label
        if key not in offsets:
            offsets[key] = []
            order.append(key)
        offsets[key].append((t - starts[i]) / 1000)
    total = len(starts) - 1
    durations = sorted((e - s) / 1000 for s, e in zip(starts, ends, strict=False))
    print(f"\n## time line of one {what} (median offsets of {total} traced operations; "
          f"their p50 {durations[len(durations) // 2]:.1f} us with the tracing wrappers)\n")
    print("| offset us | since the previous row | where | event | in % of operations |")
    print("|---|---|---|---|---|")
    rows = sorted(((statistics.median(v), k, len(v)) for k, v in offsets.items()
                   if len(v) >= total * 0.5))
    previous = 0.0
    for offset, key, count in rows:
        where, event = key.split(": ", 1)
        print(f"| {offset:.1f} | {offset - previous:+.1f} | {where} | {event} | "
              f"{count / total:.0%} |")
        previous = offset


def _stats(yappi: Any, side: str) -> list[tuple[str, str, int, float, float]]:
    return [(side, yappi_key(stat), stat.ncall, stat.tsub, stat.ttot)
            for stat in yappi.get_func_stats()]


# ---------------------------------------------------------------------------- kate (peer)

def peer(name: str, cookie: str, profile: str) -> int:
    yappi = None
    if profile == "trace":
        install_trace("kate")
    elif profile != "off":
        import yappi

        yappi.set_clock_type(profile)
        yappi.start(builtins=True, profile_threads=True)
    from nodelab.otp import TaskSupervisor

    def control() -> None:
        while True:
            sender, what = receive()
            if what == "clear" and yappi is not None:
                yappi.clear_stats()
                send(sender, "cleared")
            elif what == "events":
                send(sender, ("events", list(_events)))
                _events.clear()
            elif what == "dump" and yappi is not None:
                yappi.stop()
                send(sender, _stats(yappi, "kate"))
                yappi.clear_stats()
                yappi.start(builtins=True, profile_threads=True)
            else:
                send(sender, what)

    threading.Timer(900, os._exit, args=(3,)).start()
    full_name = Node.start(name, cookie=cookie)
    register("prof_ctl", spawn(control))
    TaskSupervisor.start_link(name="Bench.TaskSupervisor")
    print(f"READY {full_name}", flush=True)
    sys.stdin.buffer.read()
    os._exit(0)


# ------------------------------------------------------------------------- alex (driver)

def operations(kate: str) -> dict[str, Callable[[], None]]:
    from nodelab.otp import Task, TaskSupervisor

    me = me_()
    supervisor = ("Bench.TaskSupervisor", kate)

    def spawn_one() -> None:
        Node.spawn(kate, lambda: send(me, "spawned"))
        receive("spawned", timeout=10)

    def task_one() -> None:
        if Task.await_(TaskSupervisor.async_(supervisor, lambda: "ok"), timeout=10) != "ok":
            raise RuntimeError("the task did not return 'ok'")

    return {"spawn": spawn_one, "task": task_one}


def _marked(one: Callable[[], None], what: str) -> Callable[[], None]:
    clock = time.perf_counter_ns
    record = _events.append

    def marked() -> None:
        record((clock(), "alex", "main", f"op {what} >"))
        one()
        record((clock(), "alex", "main", f"op {what} <"))
    return marked


def measure(n: int, rounds: int, profile: str, only: list[str]) -> dict[str, Any]:
    """Unprofiled figures (``profile="off"``) or one profiled round per operation."""
    yappi = None
    if profile == "trace":
        install_trace("alex")
    elif profile != "off":
        import yappi

        yappi.set_clock_type(profile)
        yappi.clear_stats()
        yappi.start(builtins=True, profile_threads=True)
    tag = secrets.token_hex(3)
    cookie = "paths_" + secrets.token_hex(8)
    Node.start(f"paths_alex_{tag}", cookie=cookie)
    child, kate = start_child([sys.executable, __file__, "peer", f"paths_kate_{tag}", cookie,
                               profile], REPO, "the peer")
    out: dict[str, Any] = {}
    try:
        me = me_()
        ctl = ("prof_ctl", kate)
        for what, one in operations(kate).items():
            if what not in only:
                continue
            for _ in range(min(n, 300)):
                one()
            if yappi is not None:
                send(ctl, (me, "clear"))
                receive("cleared", timeout=10)
                yappi.clear_stats()
            if profile == "trace":
                send(ctl, (me, "events"))
                receive(("events", list), timeout=60)
                _events.clear()
                one = _marked(one, what)
            result = rounds_of(n, rounds, one, [os.getpid(), child.pid])
            if profile == "trace":
                time.sleep(0.2)  # the tail of the last operation
                send(ctl, (me, "events"))
                _, theirs = receive(("events", list), timeout=60)
                result["events"] = _events[:] + theirs
                _events.clear()
            if yappi is not None:
                yappi.stop()
                stats = _stats(yappi, "alex")
                send(ctl, (me, "dump"))
                stats += receive(list, timeout=60)
                result["stats"] = stats
                yappi.clear_stats()
                yappi.start(builtins=True, profile_threads=True)
            out[what] = result
        return out
    finally:
        if yappi is not None:
            yappi.stop()
        # The last task's exit signal (its link to this shell) may still be on its way:
        # closing kate first would end the shell with "noconnection".
        time.sleep(0.2)
        child.stdin.close()
        child.wait(10)
        Node.stop()


def report(what: str, plain: dict[str, Any], profiled: dict[str, Any], n: int,
           top: int) -> None:
    stats = profiled["stats"]
    per: dict[str, float] = {}
    sides: dict[tuple[str, str], float] = {}
    funcs: dict[str, list[float]] = {}
    for side, key, ncall, tsub, ttot in stats:
        component = component_of(key)
        per[component] = per.get(component, 0.0) + tsub
        sides[side, component] = sides.get((side, component), 0.0) + tsub
        f = funcs.setdefault(f"{side} {key}", [0, 0.0, 0.0])
        f[0] += ncall
        f[1] += tsub
        f[2] += ttot
    total = sum(per.values())
    print(f"\n## {what}: p50 {plain['p50_us']:.1f} us, CPU {plain['cpu_us']:.1f} us per "
          f"operation (both processes; rounds {', '.join(f'{v:.0f}' for v in plain['p50_rounds'])}"
          f" us); with yappi: p50 {profiled['p50_us']:.1f} us, yappi CPU "
          f"{total / n * 1e6:.1f} us\n")
    print(f"| component | yappi CPU us / {what}: alex + kate | share | us / {what} "
          "unprofiled (share x CPU) |")
    print("|---|---|---|---|")
    for name, seconds in sorted(per.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds / n * 1e6:.1f}: {sides.get(('alex', name), 0) / n * 1e6:.1f}"
              f" + {sides.get(('kate', name), 0) / n * 1e6:.1f} | {seconds / total:.0%} | "
              f"{seconds / total * plain['cpu_us']:.1f} |")
    print(f"| all | {total / n * 1e6:.1f} | 100% | {plain['cpu_us']:.1f} |")
    if top:
        print(f"\ntop {top} functions by own time (both processes, every thread), per {what}:")
        print(f"| function | calls / {what} | own us | incl. us | component |")
        print("|---|---|---|---|---|")
        for key, (ncall, tsub, ttot) in sorted(funcs.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"| `{key[:72]}` | {ncall / n:.2f} | {tsub / n * 1e6:.2f} | "
                  f"{ttot / n * 1e6:.2f} | {component_of(key)} |")


# ------------------------------------------------------------- the steps, each on its own

def steps() -> dict[str, float]:
    """Each step of the two paths on its own, in a process of a running node (CPU us per
    step, fastest of 7 batches: the slower batches measure the neighbours)."""
    from nodelab.dist import connections as dist_mod
    from nodelab.dist import frames, shipment
    from nodelab.runtime import processes as P
    from nodelab.runtime.pids import Pid, make_ref

    Node.start(f"paths_steps_{secrets.token_hex(3)}", cookie="steps_" + secrets.token_hex(8))

    def run() -> dict[str, float]:
        out: dict[str, float] = {}
        me = me_()
        caller = Pid("alex@localhost", 42, 7)
        leader = Pid("alex@localhost", 43, 7)

        def timed(label: str, fn: Callable[[], Any], n: int = 2_000) -> None:
            best = float("inf")
            for _ in range(7):
                t0 = time.thread_time_ns()
                for _ in range(n):
                    fn()
                best = min(best, (time.thread_time_ns() - t0) / n / 1000)
            out[label] = best

        def fresh_lambda() -> Any:  # a new function object each time, as a caller makes one
            return lambda: send(caller, "spawned")

        what = shipment.build(fresh_lambda())
        blob = shipment.dumps(what)
        ref = make_ref()
        op = ("spawn", ref, caller, leader, False, blob)
        op_bytes = shipment.dumps(op)
        timed("spawn, alex: build + dumps of the shipment (lambda -> code bytes)",
              lambda: shipment.dumps(shipment.build(fresh_lambda())))
        timed("spawn, alex: dumps of the request (\"spawn\", ref, caller, leader, link, blob)",
              lambda: shipment.dumps(op))
        timed("spawn, kate: loads of the request", lambda: shipment.loads(op_bytes))
        timed("spawn, kate: resolve(blob): unpickle + rebuild the function",
              lambda: shipment.resolve(blob))
        reply_op = ("spawn_reply", ref, caller, me, False)
        reply_bytes = shipment.dumps(reply_op)
        timed("spawn, kate: dumps of (\"spawn_reply\", ref, caller, pid, linked)",
              lambda: shipment.dumps(reply_op))
        timed("spawn, alex: loads of the spawn_reply", lambda: shipment.loads(reply_bytes))

        def for_peer() -> None:
            P.spawn_for_peer(_answer, (me,), group_leader=None, link_to=None)
            P.receive()

        timed("spawn, kate: spawn_for_peer + the process's first message (runtime side)",
              for_peer, 500)
        tag = make_ref()
        call = ("$gen_call", (caller, ref), ("start_task", blob, "link", caller, tag,
                                             "temporary", 5.0))
        call_bytes = dist_mod._encode_message(call, "kate")
        timed("task, alex: dumps of the $gen_call start_task (blob inside)",
              lambda: dist_mod._encode_message(call, "kate"))
        timed("task, kate: loads of the $gen_call", lambda: dist_mod._decode_message(
            call_bytes, 0))
        state = frames.mac_state(b"k" * 32)
        timed(f"a frame's MAC + header, {len(op_bytes)}-byte body (frames.encode)",
              lambda: frames.encode(state, 5, frames.DATA, op_bytes))
        return out

    result: list[dict[str, float]] = []
    done = threading.Event()

    def body() -> None:
        result.append(run())
        done.set()

    spawn(body)
    done.wait(600)
    Node.stop()
    return result[0]


def _answer(pid: Any) -> None:
    send(pid, "up")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "peer":
        return peer(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--only", action="append", choices=("spawn", "task"))
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    parser.add_argument("--no-profile", action="store_true", help="skip step 2")
    parser.add_argument("--steps-only", action="store_true", help="step 3 alone")
    parser.add_argument("--no-steps", action="store_true", help="skip step 3")
    parser.add_argument("--trace", action="store_true",
                        help="the time line of each operation instead of the profile")
    args = parser.parse_args()
    only = args.only or ["spawn", "task"]
    private_portmapper()
    print(f"load average {os.getloadavg()}; tree {REPO}", flush=True)
    if not args.steps_only:
        plain = measure(args.n, args.rounds, "off", only)
        if args.trace:
            traced = measure(args.n, 1, "trace", only)
            for what in only:
                timeline(traced[what]["events"], what)
        elif args.no_profile:
            for what, figures in plain.items():
                print(f"{what}: p50 {figures['p50_us']:.1f} us, CPU {figures['cpu_us']:.1f} us "
                      f"per operation (rounds: "
                      f"{', '.join(f'{v:.0f}' for v in figures['p50_rounds'])})")
        else:
            profiled = measure(args.n, 1, args.clock, only)
            for what in only:
                report(what, plain[what], profiled[what], args.n, args.top)
    if not args.no_steps:
        print("\nthe steps on their own (CPU us, fastest of 7 batches, one process):")
        print("| step | CPU us |")
        print("|---|---|")
        for label, us in steps().items():
            print(f"| {label} | {us:.2f} |")
    print(f"\nload average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
