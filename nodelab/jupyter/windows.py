"""Other nodes' "terminal windows", opened from a notebook.

The lesson opens a second and a third terminal and types into each. Here each of those
windows is a kernel process of its own that is a node (``%node start kate``), and
``%%node kate`` types a cell into it. What that window would show is shown in the cell
that looked at it, every line marked with the node that printed it::

    [kate@localhost] hi

A window shows two kinds of text, as a real terminal would: the output of the code typed
into it, and what the node's *own* processes printed meanwhile (a supervised task that
ran on kate prints there, because its group leader is kate's). The second kind is kept in
kate until the next ``%%node kate`` cell looks, so it is never lost and always shown in a
cell that is still running — which is what keeps nbval's view of the notebook stable.

A window can also be a real Elixir node (``%node start kate --elixir``): see
:mod:`nodelab.jupyter.beam_windows`. Both kinds live in one table here, and both label
what they show with :class:`Labeller`.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..errors import NodelabError

if TYPE_CHECKING:
    from .beam_windows import BeamWindow

#: Set in the environment of a window kernel: its node's own output is kept for the
#: notebook that opened it.
WINDOW_ENV = "NODELAB_WINDOW"

START_TIMEOUT = 60.0
CELL_TIMEOUT = 60.0

_windows: dict[str, Window | BeamWindow] = {}
_lock = threading.Lock()


class Labeller:
    """Writes another node's text into the running cell, each line marked with the node::

        [kate@localhost] Hi, my name is Kate

    A piece of text that does not end a line is continued by the next piece of the same
    stream without a second mark (``IO.write "a"`` then ``IO.puts "b"`` is one line).
    """

    def __init__(self, node: str) -> None:
        self.prefix = f"[{node}] "
        self._at_line_start = {"stdout": True, "stderr": True}

    def write(self, stream: str, text: str) -> None:
        if not text:
            return
        lines = text.splitlines(keepends=True)
        marked = "".join(line if index == 0 and not self._at_line_start[stream]
                         else self.prefix + line for index, line in enumerate(lines))
        self._at_line_start[stream] = text.endswith(("\n", "\r"))
        (sys.stdout if stream == "stdout" else sys.stderr).write(marked)

    def end_lines(self) -> None:
        """End a line left open, so that what comes next (a value) starts a line of its own."""
        for stream, at_start in self._at_line_start.items():
            if not at_start:
                self.write(stream, "\n")


class Window:
    """A node kernel that this notebook started, and the way to type into it."""

    kind = "nodelab"

    def __init__(self, node: str, kernel: Any) -> None:
        self.node = node
        self.kernel = kernel
        self._labeller = Labeller(node)

    @property
    def os_pid(self) -> int:
        return self.kernel.os_pid

    def alive(self) -> bool:
        return self.kernel.is_alive()

    def _relay(self, stream: str, text: str) -> None:
        self._labeller.write(stream, text)

    def _execute(self, code: str) -> Any:
        result = self.kernel.execute(code, on_output=self._relay, timeout=CELL_TIMEOUT)
        return result

    def _relay_unclaimed(self) -> None:
        # Text the window's kernel printed outside any cell of ours (a plain thread of
        # kate's that printed after the last look).
        for stream, text in self.kernel.take_unclaimed():
            self._relay(stream, text)

    def run(self, cell: str) -> None:
        """Type ``cell`` into this window and show what the window shows."""
        self._relay_unclaimed()
        self._execute("__import__('nodelab.jupyter.windows').jupyter.windows.show_pending()")
        # ipykernel publishes a thread's output up to flush_interval after the print, under
        # the request that came before: text printed just before this look can still have
        # been on its way. Each execute ends with a flush and the iopub messages come in
        # order, so once the one above returned all of it has arrived: show it now, before
        # the cell's own output, not at the next look.
        self._relay_unclaimed()
        result = self._execute(cell)
        self._execute("__import__('nodelab.jupyter.windows').jupyter.windows.show_pending()")
        value = getattr(result, "result_text", None)
        self._labeller.end_lines()
        if value:
            self._relay("stdout", value + "\n")
        error = getattr(result, "error", None)
        if error:
            self._relay("stderr", error if error.endswith("\n") else error + "\n")
        sys.stdout.flush()
        sys.stderr.flush()

    def stop(self) -> None:
        self.kernel.shutdown()


def start_window(node: str, *, cookie: str | None = None, app: str | None = None,
                 elixir: bool = False) -> Window | BeamWindow:
    """Start ``node`` as its own kernel process (``elixir``: as a real Elixir node) and
    wait until it is up."""
    from .node_kernels import on_parent_shutdown, start_node_kernel

    with _lock:
        if node in _windows and _windows[node].alive():
            raise NodelabError(f"{node} is already running: use %%node {node.split('@')[0]} "
                               f"to type into it, or %node stop {node.split('@')[0]}")
    if elixir:
        from .beam_windows import start_beam_window

        on_parent_shutdown(stop_beam_windows)
        beam = start_beam_window(node, cookie=cookie, app=app)
        with _lock:
            _windows[node] = beam
        return beam
    # The %node line of the new kernel, quoted as a shell would: a cookie may hold spaces.
    words = ["--name" if _is_long(node) else "--sname", node]
    if cookie:
        words += ["--cookie", cookie]
    if app:
        words += ["--app", app]
    startup = (
        "get_ipython().extension_manager.load_extension('nodelab')\n"
        f"get_ipython().run_line_magic('node', {shlex.join(words)!r})\n"
        "import nodelab as __nodelab\n"
        "assert __nodelab.Node.alive(), 'the node did not start'\n"
    )
    env = {WINDOW_ENV: "1"}
    kernel = start_node_kernel(node, env=env, startup_code=startup, timeout=START_TIMEOUT)
    window = Window(node, kernel)
    with _lock:
        _windows[node] = window
    return window


def _is_long(node: str) -> bool:
    from nodelab.dist.names import parse_node_name

    return parse_node_name(node).long


def window(node: str) -> Window | BeamWindow:
    with _lock:
        found = _windows.get(node)
    if found is None or not found.alive():
        short = node.split("@")[0]
        raise NodelabError(f"{node} is not running from this notebook: start it with "
                           f"%node start {short}")
    return found


def stop_window(node: str) -> bool:
    with _lock:
        found = _windows.pop(node, None)
    if found is None:
        return False
    found.stop()
    return True


def stop_beam_windows(timeout: float = 2.0) -> None:
    """Stop the BEAM windows, all at once (the kernel is shutting down)."""
    from .beam_windows import BeamWindow, stop_windows

    with _lock:
        found = [item for item in _windows.values() if isinstance(item, BeamWindow)]
        for item in found:
            _windows.pop(item.node, None)
    stop_windows(found, timeout)


def stop_all() -> None:
    stop_beam_windows()
    with _lock:
        found = list(_windows.values())
        _windows.clear()
    for item in found:
        try:
            item.stop()
        except Exception:  # noqa: BLE001 - shutting down: stop the others anyway
            pass


def started_nodes() -> list[str]:
    with _lock:
        return sorted(node for node, item in _windows.items() if item.alive())


def started_windows() -> list[Window | BeamWindow]:
    """The windows this notebook started that are still up, by node name."""
    with _lock:
        return sorted((item for item in _windows.values() if item.alive()),
                      key=lambda item: item.node)


# --- the window kernel's side ------------------------------------------------------------

_pending: list[tuple[str, str]] = []
_pending_lock = threading.Lock()


def is_window() -> bool:
    return os.environ.get(WINDOW_ENV) == "1"


def keep_node_output(stream: str, text: str) -> None:
    """The window kernel's node output: kept until the notebook next looks."""
    with _pending_lock:
        _pending.append((stream, text))


def show_pending() -> None:
    """Print what this node's own processes printed since the last look."""
    with _pending_lock:
        items = list(_pending)
        _pending.clear()
    for stream, text in items:
        (sys.stdout if stream == "stdout" else sys.stderr).write(text)
    sys.stdout.flush()
    sys.stderr.flush()
