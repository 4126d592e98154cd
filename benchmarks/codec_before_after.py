"""The wire codec of a past commit against today's, in one process, same minute (issue 12).

    .venv/bin/python benchmarks/codec_before_after.py [--commit bf05e28]

Loads ``nodelab/dist/shipment.py`` and ``nodelab/runtime/pids.py`` as they were at
``--commit`` (``git show``) beside today's modules, and prints encode / decode microseconds
per message (fastest of 7 batches of 20,000) for the messages of ``run.py``'s figures 1 and
2, a message with a local PID and a ref, and a lambda: inside a plain message and as a
shipment (what a spawn sends).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def fastest(fn, n: int = 20_000) -> float:
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n / 1000)
    return best


def old_module(name: str, commit: str, path: str, folder: Path) -> ModuleType:
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    file = folder / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickle finds the old classes by this name
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="bf05e28")
    args = parser.parse_args()
    from nodelab.dist import shipment
    from nodelab.runtime import pids

    with tempfile.TemporaryDirectory() as folder:
        sides = [(f"before ({args.commit})",
                  old_module("old_shipment", args.commit, "nodelab/dist/shipment.py", Path(folder)),
                  old_module("old_pids", args.commit, "nodelab/runtime/pids.py", Path(folder))),
                 ("after (today)", shipment, pids)]
        print("| message | codec | encode us | decode us | both | bytes |")
        print("|---|---|---|---|---|---|")
        for label, codec, P in sides:
            fn = eval("lambda: 1", {"__name__": "__main__"})  # typed in a notebook
            for name, message in (("(pid, 'ping')", (P.Pid("kate@localhost", 42, 7), "ping")),
                                  ("('m', 12345)", ("m", 12345)),
                                  ("(local pid, ref, 'x')",
                                   (P.Pid.of_this_node(3), P.make_ref(), "x"))):
                data = codec.dumps(message)
                enc = fastest(lambda m=message, c=codec: c.dumps(m))
                dec = fastest(lambda d=data, c=codec: c.loads(d))
                print(f"| {name} | {label} | {enc:.2f} | {dec:.2f} | {enc + dec:.2f} "
                      f"| {len(data)} |")
            for name, message in (("(lambda, 'x')", (fn, "x")),
                                  ("('fn', lambda, ()) shipment", ("fn", fn, ()))):
                print(f"| {name} | {label} | {fastest(lambda m=message, c=codec: c.dumps(m)):.2f}"
                      " | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
