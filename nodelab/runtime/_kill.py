"""How an exit signal stops a running process without ever breaking nodelab's own state.

A kill does not raise inside its victim at some random bytecode. It sets the victim's
*pending exit* and wakes it (a :class:`~nodelab.runtime.mailbox.Signal` in its mailbox), and
the victim acts on it itself, synchronously, at its next *checkpoint*: ``receive``, ``send``,
``Process.sleep``, a print through its group leader, ``spawn``, ``link``, ``monitor`` — or
at the end of any nodelab call it was in. That is where the BEAM stops a process too: at
its next reduction, never in the middle of the runtime's own work.

A process that reaches no checkpoint (``while True: pass``, a long computation) is
interrupted asynchronously (``PyThreadState_SetAsyncExc``) by this node's one *reaper*
thread, after a grace period of a few milliseconds, and again with growing pauses while it
lives (an exception swallowed in a weakref callback or ``__del__`` must not let it run on).
Never while the process is inside nodelab code that must not be interrupted:

* Such code runs *masked* (:func:`enter` ... :func:`leave`): a per-process counter that
  only the process changes, with no lock — a message passes two masked sections, so they
  must cost next to nothing. The reaper decides under the process's ``kill_lock``: it sets
  ``injected`` first, then reads the counter, and injects only when it is zero.
  :func:`enter` raises the counter first, then reads ``injected``; when it is set, it
  cancels the injection under the same lock (:func:`cancel_injection`). Under the GIL these
  four steps happen in one order, so whichever side comes second sees the other's write:
  either the reaper sees the mask and does not inject, or :func:`enter` sees the flag and
  cancels. An injection can never land inside masked code. What was cancelled stays a
  pending exit, acted on when the outermost mask ends; an injection that fires while
  :func:`enter` is cancelling it came before the mask, so the counter goes back down and
  the exit goes on. Only the two ends of the fast path must not be split by Python's
  eval-breaker (where an asynchronous exception fires): between ``mask += 1`` and the read
  of ``injected`` there are only attribute loads and stores and an integer add, which
  never check it.
* Blocking waits inside masked code wait on something a kill wakes (the mailbox) or in
  slices, calling :func:`check` where no lock is held and nothing is half-updated.
* The injection goes only to the thread that the process registered itself, from inside
  its own thread, when it started running (``ident``); the process's exit path begins
  masked under the same lock, cancels a pending injection and ends it for good.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import sys
import threading
import time
from typing import Any

from nodelab.errors import ProcessExit
from nodelab.runtime._table import LocalProcess, ignore_signal, runtime
from nodelab.runtime.mailbox import Signal

#: How long a running process has to reach a checkpoint before it is interrupted.
GRACE = 0.005
#: The longest pause between two interruptions of a process that is still alive.
RETRY_MAX = 0.05
#: Slices of a blocking wait inside masked code (a lock, a full send queue).
SLICE = 0.01


class AsyncKill(ProcessExit):
    """Raised asynchronously in a process that reached no checkpoint; its reason is the
    process's pending exit."""

    def __init__(self, reason: object = None) -> None:
        super().__init__(reason)


def _set_async_exc(ident: int, exc: Any) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None)


# --- masks and checkpoints ------------------------------------------------------------------

def enter(proc: LocalProcess | None = None) -> LocalProcess | None:
    """Begin code that no asynchronous exit may interrupt; returns the token for :func:`leave`.

    Threads that are not processes, and shell processes, are never interrupted
    asynchronously: for them this costs one attribute read. For a process it costs a
    counter increment and one flag read, no lock (the module's text says why that is
    enough).
    """
    if proc is None:
        proc = getattr(runtime.current, "proc", None)
        if proc is None:
            return None
    if proc.is_shell:
        return None
    proc.mask += 1
    if proc.injected:
        cancel_injection(proc)
    return proc


def cancel_injection(proc: LocalProcess) -> None:
    """The slow half of :func:`enter`, right after the mask went up: an interruption that
    the reaper injected before it could see the mask is cancelled (the pending exit stays,
    and is acted on when the outermost mask ends).

    If the interruption fires here, before it could be cancelled, it is an exit that came
    before the masked section began: the mask goes back down and the exit goes on.
    """
    try:
        with proc.kill_lock:
            if proc.injected:
                proc.injected = False
                _set_async_exc(proc.ident, None)  # type: ignore[arg-type]
    except BaseException:
        proc.mask -= 1
        raise


def leave(proc: LocalProcess | None) -> None:
    """End masked code; at the outermost level, a pending exit is acted on here."""
    if proc is None:
        return
    proc.mask -= 1
    if proc.mask == 0:
        pending = proc.pending_exit
        if pending is not None and not proc.exiting:
            raise ProcessExit(pending[0], pending[1])


def check(proc: LocalProcess | None = None) -> None:
    """A checkpoint: raise the caller's pending exit, if any (call it only where no lock is
    held and no state is half-updated)."""
    if proc is None:
        proc = getattr(runtime.current, "proc", None)
        if proc is None:
            return
    pending = proc.pending_exit
    if pending is not None and not proc.exiting:
        raise ProcessExit(pending[0], pending[1])


def wait_lock(lock: threading.Lock, proc: LocalProcess | None = None) -> None:
    """Acquire ``lock`` in slices, acting on a pending exit between them (nothing held)."""
    if lock.acquire(False):
        return
    if proc is None:
        proc = getattr(runtime.current, "proc", None)
    while not lock.acquire(timeout=SLICE):
        check(proc)


# --- the process's own side ----------------------------------------------------------------

def started(proc: LocalProcess) -> None:
    """Called by a process in its own thread when it starts running: from now on a kill may
    interrupt this thread (and only this one)."""
    # One store, no lock: the reaper, under the lock, reads either None (and waits for a
    # later round) or this thread, which is the right one either way.
    proc.ident = threading.get_ident()


def begin_exit(proc: LocalProcess) -> None:
    """The process's exit path begins: masked for good, no injection pending or to come."""
    with proc.kill_lock:
        if not proc.exiting:
            proc.exiting = True
            proc.mask += 1
            proc.mailbox.on_signal = ignore_signal
        if proc.injected:
            proc.injected = False
            _set_async_exc(proc.ident, None)  # type: ignore[arg-type]


def end(proc: LocalProcess) -> None:
    """The process has ended: its thread is no longer its own."""
    # No lock needed: begin_exit() came first, and after it the reaper never injects
    # (it sees ``exiting`` under the lock), whatever ``ident`` says.
    proc.ident = None


def exit_reason(proc: LocalProcess, stop: ProcessExit) -> Any:
    return proc.pending_exit[0] if type(stop) is AsyncKill and proc.pending_exit else stop.reason


# --- the killer's side ---------------------------------------------------------------------

def request_exit(proc: LocalProcess, reason: Any, sender: Any) -> bool:
    """Make ``proc`` exit with ``reason``; False when it is gone or already on its way out.

    Called by any thread. For the caller's own process the exit is raised here, or at the
    end of the nodelab call the caller is in.
    """
    me = getattr(runtime.current, "proc", None)
    with proc.kill_lock:
        if proc.status != "running" or proc.exiting:
            return False
        proc.pending_exit = (reason, sender)
        proc.reason = reason
    if proc is me:
        if proc.mask == 0:
            raise ProcessExit(reason, sender)
        return True  # raised when the masked code ends
    proc.mailbox.put(Signal(reason, sender))  # wakes it if it waits in receive
    _install_unraisable_hook()
    _reaper.watch(proc)
    return True


def _install_unraisable_hook() -> None:
    # An interruption that lands in a ``__del__`` or a weakref callback is swallowed there
    # ("Exception ignored in"): Python hands it to sys.unraisablehook instead. Ours asks
    # the reaper to interrupt the process again at once, and keeps the noise to itself.
    # (Checked at every kill: a test runner or a shell may have put its own hook in place.)
    hook = sys.unraisablehook
    if getattr(hook, "_nodelab_next", None) is None:
        def unraisable(info: Any, _next: Any = hook) -> None:
            if isinstance(info.exc_value, AsyncKill) or info.exc_type is AsyncKill:
                proc = getattr(runtime.current, "proc", None)
                if proc is not None:
                    _reaper.again(proc)
                return
            _next(info)

        unraisable._nodelab_next = hook  # type: ignore[attr-defined]
        sys.unraisablehook = unraisable


class _Reaper:
    """One thread per node that interrupts processes which reached no checkpoint in time.

    Each watched process has one chain of due times (``proc.reaping`` is its number; 0
    when not watched): a process killed many times, or whose interruption was swallowed,
    is still interrupted by one chain only.
    """

    def __init__(self) -> None:
        self.changed = threading.Condition(threading.Lock())
        self.due: list[tuple[float, int, LocalProcess, int, int]] = []
        self.order = itertools.count(1)
        self.thread: threading.Thread | None = None

    def watch(self, proc: LocalProcess) -> None:
        with self.changed:
            if not proc.reaping:
                self._start_chain(proc, GRACE)

    def again(self, proc: LocalProcess) -> None:
        """Interrupt ``proc`` again very soon (the last interruption was swallowed)."""
        with self.changed:
            self._start_chain(proc, GRACE / 10)

    def _start_chain(self, proc: LocalProcess, delay: float) -> None:
        proc.reaping = next(self.order)
        self._schedule(proc, delay, 0, proc.reaping)
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, daemon=True, name="nodelab reaper")
            self.thread.start()

    def _schedule(self, proc: LocalProcess, delay: float, attempt: int, chain: int) -> None:
        heapq.heappush(self.due, (time.monotonic() + delay, next(self.order), proc, attempt, chain))
        if self.due[0][2] is proc:
            self.changed.notify()

    def _loop(self) -> None:
        while True:
            with self.changed:
                while True:
                    now = time.monotonic()
                    if self.due and self.due[0][0] <= now:
                        break
                    self.changed.wait(self.due[0][0] - now if self.due else None)
                batch = []
                while self.due and self.due[0][0] <= now:
                    entry = heapq.heappop(self.due)
                    if entry[2].reaping == entry[4]:  # else a newer chain replaced this one
                        batch.append(entry)
            for _, _, proc, attempt, chain in batch:
                alive = _interrupt(proc)
                with self.changed:
                    if proc.reaping != chain:
                        continue
                    if alive:
                        delay = min(GRACE * 2 ** (attempt + 1), RETRY_MAX)
                        self._schedule(proc, delay, attempt + 1, chain)
                    else:
                        proc.reaping = 0


def _interrupt(proc: LocalProcess) -> bool:
    """Raise the pending exit in ``proc``'s thread if it runs unmasked code; False when
    there is nothing left to do (it exited, or its exit path began)."""
    with proc.kill_lock:
        if proc.status == "exited" or proc.exiting or proc.pending_exit is None:
            return False
        if proc.mask == 0 and proc.ident is not None:
            # Published before the mask is read again: enter() raises the mask and then
            # reads this flag, without the lock. Whichever of the two comes second sees
            # the other's write, so either this sees the mask and does not inject, or
            # enter() sees the flag and cancels the injection under this lock.
            proc.injected = True
            if proc.mask == 0:
                _set_async_exc(proc.ident, AsyncKill)
    return True


_reaper = _Reaper()
