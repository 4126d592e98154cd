"""How fast nodelab's External Term Format codec is, next to erlang-py, in one run.

    .venv/bin/python benchmarks/term_format_bench.py [--rounds 7] [--number 20000]

Measures encode and decode of ``{:ping, pid, 42}`` (the message of a ping-pong round trip)
and of a ``GenServer.call`` message, ``{:"$gen_call", {pid, [:alias | ref]}, {:get, "key"}}``.
erlang-py is measured only when it can be imported (it is not a dependency of nodelab):

    .venv/bin/python -m pip install --target /tmp/erlpy erlang-py
    PYTHONPATH=/tmp/erlpy .venv/bin/python benchmarks/term_format_bench.py

The two codecs are measured in alternating rounds, so a machine that slows down for a while
slows both; the figures are the best and the median of the rounds, in microseconds of this
process's CPU time per operation. Compare them within one run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodelab.dist import term_format as etf
from nodelab.runtime.pids import Pid, Ref

try:
    import erlang as erlang_py  # erlang-py's module name
except ImportError:
    erlang_py = None

NODE = "kate@localhost"


def nodelab_cases() -> dict[str, object]:
    pid = Pid(NODE, 112, 1_700_000_001, 0)
    ref = Ref(NODE, (1234, 567_890, 42), 1_700_000_001)
    return {
        "{:ping, pid, 42}": (etf.Atom("ping"), pid, 42),
        "$gen_call": (etf.Atom("$gen_call"), (pid, etf.ImproperList([etf.Atom("alias")], ref)),
                      (etf.Atom("get"), "key")),
    }


def erlang_py_cases() -> dict[str, object]:
    e = erlang_py
    node = e.OtpErlangAtom(NODE.encode())
    creation = (1_700_000_001).to_bytes(4, "big")
    pid = e.OtpErlangPid(node, (112).to_bytes(4, "big"), bytes(4), creation)
    ref = e.OtpErlangReference(
        node, b"".join(w.to_bytes(4, "big") for w in (1234, 567_890, 42)), creation)
    return {
        "{:ping, pid, 42}": (e.OtpErlangAtom(b"ping"), pid, 42),
        "$gen_call": (e.OtpErlangAtom(b"$gen_call"),
                      (pid, e.OtpErlangList([e.OtpErlangAtom(b"alias"), ref], improper=True)),
                      (e.OtpErlangAtom(b"get"), e.OtpErlangBinary(b"key"))),
    }


def per_op_us(fn: Callable[[], object], number: int) -> float:
    # CPU time of this process, not wall time: on a busy machine the wall clock also
    # counts the time other processes held the CPU.
    return timeit.timeit(fn, number=number, timer=time.process_time) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20_000, help="operations per round")
    args = parser.parse_args(argv)

    codecs: dict[str, tuple[Callable, Callable, dict[str, object]]] = {
        "nodelab": (etf.encode, etf.decode, nodelab_cases()),
    }
    if erlang_py is None:
        print("erlang-py is not importable: measuring nodelab only "
              "(pip install --target /tmp/erlpy erlang-py; PYTHONPATH=/tmp/erlpy ...)")
    else:
        codecs["erlang-py"] = (erlang_py.term_to_binary, erlang_py.binary_to_term,
                               erlang_py_cases())

    samples: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for codec, (encode, decode, cases) in codecs.items():
            for case, term in cases.items():
                data = encode(term)
                for op, fn in (("encode", lambda e=encode, t=term: e(t)),
                               ("decode", lambda d=decode, b=data: d(b))):
                    samples.setdefault((case, op, codec), []).append(per_op_us(fn, args.number))

    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds of {args.number} ops,"
          " us per op (best / median)")
    print()
    names = list(codecs)
    print("| term | op | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for case in nodelab_cases():
        for op in ("encode", "decode"):
            cells = []
            for codec in names:
                values = samples[(case, op, codec)]
                cells.append(f"{min(values):.2f} / {statistics.median(values):.2f}")
            print(f"| `{case}` | {op} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
