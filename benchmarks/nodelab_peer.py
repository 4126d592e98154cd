"""The far node of the nodelab benchmark (kate's part), started by ``benchmarks/run.py``.

``python nodelab_peer.py NAME COOKIE`` starts node ``NAME@localhost`` and gives it what the
benchmark talks to, the same things ``beam/bench.exs peer`` gives the BEAM's node:

- a process registered as ``"bench_echo"`` that sends each ``(from, msg)`` back to ``from``
  (``"whoami"`` is answered with its own pid, so the driver can send to the pid directly,
  like the BEAM driver does);
- a task supervisor registered as ``"Bench.TaskSupervisor"``, when ``nodelab.otp`` exists.

Functions the driver spawns here (the counter, the "reply to me" lambda) travel as code and
find ``send``/``receive`` in this script's namespace, as a learner's lambdas would.

It prints ``READY <node> tasks=<yes|no: reason>`` and runs until its stdin closes (the
driver holds it, so this node cannot outlive the benchmark) or its lifetime runs out.
"""

from __future__ import annotations

import os
import sys
import threading

from nodelab import Node, receive, register, self, send, spawn

LIFETIME_S = 300.0


def echo() -> None:
    while True:
        sender, msg = receive()
        send(sender, self() if msg == "whoami" else msg)


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: nodelab_peer.py NAME COOKIE", file=sys.stderr)
        return 2
    name, cookie = sys.argv[1:]
    threading.Timer(LIFETIME_S, os._exit, args=(3,)).start()
    full_name = Node.start(name, cookie=cookie)
    register("bench_echo", spawn(echo))
    try:
        from nodelab.otp import TaskSupervisor

        TaskSupervisor.start_link(name="Bench.TaskSupervisor")
        tasks = "yes"
    except Exception as error:  # noqa: BLE001 - report any reason, the driver skips the figure
        tasks = f"no: {type(error).__name__}: {error}".replace("\n", " ")
    print(f"READY {full_name} tasks={tasks}", flush=True)
    sys.stdin.buffer.read()  # EOF: the driver is done (or gone)
    try:
        Node.stop()
    finally:
        os._exit(0)  # the echo and supervisor threads must not keep us alive


if __name__ == "__main__":
    sys.exit(main())
