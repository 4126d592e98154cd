"""Where a nodelab <-> BEAM round trip's time goes on the nodelab side (issue 12, rows 1b/1c).

    .venv/bin/pip install yappi        # for the profile only; not a dependency of nodelab
    .venv/bin/python benchmarks/profile_beam.py [--n 20000] [--rounds 3] [--top 30]

One run: this process is a nodelab node, a real Elixir node runs ``beam/bench.exs peer`` (the
same peer as ``run.py``'s rows 1b, 1c, 2b). It measures, in this order:

1. **1b, nodelab pings a BEAM echo**, no profiler: RTT p50 (median of the rounds) and the
   CPU per round trip of each OS process (``/proc/<pid>/stat``, every thread): this node's
   CPU is the nodelab turnaround's, the BEAM's is its own;
2. **1c, a BEAM process pings a nodelab echo**: the BEAM's ``NodelabBench.pinger`` times
   it; this node's CPU per round trip beside it;
3. **a yappi profile of each** (CPU clock, every thread of this process, builtins included):
   each function's own time (``tsub``) and calls per round trip, the top ``--top``;
4. **the steps on their own** (us per message, fastest of 7 batches): the frame decode and
   encode as the link and ``BeamPeer`` do them, on the frames a round trip carries (the
   older API where a tree has no newer one, so that the script runs on an older tree too).

yappi's hooks inflate every Python call (roughly 2x here), so read its table for the *shape*
(which calls, how many per round trip) and step 1's unprofiled CPU for the size.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _measure import cpu_seconds, fastest_of, private_portmapper, yappi_key

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def beam_os_pid(child_pid: int) -> int:
    """``elixir`` is a shell script that execs ``erl``, which starts ``beam.smp``: the
    emulator's pid (the same, or a child of it)."""
    for _ in range(50):
        comm = Path(f"/proc/{child_pid}/comm").read_text().strip()
        if comm.startswith("beam"):
            return child_pid
        children = Path(f"/proc/{child_pid}/task/{child_pid}/children").read_text().split()
        for pid in children:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam"):
                return int(pid)
        time.sleep(0.1)
    return child_pid


def stats_of(yappi: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for stat in yappi.get_func_stats():
        entry = out.setdefault(yappi_key(stat), [0, 0.0, 0.0])
        entry[0] += stat.ncall
        entry[1] += stat.tsub
        entry[2] += stat.ttot
    return out


def print_profile(title: str, stats: dict[str, list[float]], n: int, top: int) -> None:
    total = sum(v[1] for v in stats.values())
    print(f"\n{title}: yappi CPU {total / n * 1e6:.1f} us per round trip (profiled, this "
          f"process, every thread); top {top} by own time:")
    print("| function | calls / RTT | own us / RTT | incl. us / RTT |")
    print("|---|---|---|---|")
    for key, (ncall, tsub, ttot) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"| `{key[:70]}` | {ncall / n:.2f} | {tsub / n * 1e6:.2f} | {ttot / n * 1e6:.2f} |")


def micro(n: int = 20_000) -> dict[str, float]:
    """The steps of the nodelab side, each on its own (us per message, fastest of 7)."""
    from nodelab.dist import beam_link as bl
    from nodelab.dist import beam_peer as bp
    from nodelab.dist import term_format as tf
    from nodelab.runtime.pids import Pid

    out: dict[str, float] = {}

    def timed(label: str, fn: Any) -> None:
        out[label] = fastest_of(fn, n)

    me = Pid("py@localhost", 77, 1764600000, 0)
    beam = Pid("kate@localhost", 112, 1764600001, 0)
    ping = tf.Atom("ping")
    # What a BEAM sends: SEND_SENDER {22, From, To} and the message {From, :ping} (1c), and
    # the echo's answer :ping to a nodelab pid (1b).
    frame_1c = tf.encode_dist_message((bl.SEND_SENDER, beam, me), (beam, ping))
    frame_1b = tf.encode_dist_message((bl.SEND_SENDER, beam, me), ping)
    cache = tf.AtomCache()
    timed("1c in: decode_dist_message (SEND_SENDER, {pid, :ping})",
          lambda: tf.decode_dist_message(frame_1c, cache))
    timed("1b in: decode_dist_message (SEND_SENDER, :ping)",
          lambda: tf.decode_dist_message(frame_1b, cache))
    timed("1c in: decode_frame -> Send event (the event API)",
          lambda: bl.decode_frame(frame_1c, cache))
    if hasattr(bl, "decode_parts"):  # what the reader does since the link's on_send
        timed("1c in: decode_parts (the reader's step, no event)",
              lambda: bl.decode_parts(frame_1c, cache))
    timed("1c out: the frame of SEND :ping, as BeamPeer.send makes it",
          lambda: bl.encode_frame(bl.Unknown((bl.SEND, tf.Atom(""), beam),
                                             bp.erlang_message(ping))))
    timed("1b out: the frame of REG_SEND {pid, :ping}, as BeamPeer.send_named makes it",
          lambda: bl.encode_frame(bl.Unknown(*bl.RegSend(
              me, bp.beam_name("bench_echo"), bp.erlang_message((me, ping))).to_wire())))
    if hasattr(tf, "encode_dist_frame_after"):  # BeamPeer keeps a send's control message
        head_1c = tf.encode_dist_message((bl.SEND, tf.Atom(""), beam))
        head_1b = tf.encode_dist_message((bl.REG_SEND, me, tf.Atom(""), tf.Atom("bench_echo")))
        out.pop("1c out: the frame of SEND :ping, as BeamPeer.send makes it")
        out.pop("1b out: the frame of REG_SEND {pid, :ping}, as BeamPeer.send_named makes it")
        timed("1c out: the frame of SEND :ping, as BeamPeer.send makes it",
              lambda: tf.encode_dist_frame_after(head_1c, ping))
        timed("1b out: the frame of REG_SEND {pid, :ping}, as BeamPeer.send_named makes it",
              lambda: tf.encode_dist_frame_after(head_1b, (me, ping)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    private_portmapper()
    elixir = shutil.which("elixir")
    if not elixir:
        print("elixir is not on PATH")
        return 1
    import run  # benchmarks/run.py: its Child (a peer held by its stdin) and BEAM_SCRIPT

    from nodelab import ANY, Node, receive, send, spawn
    from nodelab import self as me_
    from nodelab.dist.term_format import Atom

    print(f"load average {os.getloadavg()}", flush=True)
    tag = secrets.token_hex(3)
    cookie = "prof_" + secrets.token_hex(8)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"profile_beam_{tag}"
    tmp.mkdir()
    kate = f"prof_ex_{tag}@localhost"
    Node.start(f"prof_py_{tag}", cookie=cookie)
    peer = run.Child([elixir, "--sname", kate, "--cookie", cookie, str(run.BEAM_SCRIPT),
                      "peer", "600000"], env=dict(os.environ, HOME=str(tmp)),
                     log=tmp / "peer.log")
    try:
        peer.wait_for("READY", 60)
        beam_pid = beam_os_pid(peer.process.pid)
        me = me_()
        message = (me, Atom("ping"))
        echo_name = ("bench_echo", kate)

        def one() -> None:
            send(echo_name, message)
            receive(timeout=10)

        def rounds_1b(n: int, rounds: int) -> dict[str, Any]:
            for _ in range(2000):
                one()
            p50s, mine, theirs = [], [], []
            for _ in range(rounds):
                samples = []
                c0, b0 = cpu_seconds(os.getpid()), cpu_seconds(beam_pid)
                for _ in range(n):
                    t0 = time.perf_counter_ns()
                    one()
                    samples.append(time.perf_counter_ns() - t0)
                mine.append((cpu_seconds(os.getpid()) - c0) / n * 1e6)
                theirs.append((cpu_seconds(beam_pid) - b0) / n * 1e6)
                samples.sort()
                p50s.append(samples[n // 2] / 1000)
            return {"p50": statistics.median(p50s), "cpu": statistics.median(mine),
                    "beam_cpu": statistics.median(theirs), "p50s": p50s}

        def echo_loop() -> None:
            while True:
                msg = receive(timeout=60)
                if msg == "stop":
                    return
                send(msg[0], msg[1])

        def rounds_1c(n: int, rounds: int) -> dict[str, Any]:
            echo = spawn(echo_loop)
            try:
                p50s, mine, theirs = [], [], []
                for i in range(rounds + 1):  # the first is a warm-up
                    count = 2000 if i == 0 else n
                    c0, b0 = cpu_seconds(os.getpid()), cpu_seconds(beam_pid)
                    Node.spawn(kate, "NodelabBench", "pinger", [echo, count, me])
                    samples = sorted(receive(("pinger_samples", ANY), timeout=120)[1])
                    if i:
                        mine.append((cpu_seconds(os.getpid()) - c0) / n * 1e6)
                        theirs.append((cpu_seconds(beam_pid) - b0) / n * 1e6)
                        p50s.append(samples[n // 2] / 1000)
                return {"p50": statistics.median(p50s), "cpu": statistics.median(mine),
                        "beam_cpu": statistics.median(theirs), "p50s": p50s}
            finally:
                send(echo, "stop")

        b = rounds_1b(args.n, args.rounds)
        c = rounds_1c(args.n, args.rounds)
        print("\n| row | RTT p50 | nodelab CPU / RTT | BEAM CPU / RTT | p50 of each round |")
        print("|---|---|---|---|---|")
        for label, r in (("1b nodelab pings a BEAM echo", b),
                         ("1c a BEAM process pings a nodelab echo", c)):
            print(f"| {label} | {r['p50']:.1f} us | {r['cpu']:.1f} us | {r['beam_cpu']:.1f} us"
                  f" | {' / '.join(f'{x:.1f}' for x in r['p50s'])} |")
        if not args.no_profile:
            import yappi

            yappi.set_clock_type("cpu")
            for label, fn in (("1b", lambda: rounds_1b(args.n, 1)),
                              ("1c", lambda: rounds_1c(args.n, 1))):
                yappi.clear_stats()
                yappi.start(builtins=True, profile_threads=True)
                fn()
                yappi.stop()
                # The 1b warm-up (2000) is inside the profile; 1c's warm-up round too.
                print_profile(f"{label} profiled", stats_of(yappi), args.n + 2000, args.top)
            yappi.clear_stats()
    finally:
        peer.close()
        Node.stop()
        run._stop_private_portmapper()
        shutil.rmtree(tmp, ignore_errors=True)
    steps = micro()
    print("\nthe steps on their own (us per message, fastest of 7 batches of 20,000):")
    print("| step | us |")
    print("|---|---|")
    for label, us in steps.items():
        print(f"| {label} | {us:.2f} |")
    print(f"\nload average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
