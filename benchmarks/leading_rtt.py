"""Round trips between two nodes, with what they cost the machine: the leader/follower A/B.

    .venv/bin/python benchmarks/leading_rtt.py [--tree DIR] [--n 4000] [--rounds 3]

Runs the nodelab of ``DIR`` (default: this script's tree; ``DIR`` first on ``sys.path``, and
on its peer's, which is ``DIR/benchmarks/nodelab_peer.py``):
this process is node alex, ``nodelab_peer.py`` (kate) runs the echo of ``run.py``'s row 1.
The ping-pong runs twice: from this process's main thread (a shell, as in ``run.py``) and
from a spawned process. Per round: RTT p50 and p99, and per round trip the CPU time and the
context switches of both OS processes (every thread, from ``/proc``). The CPU and the
switches move far less with the machine's load than the wall time does: compare them
between trees run in the same minutes (``benchmarks/README.md``, section 8).

For the system calls themselves (a count, the same on a loaded machine):

    strace -f -c -o OUT .venv/bin/python benchmarks/leading_rtt.py --tree DIR --n 1000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def _tree() -> Path:
    # Read before nodelab is imported: the tree measured is the one imported.
    if "--tree" in sys.argv[:-1]:
        return Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
    return Path(__file__).resolve().parent.parent


TREE = _tree()
sys.path.insert(0, str(TREE))

from nodelab import Node, receive, send, spawn  # noqa: E402
from nodelab import self as me_  # noqa: E402


def _process_counters(pid: int) -> tuple[float, int]:
    """CPU seconds and context switches (voluntary + not) of every thread of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return cpu, switches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=str(TREE), help="the nodelab tree to measure")
    parser.add_argument("--n", type=int, default=4000, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cookie = f"leading{os.getpid()}"
    env = dict(os.environ, PYTHONPATH=str(TREE))
    peer = subprocess.Popen(
        [sys.executable, str(TREE / "benchmarks" / "nodelab_peer.py"), f"kate{os.getpid()}",
         cookie], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        kate = peer.stdout.readline().split()[1]
        Node.start(f"alex{os.getpid()}", cookie=cookie)
        print(f"tree {TREE}, load {os.getloadavg()[0]:.2f}")

        def counters() -> tuple[float, int]:
            mine, theirs = _process_counters(os.getpid()), _process_counters(peer.pid)
            return mine[0] + theirs[0], mine[1] + theirs[1]

        def ping_pong(label: str) -> None:
            me = me_()
            send(("bench_echo", kate), (me, "whoami"))
            echo = receive(timeout=5)
            for number in range(args.rounds + 1):  # the first is a warm-up
                cpu0, switches0 = counters()
                samples = []
                for _ in range(args.n):
                    start = time.perf_counter_ns()
                    send(echo, (me, "ping"))
                    receive(timeout=5)
                    samples.append(time.perf_counter_ns() - start)
                cpu1, switches1 = counters()
                if number == 0:
                    continue
                samples.sort()
                print(f"{label:12} RTT p50 {samples[len(samples) // 2] / 1000:7.1f} us"
                      f"  p99 {samples[int(len(samples) * 0.99)] / 1000:7.1f} us"
                      f"  CPU {(cpu1 - cpu0) / args.n * 1e6:6.1f} us"
                      f"  switches {(switches1 - switches0) / args.n:5.2f}  per round trip",
                      flush=True)

        ping_pong("main thread")
        parent = me_()
        spawn(lambda: (ping_pong("a process"), send(parent, "done")))
        receive("done", timeout=600)
        print(f"load {os.getloadavg()[0]:.2f}")
    finally:
        if peer.stdin is not None:
            peer.stdin.close()
        peer.wait(10)
        Node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
