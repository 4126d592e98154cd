"""The threads that run processes, and a process's life in its thread: start, run, exit.

Starting a thread costs a round trip between two threads (``Thread.start`` waits for the
new thread to run); handing a process to an idle worker costs one queue put. So a remote
spawn or a supervised task does not pay for a new thread every time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

from nodelab.errors import ProcessExit
from nodelab.runtime import _kill
from nodelab.runtime._table import LocalProcess, runtime
from nodelab.runtime.crash import Crash, report_crash
from nodelab.runtime.exits import KILLED, NORMAL, terminate
from nodelab.runtime.hooks import exit_hooks


class _Workers:
    MAX_IDLE = 64
    IDLE_EXIT = 30.0

    def __init__(self) -> None:
        self.idle: list[SimpleQueue] = []
        self.busy = 0
        self.lock = threading.Lock()

    def run(self, proc: LocalProcess, fn: Callable[..., Any], args: tuple) -> None:
        """Hand ``proc`` to a worker (called masked: the hand-off is never cut in two)."""
        with self.lock:
            inbox = self.idle.pop() if self.idle else None
            self.busy += 1
        if inbox is None:
            inbox = SimpleQueue()
            try:
                threading.Thread(target=self._work, args=(inbox,), daemon=True,
                                 name="nodelab process").start()
            except BaseException:
                with self.lock:
                    self.busy -= 1
                raise
        inbox.put((proc, fn, args))

    def _work(self, inbox: SimpleQueue) -> None:
        while True:
            try:
                proc, fn, args = inbox.get(timeout=self.IDLE_EXIT)
            except Empty:
                with self.lock:
                    if inbox in self.idle:  # nobody picked this worker meanwhile: retire
                        self.idle.remove(inbox)
                        return
                continue  # a process is on its way
            try:
                _run(proc, fn, args)
            except BaseException:  # noqa: BLE001 - an interruption that landed as the exit began
                _kill.begin_exit(proc)
                _finish(proc, _pending_reason(proc, KILLED), None)
            runtime.current.proc = None
            with self.lock:
                self.busy -= 1
                if len(self.idle) >= self.MAX_IDLE:
                    return
                self.idle.append(inbox)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.busy, len(self.idle)


workers = _Workers()


def _pending_reason(proc: LocalProcess, default: Any) -> Any:
    pending = proc.pending_exit
    return pending[0] if pending is not None else default


def _run(proc: LocalProcess, fn: Callable[..., Any], args: tuple) -> None:
    runtime.current.proc = proc
    _kill.started(proc)
    crash: Crash | None = None
    try:
        _kill.check(proc)  # killed before it started running
        fn(*args)
    except BaseException as error:  # noqa: BLE001 - any escape ends the process
        _kill.begin_exit(proc)  # first: from here on nothing interrupts the exit
        if isinstance(error, ProcessExit):
            reason = _kill.exit_reason(proc, error)
        elif proc.pending_exit is not None:
            reason = proc.pending_exit[0]  # an exit signal, while it handled an exception
        else:
            reason = crash = Crash.from_exception(error)
    else:
        _kill.begin_exit(proc)
        reason = _pending_reason(proc, NORMAL)
    _finish(proc, reason, crash)


def _finish(proc: LocalProcess, reason: Any, crash: Crash | None) -> None:
    """The exit path, masked: report, flush output, leave the table, tell links/monitors."""
    if proc.status == "exited":
        return
    if crash is not None:
        report_crash(proc, crash)
    # Still "running": sending the last unfinished line to a remote group leader waits for
    # its reply as this process, not as a stand-in shell process.
    for hook in list(exit_hooks):
        try:
            hook(proc.pid, proc.group_leader)
        except Exception:  # noqa: BLE001 - a broken hook must not keep a process alive
            pass
    proc.status = "exiting"
    terminate(proc, reason)
    _kill.end(proc)
