"""A node that a test drives from outside, one line of JSON at a time.

Some reliability tests need a node that is *not* the pytest process: a node in another
network namespace (another "host"), or a middle process that starts nodes of its own and
is then killed. This script is that node. It reads requests from stdin and answers on
stdout, one JSON object per line::

    -> {"code": "Node.start('alex@10.77.0.1', cookie='c', tick_time=1.0)"}
    <- {"ok": true, "value": "'alex@10.77.0.1'"}
    -> {"code": "1/0"}
    <- {"ok": false, "error": "ZeroDivisionError: division by zero", "traceback": "..."}

``code`` is run in one namespace that already holds nodelab's public names (``Node``,
``receive``, ``send``, ...); when its last statement is an expression, its ``repr`` is the
``value`` (and its plain value too, under ``data``, when it is JSON-serialisable). The code
runs in the main thread, which is a nodelab shell process like a notebook's cell.

stdin closing (the test ended, or died) ends the node: ``Node.stop()``, then exit. Run as
``python remote_control.py`` with ``PYTHONPATH`` pointing at the checkout.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import threading
import traceback
from typing import Any


def _run(code: str, namespace: dict[str, Any]) -> Any:
    tree = ast.parse(code, "<remote>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<remote>", "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), "<remote>", "eval"), namespace)


def _answer(stream: Any, answer: dict[str, Any]) -> None:
    stream.write(json.dumps(answer) + "\n")
    stream.flush()


def main() -> int:
    # Answers go to the real stdout; what the node's processes print goes to stderr, so a
    # stray print can never corrupt the protocol.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    import nodelab
    from nodelab import Node

    namespace: dict[str, Any] = {"__name__": "__main__"}
    namespace.update({name: getattr(nodelab, name) for name in nodelab.__all__})
    sys.modules["__main__"].__dict__.update(namespace)
    namespace = sys.modules["__main__"].__dict__  # shipped functions resolve names here
    _answer(protocol, {"ok": True, "value": "'ready'", "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            value = _run(request["code"], namespace)
        except BaseException as error:  # noqa: BLE001 - report everything to the test
            _answer(protocol, {"ok": False, "error": f"{type(error).__name__}: {error}",
                               "traceback": traceback.format_exc()})
            continue
        answer: dict[str, Any] = {"ok": True, "value": repr(value)}
        try:
            json.dumps(value)
            answer["data"] = value
        except (TypeError, ValueError):
            pass
        _answer(protocol, answer)
    # stdin closed: the test is done with us (or is gone). Stop within a bounded time even
    # if a peer hangs the stop.
    stopper = threading.Thread(target=Node.stop, daemon=True)
    stopper.start()
    stopper.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
