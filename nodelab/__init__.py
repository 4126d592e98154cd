"""nodelab — Erlang/Elixir OTP distribution, for real, from Python notebooks.

One OS process is one *node*; inside it, *processes* are threads with mailboxes that
send each other messages, link, monitor and supervise each other — across nodes too::

    from nodelab import Node, spawn_link, send, receive, self

    Node.start("alex")                       # iex --sname alex@localhost
    pid = Node.spawn_link("kate@localhost", lambda: Kate.say_name())
"""

from __future__ import annotations

import importlib
from typing import Any

from nodelab.dist import shipment
from nodelab.dist.names import InvalidNodeName
from nodelab.runtime.group_leader import start_group_leader
from nodelab.runtime.pids import Pid, Ref, make_ref
from nodelab.runtime.processes import (
    ANY,
    Crash,
    demonitor,
    exit,
    flush,
    group_leader,
    link,
    monitor,
    on,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    unlink,
    unregister,
    whereis,
)

from .errors import (
    AlreadyAlive,
    CodeVersionMismatch,
    MessageTooLarge,
    NoConnection,
    NodelabError,
    NotAlive,
    ProcessExit,
)
from .node import Node, Process, set_application_starter

__version__ = "0.1.0"

# The public surface, listed once: the README and docs/architecture.md describe these names,
# and the prelude below is drawn from them.
__all__ = [
    "ANY", "AlreadyAlive", "Application", "Atom", "ImproperList", "Supervisor", "Task",
    "TaskSupervisor",
    "CodeVersionMismatch", "Crash", "InvalidNodeName", "MessageTooLarge",
    "NoConnection", "Node", "NodelabError", "NotAlive", "Pid", "Process", "ProcessExit", "Ref",
    "demonitor", "exit", "flush", "group_leader", "link", "make_ref", "monitor", "on",
    "receive", "register", "self", "send", "spawn", "spawn_link", "spawn_monitor",
    "start_group_leader", "unlink", "unregister", "whereis",
]

#: Where the names of the public surface that ``import nodelab`` does not import live. The
#: OTP layer and the Erlang term codec are a third of the package's code, and a node kernel
#: needs neither before its first cell: ``from nodelab import Task`` (or ``nodelab.Task``)
#: imports them then, through the module ``__getattr__`` below.
_LAZY = {
    "Application": "nodelab.otp", "Supervisor": "nodelab.otp", "Task": "nodelab.otp",
    "TaskSupervisor": "nodelab.otp", "Atom": "nodelab.dist.term_format",
    "ImproperList": "nodelab.dist.term_format",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        if name == "otp":  # ``import nodelab; nodelab.otp.X`` worked when it was imported here
            return importlib.import_module("nodelab.otp")
        raise AttributeError(f"module 'nodelab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _start_application(app: str) -> Any:
    # ``Node.start(name, app="chat")``: the node layer cannot import the OTP layer above it,
    # and the OTP layer is imported on first use, so the package hands it this starter.
    from .otp import Application

    return Application.ensure_all_started(app)


set_application_starter(_start_application)

#: Names every node's namespace has, as iex has ``Kernel``'s functions everywhere: a function
#: shipped to a node calls ``send``, ``receive`` or ``Node.self()`` there without importing
#: them. All of the public surface but the errors and what a shipped function never calls.
PRELUDE = tuple(name for name in __all__ if name not in {
    "AlreadyAlive", "Application", "CodeVersionMismatch", "Crash", "InvalidNodeName",
    "MessageTooLarge", "NoConnection", "NodelabError", "NotAlive", "ProcessExit",
    "Supervisor", "start_group_leader",
})
# The prelude's lazy names are imported when a namespace needs them (dist/shipment.py).
shipment.set_prelude({name: globals()[name] for name in PRELUDE if name not in _LAZY},
                     lazy={name: (lambda name=name: __getattr__(name))
                           for name in PRELUDE if name in _LAZY})


def load_ipython_extension(ipython) -> None:
    """``%load_ext nodelab``: the magics (%node, %spawn_link, %%node, ...) in any kernel."""
    from .jupyter.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .jupyter.extension import unload_ipython_extension as unload

    unload(ipython)
