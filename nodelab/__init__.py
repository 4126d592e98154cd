"""nodelab — Erlang/Elixir OTP distribution, for real, from Python notebooks.

One OS process is one *node*; inside it, *processes* are threads with mailboxes that
send each other messages, link, monitor and supervise each other — across nodes too::

    from nodelab import Node, spawn_link, send, receive, self

    Node.start("alex")                       # iex --sname alex@localhost
    pid = Node.spawn_link("kate@localhost", lambda: Kate.say_name())
"""

from __future__ import annotations

from nodelab.dist import shipment
from nodelab.dist.names import InvalidNodeName
from nodelab.dist.term_format import Atom, ImproperList
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
from .node import Node, Process
from .otp import Application, Supervisor, Task, TaskSupervisor

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

#: Names every node's namespace has, as iex has ``Kernel``'s functions everywhere: a function
#: shipped to a node calls ``send``, ``receive`` or ``Node.self()`` there without importing
#: them. All of the public surface but the errors and what a shipped function never calls.
PRELUDE = tuple(name for name in __all__ if name not in {
    "AlreadyAlive", "Application", "CodeVersionMismatch", "Crash", "InvalidNodeName",
    "MessageTooLarge", "NoConnection", "NodelabError", "NotAlive", "ProcessExit",
    "Supervisor", "start_group_leader",
})
shipment.set_prelude({name: globals()[name] for name in PRELUDE})


def load_ipython_extension(ipython) -> None:
    """``%load_ext nodelab``: the magics (%node, %spawn_link, %%node, ...) in any kernel."""
    from .jupyter.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .jupyter.extension import unload_ipython_extension as unload

    unload(ipython)
