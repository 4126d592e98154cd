"""What other layers plug into the runtime: where errors are written, a tracer of every
send, and hooks run as a process exits. Each is registered by the layer that needs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodelab.runtime._table import _write_stderr, runtime
from nodelab.runtime.pids import Pid

#: ``hook(pid, group_leader)``, called in a process's own thread as it exits, while it still
#: runs (a group leader's router sends the process's last unfinished line this way).
ExitHook = Callable[[Pid, "Pid | None"], None]
exit_hooks: list[ExitHook] = []


def on_process_exit(hook: ExitHook) -> None:
    """Register ``hook(pid, group_leader)``, called in every process's thread as it exits."""
    if hook not in exit_hooks:
        exit_hooks.append(hook)


def write_error(text: str) -> None:
    """Write ``text`` where this node writes its errors (its console, or a test's capture)."""
    runtime.error_sink(text)


def set_error_sink(sink: Callable[[str], None] | None) -> Callable[[str], None]:
    """Send this node's error lines to ``sink`` (None: back to stderr); returns the old one."""
    old = runtime.error_sink
    runtime.error_sink = sink if sink is not None else _write_stderr
    return old


def tracer() -> Callable[[Pid | None, Any, Any], None] | None:
    """The function called as ``tracer(sender, destination, message)`` on every send, or None."""
    return runtime.tracer


def set_tracer(fn: Callable[[Pid | None, Any, Any], None] | None) -> None:
    """Start (or with None, stop) tracing every send of this node (the sequence pictures)."""
    runtime.tracer = fn
