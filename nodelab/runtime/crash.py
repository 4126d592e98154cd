"""Crashes: the exit reason of a process that raised an exception it did not catch, and
the crash report that the node logs (and shows at the process's group leader)."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

from nodelab.runtime import pids
from nodelab.runtime._table import LocalProcess, runtime
from nodelab.runtime.messages import io_write_async

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Crash:
    """The exit reason of a process that raised an exception it did not catch.

    ``kind`` is the exception's class name, ``message`` its text, ``traceback`` the
    formatted traceback *as seen on the node where it ran*, ``node`` that node's name.
    """

    kind: str
    message: str
    traceback: str
    node: str

    @classmethod
    def from_exception(cls, error: BaseException) -> Crash:
        # The first frames are nodelab's own (the process's start); the learner's code
        # starts below them, so the traceback starts there too.
        tb = error.__traceback__
        while (tb is not None and tb.tb_next is not None
               and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)):
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(error), error, tb))
        return cls(type(error).__name__, str(error), text, pids.local_node())

    def explain(self) -> str:
        return f"an exception was raised on {self.node}:\n    ** ({self.kind}) {self.message}"

    def __repr__(self) -> str:
        return f"Crash({self.kind}: {self.message!s}, node={self.node!r})"


def report_crash(proc: LocalProcess, crash: Crash) -> None:
    """Log a crash on this node, and show it at the process's group leader when that is
    somewhere else (the BEAM shows a remote crash on the node that spawned it, too)."""
    text = (
        f"[error] Process {proc.pid!r} on {crash.node} raised an exception\n"
        f"** ({crash.kind}) {crash.message}\n{crash.traceback}"
    )
    runtime.error_sink(text)
    gl = proc.group_leader
    if gl is not None and gl != runtime.default_group_leader:
        io_write_async(gl, text if text.endswith("\n") else text + "\n", "stderr")
