"""A real Elixir node as the notebook's second "terminal window": ``%node start kate --elixir``.

The lesson's second terminal runs ``iex --sname kate@localhost``. Here it can be exactly
that: a real BEAM node, ``elixir --sname kate@localhost --cookie C --no-halt``, started by
the notebook's kernel, and ``%%node kate`` types a cell of **Elixir** into it::

    %%node kate
    IO.puts "Hi, my name is Kate"
    x = 40 + 2

    [kate@localhost] Hi, my name is Kate
    [kate@localhost] 42

The node runs a small control program (``nodelab/jupyter/elixir/window.exs``) that reads
cells from its stdin and answers on its stdout, so the window needs nothing from Erlang
distribution. One shell process evaluates the cells in turn and keeps variables, aliases and
imports between them, like iex; a value is shown as ``inspect`` shows it (pretty, 80
columns, as iex does) and an error as iex prints it (``** (RuntimeError) boom`` and the
frames of the cell's own code). Everything else the node prints — a process spawned by a
cell that prints later, Logger — is kept and shown, labelled, at the start of the next
``%%node kate`` cell, as for nodelab windows (:mod:`nodelab.jupyter.windows`).

Where the cell's output goes: when the notebook is a named node with kate's cookie, each
cell is evaluated with the *notebook node's* group leader for the window (one nodelab group
leader process, reached by kate over Erlang distribution, as a process spawned from iex
prints on its caller's node); kate's shell prints through a small forwarder on kate that
formats the text as the BEAM does and waits for the notebook's answer, so a cell's prints
still come before its value. Otherwise (the notebook is not a node, or has another cookie)
the output comes through kate's stdout. Either way it is shown the same:
``[kate@localhost] ...``.

Life: the node ends when its stdin closes — ``%node stop kate``, the kernel's shutdown or
exit, and also the kernel's death by SIGKILL, because then the operating system closes
the pipe. It has a session of its own, so an interrupt of the notebook (SIGINT to the
kernel's process group) never opens the BEAM's break menu; interrupting a ``%%node kate``
cell kills the shell process that runs it instead (iex's ``Ctrl+G``, ``i``).

One module, although a little long: it is one concept, a BEAM node as a window, from its
start to its stop.
"""

from __future__ import annotations

import base64
import codecs
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import NodelabError

#: What to say when ``elixir`` is not on PATH.
INSTALL_HINT = ("elixir is not installed (not on PATH): install Erlang and Elixir, e.g. "
                "`apt-get install erlang-base elixir` (or see "
                "https://elixir-lang.org/install.html), then run this cell again")
#: Scheduler busy-waiting burns CPU that the notebook's other nodes need.
ERL_FLAGS = "+sbwt none +sbwtdcpu none +sbwtdio none"
START_TIMEOUT = 60.0
CELL_TIMEOUT = 60.0
#: After an answer, how long to wait for the warnings the cell wrote on stderr.
SYNC_TIMEOUT = 2.0
#: How long an interrupted cell's shell process gets to be replaced (seconds).
INTERRUPT_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0
#: Text printed between cells is kept up to this many pieces for the next look.
PENDING_LIMIT = 10_000


class ElixirNotInstalled(NodelabError):
    """``elixir`` is not on PATH."""


def elixir_program() -> str:
    """The ``elixir`` command, or :class:`ElixirNotInstalled` saying how to install it."""
    elixir = shutil.which("elixir")
    if elixir is None or shutil.which("erl") is None:
        raise ElixirNotInstalled(INSTALL_HINT)
    return elixir


def control_program() -> str:
    """The Elixir source of the window's control program (package data)."""
    return resources.files("nodelab.jupyter").joinpath("elixir/window.exs").read_text("utf-8")


def mix_project(path: str) -> Path:
    """The directory of a mix project given as ``--app PATH``; ``ValueError`` if it is not one."""
    directory = Path(path).expanduser()
    if (directory / "mix.exs").is_file():
        return directory.resolve()
    raise ValueError(f"--app with --elixir takes the directory of a mix project (one with a "
                     f"mix.exs), and {path} is not one")


class _Stream:
    """One pipe of the node: text, and the answers marked with this window's token."""

    def __init__(self, window: BeamWindow, name: str) -> None:
        self.window = window
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def pump(self, pipe: object) -> None:
        marker = self.window._marker
        pending = b""
        fd = pipe.fileno()  # type: ignore[attr-defined]
        try:
            while chunk := os.read(fd, 65536):
                pending += chunk
                with self.window._changed:
                    pending = self._split(pending, marker)
                    self.window._changed.notify_all()
        except OSError:
            pass
        finally:
            with self.window._changed:
                self.window._text(self.name, self.decoder.decode(pending, final=True))
                self.window._open_pipes -= 1
                self.window._changed.notify_all()

    def _split(self, data: bytes, marker: bytes) -> bytes:
        """Hands text and answers to the window; returns what must wait for more bytes (an
        answer not yet ended, or a tail that could be the start of a marker)."""
        while True:
            start = data.find(marker)
            if start < 0:
                keep = next((n for n in range(min(len(marker) - 1, len(data)), 0, -1)
                             if marker.startswith(data[-n:])), 0)
                self.window._text(self.name, self.decoder.decode(data[:len(data) - keep]))
                return data[len(data) - keep:]
            self.window._text(self.name, self.decoder.decode(data[:start]))
            end = data.find(b"\n", start)
            if end < 0:
                return data[start:]
            words = data[start + len(marker):end].decode(errors="replace").split(" ")
            data = data[end + 1:]
            if self.name == "stderr":
                if len(words) == 2 and words[1] == "sync":
                    self.window._synced.add(words[0])
                continue
            request, status, *fields = words
            try:
                decoded = [base64.b64decode(field).decode(errors="replace") for field in fields]
            except ValueError:
                decoded = ["(an answer of the node could not be read)"]
            self.window._answers[request] = (status, decoded)


class BeamWindow:
    """A real BEAM node this notebook started, and the way to type Elixir into it."""

    kind = "BEAM"

    def __init__(self, node: str, *, cookie: str, app: Path | None = None) -> None:
        self.node = node
        self.cookie = cookie
        self.app = app
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self._token = secrets.token_hex(8)
        self._marker = b"\x02" + self._token.encode() + b" "
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self._pending: deque[tuple[str, str]] = deque(maxlen=PENDING_LIMIT)
        self._answers: dict[str, tuple[str, list[str]]] = {}
        self._synced: set[str] = set()
        self._open_pipes = 0
        self._threads: list[threading.Thread] = []
        self._run_lock = threading.Lock()
        self._closed = False
        self._leader: Any = None  # this notebook node's group leader for the window
        from .windows import Labeller

        self._labeller = Labeller(node)

    def __repr__(self) -> str:
        state = "alive" if self.alive() else "stopped"
        return f"<BeamWindow {self.node} pid={self.os_pid} {state}>"

    # --- facts ---------------------------------------------------------------------------

    @property
    def os_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return not self._closed and self.proc is not None and self.proc.poll() is None

    # --- life ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        from nodelab.dist.names import parse_node_name

        option = "--name" if parse_node_name(self.node).long else "--sname"
        head = [elixir_program(), option, self.node, "--cookie", self.cookie,
                "--erl", ERL_FLAGS]
        if self.app is not None:
            return [*head, "-S", "mix", "run", "--no-halt", "-e", control_program()]
        return [*head, "--no-halt", "-e", control_program()]

    def start(self, timeout: float = START_TIMEOUT) -> BeamWindow:
        """Start the node and wait until its control program answers."""
        from nodelab.dist.portmapper import ensure_portmapper

        command = self.command()
        # The node registers with EPMD: the notebook's (nodelab's or Erlang's), else one
        # started now. Started before the node, so that no daemon holds the node's pipes.
        ensure_portmapper()
        env = dict(os.environ, NODELAB_WINDOW_TOKEN=self._token)
        started = time.monotonic()
        self.proc = subprocess.Popen(command, cwd=self.app, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, close_fds=True)
        self._open_pipes = 2
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            thread = threading.Thread(target=_Stream(self, name).pump, args=(pipe,),
                                      name=f"nodelab beam {name} {self.node}", daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            self._wait_answer("ready", started + timeout, "start")
        except BaseException:
            self.stop(timeout=2.0)
            raise
        self.start_seconds = time.monotonic() - started
        # What it printed while booting (an application's log lines) is shown at the
        # first look, like later output.
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """End the node: its input closes and it halts (as iex does when its terminal
        closes); SIGKILL after ``timeout`` seconds. Returns its exit status."""
        self.close_input()
        return self.wait_stopped(time.monotonic() + timeout)

    def close_input(self) -> None:
        """Ask the node to stop without waiting (see :func:`stop_windows`)."""
        self._closed = True
        leader, self._leader = self._leader, None
        if leader is not None:
            from nodelab.runtime import processes as P
            from nodelab.runtime.group_leader import stop_group_leader

            if P.is_alive(leader):
                stop_group_leader(leader)
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def wait_stopped(self, deadline: float) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(2.0)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None and not any(t.is_alive() for t in self._threads):
                pipe.close()
        return self.proc.returncode

    # --- typing a cell -------------------------------------------------------------------

    def run(self, cell: str) -> None:
        """Evaluate ``cell`` as Elixir in the node's shell and show what its window shows."""
        with self._run_lock:
            if not self.alive():
                raise self._gone()
            self._show_pending()
            if not cell.strip():  # an empty line in iex: a new prompt, no value
                return
            request = str(next(self._ids))
            line = f"eval {request} {base64.b64encode(cell.encode()).decode()}"
            leader = self._cell_leader()
            if leader is not None:
                line += " " + base64.b64encode(leader).decode()
            self._send(line + "\n")
            try:
                answer = self._wait_answer(request, time.monotonic() + CELL_TIMEOUT, None)
            except KeyboardInterrupt:
                answer = self._interrupt(request, "was interrupted")
            except TimeoutError:
                answer = self._interrupt(request, f"did not finish within {CELL_TIMEOUT:g} s")
            # Warnings the cell wrote on stderr come before its answer's sync mark.
            self._wait_synced(request, time.monotonic() + SYNC_TIMEOUT)
            self._show_pending()
            status, fields = answer
            text = fields[0] if fields else ""
            self._labeller.end_lines()
            if status == "ok":
                self._labeller.write("stdout", text + "\n")
            else:
                self._labeller.write("stderr", text + "\n")
            sys.stdout.flush()
            sys.stderr.flush()

    def _cell_leader(self) -> bytes | None:
        """The window's group leader on this notebook node, as ``term_to_binary`` bytes for
        the eval line; None when kate could not reach it (the notebook is not a named node,
        or uses another cookie with kate: a refused dial would log on both sides)."""
        from nodelab.dist import term_format
        from nodelab.runtime import processes as P
        from nodelab.runtime.group_leader import start_group_leader
        from nodelab.runtime.pids import local_node

        dist = P.current_transport()
        cookie_for = getattr(dist, "cookie_for", None)
        if cookie_for is None or cookie_for(self.node) != self.cookie:
            return None
        leader = self._leader
        if leader is None or leader.node != local_node() or not P.is_alive(leader):
            # (Re)made when the notebook node started, or started again under another name.
            leader = self._leader = start_group_leader(self._leader_writes)
        return term_format.encode(leader)

    def _leader_writes(self, stream: str, text: str) -> None:
        # In the group leader's thread: the text joins what the pipes bring, in arrival
        # order, and the running cell (or the next look) shows it, labelled.
        with self._changed:
            self._text(stream, text)
            self._changed.notify_all()

    def _interrupt(self, request: str, why: str) -> tuple[str, list[str]]:
        self._labeller.write("stderr", f"the cell {why}: its shell process is killed\n")
        self._send(f"interrupt {request}\n")
        try:
            return self._wait_answer(request, time.monotonic() + INTERRUPT_TIMEOUT, None)
        except TimeoutError:
            short = self.node.split("@")[0]
            raise NodelabError(f"{self.node} does not answer: its shell process could not be "
                               f"stopped within {INTERRUPT_TIMEOUT:g} s; stop the node with "
                               f"%node stop {short}") from None

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            raise self._gone() from None

    def _show_pending(self) -> None:
        with self._changed:
            items = list(self._pending)
            self._pending.clear()
        for stream, text in items:
            self._labeller.write(stream, text)

    def _wait_answer(self, request: str, deadline: float, doing: str | None
                     ) -> tuple[str, list[str]]:
        """Wait for the answer to ``request``. In a cell (``doing`` is None) show what the
        node prints meanwhile, in this thread, so that it lands in the running cell;
        otherwise (``doing``: "start") keep it for the first look."""
        showing = doing is None
        while True:
            with self._changed:
                while (request not in self._answers and not (showing and self._pending)
                       and self._open_pipes == 2 and time.monotonic() < deadline):
                    self._changed.wait(min(deadline - time.monotonic(), 0.5))
                answer = self._answers.pop(request, None)
                ended = self._open_pipes < 2
            if showing:
                self._show_pending()
            if answer is not None:
                return answer
            if ended:
                if showing:
                    self._drain_until_closed()
                raise self._gone(doing)
            if time.monotonic() >= deadline:
                if showing:
                    raise TimeoutError(request)
                raise NodelabError(f"{self.node} did not {doing} within the time it had"
                                   f"{self._tail()}")

    def _wait_synced(self, request: str, deadline: float) -> None:
        with self._changed:
            while request not in self._synced and self._open_pipes == 2:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            self._synced.discard(request)

    def _drain_until_closed(self) -> None:
        deadline = time.monotonic() + 2.0
        with self._changed:
            while self._open_pipes and time.monotonic() < deadline:
                self._changed.wait(0.1)
        self._show_pending()
        if self.proc is not None:
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass

    def _gone(self, doing: str | None = None) -> NodelabError:
        status = None
        if self.proc is not None:
            try:
                status = self.proc.wait(2.0)  # its pipes closed: it is ending
            except subprocess.TimeoutExpired:
                pass
        if doing is not None:  # it never answered: say why, from what it printed
            return NodelabError(f"{self.node} could not {doing}: it stopped (exit status "
                                f"{status}){self._why()}")
        short = self.node.split("@")[0]
        return NodelabError(f"{self.node} has stopped (exit status {status}); start it again "
                            f"with %node start {short} --elixir")

    def _why(self) -> str:
        with self._changed:
            text = "".join(t for s, t in self._pending if s == "stderr")
        if "seems to be in use" in text:
            return (f": the name {self.node} is taken by another node (`epmd -names` lists "
                    "them): stop that node or choose another name")
        return self._tail()

    def _tail(self) -> str:
        with self._changed:
            text = "".join(t for _, t in self._pending)[-1500:].strip()
        return f". It printed:\n{text}" if text else ""

    # --- called by the pipe readers, under self._changed ----------------------------------

    def _text(self, stream: str, text: str) -> None:
        if text:
            self._pending.append((stream, text))


# --- starting, and stopping them all -------------------------------------------------------


def start_beam_window(node: str, *, cookie: str | None, app: str | None = None) -> BeamWindow:
    """Start ``node`` as a real Elixir node (``app``: a mix project to run in it)."""
    elixir_program()  # says how to install it, before anything else happens
    project = mix_project(app) if app is not None else None
    if cookie is None:
        from nodelab.dist.cookie import read_or_create_cookie

        cookie = read_or_create_cookie()
    window = BeamWindow(node, cookie=cookie, app=project)
    return window.start()


def stop_windows(windows: list[BeamWindow], timeout: float = STOP_TIMEOUT) -> None:
    """Stop several BEAM windows side by side: all are asked at once, then waited for."""
    for window in windows:
        window.close_input()
    deadline = time.monotonic() + timeout
    for window in windows:
        window.wait_stopped(deadline)
