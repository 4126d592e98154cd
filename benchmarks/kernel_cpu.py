"""Kernel node start in CPU seconds of the kernel process, beside a bare ipykernel's.

    .venv/bin/python benchmarks/kernel_cpu.py [--repeat 5]

``run.py``'s row 6 times the start on the wall clock, which on a shared 2-core machine
swings by 2x between minutes. This counts what the started kernel process itself spent
(every thread's run time from ``/proc/PID/task/*/schedstat``, in nanoseconds) from its start
until it is ready: until ``start_window`` returns for a node kernel (what ``%node start
kate`` waits for: ready, and nodelab loaded and the node started there), until
``wait_for_ready`` for a bare ``python3`` ipykernel. Both kinds alternate; printed: medians
of CPU and wall time and their ratios. Run it from another tree with ``PYTHONPATH=TREE``
(``git archive REV | tar -x -C TREE``) to compare two versions, alternating the runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """Run time of every thread of ``pid`` so far (schedstat's first field, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total / 1e9


def bare_start() -> tuple[float, float]:
    from jupyter_client.manager import KernelManager

    t0 = time.perf_counter()
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = manager.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        wall = time.perf_counter() - t0
        return wall, cpu_seconds(manager.provisioner.process.pid)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        manager.cleanup_resources()


def node_start(i: int) -> tuple[float, float]:
    from nodelab.jupyter.windows import start_window

    t0 = time.perf_counter()
    window = start_window(f"kcpu_{os.getpid()}_{i}@localhost",
                          cookie="kcpu_" + secrets.token_hex(8))
    try:
        wall = time.perf_counter() - t0
        return wall, cpu_seconds(window.os_pid)
    finally:
        window.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nodelab-kcpu-") as tmp:
        os.environ.update(NODELAB_HOME=tmp, NODELAB_PORTMAPPER_LINGER="1")
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["ERL_EPMD_PORT"] = str(probe.getsockname()[1])
        import nodelab

        # As in a lesson: the notebook is node alex already, so the port mapper is up.
        nodelab.Node.start(f"kcpu_notebook_{os.getpid()}", cookie="kcpu_" + secrets.token_hex(8))
        bare, node = [], []
        load = [os.getloadavg()[0]]
        try:
            for i in range(args.repeat):
                bare.append(bare_start())
                node.append(node_start(i))
                load.append(os.getloadavg()[0])
        finally:
            nodelab.Node.stop()  # the port mapper exits by itself 1 s later (LINGER)
    b_wall, b_cpu = (statistics.median(x[k] for x in bare) for k in (0, 1))
    n_wall, n_cpu = (statistics.median(x[k] for x in node) for k in (0, 1))
    print(f"nodelab from {Path(nodelab.__file__).parent.parent}; load {min(load):.1f}-"
          f"{max(load):.1f}; medians of {args.repeat}")
    print(f"bare ipykernel: wall {b_wall * 1000:.0f} ms, kernel CPU {b_cpu * 1000:.0f} ms")
    print(f"node kernel:    wall {n_wall * 1000:.0f} ms, kernel CPU {n_cpu * 1000:.0f} ms")
    print(f"ratio: wall {n_wall / b_wall:.2f}x, CPU {n_cpu / b_cpu:.2f}x, "
          f"CPU over bare {(n_cpu - b_cpu) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
