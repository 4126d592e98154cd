"""The IPython magics that turn a notebook into a set of iex windows.

==============================  ==========================================================
``%node --sname alex``          this kernel becomes the node ``alex@localhost``
``%node start kate``            start node ``kate`` as its own kernel ("a second terminal")
``%node stop kate``             stop it
``%%node kate``                 run the cell as if typed in kate's window
``%spawn_link kate EXPR``       ``Node.spawn_link(kate, lambda: EXPR)``; prints land here
``%%spawn_link kate``           the same, with the cell as the function's body
``%nodes``                      this node, the nodes it started, the nodes it is connected to
``%ping kate``                  ``Node.ping``
``%flush``                      ``flush()``: print and empty this shell's mailbox
==============================  ==========================================================

A node name without ``@`` means ``NAME@localhost``, as with ``--sname``. Every magic
answers ``%magic?`` with its help, and wrong arguments with one line that says what to do.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nodelab.dist.names import parse_node_name
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid

from ..errors import NodelabError, ProcessExit
from ..node import Node, Process
from . import windows

#: How long %spawn_link waits for the spawned process to finish or to wait in receive,
#: so that what it prints is in the cell before the cell ends.
SETTLE_TIMEOUT = 5.0


class UsageError(NodelabError):
    """Wrong arguments to a magic: shown as one line, never as a traceback."""


def full_node_name(text: str) -> str:
    """``kate`` -> ``kate@localhost``; ``kate@host`` stays as it is."""
    return str(parse_node_name(text))


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as error:
        raise UsageError(f"cannot read the arguments: {error}") from None


def _options(words: list[str], allowed: set[str]) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    options: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--"):
            key = word[2:]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                index += 1
                if index >= len(words):
                    example = _EXAMPLES.get(key, "VALUE")
                    raise UsageError(f"--{key} needs a value, e.g. --{key} {example}")
                value = words[index]
            if key not in allowed:
                raise UsageError(f"unknown option --{key}: the options here are "
                                 + ", ".join(f"--{a}" for a in sorted(allowed)))
            options[key] = value
        else:
            positional.append(word)
        index += 1
    return positional, options


_EXAMPLES = {"sname": "alex", "name": "alex@192.0.2.10", "cookie": "secret_token", "app": "chat"}


def _idle(pid: Pid) -> bool:
    info = Process.info(pid)
    return info is None or (info["status"] == "waiting" and info["message_queue_len"] == 0)


def settle(pid: Pid, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until ``pid`` has exited or waits in ``receive`` with an empty mailbox, then
    until this cell's group leader is idle the same way: it has written all it was sent.

    The second wait matters: a process whose ``print`` waits for the group leader's reply
    also sits in ``receive`` with an empty mailbox, and a crash report is sent without
    waiting at all. Their requests travel on the same connection as the answer that says
    the process is settled, so by then they are in the leader's mailbox. Both waits only
    look (``Process.info``): they send no message that ``%%sequence`` would draw.
    """
    leader = P.current().group_leader
    deadline = time.monotonic() + timeout
    try:
        _wait_until_idle(pid, deadline)
    finally:
        # Also when the linked process took the shell down (ProcessExit): the crash report
        # and the shell's EXIT line belong in this cell too.
        if leader is not None:
            _wait_until_idle(leader, deadline)


def _wait_until_idle(pid: Pid, deadline: float) -> None:
    pause = 0.001
    while time.monotonic() < deadline and not _idle(pid):
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@magics_class
class NodeMagics(Magics):
    """nodelab's magics (see the module docstring for the list)."""

    def _fail(self, error: Exception) -> None:
        # One line, in red, no traceback: what went wrong and what to do.
        print(f"{type(error).__name__}: {error}" if not isinstance(error, UsageError)
              else f"UsageError: {error}", file=__import__("sys").stderr)

    @line_magic
    def node(self, line: str) -> Any:
        """Name this kernel's node, or start and stop other nodes.

        Usage::

          %node --sname alex [--cookie secret_token] [--app chat]
          %node --name alex@192.0.2.10 [--cookie C]
          %node start kate [--cookie C] [--app chat]
          %node stop kate
          %node                      # which node is this?

        ``--sname alex`` makes this kernel the node ``alex@localhost`` (like
        ``iex --sname alex@localhost``). ``start kate`` opens node ``kate`` as its own kernel
        process — the lesson's second terminal window — with this node's cookie unless
        ``--cookie`` says otherwise; ``%%node kate`` then runs cells in it.
        """
        try:
            return self._node(_split(line))
        except (NodelabError, ValueError, OSError) as error:
            self._fail(error)
            return None

    def _node(self, words: list[str]) -> Any:
        if not words:
            return Node.self()
        if words[0] == "start":
            positional, options = _options(words[1:], {"cookie", "app"})
            if len(positional) != 1:
                raise UsageError("say which node to start, e.g. %node start kate")
            cookie = options.get("cookie") or Node.get_cookie()
            started = windows.start_window(full_node_name(positional[0]), cookie=cookie,
                                           app=options.get("app"))
            print(f"started {started.node} in a kernel process of its own")
            return None
        if words[0] == "stop":
            positional, _ = _options(words[1:], set())
            if not positional:
                raise UsageError("say which node to stop, e.g. %node stop kate "
                                 "(restart this kernel to stop this node)")
            for name in positional:
                node = full_node_name(name)
                if windows.stop_window(node):
                    print(f"stopped {node}")
                else:
                    raise UsageError(f"{node} was not started from this notebook")
            return None
        positional, options = _options(words, {"sname", "name", "cookie", "app"})
        if positional:
            raise UsageError(f"unknown subcommand {positional[0]!r}: use --sname NAME, "
                             "start NAME or stop NAME")
        name = options.get("sname") or options.get("name")
        if name is None:
            raise UsageError("give this node a name: %node --sname alex")
        if "sname" in options and parse_node_name(options["sname"]).long:
            raise UsageError("--sname takes a short name like alex or alex@localhost; "
                             "use --name for alex@192.0.2.10")
        wanted = full_node_name(name)
        if Node.alive():
            if Node.self() == wanted:
                return None  # running the cell again is fine
            raise UsageError(f"this kernel is already node {Node.self()}: restart the kernel "
                             f"to rename it, or open another node with %node start {name}")
        Node.start(wanted, options.get("cookie"), namespace=self.shell.user_ns)
        if options.get("app"):
            from ..otp.application import Application

            Application.ensure_all_started(options["app"])
        return None

    @cell_magic("node")
    def node_cell(self, line: str, cell: str) -> Any:
        """Run this cell as if typed in another node's window: ``%%node kate``.

        The code runs in kate's kernel; its output, and whatever kate's own processes
        printed since the last look, appear here, each line marked ``kate@localhost>``.
        """
        try:
            words = _split(line)
            if len(words) != 1:
                raise UsageError("say which node runs the cell, e.g. %%node kate")
            window = windows.window(full_node_name(words[0]))
            return window.run(cell)
        except (NodelabError, ValueError, OSError) as error:
            self._fail(error)
            return None

    @line_magic("spawn_link")
    def spawn_link_line(self, line: str) -> Any:
        """``%spawn_link kate Kate.say_name()``: run the expression in a new process on kate.

        The same as ``Node.spawn_link("kate@localhost", lambda: Kate.say_name())``: names
        in the expression are looked up on kate, the new process is linked to this cell's
        shell process, and what it prints appears in this cell. Returns its PID.
        """
        node, _, expression = line.strip().partition(" ")
        if not node or not expression.strip():
            self._fail(UsageError("usage: %spawn_link NODE EXPRESSION, e.g. "
                                  "%spawn_link kate Kate.say_name()"))
            return None
        return self._spawn_link(node, f"lambda: ({expression.strip()})", "<spawn_link>")

    @cell_magic("spawn_link")
    def spawn_link_cell(self, line: str, cell: str) -> Any:
        """``%%spawn_link kate``: the cell is the body of a function run on kate, linked.

        Like ``Node.spawn_link(:kate@localhost, fn -> ... end)`` with a multi-line body.
        Returns the new process's PID.
        """
        words = _split(line)
        if len(words) != 1:
            self._fail(UsageError("usage: %%spawn_link NODE, then the function body below"))
            return None
        body = "\n".join("    " + text for text in cell.splitlines()) or "    pass"
        source = f"def __spawn_link_body__():\n{body}\n"
        return self._spawn_link(words[0], source, "<%%spawn_link>", defines=True)

    def _spawn_link(self, node_text: str, source: str, filename: str, *,
                    defines: bool = False) -> Any:
        try:
            node = full_node_name(node_text)
            namespace = self.shell.user_ns
            code = compile(source, filename, "exec" if defines else "eval")
            if defines:
                scratch: dict[str, Any] = {}
                exec(code, namespace, scratch)
                function = scratch["__spawn_link_body__"]
            else:
                function = eval(code, namespace)
            pid = Node.spawn_link(node, function)
            try:
                settle(pid)
            except ProcessExit:
                pass  # the linked process crashed and took the shell along: iex's EXIT line says so
            return pid
        except SyntaxError as error:
            self._fail(UsageError(f"the code does not parse: {error.msg} (line {error.lineno})"))
        except (NodelabError, ValueError, OSError) as error:
            self._fail(error)
        return None

    @line_magic
    def nodes(self, line: str) -> Any:
        """``%nodes``: this node, the node kernels this notebook started, and connections."""
        started = windows.started_nodes()
        print(f"this node:  {Node.self()}")
        print(f"started:    {', '.join(started) if started else '(none)'}")
        connected = Node.list()
        print(f"connected:  {', '.join(connected) if connected else '(none)'}")

    @line_magic
    def ping(self, line: str) -> Any:
        """``%ping kate``: ``Node.ping("kate@localhost")`` — ``'pong'`` or ``'pang'``."""
        words = _split(line)
        if len(words) != 1:
            self._fail(UsageError("usage: %ping NODE, e.g. %ping kate"))
            return None
        try:
            return Node.ping(full_node_name(words[0]))
        except (NodelabError, ValueError) as error:
            self._fail(error)
            return None

    @line_magic
    def flush(self, line: str) -> Any:
        """``%flush``: print every message in this shell's mailbox and empty it."""
        return P.flush()
