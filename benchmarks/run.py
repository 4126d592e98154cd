"""nodelab against the real BEAM, raw Python transports and ipyparallel — in one run.

    .venv/bin/python benchmarks/run.py              # everything, ~2-3 minutes
    .venv/bin/python benchmarks/run.py --quick      # fewer iterations, ~1 minute
    .venv/bin/python benchmarks/run.py --only beam --only socket

Every figure is measured between two real OS processes over loopback TCP, in this run, on
this machine: numbers from different machines or different runs are not comparable (a
busy laptop easily doubles them), ratios within one run are. The table printed at the end
puts nodelab next to the BEAM (the system the course teaches), next to the floor Python
itself sets (a plain blocking socket), and next to ipyparallel (what a Python user would
reach for to run code on another process), and says whether each goal is met.

Results are also written as JSON to ``benchmarks/results/<timestamp>.json``.
See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEAM_SCRIPT = HERE / "beam" / "bench.exs"
RESULTS = HERE / "results"
HEADER = struct.Struct("!I")
REPLY_TIMEOUT = 10.0  # seconds any single reply may take before the figure is abandoned

SECTIONS = ("socket", "zmq", "beam", "ipyparallel", "nodelab", "kernel")


@dataclass
class Config:
    """How much to measure. The defaults match BASELINES.md; ``--quick`` divides them."""

    rounds: int = 3
    n_rtt: int = 20_000
    n_msgs: int = 200_000
    n_spawn: int = 3_000
    n_task: int = 3_000
    n_ipp: int = 1_000
    n_start: int = 5
    n_kernel: int = 5

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=3, n_rtt=2_000, n_msgs=20_000, n_spawn=300, n_task=300, n_ipp=200,
                   n_start=2, n_kernel=1)


# ------------------------------------------------------------------------------- statistics

def percentile(sorted_samples: list[float], q: float) -> float:
    """``sorted[min(n - 1, floor(q * n))]``; beam/bench.exs computes exactly the same.

    A nearest-rank percentile on purpose, not ``statistics.quantiles``: that one interpolates
    between samples, and the BEAM's figures (computed in Elixir) must be the same statistic.
    """
    return sorted_samples[min(len(sorted_samples) - 1, int(q * len(sorted_samples)))]


def latency(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 of one round, in microseconds."""
    ordered = sorted(samples_ns)
    return {"p50_us": percentile(ordered, 0.5) / 1e3, "p99_us": percentile(ordered, 0.99) / 1e3,
            "n": len(ordered)}


def over_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of the rounds' medians (and of their p99s): one slow round does not decide."""
    result: dict[str, Any] = {"rounds": rounds}
    for key in ("p50_us", "p99_us", "msgs_per_s", "seconds"):
        values = [r[key] for r in rounds if key in r]
        if values:
            result[key] = statistics.median(values)
    return result


def timed_rounds(cfg: Config, n: int, one: Callable[[], None], warmup: int) -> dict[str, Any]:
    """Call ``one()`` ``n`` times per round, timing each call, over ``cfg.rounds`` rounds."""
    clock = time.perf_counter_ns
    for _ in range(warmup):
        one()
    rounds = []
    for _ in range(cfg.rounds):
        samples = [0] * n
        for i in range(n):
            t0 = clock()
            one()
            samples[i] = clock() - t0
        rounds.append(latency(samples))
    return over_rounds(rounds)


def skipped(reason: str) -> dict[str, str]:
    return {"skipped": reason}


def guarded(figure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one figure; a failure becomes a ``skipped`` entry instead of ending the run."""
    try:
        return figure()
    except Exception as error:  # noqa: BLE001 - every failure is reported in the table
        detail = traceback.format_exc(limit=3)
        logging.getLogger("bench").debug("%s", detail)
        return skipped(f"failed: {type(error).__name__}: {error}".replace("\n", " ")[:300])


# ------------------------------------------------------------------------- child processes

class Child:
    """A child OS process we started: its stdout is read line by line, its stdin held open.

    Every peer in this benchmark exits when its stdin closes, so closing it is the polite
    stop; ``close`` then escalates to SIGTERM and SIGKILL, always by this child's own pid.
    """

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 log: Path) -> None:
        self.argv = argv
        # "raw_peer.py", "bench.exs", ...: the script that names this child in messages.
        self.name = next((Path(a).name for a in argv[1:] if a.endswith((".py", ".exs"))),
                         Path(argv[0]).name)
        self.log = log
        self._log_file = open(log, "wb")  # closed in close()
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log_file, env=env, cwd=REPO)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:  # drained to the end, so the child never blocks on it
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with ``prefix``; raise with the child's log if none."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    state = (f"exited with status {self.process.returncode}"
                             if self.process.poll() is not None else f"timed out after {timeout} s")
                    raise RuntimeError(f"{self.name} {state} before printing {prefix!r}; "
                                       f"its log: {self.log_tail()}") from None
                continue
            if line.startswith(prefix):
                return line

    def log_tail(self, chars: int = 600) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:].strip() or "(empty)"
        return "(unreadable)"

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        stop_process(self.process, timeout, asked=True)
        self._log_file.close()


def stop_process(process: subprocess.Popen, timeout: float = 5.0, *, asked: bool = False) -> None:
    """Stop ``process``: SIGTERM, then SIGKILL (by its pid) if it does not end in ``timeout``.

    ``asked=True``: it was already asked to stop (its stdin closed), so wait for that first.
    """
    for action in ((None,) if asked else ()) + (process.terminate, process.kill):
        if action is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                action()
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def our_children() -> list[tuple[int, str]]:
    """(pid, command) of the live processes whose parent is this one."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == me and fields[0] != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                found.append((int(entry.name), command))
        except (OSError, ValueError, IndexError):
            continue
    return found


def reap_children(section: str) -> list[str]:
    """Kill (by pid) any child a section left behind, and say so: that is a bug to fix."""
    leftovers = []
    for pid, command in our_children():
        leftovers.append(f"{pid} {command[:120]}")
        print(f"  warning: {section} left process {pid} running ({command[:120]}); killing it",
              file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # collect its exit status, so it does not stay a zombie
    return leftovers


def wall_times(argv: list[str], n: int, *, env: dict[str, str] | None = None,
               name_slot: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Run ``argv`` ``n`` times to completion; the median wall time in seconds.

    ``name_slot`` is the index of a node name in ``argv`` that gets a fresh suffix per run,
    so no two runs race for the same name.
    """
    runs = []
    for i in range(n):
        command = list(argv)
        if name_slot is not None:
            command[name_slot] = command[name_slot].replace("@", f"{i}@", 1)
        t0 = time.perf_counter()
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                              timeout=timeout, cwd=REPO)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: "
                               f"{done.stderr.decode(errors='replace')[-300:]}")
        runs.append(elapsed)
    return {"seconds": statistics.median(runs), "runs": runs}


# ------------------------------------------------------------------ (b) raw Python baselines

def _read_exact(reader: Any, n: int) -> bytes:
    data = reader.read(n)
    if data is None or len(data) != n:
        raise ConnectionError("the raw peer closed the connection")
    return data


def _socket_throughput(cfg: Config, sock: socket.socket, reader: Any, frame: bytes
                       ) -> dict[str, Any]:
    """One write per message (as a runtime does), then an end marker answered with the count."""
    rounds = []
    with sock:
        for _ in range(cfg.rounds):
            t0 = time.perf_counter()
            send = sock.sendall
            for _ in range(cfg.n_msgs):
                send(frame)
            send(HEADER.pack(0))
            reply = _read_exact(reader, 9)
            seconds = time.perf_counter() - t0
            got = struct.unpack("!Q", reply[1:])[0]
            if got != cfg.n_msgs:
                raise RuntimeError(f"the peer counted {got} of {cfg.n_msgs} messages")
            rounds.append({"seconds": seconds, "msgs_per_s": cfg.n_msgs / seconds})
    return over_rounds(rounds)


def bench_socket(cfg: Config, tmp: Path) -> dict[str, Any]:
    """Plain blocking TCP sockets with TCP_NODELAY, length-prefixed frames: Python's floor."""
    results: dict[str, Any] = {}
    peer = Child([sys.executable, str(HERE / "raw_peer.py"), "socket"], log=tmp / "socket.log")
    try:
        port = int(peer.wait_for("READY", 15).split()[1])

        def connect(mode: bytes) -> tuple[socket.socket, Any]:
            sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(mode)
            return sock, sock.makefile("rb", buffering=1 << 16)

        payload = b"p" * 32
        frame = HEADER.pack(len(payload)) + payload

        def rtt() -> dict[str, Any]:
            sock, reader = connect(b"E")
            with sock:
                def one() -> None:
                    sock.sendall(frame)
                    _read_exact(reader, len(frame))
                return timed_rounds(cfg, cfg.n_rtt, one, warmup=min(cfg.n_rtt, 2_000))

        def throughput() -> dict[str, Any]:
            return _socket_throughput(cfg, *connect(b"C"), frame)

        def spawn_reply() -> dict[str, Any]:
            sock, reader = connect(b"S")
            with sock:
                def one() -> None:
                    sock.sendall(frame)
                    _read_exact(reader, len(frame))
                return timed_rounds(cfg, cfg.n_spawn, one, warmup=min(cfg.n_spawn, 200))

        def rtt_handoff() -> dict[str, Any]:
            # The thread-handoff floor (issue 12): on both sides a reader thread hands each
            # frame through a SimpleQueue to the thread that waits for it, which writes its
            # own frames — one OS thread per process, one reader per connection.
            sock, reader = connect(b"H")
            inbox: queue.SimpleQueue = queue.SimpleQueue()

            def read_loop() -> None:
                try:
                    while True:
                        inbox.put(_read_exact(reader, len(frame)))
                except (ConnectionError, OSError, ValueError):
                    inbox.put(None)

            with sock:
                threading.Thread(target=read_loop, daemon=True, name="floor reader").start()
                get = inbox.get

                def one() -> None:
                    sock.sendall(frame)
                    if get(timeout=REPLY_TIMEOUT) is None:
                        raise ConnectionError("the raw peer closed the connection")
                try:
                    return timed_rounds(cfg, cfg.n_rtt, one, warmup=min(cfg.n_rtt, 2_000))
                finally:
                    # The reader thread holds the socket's file: without a shutdown the peer
                    # never sees the end of this connection and never serves the next one.
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        def throughput_handoff() -> dict[str, Any]:
            # Figure 2 with the handoff on the receiving side: one write per message; the
            # peer's reader hands every frame to a counting thread.
            return _socket_throughput(cfg, *connect(b"Q"), frame)

        results["rtt"] = guarded(rtt)
        results["throughput"] = guarded(throughput)
        results["spawn_reply"] = guarded(spawn_reply)
        results["rtt_handoff"] = guarded(rtt_handoff)
        results["throughput_handoff"] = guarded(throughput_handoff)
    except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
        results.setdefault("rtt", skipped(f"the raw socket peer failed: {error}"))
    finally:
        peer.close()
    results["node_start"] = guarded(
        lambda: wall_times([sys.executable, "-c", "pass"], cfg.n_start))
    return results


def bench_zmq(cfg: Config, tmp: Path) -> dict[str, Any]:
    """Raw pyzmq DEALER -> ROUTER over tcp://127.0.0.1, one frame per message."""
    try:
        import zmq
    except ImportError as error:
        return {"rtt": skipped(f"pyzmq is not installed ({error})")}
    results: dict[str, Any] = {}
    peer = Child([sys.executable, str(HERE / "raw_peer.py"), "zmq"], log=tmp / "zmq.log")
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.rcvtimeo = dealer.sndtimeo = int(REPLY_TIMEOUT * 1000)
    try:
        port = int(peer.wait_for("READY", 15).split()[1])
        dealer.connect(f"tcp://127.0.0.1:{port}")
        ping = b"E" + b"p" * 31

        def rtt() -> dict[str, Any]:
            def one() -> None:
                dealer.send(ping)
                dealer.recv()
            return timed_rounds(cfg, cfg.n_rtt, one, warmup=min(cfg.n_rtt, 2_000))

        def throughput() -> dict[str, Any]:
            message = b"M" + b"p" * 31
            rounds = []
            for _ in range(cfg.rounds):
                t0 = time.perf_counter()
                send = dealer.send
                for _ in range(cfg.n_msgs):
                    send(message)
                send(b"Z")
                reply = dealer.recv()
                seconds = time.perf_counter() - t0
                if int(reply[1:]) != cfg.n_msgs:
                    raise RuntimeError(f"the peer counted {reply[1:]!r} of {cfg.n_msgs} messages")
                rounds.append({"seconds": seconds, "msgs_per_s": cfg.n_msgs / seconds})
            return over_rounds(rounds)

        results["rtt"] = guarded(rtt)
        results["throughput"] = guarded(throughput)
    except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
        results.setdefault("rtt", skipped(f"the pyzmq peer failed: {error}"))
    finally:
        dealer.close()
        context.term()
        peer.close()
    return results


# ------------------------------------------------------------------------------ (c) BEAM

def _epmd_running(epmd: str, env: dict[str, str]) -> bool:
    return subprocess.run([epmd, "-names"], capture_output=True, env=env,
                          timeout=10).returncode == 0


BEAM_FIGURES = ("rtt", "throughput", "spawn_reply", "task_async_await")


def bench_beam(cfg: Config, tmp: Path) -> dict[str, Any]:
    """Two real BEAM nodes (``elixir --sname``), measured inside the BEAM by beam/bench.exs."""
    elixir, erl, epmd = shutil.which("elixir"), shutil.which("erl"), shutil.which("epmd")
    if not (elixir and erl and epmd):
        reason = "elixir/erl/epmd are not on PATH (Debian: apt-get install erlang-base elixir)"
        return {figure: skipped(reason) for figure in (*BEAM_FIGURES, "node_start")}
    home = tmp / "beam-home"  # erl may write ~/.erlang.cookie and read ~/.erlang: not the user's
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    cookie = "bench_" + secrets.token_hex(8)
    tag = f"{os.getpid()}_{secrets.token_hex(2)}"
    # epmd outlives the nodes that start it. Start it ourselves first (so that no node-start
    # figure includes starting it), and stop it at the end only if it was not running before.
    started_epmd = not _epmd_running(epmd, env)
    if started_epmd:
        subprocess.run([epmd, "-daemon"], env=env, timeout=10, check=True)
    results: dict[str, Any] = {}
    try:
        results.update(_beam_two_nodes(cfg, tmp, elixir, env, cookie, tag))
        results["node_start"] = guarded(lambda: wall_times(
            [elixir, "--sname", f"bench_start_{tag}@localhost", "--cookie", cookie, "-e", ":ok"],
            cfg.n_start, env=env, name_slot=2))
        results["node_start_erl"] = guarded(lambda: wall_times(
            [erl, "-sname", f"bench_erl_{tag}@localhost", "-setcookie", cookie, "-noshell",
             "-eval", "halt()."], cfg.n_start, env=env, name_slot=2))
    finally:
        results["epmd"] = "already running, left running"
        if started_epmd:
            results["epmd"] = _stop_epmd(epmd, env)
    return results


def _stop_epmd(epmd: str, env: dict[str, str]) -> str:
    # epmd refuses -kill while a node is registered: ours are gone, but epmd may take a
    # moment to notice their sockets closed (and someone else's node may have come since).
    for _ in range(20):
        subprocess.run([epmd, "-kill"], capture_output=True, env=env, timeout=10)
        if not _epmd_running(epmd, env):
            return "started and stopped by this run"
        time.sleep(0.1)
    return "started by this run; still running: another node registered meanwhile"


def _beam_two_nodes(cfg: Config, tmp: Path, elixir: str, env: dict[str, str], cookie: str,
                    tag: str) -> dict[str, Any]:
    """Figures 1-4: kate (peer) runs until its stdin closes; alex (driver) measures."""
    kate, alex = f"bench_kate_{tag}@localhost", f"bench_alex_{tag}@localhost"
    peer = None
    try:
        peer = Child([elixir, "--sname", kate, "--cookie", cookie, str(BEAM_SCRIPT), "peer",
                      "240000"], env=env, log=tmp / "beam-peer.log")
        peer.wait_for("READY", 60)
        # A generous ceiling (about 3x what the BEAM needs on a slow machine).
        budget = 30 + 3 * cfg.rounds * (cfg.n_rtt * 200 + cfg.n_msgs * 20
                                         + (cfg.n_spawn + cfg.n_task) * 1_000) / 1e6
        driver = subprocess.run(
            [elixir, "--sname", alex, "--cookie", cookie, str(BEAM_SCRIPT), "driver", kate,
             str(cfg.rounds), str(cfg.n_rtt), str(cfg.n_msgs), str(cfg.n_spawn), str(cfg.n_task)],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=budget, cwd=REPO)
    except Exception as error:  # noqa: BLE001 - reported in the table
        return {figure: skipped(f"the BEAM run failed: {error}") for figure in BEAM_FIGURES}
    finally:
        if peer is not None:
            peer.close()
    out = driver.stdout.decode(errors="replace")
    rounds: dict[str, list[dict[str, Any]]] = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            record = json.loads(line[len("BENCH "):])
            rounds.setdefault(record.pop("figure"), []).append(record)
    results: dict[str, Any] = {}
    for figure in BEAM_FIGURES:
        if figure in rounds:
            results[figure] = over_rounds(rounds[figure])
        else:
            errors = [line for line in out.splitlines() if line.startswith("BENCH-ERROR")]
            detail = errors[0] if errors else driver.stderr.decode(errors="replace")[-300:]
            results[figure] = skipped(f"the BEAM driver exited with {driver.returncode}: "
                                      f"{detail}".replace("\n", " "))
    return results


# ------------------------------------------------------------------------ (d) ipyparallel

def bench_ipyparallel(cfg: Config, tmp: Path) -> dict[str, Any]:
    """``rc[0].apply_sync(lambda: 1)`` on a one-engine cluster started (and stopped) here."""
    try:
        import ipyparallel as ipp
    except ImportError as error:
        return {"apply_sync": skipped(f"ipyparallel is not installed ({error})")}
    results: dict[str, Any] = {}
    # IPYTHONDIR is a temporary directory for the whole run (see main), so the profile, its
    # security files and logs never touch ~/.ipython.
    profile_dir = Path(os.environ["IPYTHONDIR"]) / "profile_nodelab_bench"
    t0 = time.perf_counter()
    cluster = ipp.Cluster(n=1, profile_dir=str(profile_dir), log_level=logging.WARNING)
    client = None
    try:
        client = cluster.start_and_connect_sync(activate=False)
        client.wait_for_engines(1, timeout=120)
        results["cluster_start"] = {"seconds": time.perf_counter() - t0}
        view = client[0]

        def one() -> None:
            if view.apply_sync(lambda: 1) != 1:
                raise RuntimeError("apply_sync(lambda: 1) did not return 1")

        one_round = Config(rounds=1)
        results["apply_sync"] = guarded(
            lambda: timed_rounds(one_round, cfg.n_ipp, one, warmup=20))
    except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
        results.setdefault("apply_sync", skipped(f"the ipyparallel cluster failed: {error}"))
    finally:
        if client is not None:
            client.close()
        with contextlib.suppress(Exception):
            cluster.stop_cluster_sync()
    return results


# ------------------------------------------------------------------------------- (a) nodelab

def _import_nodelab() -> tuple[Any, str | None]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        import nodelab
    except Exception as error:  # noqa: BLE001 - a half-written core may raise anything
        return None, f"`import nodelab` failed: {type(error).__name__}: {error}"
    missing = [name for name in ("Node", "send", "receive", "self") if not hasattr(nodelab, name)]
    if missing:
        return None, f"nodelab has no {', '.join(missing)} yet"
    return nodelab, None


def _private_portmapper() -> None:
    """Give this run its own EPMD port: it does not meet other users' nodes, and nodelab's
    port mapper ends one second after this run's last node (NODELAB_PORTMAPPER_LINGER)."""
    if "ERL_EPMD_PORT" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        os.environ["ERL_EPMD_PORT"] = str(probe.getsockname()[1])
    os.environ.setdefault("NODELAB_PORTMAPPER_LINGER", "1")


def _stop_private_portmapper(timeout: float = 5.0) -> None:
    try:
        from nodelab.dist import portmapper
    except ImportError:
        return
    # Ask once: every PING restarts the daemon's linger clock, so polling it would keep it up.
    pid = portmapper.mapper_pid(timeout=0.5)
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)  # it lingers NODELAB_PORTMAPPER_LINGER seconds after the last node
    print(f"  warning: the port mapper (pid {pid}) did not exit by itself; stopping it",
          file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def bench_nodelab(cfg: Config, tmp: Path) -> dict[str, Any]:
    """The same figures as the BEAM's, through nodelab's public API, between two nodes."""
    figures = ("rtt", "throughput", "spawn_reply", "task_async_await", "node_start")
    nodelab, reason = _import_nodelab()
    if nodelab is None:
        return {figure: skipped(reason or "") for figure in figures}
    from nodelab import Node, receive, send
    from nodelab import self as me_

    results: dict[str, Any] = {}
    cookie = "bench_" + secrets.token_hex(8)
    tag = f"{os.getpid()}_{secrets.token_hex(2)}"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]]
                                                       if env.get("PYTHONPATH") else []))
    try:
        Node.start(f"bench_alex_{tag}", cookie=cookie)
    except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
        return {figure: skipped(f"Node.start failed: {type(error).__name__}: {error}")
                for figure in figures}
    peer = None
    try:
        peer = Child([sys.executable, str(HERE / "nodelab_peer.py"), f"bench_kate_{tag}", cookie],
                     env=env, log=tmp / "nodelab-peer.log")
        ready = peer.wait_for("READY", 30).split(maxsplit=2)
        kate = ready[1]
        tasks = ready[2].removeprefix("tasks=") if len(ready) > 2 else "no: not reported"
        me = me_()

        def rtt() -> dict[str, Any]:
            send(("bench_echo", kate), (me, "whoami"))
            echo = receive(timeout=REPLY_TIMEOUT)
            message = (me, "ping")

            def one() -> None:
                send(echo, message)
                receive(timeout=REPLY_TIMEOUT)
            return timed_rounds(cfg, cfg.n_rtt, one, warmup=min(cfg.n_rtt, 2_000))

        def throughput() -> dict[str, Any]:
            n = cfg.n_msgs

            def counter() -> None:  # shipped to kate as code; send/receive resolve there
                send(me, "counter_ready")
                for _ in range(n):
                    receive(timeout=10)
                send(me, "done")

            rounds = []
            for _ in range(cfg.rounds):
                pid = Node.spawn(kate, counter)
                receive("counter_ready", timeout=REPLY_TIMEOUT)
                t0 = time.perf_counter()
                for i in range(n):
                    send(pid, ("m", i))
                receive("done", timeout=60)
                seconds = time.perf_counter() - t0
                rounds.append({"seconds": seconds, "msgs_per_s": n / seconds})
            return over_rounds(rounds)

        def spawn_reply() -> dict[str, Any]:
            def one() -> None:
                Node.spawn(kate, lambda: send(me, "spawned"))
                receive("spawned", timeout=REPLY_TIMEOUT)
            return timed_rounds(cfg, cfg.n_spawn, one, warmup=min(cfg.n_spawn, 200))

        def task_async_await() -> dict[str, Any]:
            if tasks != "yes":
                return skipped(f"the peer has no Bench.TaskSupervisor ({tasks})")
            from nodelab.otp import Task, TaskSupervisor

            supervisor = ("Bench.TaskSupervisor", kate)

            def one() -> None:
                if Task.await_(TaskSupervisor.async_(supervisor, lambda: "ok"),
                               timeout=REPLY_TIMEOUT) != "ok":
                    raise RuntimeError("the task did not return 'ok'")
            return timed_rounds(cfg, cfg.n_task, one, warmup=min(cfg.n_task, 200))

        results["rtt"] = guarded(rtt)
        results["throughput"] = guarded(throughput)
        results["spawn_reply"] = guarded(spawn_reply)
        results["task_async_await"] = guarded(task_async_await)
    except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
        for figure in figures[:4]:
            results.setdefault(figure, skipped(f"the nodelab peer failed: {error}"))
    finally:
        if peer is not None:
            peer.close()

    results.update(_nodelab_beam(cfg, tmp, tag, cookie))

    def node_start() -> dict[str, Any]:
        # `nodelab node --sname x` until it answers this node's ping (`-m nodelab` is the
        # console script without the PATH shim, which alone costs ~0.1 s; BASELINES.md).
        runs = []
        for i in range(cfg.n_start):
            name = f"bench_start_{tag}_{i}"
            t0 = time.perf_counter()
            with open(tmp / f"nodelab-start-{i}.log", "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "nodelab", "node", "--sname", name, "--cookie", cookie,
                     "--exit-with-parent"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=env, cwd=REPO)
            try:
                deadline = t0 + 30
                while Node.ping(f"{name}@localhost") != "pong":
                    if process.poll() is not None or time.perf_counter() > deadline:
                        raise RuntimeError(f"nodelab node {name} did not answer a ping: "
                                           f"{(tmp / f'nodelab-start-{i}.log').read_text()[-300:]}")
                    time.sleep(0.002)
                runs.append(time.perf_counter() - t0)
            finally:
                stop_process(process)
        return {"seconds": statistics.median(runs), "runs": runs}

    results["node_start"] = guarded(node_start)
    with contextlib.suppress(Exception):
        Node.stop()
    _stop_private_portmapper()
    return results


NODELAB_BEAM_FIGURES = ("beam_rtt", "beam_rtt_reverse", "beam_throughput")


def _nodelab_beam(cfg: Config, tmp: Path, tag: str, cookie: str) -> dict[str, Any]:
    """nodelab<->BEAM (issue 10 part 6): this nodelab node and a real Elixir node running
    beam/bench.exs's peer role, on this run's private ERL_EPMD_PORT.

    - beam_rtt: a nodelab process sends ``{self(), :ping}`` to kate's ``:bench_echo``.
    - beam_rtt_reverse: ``NodelabBench.pinger`` on kate (spawned from here) pings a nodelab
      echo process and sends back its samples, timed inside the BEAM.
    - beam_throughput: ``NodelabBench.counter`` on kate counts n ``{:m, i}`` sent from here.
    """
    elixir = shutil.which("elixir")
    if not elixir:
        return {figure: skipped("elixir is not on PATH (Debian: apt-get install elixir)")
                for figure in NODELAB_BEAM_FIGURES}
    from nodelab import ANY, Node, receive, send, spawn
    from nodelab import self as me_
    from nodelab.dist.term_format import Atom

    home = tmp / "beam-home-interop"  # erl may write ~/.erlang.cookie: not the user's
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    kate = f"bench_ex_{tag}@localhost"
    results: dict[str, Any] = {}
    peer = None
    try:
        peer = Child([elixir, "--sname", kate, "--cookie", cookie, str(BEAM_SCRIPT), "peer",
                      "240000"], env=env, log=tmp / "nodelab-beam-peer.log")
        peer.wait_for("READY", 60)
        me = me_()
        ping = Atom("ping")

        def rtt() -> dict[str, Any]:
            echo = ("bench_echo", kate)
            message = (me, ping)

            def one() -> None:
                send(echo, message)
                receive(timeout=REPLY_TIMEOUT)
            return timed_rounds(cfg, cfg.n_rtt, one, warmup=min(cfg.n_rtt, 2_000))

        def rtt_reverse() -> dict[str, Any]:
            def echo_loop() -> None:
                while True:
                    message = receive(timeout=60)
                    if message == "stop":
                        return
                    send(message[0], message[1])

            echo = spawn(echo_loop)
            try:
                rounds = []
                for i in range(cfg.rounds + 1):  # the first is a warm-up
                    n = min(cfg.n_rtt, 2_000) if i == 0 else cfg.n_rtt
                    Node.spawn(kate, "NodelabBench", "pinger", [echo, n, me])
                    samples = receive(("pinger_samples", ANY), timeout=60)[1]
                    if i:
                        rounds.append(latency(samples))
                return over_rounds(rounds)
            finally:
                send(echo, "stop")

        def throughput() -> dict[str, Any]:
            n, m = cfg.n_msgs, Atom("m")
            rounds = []
            for _ in range(cfg.rounds):
                pid = Node.spawn(kate, "NodelabBench", "counter", [n, me])
                receive("counter_ready", timeout=REPLY_TIMEOUT)
                t0 = time.perf_counter()
                for i in range(n):
                    send(pid, (m, i))
                receive("done", timeout=60)
                seconds = time.perf_counter() - t0
                rounds.append({"seconds": seconds, "msgs_per_s": n / seconds})
            return over_rounds(rounds)

        results["beam_rtt"] = guarded(rtt)
        results["beam_rtt_reverse"] = guarded(rtt_reverse)
        results["beam_throughput"] = guarded(throughput)
    except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
        for figure in NODELAB_BEAM_FIGURES:
            results.setdefault(figure, skipped(f"the Elixir peer failed: {error}"))
    finally:
        if peer is not None:
            peer.close()
    return results


# ------------------------------------------------------- figure 6: kernel node start (hook)

def _bare_ipykernel_start() -> float:
    from jupyter_client.manager import KernelManager

    t0 = time.perf_counter()
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return time.perf_counter() - t0
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        manager.cleanup_resources()


def bench_kernel(cfg: Config, tmp: Path) -> dict[str, Any]:
    """Kernel node start vs a bare ipykernel start (kernel_info answered), in the same run.

    The node side is what ``%node start kate`` does in a notebook:
    ``nodelab.jupyter.windows.start_window(node, cookie=...)``, which returns once the new
    kernel process answers and is node ``kate@localhost`` (``Node.alive()`` checked in it).
    """
    # The two kinds of start alternate, so that a noisy moment of this machine weighs on both.
    results: dict[str, Any] = {}
    bare: list[float] = []
    node: list[float] = []
    nodelab, reason = _import_nodelab()
    if nodelab is None:
        results["node_kernel_start"] = skipped(reason or "")
    notebook_node = False
    if nodelab is not None and not nodelab.Node.alive():
        # As in a lesson: the notebook is already node alex when it starts kate, so the port
        # mapper is up (otherwise every start would also pay for starting the port mapper).
        nodelab.Node.start(f"bench_notebook_{os.getpid()}", cookie="bench_" + secrets.token_hex(8))
        notebook_node = True
    # A kind of start that failed once is reported as failed and not tried again.
    for i in range(cfg.n_kernel):
        if "ipykernel_start" not in results:
            try:
                bare.append(_bare_ipykernel_start())
            except Exception as error:  # noqa: BLE001 - any failure becomes a skipped figure, with its reason
                results["ipykernel_start"] = skipped(f"a bare ipykernel did not start: {error}")
        if "node_kernel_start" not in results:
            outcome = guarded(lambda i=i: {"seconds": _node_kernel_start_once(i)})
            if "seconds" in outcome:
                node.append(outcome["seconds"])
            else:
                results["node_kernel_start"] = outcome
    if notebook_node:
        nodelab.Node.stop()
    if nodelab is not None:
        _stop_private_portmapper()
    if bare:
        results.setdefault("ipykernel_start", {"seconds": statistics.median(bare), "runs": bare})
    if node:
        results.setdefault("node_kernel_start",
                           {"seconds": statistics.median(node), "runs": node})
    return results


def _node_kernel_start_once(i: int) -> float:
    from nodelab.jupyter.windows import start_window

    t0 = time.perf_counter()
    window = start_window(f"bench_kernel_{os.getpid()}_{i}@localhost",
                          cookie="bench_" + secrets.token_hex(8))
    took = time.perf_counter() - t0
    window.stop()
    return took


# --------------------------------------------------------------------------------- the table

def _get(results: dict[str, Any], *path: str) -> float | None:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) else None


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "us":
        return f"{value:,.1f} us" if value < 1000 else f"{value / 1000:,.2f} ms"
    if unit == "msg/s":
        return f"{value / 1000:,.0f}k msg/s"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:g}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


@dataclass
class Row:
    """One line of the table: which result each column shows, and which goal it feeds."""

    label: str
    unit: str  # "us", "msg/s" or "s"
    cells: dict[str, tuple[str, ...]]  # column -> path into the results
    goal: str = ""  # key used by goals()
    vs_ipyparallel: bool = False  # show ipyparallel / nodelab


def _latency_rows(number: str, title: str, columns: dict[str, str], goal: str,
                  ipp: bool = False) -> list[Row]:
    """The p50 and p99 rows of a latency figure; ``columns`` maps column -> "section/figure"."""
    def cells(stat: str) -> dict[str, tuple[str, ...]]:
        return {column: (*path.split("/"), stat) for column, path in columns.items()}

    return [Row(f"{number}. {title} p50", "us", cells("p50_us"), goal, ipp),
            Row(f"{number}. {title} p99", "us", cells("p99_us"), "", ipp)]


ROWS: list[Row] = [
    *_latency_rows("1", "ping-pong RTT", {
        "nodelab": "nodelab/rtt", "beam": "beam/rtt", "socket": "socket/rtt", "zmq": "zmq/rtt",
        "floor": "socket/rtt_handoff"}, "rtt_p50"),
    Row("2. one-way throughput", "msg/s", {
        **{column: (column, "throughput", "msgs_per_s") for column in
           ("nodelab", "beam", "socket", "zmq")},
        "floor": ("socket", "throughput_handoff", "msgs_per_s")}, "throughput"),
    *_latency_rows("1b", "RTT, nodelab pings a BEAM echo", {
        "nodelab": "nodelab/beam_rtt", "beam": "beam/rtt"}, "beam_rtt_p50"),
    *_latency_rows("1c", "RTT, a BEAM process pings a nodelab echo", {
        "nodelab": "nodelab/beam_rtt_reverse", "beam": "beam/rtt"}, "beam_rtt_reverse_p50"),
    Row("2b. one-way throughput, nodelab -> BEAM counter", "msg/s", {
        "nodelab": ("nodelab", "beam_throughput", "msgs_per_s"),
        "beam": ("beam", "throughput", "msgs_per_s")}, "beam_throughput"),
    *_latency_rows("3", "remote spawn + reply", {
        "nodelab": "nodelab/spawn_reply", "beam": "beam/spawn_reply",
        "socket": "socket/spawn_reply", "floor": "socket/spawn_reply"}, "spawn_p50"),
    *_latency_rows("4", "remote task async+await", {
        "nodelab": "nodelab/task_async_await", "beam": "beam/task_async_await",
        "ipyparallel": "ipyparallel/apply_sync"}, "task_p50", ipp=True),
    Row("5. node start", "s", {
        "nodelab": ("nodelab", "node_start", "seconds"), "beam": ("beam", "node_start", "seconds"),
        "socket": ("socket", "node_start", "seconds"),
        "ipyparallel": ("ipyparallel", "cluster_start", "seconds")}),
    Row("5. node start, `erl -noshell`", "s", {"beam": ("beam", "node_start_erl", "seconds")}),
    Row("6. kernel node start", "s", {
        "nodelab": ("kernel", "node_kernel_start", "seconds"),
        "ipykernel": ("kernel", "ipykernel_start", "seconds")}, "kernel_start"),
]

COLUMNS = [("nodelab", "nodelab"), ("beam", "BEAM"), ("floor", "handoff floor"),
           ("socket", "raw socket"),
           ("zmq", "raw pyzmq"), ("ipyparallel", "ipyparallel"), ("ipykernel", "bare ipykernel")]

LEGEND = """\
What the cells are (benchmarks/README.md has more): two OS processes on loopback TCP, same run.
- raw socket: blocking socket, TCP_NODELAY, u32-length frames; row 3 = a new thread per request
  replies (the floor for a thread-per-process runtime); row 5 = `python -c pass`.
- handoff floor (issue 12): the raw socket plus, on both sides, a reader thread handing each
  frame through a SimpleQueue to the thread that waits for it (which writes its own frames);
  row 2 = one write per message, the peer's reader handing each frame to a counting thread;
  row 3 = the raw socket's thread per request. For throughput, "nodelab / floor" above 1 is
  better than the floor; for latencies, below 1.
- raw pyzmq: DEALER -> ROUTER, one frame per message.
- BEAM: nodes started with `elixir --sname`; row 4 = `Task.Supervisor.async(
  {Bench.TaskSupervisor, node}, fn -> :ok end) |> Task.await`; row 5 = `elixir --sname x
  -e :ok` (start to halt).
- nodelab: row 4 = `Task.await_(TaskSupervisor.async_(("Bench.TaskSupervisor", node), fn))`;
  row 5 = `python -m nodelab node --sname x` until it answers this node's `Node.ping`.
- ipyparallel: row 4 = `rc[0].apply_sync(lambda: 1)`, one engine; row 5 = `Cluster(n=1)` start
  until the engine is registered.
- row 6: a kernel that is a nodelab node, vs a bare ipykernel, each until ready.
- rows 1b, 1c, 2b (issue 10 part 6): the "nodelab" cell is nodelab<->BEAM (this nodelab node
  and a real Elixir node running beam/bench.exs peer), the "BEAM" cell BEAM<->BEAM, so
  "nodelab / BEAM" is nodelab<->BEAM / BEAM<->BEAM. 1b: nodelab sends {self(), :ping} to
  :bench_echo; 1c: NodelabBench.pinger on the BEAM node pings a nodelab echo process (timed
  in the BEAM); 2b: NodelabBench.counter on the BEAM node counts n {:m, i} from nodelab."""


def goals(values: dict[str, dict[str, float | None]]) -> list[tuple[str, str, str]]:
    """(goal, measured, met) for each goal of issues 2, 3 and 4."""
    def ratio(key: str, top: str, bottom: str) -> float | None:
        return _ratio(values.get(key, {}).get(top), values.get(key, {}).get(bottom))

    checks = [
        ("RTT p50 <= 1.5x BEAM", ratio("rtt_p50", "nodelab", "beam"), lambda r: r <= 1.5),
        ("throughput >= 0.5x BEAM", ratio("throughput", "nodelab", "beam"), lambda r: r >= 0.5),
        ("nodelab->BEAM RTT p50 <= 1.2x BEAM<->BEAM (issue 12)",
         ratio("beam_rtt_p50", "nodelab", "beam"), lambda r: r <= 1.2),
        ("BEAM->nodelab RTT p50 <= 1.2x BEAM<->BEAM (issue 12)",
         ratio("beam_rtt_reverse_p50", "nodelab", "beam"), lambda r: r <= 1.2),
        ("remote spawn + reply p50 <= 2x BEAM", ratio("spawn_p50", "nodelab", "beam"),
         lambda r: r <= 2),
        ("remote task async+await p50 <= 2x BEAM", ratio("task_p50", "nodelab", "beam"),
         lambda r: r <= 2),
        ("remote task async+await >= 30x faster than ipyparallel apply_sync (ipyparallel / "
         "nodelab)", ratio("task_p50", "ipyparallel", "nodelab"), lambda r: r >= 30),
        ("kernel node start <= 1.2x bare ipykernel start",
         ratio("kernel_start", "nodelab", "ipykernel"), lambda r: r <= 1.2),
    ]
    return [(goal, _fmt_ratio(r), "n/a" if r is None else ("yes" if ok(r) else "**NO**"))
            for goal, r, ok in checks]


def render(results: dict[str, Any]) -> str:
    """The markdown table: figures, ratios, goals, and why anything is missing."""
    values: dict[str, dict[str, float | None]] = {}
    lines = ["| figure | " + " | ".join(title for _, title in COLUMNS)
             + " | nodelab / BEAM | nodelab / floor | BEAM / floor | nodelab / raw socket"
             " | ipyparallel / nodelab |",
             "|---" * (len(COLUMNS) + 6) + "|"]
    for row in ROWS:
        cells = {column: _get(results, *path) for column, path in row.cells.items()}
        if row.goal:
            values[row.goal] = cells
        nodelab = cells.get("nodelab")
        ratios = [_ratio(nodelab, cells.get("beam")), _ratio(nodelab, cells.get("floor")),
                  _ratio(cells.get("beam"), cells.get("floor")),
                  _ratio(nodelab, cells.get("socket")),
                  _ratio(cells.get("ipyparallel"), nodelab) if row.vs_ipyparallel else None]
        lines.append(f"| {row.label} | "
                     + " | ".join(_fmt(cells.get(column), row.unit) if column in row.cells else ""
                                  for column, _ in COLUMNS)
                     + " | " + " | ".join(_fmt_ratio(r) for r in ratios) + " |")
    lines += ["", LEGEND]
    lines += ["", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {met} |" for goal, measured, met in goals(values)]
    notes = []
    for section, figures in results.items():
        if not isinstance(figures, dict):
            continue
        reasons: dict[str, list[str]] = {}  # one line per reason, naming the figures it hit
        for figure, entry in figures.items():
            if isinstance(entry, dict) and "skipped" in entry:
                reasons.setdefault(entry["skipped"], []).append(figure)
            elif figure == "skipped":
                reasons.setdefault(str(entry), []).append("all")
        notes += [f"- {section} ({', '.join(names)}): {reason}"
                  for reason, names in reasons.items()]
        if figures.get("left_running"):
            notes.append(f"- {section} left processes running (killed): {figures['left_running']}")
    if notes:
        lines += ["", "Not measured:", *notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main

BENCHES: dict[str, Callable[[Config, Path], dict[str, Any]]] = {
    "socket": bench_socket, "zmq": bench_zmq, "beam": bench_beam,
    "ipyparallel": bench_ipyparallel, "nodelab": bench_nodelab, "kernel": bench_kernel,
}


class SectionTimeout(BaseException):
    """Raised in the main thread by SIGALRM when a section overruns its time budget.

    A BaseException, so that the per-figure ``except Exception`` does not swallow it: it
    unwinds the whole section, running every ``finally`` on the way (peers are closed, epmd
    stopped), and the run goes on with the next section.
    """


def _on_alarm(signum: int, frame: Any) -> None:
    raise SectionTimeout()


@contextlib.contextmanager
def isolated_environment() -> Iterator[Path]:
    """A temporary home for everything the run writes: IPython and Jupyter directories,
    nodelab's home (port mapper log), the peers' logs. Nothing lands in ``~``."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="nodelab-bench-") as directory:
        tmp = Path(directory)
        for variable, sub in (("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "jupyter-run"),
                              ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                              ("NODELAB_HOME", "nodelab-home")):
            (tmp / sub).mkdir()
            os.environ[variable] = str(tmp / sub)
        _private_portmapper()
        try:
            yield tmp
        finally:
            os.environ.clear()
            os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="about a tenth of the iterations: a smoke run, noisier figures")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="NAME",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default benchmarks/results/<time>.json)")
    parser.add_argument("--section-timeout", type=int, default=None, metavar="SECONDS",
                        help="abandon a section after this long (default 300, --quick 120)")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of failures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    cfg = Config.quick() if args.quick else Config()
    sections = args.only or list(SECTIONS)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with isolated_environment() as tmp:
        for name in SECTIONS:
            if name not in sections:
                continue
            print(f"[{time.perf_counter() - started:6.1f} s] {name} ...", file=sys.stderr,
                  flush=True)
            t0 = time.perf_counter()
            budget = args.section_timeout or (120 if args.quick else 300)
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.alarm(budget)
            try:
                results[name] = guarded(lambda name=name: BENCHES[name](cfg, tmp))
            except SectionTimeout:
                results[name] = skipped(f"took longer than {budget} s (--section-timeout): "
                                        f"something hangs; rerun with --only {name} -v")
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)
            results[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
            leftovers = reap_children(name)
            if leftovers:
                results[name]["left_running"] = leftovers
    elapsed = time.perf_counter() - started
    table = render(results)
    print()
    print(table)
    print(f"\n({'quick run, ' if args.quick else ''}{elapsed:.0f} s; "
          f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} "
          "CPUs; ratios compare figures of this run only)")
    record = {
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": asdict(cfg), "quick": args.quick, "seconds": elapsed,
        "machine": {"python": sys.version, "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "results": results, "table": table,
    }
    path = args.json or RESULTS / f"{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
