"""The prelude in a real window kernel: ready without the OTP layer, every name there on need.

``%node start kate`` must not wait for kate to import ``nodelab.otp`` and the Erlang term
codec (a third of the package), yet the lesson promises that ``Task``, ``TaskSupervisor``,
``Atom``... are on every node from the start: a function shipped to kate that names them
finds them, and so does every cell typed into kate's window. The test process is node
alex; kate is a real kernel process started as ``%node start kate`` starts it.
"""

from __future__ import annotations

import ast

import pytest

from nodelab import ANY, Atom, Node, Task, receive, self, send
from nodelab.jupyter.windows import start_window

COOKIE = "secret_token"

#: The modules a window kernel no longer imports before it is ready.
NOT_AT_START = ("nodelab.otp", "nodelab.dist.term_format")
#: Run in kate without naming any lazy name (the startup code's kind of cell: no history).
LOADED = ("sorted(m for m in __import__('sys').modules if m.startswith("
          f"{NOT_AT_START!r}))")
#: The prelude's names kate has not imported yet.
LAZY = "sorted(__import__('nodelab.dist.shipment').dist.shipment.lazy_prelude_names())"


@pytest.fixture(scope="module")
def alex():
    if Node.alive():
        yield Node.self()
        return
    name = Node.start("lazyalex", cookie=COOKIE, tick_time=1.0)
    yield name
    Node.stop()


@pytest.fixture(scope="module")
def kate(alex, wait_gone):
    window = start_window("lazykate@localhost", cookie=Node.get_cookie())
    yield window
    pid = window.os_pid
    window.stop()
    wait_gone(pid, 5.0)


def in_kate(kate, code: str, *, history: bool) -> object:
    result = kate.kernel.execute(code, timeout=30, store_history=history)
    assert result.ok, result.error
    return ast.literal_eval(result.result_text)


def test_a_window_is_ready_without_otp_and_gets_the_prelude_on_need(kate) -> None:
    # Ready: kate is a node, and neither the OTP layer nor the term codec is imported.
    assert in_kate(kate, LOADED, history=False) == []
    assert in_kate(kate, LAZY, history=False) == ["Atom", "ImproperList", "Task",
                                                  "TaskSupervisor"]

    # A function shipped to kate that names Task and Atom, which nobody there imported:
    # rebuilt in kate's namespace, it finds them (imported on its arrival).
    me = self()
    Node.spawn(kate.node, lambda: send(me, ("names", Task.__module__, Atom("ok"))))
    assert receive(("names", ANY, ANY), timeout=10) == ("names", "nodelab.otp.task", Atom("ok"))
    assert in_kate(kate, LOADED, history=False) != []

    # A cell without history that names a lazy name gets it before it runs.
    assert in_kate(kate, "ImproperList.__name__", history=False) == "ImproperList"
    assert in_kate(kate, LAZY, history=False) == ["TaskSupervisor"]

    # The first cell a person types finds the whole prelude, named or not.
    assert in_kate(kate, "sorted(set(__nodelab.PRELUDE) - set(globals()))", history=True) == []
