"""Today's design next to the greenlet prototype and the Python floors — in one run (issue 12).

    .venv/bin/pip install greenlet      # for the prototype only; not a dependency of nodelab
    .venv/bin/python benchmarks/prototypes/compare.py [--rounds 3] [--quick]

Systems (each a driver process and a peer process, two real OS processes over loopback TCP):

- **today**: nodelab as it is (``Node.start`` here, ``benchmarks/nodelab_peer.py`` there):
  a process is a thread, one reader thread per connection, the burst flusher;
- **greenlet**: ``greenlet_node.py``: processes as greenlets on a per-node selector loop, the
  same frames (BLAKE2b MAC) and the same pickling as today; writes batched once per pass of
  the loop; **greenlet, one write per message**: the same with every frame written at once;
- **greenlet, plain pickle, no MAC** (``--lean``): what the codec and the MAC cost, by
  their absence (not a candidate: the MAC is the course's security promise);
- **handoff floor** / **raw socket**: ``benchmarks/raw_peer.py`` (modes ``H``/``Q`` and
  ``E``/``C``): no runtime, no codec, no MAC.

Figures: RTT (``send`` + ``receive`` of ``(me, "ping")`` echoed back), remote spawn + reply
(a lambda shipped as code that sends ``"spawned"`` back), one-way throughput (``("m", i)``
to a counter process on the peer until its ``"done"`` is back), and memory: RSS added by
1,000 and 10,000 idle processes (each blocked in ``receive``), measured in a fresh process.
Rounds are interleaved (round 1 of every system, then round 2, ...) so that a burst of load
on the shared machine hits all of them; each cell is the median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
sys.path.insert(1, str(BENCH))  # after this folder: benchmarks/_measure.py of this tree
HEADER = struct.Struct("!I")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

import _measure  # noqa: E402 - after sys.path


def cpu_seconds(pids: list[int]) -> float:
    """CPU (user + system, every thread) the processes ``pids`` have used so far."""
    return sum(_measure.cpu_seconds(pid) for pid in pids)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- today's design, as roles

def today_driver() -> int:
    sys.path.insert(0, str(REPO))
    from nodelab import Node, receive, send
    from nodelab import self as me_

    tag = secrets.token_hex(3)
    cookie = "cmp_" + secrets.token_hex(8)
    Node.start(f"cmp_alex_{tag}", cookie=cookie)
    peer = subprocess.Popen([sys.executable, str(BENCH / "nodelab_peer.py"), f"cmp_kate_{tag}",
                             cookie], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV)
    kate = peer.stdout.readline().decode().split()[1]
    me = me_()
    send(("bench_echo", kate), (me, "whoami"))
    echo = receive(timeout=10)
    print(f"READY {peer.pid}", flush=True)
    for line in sys.stdin:
        figure, n = line.split()[0], int(line.split()[1])
        samples: list[int] = []
        result: dict[str, Any] = {}
        if figure == "rtt":
            message = (me, "ping")
            for _ in range(n):
                t0 = time.perf_counter_ns()
                send(echo, message)
                receive(timeout=10)
                samples.append(time.perf_counter_ns() - t0)
        elif figure == "spawn":
            for _ in range(n):
                t0 = time.perf_counter_ns()
                Node.spawn(kate, lambda: send(me, "spawned"))
                receive("spawned", timeout=10)
                samples.append(time.perf_counter_ns() - t0)
        elif figure == "tput":
            def counter(n: int = n) -> None:
                send(me, "counter_ready")
                for _ in range(n):
                    receive(timeout=10)
                send(me, "done")

            pid = Node.spawn(kate, counter)
            receive("counter_ready", timeout=10)
            t0 = time.perf_counter()
            for i in range(n):
                send(pid, ("m", i))
            receive("done", timeout=120)
            result["msgs_per_s"] = n / (time.perf_counter() - t0)
        if samples:
            samples.sort()
            result.update(p50_us=samples[n // 2] / 1000, p99_us=samples[int(n * .99)] / 1000)
        print(json.dumps(result), flush=True)
    peer.stdin.close()
    peer.wait(10)
    Node.stop()
    os._exit(0)


def today_mem(n: int) -> int:
    sys.path.insert(0, str(REPO))
    from nodelab import receive, send, spawn
    from nodelab import self as me_

    me = me_()
    before = rss_kib()

    def idle() -> None:
        send(me, "up")
        receive()

    for _ in range(n):
        spawn(idle)
    for _ in range(n):
        receive("up", timeout=60)
    print(json.dumps({"n": n, "rss_kib": rss_kib() - before, "threads": threading.active_count()}),
          flush=True)
    os._exit(0)


# ------------------------------------------------------------------------- the raw floors

class Floor:
    def __init__(self) -> None:
        self.peer = subprocess.Popen([sys.executable, str(BENCH / "raw_peer.py"), "socket"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.port = int(self.peer.stdout.readline().split()[1])
        self.frame = HEADER.pack(32) + b"p" * 32

    def connect(self, mode: bytes) -> tuple[socket.socket, Any]:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(mode)
        return sock, sock.makefile("rb", buffering=1 << 16)

    def run(self, figure: str, n: int) -> dict[str, Any]:
        cpu0 = cpu_seconds([os.getpid(), self.peer.pid])
        result = self._run(figure, n)
        result["cpu_us"] = (cpu_seconds([os.getpid(), self.peer.pid]) - cpu0) / n * 1e6
        return result

    def _run(self, figure: str, n: int) -> dict[str, Any]:
        frame = self.frame
        if figure in ("rtt", "rtt_handoff"):
            sock, reader = self.connect(b"E" if figure == "rtt" else b"H")
            if figure == "rtt":
                def wait() -> None:
                    reader.read(len(frame))
            else:
                wait = _measure.handoff_inbox(reader, len(frame)).get
            samples = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                sock.sendall(frame)
                wait()
                samples.append(time.perf_counter_ns() - t0)
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            samples.sort()
            return {"p50_us": samples[n // 2] / 1000, "p99_us": samples[int(n * .99)] / 1000}
        # throughput: C (reader counts) or Q (reader hands each frame to a counting thread);
        # "batched": 64 frames per sendall, as a runtime that gathers a burst would
        mode = b"Q" if figure == "tput_handoff" else b"C"
        sock, reader = self.connect(mode)
        batch = 64 if figure == "tput_batched" else 1
        data = frame * batch
        t0 = time.perf_counter()
        send = sock.sendall
        for _ in range(n // batch):
            send(data)
        send(HEADER.pack(0))
        reader.read(9)
        seconds = time.perf_counter() - t0
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        return {"msgs_per_s": (n // batch * batch) / seconds}

    def close(self) -> None:
        self.peer.stdin.close()
        self.peer.wait(5)


class Driver:
    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=ENV, cwd=REPO)
        line = self.process.stdout.readline().decode()
        if not line.startswith("READY"):
            raise RuntimeError(f"{argv} did not start: {line!r}")
        self.pids = [self.process.pid, int(line.split()[1])]  # the driver and its peer

    def run(self, figure: str, n: int) -> dict[str, Any]:
        cpu0 = cpu_seconds(self.pids)
        self.process.stdin.write(f"{figure} {n}\n".encode())
        self.process.stdin.flush()
        result = json.loads(self.process.stdout.readline())
        result["cpu_us"] = (cpu_seconds(self.pids) - cpu0) / n * 1e6
        return result

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def memory(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, env=ENV, cwd=REPO, timeout=300)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the run

def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "today-driver":
        return today_driver()
    if len(sys.argv) > 1 and sys.argv[1] == "today-mem":
        return today_mem(int(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the iterations")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n = {"rtt": 10_000 // scale, "spawn": 2_000 // scale, "tput": 100_000 // scale}
    _measure.private_portmapper()
    ENV.update(ERL_EPMD_PORT=os.environ["ERL_EPMD_PORT"], NODELAB_PORTMAPPER_LINGER="1")
    loads = [os.getloadavg()]
    print(f"load average at start: {loads[0]}", file=sys.stderr)
    proto = str(HERE / "greenlet_node.py")
    systems: dict[str, Any] = {
        "today": Driver([sys.executable, __file__, "today-driver"]),
        "greenlet": Driver([sys.executable, proto, "driver"]),
        "greenlet_single": Driver([sys.executable, proto, "driver", "--single-writes"]),
        "greenlet_lean": Driver([sys.executable, proto, "driver", "--lean"]),
        "floor": Floor(),
    }
    plan = {
        "today": ["rtt", "spawn", "tput"],
        "greenlet": ["rtt", "spawn", "tput"],
        "greenlet_single": ["rtt", "tput"],
        "greenlet_lean": ["rtt", "tput"],
        "floor": ["rtt", "rtt_handoff", "tput", "tput_handoff", "tput_batched"],
    }
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for system, figures in plan.items():  # warm-up
            for figure in figures:
                systems[system].run(figure, max(100, n[figure.split("_")[0]] // 10))
        for r in range(args.rounds):
            for system, figures in plan.items():
                for figure in figures:
                    rounds.setdefault((system, figure), []).append(
                        systems[system].run(figure, n[figure.split("_")[0]]))
            print(f"round {r + 1} done, load {os.getloadavg()}", file=sys.stderr)
            loads.append(os.getloadavg())
    finally:
        for system in systems.values():
            system.close()
    mem = {}
    for count in (1_000, 10_000):
        mem[("today", count)] = memory([sys.executable, __file__, "today-mem", str(count)])
        mem[("greenlet", count)] = memory([sys.executable, proto, "mem", str(count)])

    def med(system: str, figure: str, key: str) -> float | None:
        values = [r[key] for r in rounds.get((system, figure), []) if key in r]
        return statistics.median(values) if values else None

    table = render(med, mem, n, args.rounds, loads)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({
            "rounds": {f"{s}/{f}": v for (s, f), v in rounds.items()},
            "memory": {f"{s}/{c}": v for (s, c), v in mem.items()},
            "load": loads, "n": n, "table": table}, indent=1))
    return 0


def render(med: Any, mem: dict, n: dict, rounds: int, loads: list) -> str:
    def us(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f} us"

    def rate(v: float | None) -> str:
        return "—" if v is None else f"{v / 1000:.0f}k msg/s"

    def ratio(a: float | None, b: float | None) -> str:
        return "—" if a is None or b is None or not b else f"{a / b:.2f}x"

    floor_rtt = med("floor", "rtt_handoff", "p50_us")
    lines = [
        f"Medians of {rounds} interleaved rounds; RTT {n['rtt']:,}, spawn {n['spawn']:,}, "
        f"throughput {n['tput']:,} messages per round.",
        "",
        "| figure | today (threads) | greenlet prototype | greenlet, one write per message "
        "| handoff floor | raw socket | greenlet / today | greenlet, plain pickle, no MAC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, fig, key in (("RTT p50", "rtt", "p50_us"), ("RTT p99", "rtt", "p99_us"),
                            ("RTT, CPU of both processes", "rtt", "cpu_us"),
                            ("remote spawn + reply p50", "spawn", "p50_us"),
                            ("remote spawn + reply p99", "spawn", "p99_us")):
        today, proto = med("today", fig, key), med("greenlet", fig, key)
        single = med("greenlet_single", fig, key) if fig == "rtt" else None
        flo = med("floor", "rtt_handoff", key) if fig == "rtt" else None
        raw = med("floor", "rtt", key) if fig == "rtt" else None
        lean = med("greenlet_lean", fig, key) if fig == "rtt" else None
        lines.append(f"| {label} | {us(today)} | {us(proto)} | {us(single)} | {us(flo)} | "
                     f"{us(raw)} | {ratio(proto, today)} | {us(lean)} |")
    today, proto = med("today", "tput", "msgs_per_s"), med("greenlet", "tput", "msgs_per_s")
    spawn_cpu = med("today", "spawn", "cpu_us"), med("greenlet", "spawn", "cpu_us")
    lines.append(f"| remote spawn + reply, CPU of both processes | {us(spawn_cpu[0])} | "
                 f"{us(spawn_cpu[1])} | | | | {ratio(spawn_cpu[1], spawn_cpu[0])} |")
    lines.append(f"| one-way throughput, CPU per message | {us(med('today', 'tput', 'cpu_us'))} | "
                 f"{us(med('greenlet', 'tput', 'cpu_us'))} | "
                 f"{us(med('greenlet_single', 'tput', 'cpu_us'))} | "
                 f"{us(med('floor', 'tput_handoff', 'cpu_us'))} | "
                 f"{us(med('floor', 'tput', 'cpu_us'))} |"
                 f" {ratio(med('greenlet', 'tput', 'cpu_us'), med('today', 'tput', 'cpu_us'))} | "
                 f"{us(med('greenlet_lean', 'tput', 'cpu_us'))} |")
    lines.append(f"| one-way throughput | {rate(today)} | {rate(proto)} | "
                 f"{rate(med('greenlet_single', 'tput', 'msgs_per_s'))} | "
                 f"{rate(med('floor', 'tput_handoff', 'msgs_per_s'))} | "
                 f"{rate(med('floor', 'tput', 'msgs_per_s'))} (64 per write: "
                 f"{rate(med('floor', 'tput_batched', 'msgs_per_s'))}) | {ratio(proto, today)} | "
                 f"{rate(med('greenlet_lean', 'tput', 'msgs_per_s'))} |")
    for count in (1_000, 10_000):
        t, g = mem[("today", count)]["rss_kib"], mem[("greenlet", count)]["rss_kib"]
        lines.append(f"| RSS of {count:,} idle processes | {t / 1024:.1f} MiB "
                     f"({t / count:.1f} KiB each) | {g / 1024:.1f} MiB ({g / count:.1f} KiB each)"
                     f" | | | | {g / t:.2f}x |" if t else f"| RSS {count} | {t} | {g} | | | | |")
    lines.append("")
    lines.append(f"RTT p50 / handoff floor: today {ratio(med('today', 'rtt', 'p50_us'), floor_rtt)}"
                 f", greenlet {ratio(med('greenlet', 'rtt', 'p50_us'), floor_rtt)}; "
                 f"load average during the run (1 min): "
                 f"{', '.join(f'{load[0]:.1f}' for load in loads)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
