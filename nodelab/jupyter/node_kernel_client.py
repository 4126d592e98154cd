"""Driving a node kernel: run code in it, and relay what it prints to the right caller.

:class:`NodeKernelClient` is the half of a :class:`~nodelab.jupyter.node_kernels.NodeKernel`
that talks to a running kernel, as jupyter_client's ``KernelClient`` is to its
``KernelManager`` (:mod:`nodelab.jupyter.node_kernels` starts, stops and sweeps kernels)::

    kate.execute("print('hi')", on_output=lambda stream, text: print(text, end=""))
    kate.execute("1 + 1").result_text          # '2'
    kate.watch(on_late_output)                 # what kate prints after an execute returned

**Output is never lost.** One reader thread per kernel drains its iopub socket (never
``get_msgs()``: it blocks forever once empty). A message whose parent is an
:meth:`NodeKernelClient.execute` still running goes to that call, which hands it to its
``on_output`` *in the calling thread* (so, in a notebook, it lands in the calling cell).
Anything else goes to the :meth:`NodeKernelClient.watch` callback, or is kept until one is
set (:meth:`NodeKernelClient.take_unclaimed`).

What ipykernel 7.4 does with output printed in the child when no cell runs there
(measured, see ``tests/jupyter/test_node_kernels.py``): it is **not** published with an
empty parent. ipykernel sets the streams' global parent on *every* shell request it
dispatches and keeps it after the request ended, so a thread that prints after our
``execute`` returned publishes under that finished request's ``msg_id`` (after its
``idle``) — or under whatever shell request came last (``kernel_info``, a completion...).
While a later ``execute`` runs, such output is published under the *running* request and
so arrives in that call's ``on_output``. Only before the kernel's first shell request is
the parent empty. The reader therefore treats "parent is not a running execute of ours" —
not "empty parent" — as "printed outside an execute".

The relay costs nothing measurable: an ``execute("1+1")`` round trip takes as long as a
bare client's (the figures are in :mod:`nodelab.jupyter.node_kernels`).
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NodelabError

__all__ = [
    "ExecuteResult", "NodeKernelClient", "NodeKernelDied", "NodeKernelError",
    "NodeKernelTimeout", "OutputCallback", "strip_ansi",
]

#: ``on_output(stream, text)``: ``stream`` is "stdout" or "stderr".
OutputCallback = Callable[[str, str], None]

#: Output printed outside any execute while nobody watches: kept up to this many pieces.
UNCLAIMED_LIMIT = 10_000

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class NodeKernelError(NodelabError):
    """A node kernel could not be started or used."""


class NodeKernelDied(NodeKernelError):
    """The node kernel process ended (see the log file named in the message)."""


class NodeKernelTimeout(NodeKernelError, TimeoutError):
    """The node kernel did not answer in time; it may still be busy."""


# --- results -----------------------------------------------------------------------------


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (ipykernel colours its tracebacks)."""
    return _ANSI.sub("", text)


@dataclass
class ExecuteResult:
    """What one :meth:`NodeKernelClient.execute` produced.

    ``status`` is "ok", "error" or "aborted". ``result_text`` is the ``text/plain`` of the
    value of the last expression (what ``Out[n]`` would show), ``None`` when there is none.
    On an error, ``ename``/``evalue``/``traceback`` are the remote exception's, and
    :attr:`error` is its traceback as plain text. ``outputs`` holds everything in the
    order it came, in nbformat's shape (``output_type`` "stream", "display_data",
    "execute_result", "error").
    """

    status: str
    execution_count: int | None = None
    result_text: str | None = None
    result_data: dict[str, Any] = field(default_factory=dict)
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    msg_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str | None:
        """The remote traceback as plain text (no colour codes), or None."""
        if self.status != "error":
            return None
        if self.traceback:
            return strip_ansi("\n".join(self.traceback))
        return f"{self.ename}: {self.evalue}"

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs
                       if o["output_type"] == "stream" and o["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs
                       if o["output_type"] == "stream" and o["name"] == "stderr")

    def raise_for_error(self) -> ExecuteResult:
        """Raise :class:`NodeKernelError` with the remote traceback if the code failed."""
        if self.status == "error":
            raise NodeKernelError(f"the code failed remotely with {self.ename}: {self.evalue}\n"
                                  f"{self.error}")
        if self.status != "ok":
            raise NodeKernelError(f"the code was not run (status {self.status!r}): an earlier "
                                  "request failed or the kernel was interrupted")
        return self


def _text_of(data: Mapping[str, Any]) -> str:
    text = data.get("text/plain", "")
    return "".join(text) if isinstance(text, list) else str(text)


# --- the client ----------------------------------------------------------------------------


class _Run:
    """An execute in flight: the reader thread feeds its iopub messages to ``queue``."""

    IDLE = object()

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()


class NodeKernelClient:
    """Runs code in a kernel and relays its output; thread-safe: executes from several
    threads run one after the other (as they would in the kernel anyway).

    ``client`` is a started jupyter_client ``KernelClient``. The owner of the kernel
    process says whether it is alive (:meth:`is_alive`) and why it is not (:meth:`_died`).
    """

    def __init__(self, label: str, client: Any) -> None:
        self.label = label
        self._kc = client
        self._shell_lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._runs_lock = threading.Lock()
        self._watcher: OutputCallback | None = None
        self._unclaimed: deque[tuple[str, str]] = deque(maxlen=UNCLAIMED_LIMIT)
        self._watch_lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None

    def is_alive(self) -> bool:
        """True while the kernel process runs."""
        raise NotImplementedError

    def _died(self, doing: str) -> NodeKernelDied:
        """The error to raise when the kernel is gone while it was ``doing`` something."""
        raise NotImplementedError

    # --- the iopub reader --------------------------------------------------------------

    def _start_reader(self) -> None:
        self._reader = threading.Thread(target=self._read_iopub, daemon=True,
                                        name=f"nodelab iopub {self.label}")
        self._reader.start()

    def _stop_reader(self) -> None:
        self._stopping.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(1.0)

    def _read_iopub(self) -> None:
        channel = self._kc.iopub_channel
        while not self._stopping.is_set():
            try:
                msg = channel.get_msg(timeout=0.2)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - socket closed under us: we are stopping
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            parent = (msg.get("parent_header") or {}).get("msg_id")
            with self._runs_lock:
                run = self._runs.get(parent) if parent else None
            if run is not None:
                if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                    run.queue.put(_Run.IDLE)
                else:
                    run.queue.put(msg)
            else:
                self._unrequested(msg)

    def _unrequested(self, msg: dict[str, Any]) -> None:
        text = _as_text(msg)
        if text is None:
            return
        stream, content = text
        with self._watch_lock:
            watcher = self._watcher
            if watcher is None:
                self._unclaimed.append((stream, content))
                return
        try:
            watcher(stream, content)
        except Exception as error:  # noqa: BLE001 - a bad watcher must not kill the reader
            print(f"nodelab: the output watcher of {self.label} failed: {error!r}",
                  file=sys.__stderr__)

    def watch(self, on_output: OutputCallback | None) -> OutputCallback | None:
        """Send output the kernel produces *outside* our executes to ``on_output``.

        That is: what a thread in the kernel prints after the execute that started it
        returned. Output kept while nobody watched is handed over at once. The callback
        runs on this kernel's reader thread (not a cell's): write with a
        :class:`~nodelab.jupyter.cell_output.CellOutput` to put it into a cell.
        ``watch(None)`` stops forwarding (output is kept again). Returns the old callback.
        """
        with self._watch_lock:
            old, self._watcher = self._watcher, on_output
            backlog = list(self._unclaimed) if on_output is not None else []
            if on_output is not None:
                self._unclaimed.clear()
        for stream, text in backlog:
            on_output(stream, text)  # type: ignore[misc]
        return old

    def take_unclaimed(self) -> list[tuple[str, str]]:
        """Output printed outside our executes and not yet watched; emptied by the call."""
        with self._watch_lock:
            items = list(self._unclaimed)
            self._unclaimed.clear()
        return items

    # --- running code ------------------------------------------------------------------

    def execute(self, code: str, *, on_output: OutputCallback | None = None,
                on_display: Callable[[dict[str, Any]], None] | None = None,
                timeout: float = 60.0, silent: bool = False,
                store_history: bool = True) -> ExecuteResult:
        """Run ``code`` in the kernel and wait for it; stream its output while it runs.

        ``on_output(stream, text)`` gets stdout/stderr text as it arrives, and the
        ``text/plain`` of displayed objects as "stdout" unless ``on_display(bundle)`` is
        given. It is called in *this* thread, so inside a cell it writes to that cell.
        The value and any exception come back in the :class:`ExecuteResult` (not through
        ``on_output``). Raises :class:`NodeKernelTimeout` after ``timeout`` seconds (the
        code keeps running there: :meth:`interrupt` it) and :class:`NodeKernelDied` if the
        kernel process ends meanwhile.
        """
        if not self.is_alive():
            raise self._died("cannot run code")
        with self._shell_lock:
            content = {"code": code, "silent": silent, "store_history": store_history,
                       "user_expressions": {}, "allow_stdin": False,
                       # A failed "window line" must not abort the lines typed after it.
                       "stop_on_error": False}
            msg = self._kc.session.msg("execute_request", content)
            msg_id = msg["header"]["msg_id"]
            run = _Run()
            with self._runs_lock:
                self._runs[msg_id] = run  # before sending: the reply may beat us
            try:
                self._kc.shell_channel.send(msg)
                deadline = time.monotonic() + timeout
                result = ExecuteResult(status="ok", msg_id=msg_id)
                self._collect(run, result, deadline, timeout, on_output, on_display)
                reply = self._shell_reply(msg_id, deadline, timeout)
            finally:
                with self._runs_lock:
                    self._runs.pop(msg_id, None)
        reply_content = reply["content"]
        result.status = reply_content.get("status", "error")
        result.execution_count = reply_content.get("execution_count")
        if result.status == "error" and result.ename is None:
            result.ename = reply_content.get("ename")
            result.evalue = reply_content.get("evalue")
            result.traceback = list(reply_content.get("traceback") or [])
        return result

    def _collect(self, run: _Run, result: ExecuteResult, deadline: float, timeout: float,
                 on_output: OutputCallback | None,
                 on_display: Callable[[dict[str, Any]], None] | None) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(timeout)
            try:
                item = run.queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if not self.is_alive():
                    raise self._died("died while running code") from None
                continue
            if item is _Run.IDLE:
                return
            kind, content = item["msg_type"], item["content"]
            if kind == "stream":
                result.outputs.append({"output_type": "stream", "name": content["name"],
                                       "text": content["text"]})
                if on_output is not None:
                    on_output(content["name"], content["text"])
            elif kind in ("display_data", "update_display_data"):
                result.outputs.append({"output_type": "display_data", "data": content["data"],
                                       "metadata": content.get("metadata", {})})
                if on_display is not None:
                    on_display(content["data"])
                elif on_output is not None:
                    text = _text_of(content["data"])
                    on_output("stdout", text if text.endswith("\n") else text + "\n")
            elif kind == "execute_result":
                result.outputs.append({"output_type": "execute_result",
                                       "data": content["data"],
                                       "metadata": content.get("metadata", {}),
                                       "execution_count": content.get("execution_count")})
                result.result_data = content["data"]
                result.result_text = _text_of(content["data"])
            elif kind == "error":
                result.outputs.append({"output_type": "error", "ename": content["ename"],
                                       "evalue": content["evalue"],
                                       "traceback": content["traceback"]})
                result.ename, result.evalue = content["ename"], content["evalue"]
                result.traceback = list(content["traceback"])

    def _shell_reply(self, msg_id: str, deadline: float, timeout: float) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(timeout)
            try:
                reply = self._kc.shell_channel.get_msg(timeout=min(remaining, 0.5))
            except queue.Empty:
                if not self.is_alive():
                    raise self._died("died while running code") from None
                continue
            if (reply.get("parent_header") or {}).get("msg_id") == msg_id:
                return reply
            # A reply to an execute that timed out earlier: nobody waits for it any more.

    def _timed_out(self, timeout: float) -> NodeKernelTimeout:
        return NodeKernelTimeout(
            f"{self.label} did not finish within {timeout:g} s. The code is still running "
            f"there: interrupt it (kernel.interrupt()), give it a longer timeout, or stop the "
            f"kernel (kernel.shutdown()). What it prints later is passed to kernel.watch().")


def _as_text(msg: dict[str, Any]) -> tuple[str, str] | None:
    """(stream, text) of an output message; None for status and other bookkeeping."""
    kind, content = msg.get("msg_type"), msg.get("content") or {}
    if kind == "stream":
        return content.get("name", "stdout"), content.get("text", "")
    if kind in ("display_data", "update_display_data", "execute_result"):
        text = _text_of(content.get("data") or {})
        return "stdout", text if text.endswith("\n") else text + "\n"
    if kind == "error":
        trace = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
        return "stderr", strip_ansi("\n".join(trace)) + "\n"
    return None
