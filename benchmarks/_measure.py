"""The measuring pieces several benchmark scripts share, so that each says only what it measures.

What it holds: the CPU an OS process has used (``/proc/<pid>/stat``, every thread), the
rounds of a timed operation (p50 per round and CPU per operation of the processes named,
each the median of the rounds), a step timed on its own (the fastest of 7 batches), a peer
process started from a script and read up to its ``READY`` line, the handoff floor's reader
thread (``raw_peer.py`` mode ``H``), the key a yappi function statistic is listed under,
and a private EPMD port for a run. Used by ``profile_rtt.py``, ``remote_paths.py``,
``profile_beam.py`` and ``prototypes/compare.py``.

Each script imports it from its own folder (``import _measure``): a script's folder is
``sys.path[0]`` when it runs as a script, and ``prototypes/compare.py`` puts its parent
``benchmarks/`` right after it. So ``.venv/bin/python <tree>/benchmarks/<script>.py``
measures with that tree's copy of this file, never another tree's.
"""

from __future__ import annotations

import os
import queue
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU (user + system, every thread) the process ``pid`` has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rounds_of(n: int, rounds: int, one: Callable[[], None], pids: list[int]) -> dict[str, Any]:
    """``rounds`` rounds of ``n`` calls of ``one``: the p50 of each round (us) and the CPU of
    the processes ``pids`` per call (us), with the median of the rounds of each."""
    p50s, cpus = [], []
    for _ in range(rounds):
        samples = []
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            one()
            samples.append(time.perf_counter_ns() - t0)
        cpus.append((sum(cpu_seconds(pid) for pid in pids) - cpu0) / n * 1e6)
        samples.sort()
        p50s.append(samples[n // 2] / 1000)
    return {"p50_us": statistics.median(p50s), "cpu_us": statistics.median(cpus),
            "p50_rounds": p50s, "cpu_rounds": cpus}


def fastest_of(fn: Callable[[], Any], n: int) -> float:
    """us per call of ``fn``: ``n`` calls in a batch, wall clock, the fastest of 7 batches (on
    a shared machine the slower batches measure the neighbours, not ``fn``)."""
    batches = []
    for _ in range(7):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter_ns() - t0) / n / 1000)
    return min(batches)


def start_child(argv: list[str], repo: Path, what: str | None = None
                ) -> tuple[subprocess.Popen, str]:
    """Start ``argv`` in ``repo`` (its nodelab first on the child's path) and wait for its
    ``READY <word>`` line: the child and the word (a node name, a port). The child is held
    by its stdin: closing it ends the child. ``what`` names it in the error (``argv[1]``)."""
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=repo,
                             env={**os.environ, "PYTHONPATH": str(repo)})
    line = child.stdout.readline().decode()
    if not line.startswith("READY"):
        raise RuntimeError(f"{what or argv[1]} did not start: {line!r}")
    return child, line.split()[1]


def handoff_inbox(reader: IO[bytes], size: int) -> queue.SimpleQueue:
    """The handoff floor's reader: a thread reads ``size``-byte frames from ``reader`` and
    hands each to the queue it returns (as a runtime's reader thread hands a message to the
    waiting process); the short read at the end of the stream is put too, then it stops."""
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read_loop() -> None:
        while True:
            data = reader.read(size)
            inbox.put(data)
            if len(data) != size:
                return

    threading.Thread(target=read_loop, daemon=True).start()
    return inbox


def yappi_key(stat: Any) -> str:
    """``file:function`` of a yappi function statistic (``builtins:name`` for a builtin), the
    key the scripts group and match components by."""
    module = os.path.basename(stat.module) if stat.module else ""
    name = stat.name if module == "builtins" or not module else stat.name.split(".")[-1]
    return f"{module}:{name}"


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def private_portmapper() -> None:
    """Give this run (and the children it starts with ``os.environ``) its own EPMD port,
    unless ``ERL_EPMD_PORT`` already names one, so that runs side by side do not share a
    portmapper; and let that portmapper end 1 s after its last node (not 10 s)."""
    os.environ.setdefault("ERL_EPMD_PORT", str(free_port()))
    os.environ.setdefault("NODELAB_PORTMAPPER_LINGER", "1")
