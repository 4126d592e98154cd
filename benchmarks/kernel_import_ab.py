"""nodelab's part of a node kernel's start, in CPU seconds, for two trees alternately.

    git archive HEAD | tar -x -C /tmp/base
    .venv/bin/python benchmarks/kernel_import_ab.py /tmp/base [--repeat 8] [--cached]

Each repeat runs, for the other tree and then this one, a fresh child that imports
``ipykernel.kernelapp`` and makes an IPython shell (what every kernel does), then times with
``time.process_time`` what a window kernel adds: ``import nodelab``,
``load_extension('nodelab')`` and ``%node --sname ...``, and counts the nodelab modules
loaded. CPU time of one process barely moves with the machine's load, unlike the wall clock
of ``run.py``'s row 6. ``--cached``: bytecode written and reused (``PYTHONPYCACHEPREFIX``,
one directory per tree; a first, unreported round fills it), as on a learner's install;
without it the environment's ``PYTHONDONTWRITEBYTECODE`` holds and every source is
compiled in every child. Writes only to a temporary directory and ``/tmp``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

THIS_TREE = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, json
import ipykernel.kernelapp
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
c0 = time.process_time()
import nodelab
c1 = time.process_time()
shell.extension_manager.load_extension("nodelab")
c2 = time.process_time()
shell.run_line_magic("node", "--sname " + sys.argv[1] + " --cookie " + sys.argv[2])
c3 = time.process_time()
print(json.dumps([c1 - c0, c2 - c1, c3 - c2, sum(m.startswith("nodelab") for m in sys.modules)]))
nodelab.Node.stop()
"""
STEPS = ("import nodelab", "load_extension", "%node", "nodelab modules")


def one(root: Path, env: dict[str, str], cached: bool, pycache: Path) -> list[float]:
    env = {**env, "PYTHONPATH": str(root)}
    if cached:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    done = subprocess.run([sys.executable, "-c", CHILD, "kab_" + secrets.token_hex(4), "kab"],
                          capture_output=True, text=True, env=env, cwd=root, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the other tree (an unpacked git archive)")
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--cached", action="store_true")
    args = parser.parse_args()
    trees = {"other": args.other.resolve(), "this": THIS_TREE}
    runs: dict[str, list[list[float]]] = {name: [] for name in trees}
    loads = []
    with tempfile.TemporaryDirectory(prefix="nodelab-kab-") as tmp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "NODELAB_HOME": tmp, "IPYTHONDIR": str(Path(tmp) / "ipython"),
               "ERL_EPMD_PORT": str(port), "NODELAB_PORTMAPPER_LINGER": "2"}
        for i in range(args.repeat + (1 if args.cached else 0)):
            for name, root in trees.items():
                result = one(root, env, args.cached, Path(tmp) / f"pycache-{name}")
                if not (args.cached and i == 0):
                    runs[name].append(result)
            loads.append(os.getloadavg()[0])
    print(f"{'cached' if args.cached else 'uncached'} bytecode; load {min(loads):.1f}-"
          f"{max(loads):.1f}; medians of {args.repeat}, CPU ms")
    print("| tree | " + " | ".join(STEPS) + " | nodelab's part, total |")
    print("|---|" + "---|" * (len(STEPS) + 1))
    for name, root in trees.items():
        cells = [statistics.median(r[k] for r in runs[name]) for k in range(len(STEPS))]
        total = statistics.median(sum(r[:3]) for r in runs[name])
        print(f"| {name} ({root}) | " + " | ".join(
            f"{c * 1000:.0f}" for c in cells[:3]) + f" | {cells[3]:.0f} | {total * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
