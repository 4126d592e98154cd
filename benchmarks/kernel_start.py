"""A node kernel's start and round trip next to a bare ipykernel's, in one run.

    .venv/bin/python benchmarks/kernel_start.py             # the nodelab kernelspec if installed
    .venv/bin/python benchmarks/kernel_start.py ""          # this interpreter's plain ipykernel
    .venv/bin/python benchmarks/kernel_start.py --repeat 9 python3

Measures ``nodelab.jupyter.node_kernels.start_node_kernel`` (a kernel process, no node in it
yet) against a bare ``KernelManager.start_kernel`` + ``wait_for_ready``, the two kinds of start
interleaved so that a noisy moment of the machine weighs on both, and ``execute("1+1")``
round trips through a :class:`NodeKernel` and through a bare client's
``execute_interactive``. The figures in ``node_kernels``' docstring come from here.
(``run.py``'s ``kernel`` section measures the whole ``%node start kate``: a kernel that is a
node.) Like ``run.py``, it writes only to a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from run import isolated_environment


@dataclass
class Figures:
    """Seconds, one entry per start or per round trip."""

    bare: list[float] = field(default_factory=list)
    node: list[float] = field(default_factory=list)
    bare_round_trip: list[float] = field(default_factory=list)
    round_trip: list[float] = field(default_factory=list)
    spec: str = ""  # the node kernel's kernelspec: its command and display name


def measure(repeat: int = 5, kernel_name: str | None = None, trips: int = 5) -> Figures:
    """``repeat`` starts of each kind, ``trips`` round trips on each kernel started."""
    from jupyter_client.manager import KernelManager

    from nodelab.jupyter.node_kernels import start_node_kernel

    figures = Figures()
    for _ in range(repeat):
        # The comparison: a bare KernelManager start of the python3 kernel (this interpreter's
        # ipykernel), not encrypted: jupyter_client's defaults.
        manager = KernelManager(kernel_name="python3")
        t0 = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            manager.start_kernel(stdout=sink, stderr=sink)
        client = manager.client()
        try:
            client.start_channels()
            client.wait_for_ready(timeout=30)
            figures.bare.append(time.perf_counter() - t0)
            for _ in range(trips):
                t1 = time.perf_counter()
                client.execute_interactive("1+1", timeout=10, output_hook=lambda msg: None)
                figures.bare_round_trip.append(time.perf_counter() - t1)
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)

        t0 = time.perf_counter()
        with start_node_kernel("bench@localhost", kernel_name=kernel_name) as kernel:
            figures.node.append(time.perf_counter() - t0)
            for _ in range(trips):
                t1 = time.perf_counter()
                kernel.execute("1+1")
                figures.round_trip.append(time.perf_counter() - t1)
            spec = kernel.manager.kernel_spec
    figures.spec = f"{' '.join(spec.argv[1:3])} ({spec.display_name})"
    return figures


def report(figures: Figures) -> str:
    median = statistics.median
    bare, node = median(figures.bare), median(figures.node)
    n = len(figures.bare)
    return "\n".join([
        f"node kernel: {figures.spec}",
        f"bare KernelManager start + wait_for_ready: {bare * 1000:5.0f} ms (median of {n})",
        f"start_node_kernel -> ready:               {node * 1000:5.0f} ms "
        f"(ratio {node / bare:.2f})",
        f"execute('1+1') round trip, NodeKernel:    "
        f"{median(figures.round_trip) * 1000:5.1f} ms (median of {len(figures.round_trip)})",
        f"  same on a bare client (execute_interactive): "
        f"{median(figures.bare_round_trip) * 1000:.1f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kernel_name", nargs="?", default=None, metavar="KERNELSPEC",
                        help='the node kernel\'s kernelspec (default: nodelab if installed, '
                             'else the built-in one; "" forces the built-in one)')
    parser.add_argument("--repeat", type=int, default=5, help="starts of each kind (default 5)")
    args = parser.parse_args(argv)
    with isolated_environment():
        print(report(measure(args.repeat, args.kernel_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
