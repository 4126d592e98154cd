"""The ``nodelab`` command: ``node``, ``shell``, ``new`` and ``install-kernel``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence


def _add_node_options(parser: argparse.ArgumentParser) -> None:
    names = parser.add_mutually_exclusive_group(required=True)
    names.add_argument("--sname", help="short node name: kate becomes kate@localhost")
    names.add_argument("--name", help="long node name, e.g. kate@192.0.2.10")
    parser.add_argument("--cookie", help="the shared secret (default: ~/.nodelab/cookie)")
    parser.add_argument("--app", help="start this application, like `iex -S mix` (e.g. chat)")
    parser.add_argument("--tick-time", type=float, default=None,
                        help="seconds of silence after which a peer counts as down (default 15)")


def _node_name(args: argparse.Namespace) -> str:
    """The node name, checked against the flag that gave it (like erl's -sname/-name)."""
    from nodelab.dist.names import parse_node_name

    if args.sname is not None:
        return str(parse_node_name(args.sname, long=False))
    return str(parse_node_name(args.name, long=True))


def _watch_parent(parent: int) -> None:
    # A node started by a kernel or a test must not outlive it, even when that parent is
    # killed with SIGKILL and cannot clean up.
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            threading.Event().wait(0.5)

    threading.Thread(target=watch, daemon=True, name="nodelab parent watch").start()


def run_node(args: argparse.Namespace) -> int:
    """``nodelab node``: a headless node that runs until SIGINT or SIGTERM."""
    from nodelab import Node
    from nodelab.errors import NodelabError

    if args.exit_with_parent:
        _watch_parent(os.getppid())
    namespace: dict = {"__name__": "__main__"}
    sys.modules["__main__"].__dict__.update(namespace)
    # A plain flag, not a threading.Event: the handler runs on the main thread, and an
    # Event.set() there can interrupt this thread's own Event.wait() while it holds the
    # Event's lock (a second signal then deadlocks the node for good).
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    try:
        name = Node.start(_node_name(args), args.cookie, tick_time=args.tick_time)
        if args.app:
            from nodelab.otp.application import Application

            Application.ensure_all_started(args.app)
    except (NodelabError, ValueError, OSError, RuntimeError) as error:
        # One line that says what is wrong (a name in use, a bad name, a bad cookie file).
        print(f"nodelab node: {error}", file=sys.stderr)
        return 2
    if args.eval:
        exec(compile(args.eval, "<--eval>", "exec"), sys.modules["__main__"].__dict__)
    print(f"node {name} is up (stop it with Ctrl-C)", file=sys.stderr, flush=True)
    while not stopping:
        time.sleep(0.1)
    if args.app:
        from nodelab.otp.application import Application

        Application.stop(args.app)
    Node.stop()
    return 0


def _install_kernel(args: argparse.Namespace) -> int:
    from nodelab.jupyter import kernelspec

    options = ["install"]
    if args.user:
        options.append("--user")
    elif args.sys_prefix:
        options.append("--sys-prefix")
    elif args.prefix:
        options += ["--prefix", args.prefix]
    return kernelspec.main(options) or 0


def _run_shell(args: argparse.Namespace) -> int:
    from nodelab.tools.shell import run_shell

    try:
        node = _node_name(args)
    except ValueError as error:
        print(f"nodelab shell: {error}", file=sys.stderr)
        return 2
    return run_shell(node, cookie=args.cookie, tick_time=args.tick_time, app=args.app)


def _run_new(args: argparse.Namespace) -> int:
    from nodelab.tools.scaffold import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nodelab", description="Erlang/Elixir OTP distribution, for real, in Python.")
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser(
        "node", help="run a headless node until stopped (like elixir --sname kate --no-halt)")
    _add_node_options(node)
    node.add_argument("--eval", help="Python code to run in the node's namespace at start")
    node.add_argument("--exit-with-parent", action="store_true",
                      help="exit when the process that started this node goes away")
    node.set_defaults(run=run_node)

    shell = commands.add_parser(
        "shell", help="an interactive node in this terminal (like iex --sname kate)")
    _add_node_options(shell)
    shell.set_defaults(run=_run_shell)

    from nodelab.tools.scaffold import add_arguments as _add_new_arguments

    new = commands.add_parser(
        "new", help="create an application project (like mix new chat --sup)")
    _add_new_arguments(new)
    new.set_defaults(run=_run_new)

    kernel = commands.add_parser(
        "install-kernel", help="install the 'Python 3 (nodelab)' Jupyter kernel",
        description="Install the nodelab kernelspec (one kernel = one node). Default: into the "
                    "active virtual environment, else for this user.")
    place = kernel.add_mutually_exclusive_group()
    place.add_argument("--user", action="store_true", help="for this user")
    place.add_argument("--sys-prefix", action="store_true", help="into this Python's prefix")
    place.add_argument("--prefix", help="into this prefix")
    kernel.set_defaults(run=_install_kernel)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
