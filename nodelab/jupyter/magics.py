"""The IPython magics that turn a notebook into a set of iex windows.

==============================  ==========================================================
``%node --sname alex``          this kernel becomes the node ``alex@localhost``
``%node start kate``            start node ``kate`` as its own kernel ("a second terminal")
``%node start kate --elixir``   start ``kate`` as a real Elixir node; ``%%node kate`` is Elixir
``%node stop kate``             stop it
``%%node kate``                 run the cell as if typed in kate's window
``%spawn_link kate EXPR``       ``Node.spawn_link(kate, lambda: EXPR)``; prints land here
``%%spawn_link kate``           the same, with the cell as the function's body
``%nodes``                      this node, the nodes it started, the nodes it is connected to
``%ping kate``                  ``Node.ping``
``%flush``                      ``flush()``: print and empty this shell's mailbox
==============================  ==========================================================

A node name without ``@`` means ``NAME@localhost``, as with ``--sname``. Every magic
answers ``%magic?`` with its help (its ``@magic_arguments`` usage first), and wrong arguments
with one line that says what to do: IPython's ``UsageError``, printed without a traceback.
A failure at run time (a dead node, a name in use) is one line too, and the cell goes on.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from nodelab.dist.names import parse_node_name
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid

from ..errors import NodelabError, ProcessExit
from ..node import Node, Process
from . import windows

#: How long %spawn_link waits for the spawned process to finish or to wait in receive,
#: so that what it prints is in the cell before the cell ends.
SETTLE_TIMEOUT = 5.0


def full_node_name(text: str) -> str:
    """``kate`` -> ``kate@localhost``; ``kate@host`` stays as it is."""
    return str(parse_node_name(text))


def parse_arguments(magic: Any, line: str, *, missing: str | None = None) -> argparse.Namespace:
    """The arguments of ``magic`` (a method declared with ``@magic_arguments``) in ``line``.

    The line is split as a shell would (``shlex``: ``--cookie "a b"`` is one value, without
    its quotes), then read by the magic's own IPython argument parser, which reports a bad
    option as an :class:`~IPython.core.error.UsageError`: IPython prints that as one line,
    ``UsageError: ...``, with no traceback. (IPython's ``parse_argstring`` would split the
    line with ``posix=False``, which keeps the quote characters in the value.) Options may
    come before, between or after the other words, as before: ``%node start --app chat kate``.
    ``missing`` is what to say when the line is empty (rather than argparse's "the following
    arguments are required").
    """
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise UsageError(f"cannot read the arguments: {error}") from None
    if not words and missing is not None:
        raise UsageError(missing)
    return magic.parser.parse_intermixed_args(words)


def parse_free_text(magic: Any, line: str, *, missing: str) -> argparse.Namespace:
    """Like :func:`parse_arguments`, for a magic whose line is ``WORD TEXT`` where TEXT is
    Python code: TEXT is given to the parser as it was typed, as one value; ``missing`` is
    what to say when the word or the text is not there."""
    word, _, text = line.strip().partition(" ")
    if not word or not text.strip():
        raise UsageError(missing)
    return magic.parser.parse_args(["--", word, text.strip()])


def show_failure(error: Exception) -> None:
    """A runtime error of a magic (a dead node, a name in use): one line on stderr, in red,
    no traceback, and the kernel goes on. Bad arguments are a UsageError instead."""
    print(f"{type(error).__name__}: {error}", file=sys.stderr)


def _idle(pid: Pid) -> bool:
    info = Process.info(pid)
    return info is None or (info["status"] == "waiting" and info["message_queue_len"] == 0)


def settle(pid: Pid, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until ``pid`` has exited or waits in ``receive`` with an empty mailbox, then
    until this cell's group leader is idle the same way: it has written all it was sent.

    The second wait matters: a process whose ``print`` waits for the group leader's reply
    also sits in ``receive`` with an empty mailbox, and a crash report is sent without
    waiting at all. Their requests travel on the same connection as the answer that says
    the process is settled, so by then they are in the leader's mailbox. And once the
    leader has answered, the process may print again: so the process is asked once more,
    after the leader went idle, until both are idle together. The waits only look
    (``Process.info``): they send no message that ``%%sequence`` would draw.
    """
    leader = P.group_leader()
    deadline = time.monotonic() + timeout
    try:
        _wait_until_idle(pid, deadline)
    finally:
        # Also when the linked process took the shell down (ProcessExit): the crash report
        # and the shell's EXIT line belong in this cell too.
        if leader is not None:
            while time.monotonic() < deadline:
                _wait_until_idle(leader, deadline)
                # Asked after the leader went idle, so its io_replies travel ahead of this
                # question on the same connection: a process still idle now waits for no
                # reply (one that got its reply and prints again is waited for again)...
                if not _idle(pid):
                    _wait_until_idle(pid, deadline)
                    continue
                # ...and whatever it sent before answering is in the leader's mailbox.
                if _idle(leader):
                    break


def _wait_until_idle(pid: Pid, deadline: float) -> None:
    pause = 0.001
    while time.monotonic() < deadline and not _idle(pid):
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@magics_class
class NodeMagics(Magics):
    """nodelab's magics (see the module docstring for the list)."""

    @magic_arguments()
    @argument("command", nargs="?", metavar="start|stop",
              help="start: open NODE as a kernel process of its own; stop: stop it")
    @argument("nodes", nargs="*", metavar="NODE", help="kate means kate@localhost")
    @argument("--sname", metavar="NAME", help="this kernel becomes node NAME@localhost")
    @argument("--name", metavar="NAME@HOST", help="this kernel becomes node NAME@HOST")
    @argument("--cookie", metavar="COOKIE",
              help="the shared secret (start: default is this node's cookie)")
    @argument("--app", metavar="APP", help="start this application on the node, e.g. chat "
              "(with --elixir: the directory of a mix project, run with mix run)")
    @argument("--elixir", action="store_const", const=True, default=None,
              help="start: a real Elixir node (elixir --sname NODE --no-halt); %%%%node NODE "
                   "cells are then Elixir")
    @line_magic
    def node(self, line: str) -> Any:
        """Name this kernel's node, or start and stop other nodes.

        Usage::

          %node --sname alex [--cookie secret_token] [--app chat]
          %node --name alex@192.0.2.10 [--cookie C]
          %node start kate [--cookie C] [--app chat]
          %node start kate --elixir [--cookie C] [--app PATH_OF_A_MIX_PROJECT]
          %node stop kate
          %node                      # which node is this?

        ``--sname alex`` makes this kernel the node ``alex@localhost`` (like
        ``iex --sname alex@localhost``). ``start kate`` opens node ``kate`` as its own kernel
        process — the lesson's second terminal window — with this node's cookie unless
        ``--cookie`` says otherwise; ``%%node kate`` then runs cells in it. With
        ``--elixir`` kate is a real Elixir node (``elixir --sname kate@localhost --cookie C
        --no-halt``; needs Erlang and Elixir installed) and ``%%node kate`` cells are Elixir,
        evaluated as if typed into kate's iex. Nodes started here stop with this kernel.
        """
        args = parse_arguments(self.node, line)
        try:
            if args.command == "start":
                return self._start(args)
            if args.command == "stop":
                return self._stop(args)
            if args.command is not None:
                raise UsageError(f"unknown subcommand {args.command!r}: use --sname NAME, "
                                 "start NAME or stop NAME")
            return self._name_this_node(args)
        except (NodelabError, ValueError, OSError) as error:
            show_failure(error)
            return None

    @staticmethod
    def _only(args: argparse.Namespace, subcommand: str, allowed: tuple[str, ...]) -> None:
        for option in ("sname", "name", "cookie", "app", "elixir"):
            if getattr(args, option) is not None and option not in allowed:
                here = ", ".join(f"--{a}" for a in allowed) if allowed else "none"
                raise UsageError(f"--{option} is not an option of %node {subcommand}: "
                                 f"the options here are {here}")

    def _start(self, args: argparse.Namespace) -> None:
        self._only(args, "start", ("app", "cookie", "elixir"))
        if len(args.nodes) != 1:
            raise UsageError("say which node to start, e.g. %node start kate")
        node = full_node_name(args.nodes[0])
        cookie = args.cookie or Node.get_cookie()
        if args.elixir:
            if args.app is not None and not os.path.isfile(os.path.join(args.app, "mix.exs")):
                raise UsageError(f"with --elixir, --app takes the directory of a mix project "
                                 f"(one with a mix.exs); {args.app} is not one")
            started = windows.start_window(node, cookie=cookie, app=args.app, elixir=True)
            print(f"started {started.node}, a real Elixir node: %%node "
                  f"{args.nodes[0].split('@')[0]} cells are Elixir")
            return
        started = windows.start_window(node, cookie=cookie, app=args.app)
        print(f"started {started.node} in a kernel process of its own")

    def _stop(self, args: argparse.Namespace) -> None:
        self._only(args, "stop", ())
        if not args.nodes:
            raise UsageError("say which node to stop, e.g. %node stop kate "
                             "(restart this kernel to stop this node)")
        for name in args.nodes:
            node = full_node_name(name)
            if windows.stop_window(node):
                print(f"stopped {node}")
            else:
                raise UsageError(f"{node} was not started from this notebook")

    def _name_this_node(self, args: argparse.Namespace) -> str | None:
        if args.elixir:
            raise UsageError("--elixir starts another node: %node start kate --elixir")
        if all(getattr(args, option) is None for option in ("sname", "name", "cookie", "app")):
            return Node.self()
        name = args.sname or args.name
        if name is None:
            raise UsageError("give this node a name: %node --sname alex")
        if args.sname and parse_node_name(args.sname).long:
            raise UsageError("--sname takes a short name like alex or alex@localhost; "
                             "use --name for alex@192.0.2.10")
        wanted = full_node_name(name)
        if Node.alive():
            if Node.self() == wanted:
                return None  # running the cell again is fine
            raise UsageError(f"this kernel is already node {Node.self()}: restart the kernel "
                             f"to rename it, or open another node with %node start {name}")
        Node.start(wanted, args.cookie, namespace=self.shell.user_ns)
        if args.app:
            from ..otp.application import Application

            Application.ensure_all_started(args.app)
        return None

    @magic_arguments("%node")
    @argument("node", metavar="NODE", help="the node whose window this is, e.g. kate")
    @cell_magic("node")
    def node_cell(self, line: str, cell: str) -> Any:
        """Run this cell as if typed in another node's window: ``%%node kate``.

        The code runs in kate's kernel; its output, and whatever kate's own processes
        printed since the last look, appear here, each line marked ``[kate@localhost]``.
        When kate was started with ``%node start kate --elixir`` the cell is Elixir,
        evaluated as if typed into kate's iex: variables and aliases carry over to the next
        cell, the value is shown as ``inspect`` shows it, an error as iex prints it.
        """
        args = parse_arguments(self.node_cell, line,
                               missing="say which node runs the cell, e.g. %%node kate")
        try:
            window = windows.window(full_node_name(args.node))
            return window.run(cell)
        except (NodelabError, ValueError, OSError) as error:
            show_failure(error)
            return None

    @magic_arguments("spawn_link")
    @argument("node", metavar="NODE", help="where the process runs, e.g. kate")
    @argument("expression", metavar="EXPRESSION",
              help="what it runs: the rest of the line, a Python expression")
    @line_magic("spawn_link")
    def spawn_link_line(self, line: str) -> Any:
        """``%spawn_link kate Kate.say_name()``: run the expression in a new process on kate.

        The same as ``Node.spawn_link("kate@localhost", lambda: Kate.say_name())``: names
        in the expression are looked up on kate, the new process is linked to this cell's
        shell process, and what it prints appears in this cell. Returns its PID.
        """
        args = parse_free_text(self.spawn_link_line, line,
                               missing="usage: %spawn_link NODE EXPRESSION, e.g. "
                                       "%spawn_link kate Kate.say_name()")
        return self._spawn_link(args.node, f"lambda: ({args.expression})", "<spawn_link>")

    @magic_arguments("%spawn_link")
    @argument("node", metavar="NODE", help="where the process runs, e.g. kate")
    @cell_magic("spawn_link")
    def spawn_link_cell(self, line: str, cell: str) -> Any:
        """``%%spawn_link kate``: the cell is the body of a function run on kate, linked.

        Like ``Node.spawn_link(:kate@localhost, fn -> ... end)`` with a multi-line body.
        Returns the new process's PID.
        """
        args = parse_arguments(self.spawn_link_cell, line,
                               missing="usage: %%spawn_link NODE, then the function body below")
        body = "\n".join("    " + text for text in cell.splitlines()) or "    pass"
        source = f"def __spawn_link_body__():\n{body}\n"
        return self._spawn_link(args.node, source, "<%%spawn_link>", defines=True)

    def _spawn_link(self, node_text: str, source: str, filename: str, *,
                    defines: bool = False) -> Any:
        try:
            code = compile(source, filename, "exec" if defines else "eval")
        except SyntaxError as error:
            raise UsageError(f"the code does not parse: {error.msg} (line {error.lineno})"
                             ) from None
        try:
            node = full_node_name(node_text)
            namespace = self.shell.user_ns
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
        except (NodelabError, ValueError, OSError) as error:
            show_failure(error)
        return None

    @magic_arguments()
    @line_magic
    def nodes(self, line: str) -> Any:
        """``%nodes``: this node, the nodes this notebook started, and connections.

        A node started with ``%node start NODE --elixir`` is marked ``(BEAM)``: a real
        Elixir node, whose ``%%node NODE`` cells are Elixir.
        """
        parse_arguments(self.nodes, line)
        started = [item.node + (" (BEAM)" if item.kind == "BEAM" else "")
                   for item in windows.started_windows()]
        print(f"this node:  {Node.self()}")
        print(f"started:    {', '.join(started) if started else '(none)'}")
        connected = Node.list()
        print(f"connected:  {', '.join(connected) if connected else '(none)'}")

    @magic_arguments()
    @argument("node", metavar="NODE", help="the node to ping, e.g. kate")
    @line_magic
    def ping(self, line: str) -> Any:
        """``%ping kate``: ``Node.ping("kate@localhost")`` — ``'pong'`` or ``'pang'``."""
        args = parse_arguments(self.ping, line, missing="usage: %ping NODE, e.g. %ping kate")
        try:
            return Node.ping(full_node_name(args.node))
        except (NodelabError, ValueError) as error:
            show_failure(error)
            return None

    @magic_arguments()
    @line_magic
    def flush(self, line: str) -> Any:
        """``%flush``: print every message in this shell's mailbox and empty it."""
        parse_arguments(self.flush, line)
        return P.flush()
