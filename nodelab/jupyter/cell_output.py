"""Route text to *one* notebook cell, from any thread, at any time.

A remote ``print`` must land in the cell that started the work, like ``IO.puts`` in a
process spawned from iex lands in that iex. Livebook does this with one
``Evaluator.IOProxy`` per evaluation; here the same job is done by a :class:`CellOutput`,
captured while the cell runs and handed to whoever will write for it later::

    output = CellOutput.capture()          # in the cell (e.g. a pre_run_cell hook)
    ...
    output.write("Hi, my name is Kate\\n")   # from any thread, now or after the cell ended
    output.flush()                          # before the cell returns: nbval sees it

Why this is needed: ipykernel >= 7 keeps the *current* request in a context variable and
in a global fallback that every shell request overwrites. A thread that is not told
otherwise prints into whatever cell runs at the moment it prints — or, when none runs,
under the last shell request, which may be a completion request of JupyterLab's that no
cell displays. ipykernel 7's answer is
``OutStream.set_thread_parent(parent)``: a per-thread (per-context) parent header for the
stream. :meth:`CellOutput.write` sets that parent for the duration of one write and resets
it, so the text goes into the kernel's own stream buffer *keyed by this cell's header*:
it is batched with, and kept in order with, everything else printed for this cell on the
same stream, and published on iopub with ``parent_header.msg_id`` = this cell's request.

What the front ends do with it:

* JupyterLab shows text by its parent, so text written after the cell finished still
  appears in the old cell.
* nbclient/nbval read only the messages of the running cell and stop at its ``idle``
  status: text must be *sent* before the cell returns. :meth:`CellOutput.flush` waits until
  it was handed to the iopub socket; ipykernel sends ``idle`` later on the same queue, so
  the text comes first.
* stdout and stderr are two streams; their relative order is not kept (a property of
  Jupyter, not of this module).

Outside a kernel (plain ``python``, terminal IPython, a headless node) :meth:`capture`
returns a writer to the process's real ``sys.__stdout__`` / ``sys.__stderr__``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["CellOutput", "FLUSH_TIMEOUT"]

#: How long :meth:`CellOutput.flush` waits for the kernel's iopub thread (seconds).
FLUSH_TIMEOUT = 10.0

_STREAMS = ("stdout", "stderr")


def _check_stream(stream: str) -> str:
    if stream not in _STREAMS:
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    return stream


def _kernel_and_shell() -> tuple[Any, Any]:
    """The running ipykernel and its shell, or ``(None, shell_or_None)`` outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython is a dependency, but a bare node should not need it here
        return None, None
    shell = get_ipython()
    return getattr(shell, "kernel", None), shell


def _is_outstream(obj: Any) -> bool:
    return hasattr(obj, "set_thread_parent") and hasattr(obj, "pub_thread")


def _unwrap_outstream(obj: Any) -> Any | None:
    """Find ipykernel's ``OutStream`` under wrappers such as nodelab's ``OutputRouter``.

    Wrappers that forward to another stream keep it in ``underlying`` (nodelab) or
    ``stream``/``_stream`` (common elsewhere). Writing to the OutStream itself, never to the
    wrapper, matters: the wrapper may route the write straight back to this CellOutput.
    """
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        # nodelab's OutputRouter forwards unknown attributes (set_parent, set_thread_parent)
        # to the stream under it, so it looks like an OutStream itself: unwrap it first.
        if _is_outstream(obj) and getattr(obj, "underlying", None) is None:
            return obj
        obj = next((getattr(obj, name) for name in ("underlying", "stream", "_stream")
                    if getattr(obj, name, None) is not None), None)
    return None


class CellOutput:
    """The output area of one cell: ``write`` and ``display`` land there, from any thread.

    Make one with :meth:`capture` while the cell runs. Keep it as long as something may
    still write for that cell (a group leader does); it holds no thread and no socket.
    """

    def __init__(self, parent_header: dict[str, Any], *, kernel: Any, shell: Any,
                 streams: dict[str, Any]) -> None:
        self.parent_header = parent_header
        self._kernel = kernel
        self._shell = shell
        self._streams = streams  # "stdout"/"stderr" -> ipykernel OutStream (may be missing)
        # Writes that have started but not returned: flush() waits for them, so that text a
        # relay is writing right now is not left behind.
        self._inflight = 0
        self._idle = threading.Condition()

    # --- making one ---------------------------------------------------------------------

    @classmethod
    def capture(cls) -> CellOutput:
        """The output of the cell that is executing now (a terminal writer outside a kernel).

        Call it *in* the cell (or in a ``pre_run_cell`` hook): it records that cell's
        request header. Called from a thread that the cell did not start, ipykernel answers
        with the most recent request, which is the running cell while one runs.
        """
        kernel, shell = _kernel_and_shell()
        if kernel is None:
            return TerminalOutput()
        from jupyter_client.session import extract_header

        parent = kernel.get_parent("shell") if hasattr(kernel, "get_parent") else None
        header = dict(extract_header(parent or {}))
        streams = {name: _unwrap_outstream(getattr(sys, name, None)) for name in _STREAMS}
        return cls(header, kernel=kernel, shell=shell, streams=streams)

    # --- facts --------------------------------------------------------------------------

    @property
    def msg_id(self) -> str | None:
        """The ``msg_id`` of the cell's execute request (what iopub messages carry as parent)."""
        return self.parent_header.get("msg_id")

    @property
    def in_kernel(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<CellOutput of request {self.msg_id}>"

    # --- writing ------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.notify_all()

    def write(self, text: str, stream: str = "stdout") -> None:
        """Put ``text`` into this cell's ``stream`` output ("stdout" or "stderr").

        Safe from any thread, also after the cell finished. Never raises for a closed
        kernel: the text then goes to the process's real stdout/stderr (the kernel log),
        because a writer that is a group leader must not die of it.
        """
        _check_stream(stream)
        if not isinstance(text, str):
            raise TypeError(f"write() takes a str, not {type(text).__name__}: "
                            f"convert it first, e.g. output.write(str(value))")
        if not text:
            return
        with self._writing():
            target = self._streams.get(stream)
            try:
                if target is not None:
                    # The stream buffers per parent header; this thread's parent is set only
                    # for this one write, so the thread's own prints are not redirected.
                    token = target.set_thread_parent(self.parent_header)
                    try:
                        target.write(text)
                    finally:
                        target.reset_thread_parent(token)
                else:
                    self._send("stream", {"name": stream, "text": text},
                               ident=b"stream." + stream.encode())
            except ValueError:  # "I/O operation on closed file": the kernel is going away
                _fallback(stream).write(text)

    def stream(self, stream: str = "stdout") -> TextIO:
        """A file object that writes here: ``print(..., file=output.stream())``."""
        return _StreamAdapter(self, _check_stream(stream))  # type: ignore[return-value]

    def display(self, obj: Any, *, raw: bool = False, metadata: dict | None = None) -> None:
        """Show ``obj`` richly (SVG, HTML, an image...) in this cell, after its text so far.

        ``raw=True`` takes ``obj`` as a ready MIME bundle, e.g.
        ``{"image/svg+xml": svg, "text/plain": "a tree"}``.
        """
        with self._writing():
            if raw:
                data, md = dict(obj), dict(metadata or {})
            else:
                data, md = self._shell.display_formatter.format(obj)
                md = {**md, **(metadata or {})}
            # Text written for this cell before the picture goes out first.
            self._flush_streams()
            publisher = getattr(self._shell, "display_pub", None)
            if publisher is not None and hasattr(publisher, "set_thread_parent"):
                token = publisher.set_thread_parent(self.parent_header)
                try:
                    publisher.publish(data, md)
                finally:
                    publisher.reset_thread_parent(token)
            else:
                self._send("display_data", {"data": data, "metadata": md, "transient": {}},
                           ident=b"display_data")

    def _send(self, msg_type: str, content: dict, *, ident: bytes) -> None:
        # Used only when sys.stdout holds no OutStream (someone replaced it): build the
        # message ourselves; the iopub socket wrapper queues it on the kernel's IO thread.
        self._kernel.session.send(self._kernel.iopub_socket, msg_type, content,
                                  parent=self.parent_header, ident=ident)

    # --- waiting for it to be out -------------------------------------------------------

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until what was written here has been sent on iopub (at most ``timeout`` s).

        Call it before the cell returns when its output must be seen by nbclient/nbval.
        Writes running in other threads right now are waited for first. Returns False if
        the kernel's IO thread did not answer in time (the text may then arrive late).
        """
        with self._idle:
            finished = self._idle.wait_for(lambda: self._inflight == 0, timeout)
        return self._flush_streams(timeout) and finished

    def _flush_streams(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        pub_thread = None
        for stream in self._streams.values():
            if stream is None or stream.pub_thread is None:
                continue
            # Schedules the buffer's publication on the IO thread and waits for it.
            stream.flush()
            pub_thread = stream.pub_thread
        if pub_thread is None:
            pub_thread = getattr(getattr(self._kernel, "iopub_socket", None), "io_thread", None)
        return _barrier(pub_thread, timeout)


def _barrier(pub_thread: Any, timeout: float) -> bool:
    """Wait until every send queued on the iopub thread so far has been handed to zmq.

    ``OutStream.flush`` returns once the buffer was turned into a message, but that
    message's send is queued behind it on the same IO thread. One more event through the
    same queue runs after it, so when it fires the text is on the socket.
    """
    thread = getattr(pub_thread, "thread", None)
    if pub_thread is None or thread is None or not thread.is_alive():
        return True
    if thread.ident == threading.get_ident():
        return True  # we are the IO thread: everything queued before us has run
    done = threading.Event()
    pub_thread.schedule(done.set)
    return done.wait(timeout)


def _fallback(stream: str) -> TextIO:
    target = sys.__stdout__ if stream == "stdout" else sys.__stderr__
    return target if target is not None else _Discard()


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class TerminalOutput(CellOutput):
    """Outside a kernel: the process's real stdout/stderr (a terminal, a log file)."""

    def __init__(self) -> None:
        super().__init__({}, kernel=None, shell=None, streams={})
        self._lock = threading.Lock()

    @property
    def in_kernel(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<CellOutput to this process's stdout/stderr>"

    def write(self, text: str, stream: str = "stdout") -> None:
        _check_stream(stream)
        if not isinstance(text, str):
            raise TypeError(f"write() takes a str, not {type(text).__name__}: "
                            f"convert it first, e.g. output.write(str(value))")
        if not text:
            return
        with self._writing(), self._lock:
            target = _fallback(stream)
            target.write(text)
            # A terminal user expects a remote line to show up now, not at exit.
            target.flush()

    def display(self, obj: Any, *, raw: bool = False, metadata: dict | None = None) -> None:
        if raw:
            text = str(dict(obj).get("text/plain", "<rich output: open it in a notebook>"))
        else:
            text = repr(obj)
        self.write(text + "\n")

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        with self._idle:
            finished = self._idle.wait_for(lambda: self._inflight == 0, timeout)
        for stream in _STREAMS:
            try:
                _fallback(stream).flush()
            except (OSError, ValueError):
                pass
        return finished


class _StreamAdapter:
    """``file=`` target for ``print``: one stream of one CellOutput."""

    def __init__(self, output: CellOutput, stream: str) -> None:
        self._output = output
        self.name = stream

    def write(self, text: str) -> int:
        self._output.write(text, self.name)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._output.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False
