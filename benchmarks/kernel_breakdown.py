"""What a node kernel does before it is ready, step by step (issue 12, kernel node start).

    .venv/bin/python benchmarks/kernel_breakdown.py [--repeat 5] [--top 8]

Each repeat is a fresh ``python -X importtime`` child that does, in order, what a window
kernel does between its process start and ``%node start kate``'s return (``windows.py``'s
startup code), timing each step with ``perf_counter``:

1. ``import ipykernel.kernelapp`` (any kernel pays it; the bare-ipykernel reference too);
2. an IPython shell (``InteractiveShell.instance()``; ipykernel makes a ZMQInteractiveShell);
3. ``import nodelab`` (the package, its runtime and dist layers);
4. ``load_extension('nodelab')``: the magics, the picture magics, the output router;
5. ``%node --sname ...`` i.e. ``Node.start``, split into EPMD (``ensure_portmapper`` +
   ``register``, timed by wrapping the two functions in this child only) and the rest.

The port mapper is already up (started by this script first, as the notebook's own node
would have done). Printed: the median of each step, and the largest imports of steps 3-4
(``-X importtime``, cumulative microseconds, first-level entries only) — what could be
deferred. Writes only to a temporary directory (``NODELAB_HOME``, ``IPYTHONDIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, json
marks = {}
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter()
    marks[name] = marks.get(name, 0.0) + now - t
    print(f"MARK {name}", file=sys.stderr, flush=True)
    t = time.perf_counter()
mark("interpreter up (site, -X importtime)")
import ipykernel.kernelapp
mark("import ipykernel.kernelapp")
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
mark("IPython shell instance")
import nodelab
mark("import nodelab")
shell.extension_manager.load_extension("nodelab")
mark("load_extension('nodelab') (magics, pictures, router)")
from nodelab.dist import portmapper
epmd = {"s": 0.0}
def timed(fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            epmd["s"] += time.perf_counter() - t0
    return wrapper
portmapper.ensure_portmapper = timed(portmapper.ensure_portmapper)
portmapper.register = timed(portmapper.register)
t0 = time.perf_counter()
shell.run_line_magic("node", "--sname " + sys.argv[1] + " --cookie " + sys.argv[2])
total = time.perf_counter() - t0
assert nodelab.Node.alive()
marks["%node: EPMD (ensure_portmapper + register)"] = epmd["s"]
marks["%node: the rest of Node.start"] = total - epmd["s"]
print(json.dumps(marks), flush=True)
nodelab.Node.stop()
"""


def one(name: str, cookie: str, env: dict[str, str]) -> tuple[dict[str, float], str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", CHILD, name, cookie],
                          capture_output=True, env=env, cwd=REPO, timeout=60)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode()[-2000:])
    marks = json.loads(done.stdout.decode().strip().splitlines()[-1])
    marks["whole child, wall (with interpreter start and exit)"] = wall
    return marks, done.stderr.decode()


def top_imports(stderr: str, phases: tuple[str, ...], top: int) -> list[tuple[int, str]]:
    """Imports of the first three levels (cumulative us) made during the ``phases`` (a line printed
    before ``MARK x`` belongs to step x)."""
    result, pending = [], []
    order = [line[5:] for line in stderr.splitlines() if line.startswith("MARK ")]
    index = 0
    for line in stderr.splitlines():
        if line.startswith("MARK "):
            if order[index] in phases:
                result += pending
            pending, index = [], index + 1
            continue
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 5:  # first three levels
            pending.append((int(match.group(2)), " " * (len(match.group(3)) - 1)
                            + match.group(4)))
    return sorted(result, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nodelab-kb-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "NODELAB_HOME": tmp,
               "IPYTHONDIR": str(Path(tmp) / "ipython"), "NODELAB_PORTMAPPER_LINGER": "1"}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            env["ERL_EPMD_PORT"] = str(probe.getsockname()[1])
        sys.path.insert(0, str(REPO))
        os.environ.update(ERL_EPMD_PORT=env["ERL_EPMD_PORT"], NODELAB_PORTMAPPER_LINGER="1",
                          NODELAB_HOME=tmp)
        from nodelab import Node

        cookie = "kb_" + secrets.token_hex(8)
        Node.start(f"kb_notebook_{secrets.token_hex(3)}", cookie=cookie)  # EPMD is up
        print(f"load average {os.getloadavg()}")
        runs, stderr = [], ""
        for i in range(args.repeat):
            marks, stderr = one(f"kb_kate_{i}_{secrets.token_hex(2)}", cookie, env)
            runs.append(marks)
        Node.stop()
    print(f"\nmedian of {args.repeat} fresh children (ms):\n")
    print("| step | ms | share of the child's wall |")
    print("|---|---|---|")
    wall = statistics.median(r["whole child, wall (with interpreter start and exit)"]
                             for r in runs)
    for key in runs[0]:
        value = statistics.median(r[key] for r in runs)
        print(f"| {key} | {value * 1000:.0f} | {value / wall:.0%} |")
    print("\nlargest imports (levels 1-3) of `import nodelab` + load_extension "
          "(-X importtime, cumulative, last child; importtime itself slows imports):\n")
    print("| module | ms |")
    print("|---|---|")
    for us, module in top_imports(stderr, ("import nodelab",
                                           "load_extension('nodelab') (magics, pictures, router)"),
                                  args.top):
        print(f"| `{module.strip()}` (level {(len(module) - len(module.lstrip())) // 2 + 1}) | "
              f"{us / 1000:.1f} |")
    print(f"\nload average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
