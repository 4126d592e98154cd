"""Processes: the runtime's one facade. Other layers import this module and nothing below it::

    from nodelab.runtime import processes as P

A nodelab process is a thread with a mailbox, a set of links, the monitors that watch it,
a group leader (where its ``print`` goes) and a flag that says whether it traps exits.
The rules are the BEAM's; where each one lives:

==========================  =====================================================
spawning                    ``spawn``, ``spawn_link``, ``spawn_monitor``, ``start_process``
messages                    ``send``, ``receive``, ``take``, ``flush``, ``sleep``
patterns                    ``ANY``, ``on``, ``matches`` (receive's pattern language)
exits                       exit signals, ``exit``, the exit reasons
links                       links, monitors, node monitors
crash                       ``Crash``: the reason of an uncaught exception, crash reports
registry                    ``register``, ``unregister``, ``whereis``
attributes                  group leader, ``trap_exit``, the process dictionary
info                        ``info``, ``processes``, ``is_alive``, ``status``
hooks                       the error sink, the send tracer, exit hooks
transport / remote          the seam to other nodes, both ways
_kill                       how an exit signal stops a running process (checkpoints,
                            masked critical sections, the reaper)
_table, _workers            the process records and table; the threads that run them
==========================  =====================================================

Only functions and constants are offered here: no layer holds a process record.
"""

from __future__ import annotations

from nodelab.runtime._kill import check as check_exit
from nodelab.runtime._kill import enter as enter_critical
from nodelab.runtime._kill import leave as leave_critical
from nodelab.runtime._kill import wait_lock
from nodelab.runtime.attributes import (
    caller,
    default_group_leader,
    group_leader,
    led_by,
    new_placeholder_pid,
    process_dictionary,
    self,
    set_default_group_leader,
    set_group_leader_of_all,
    set_trap_exit,
    trap_exit,
)
from nodelab.runtime.crash import Crash
from nodelab.runtime.exits import (
    KILL,
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    exit,
    exited_shell,
)
from nodelab.runtime.hooks import (
    on_process_exit,
    set_error_sink,
    set_tracer,
    tracer,
    write_error,
)
from nodelab.runtime.info import (
    info,
    is_alive,
    is_shell,
    links,
    processes,
    status,
    table_problems,
    worker_threads,
)
from nodelab.runtime.links import (
    demonitor,
    exit_from,
    forget_monitor,
    forget_watcher,
    hand_over_monitor,
    is_monitoring,
    link,
    monitor,
    unlink,
    unwatch_node,
    watch_node,
)
from nodelab.runtime.mailbox import NO_MATCH
from nodelab.runtime.messages import flush, io_write_async, receive, send, sleep, take
from nodelab.runtime.patterns import ANY, matches, on
from nodelab.runtime.registry import (
    register,
    registered,
    registered_name,
    unregister,
    whereis,
)
from nodelab.runtime.remote import (
    add_remote_link,
    add_remote_monitor,
    deliver,
    deliver_named,
    node_down,
    remote_down,
    remote_exit,
    remove_remote_link,
    remove_remote_monitor,
    reply,
    spawn_for_peer,
    spawn_reply,
)
from nodelab.runtime.spawning import spawn, spawn_link, spawn_monitor, start_process
from nodelab.runtime.transport import Transport, current_transport, set_transport


def transport() -> Transport | None:
    """The transport to other nodes while this node is alive, else None (read it once)."""
    return current_transport()


__all__ = [
    # constants
    "ANY", "KILL", "KILLED", "NOCONNECTION", "NOPROC", "NORMAL", "NO_MATCH", "Crash",
    # processes
    "spawn", "spawn_link", "spawn_monitor", "start_process", "self", "exit", "exited_shell",
    "send", "receive", "take", "flush", "sleep", "on", "matches",
    "link", "unlink", "monitor", "demonitor", "is_monitoring", "forget_monitor",
    "forget_watcher", "hand_over_monitor", "exit_from", "watch_node", "unwatch_node",
    "register", "unregister", "whereis", "registered", "registered_name",
    "caller", "group_leader", "led_by", "default_group_leader", "set_default_group_leader",
    "set_group_leader_of_all", "set_trap_exit", "trap_exit", "process_dictionary",
    "new_placeholder_pid", "io_write_async",
    "info", "processes", "is_alive", "status", "links", "is_shell", "worker_threads",
    "table_problems",
    # what other layers plug in
    "write_error", "set_error_sink", "tracer", "set_tracer", "on_process_exit",
    # critical sections for the transport
    "enter_critical", "leave_critical", "check_exit", "wait_lock",
    # the seam to other nodes, both ways
    "Transport", "transport", "current_transport", "set_transport",
    "deliver", "deliver_named", "add_remote_link", "remove_remote_link", "remote_exit",
    "add_remote_monitor", "remove_remote_monitor", "remote_down", "spawn_for_peer",
    "spawn_reply", "reply", "node_down",
]
