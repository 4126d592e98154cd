"""nodelab — Erlang/Elixir OTP distribution, for real, from Python notebooks.

One OS process is one *node*; inside it, *processes* are threads with mailboxes that
send each other messages, link, monitor and supervise each other — across nodes too::

    from nodelab import Node, spawn_link, send, receive, self

    Node.start("alex")                       # iex --sname alex@localhost
    pid = Node.spawn_link("kate@localhost", lambda: Kate.say_name())
"""

from __future__ import annotations

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
from .node import Node, Process
from .otp import Application, Supervisor, Task, TaskSupervisor

__version__ = "0.1.0"

__all__ = [
    "ANY", "AlreadyAlive", "Application", "Supervisor", "Task", "TaskSupervisor",
    "CodeVersionMismatch", "Crash", "InvalidNodeName", "MessageTooLarge",
    "NoConnection", "Node", "NodelabError", "NotAlive", "Pid", "Process", "ProcessExit", "Ref",
    "demonitor", "exit", "flush", "group_leader", "link", "make_ref", "monitor", "on",
    "receive", "register", "self", "send", "spawn", "spawn_link", "spawn_monitor",
    "start_group_leader", "unlink", "unregister", "whereis",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext nodelab``: the magics (%node, %spawn_link, %%node, ...) in any kernel."""
    from .jupyter.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .jupyter.extension import unload_ipython_extension as unload

    unload(ipython)
