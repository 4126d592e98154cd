"""What a fast path for plain messages would save (issue 12, the codec: the largest step).

    .venv/bin/python benchmarks/prototypes/codec_fastpath.py

Encodes and decodes the round trip's message ``(pid, "ping")`` — and ``("m", i)``, the
throughput figure's — three ways, in one run, fastest of 7 batches (us per message):

- **today**: ``shipment.dumps`` / ``shipment.loads``. Until 2026-12-02 that was a
  ``BytesIO`` and a ``Pickler`` subclass with ``reducer_override`` per message,
  ``Pid.__reduce__`` and the ``_Unpickler``'s ``find_class``; since, it is the fast path this
  prototype argued for (C ``pickle``, a PID as its fields), so "today" and "plain pickle"
  are now close — ``codec_before_after.py`` compares it with the old codec;
- **plain pickle**: C ``pickle.dumps(m, 5)`` / ``pickle.loads`` with the same ``Pid`` class
  (what a "no function inside" fast path would cost; a message with a lambda raises
  ``PicklingError`` there and would fall back to today's pickler);
- **lower bound**: ``pickle`` of the same data with the PID as a plain tuple;
- the fallback's price: plain pickle raising on a lambda, then today's pickler.
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from nodelab.dist import shipment
from nodelab.runtime.pids import Pid


def fastest(fn, n: int = 20_000) -> float:
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n / 1000)
    return best


def main() -> int:
    pid = Pid("kate@localhost", 42, 7)
    messages = {"(pid, 'ping')": (pid, "ping"), "('m', 12345)": ("m", 12345)}
    rows = []
    for label, message in messages.items():
        today_bytes = shipment.dumps(message)
        plain_bytes = pickle.dumps(message, 5)
        bound = (("kate@localhost", 42, 7, 0), "ping") if message[0] is pid else message
        bound_bytes = pickle.dumps(bound, 5)
        rows.append((label, "today: shipment.dumps / loads",
                     fastest(lambda m=message: shipment.dumps(m)),
                     fastest(lambda b=today_bytes: shipment.loads(b))))
        rows.append((label, "plain pickle (same Pid)",
                     fastest(lambda m=message: pickle.dumps(m, 5)),
                     fastest(lambda b=plain_bytes: pickle.loads(b))))
        rows.append((label, "lower bound: the PID as a plain tuple",
                     fastest(lambda m=bound: pickle.dumps(m, 5)),
                     fastest(lambda b=bound_bytes: pickle.loads(b))))

    def fallback() -> None:
        message = (lambda: 1, "x")
        try:
            pickle.dumps(message, 5)
        except (pickle.PicklingError, AttributeError):
            shipment.dumps(message)

    print("| message | codec | encode us | decode us | both |")
    print("|---|---|---|---|---|")
    for label, codec, enc, dec in rows:
        print(f"| {label} | {codec} | {enc:.2f} | {dec:.2f} | {enc + dec:.2f} |")
    shipped = (lambda: 1, "x")
    today = fastest(lambda: shipment.dumps(shipped))
    print(f"| (lambda, 'x') | today: shipment.dumps | {today:.2f} | | |")
    print(f"| (lambda, 'x') | plain pickle fails, then shipment.dumps | {fastest(fallback):.2f}"
          " | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
