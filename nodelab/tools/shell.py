"""``nodelab shell``: an interactive terminal that is a node, like ``iex --sname kate``.

The terminal is an IPython shell with nodelab's magics loaded and the node already
started; the prompt names the node (``iex(kate@localhost)1>``), and what other nodes'
processes print through this node's group leader appears above the prompt, as it does in
an iex window.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.terminal.prompts import Prompts, Token


class NodePrompts(Prompts):
    """``iex(kate@localhost)1>`` instead of ``In [1]:``."""

    def in_prompt_tokens(self) -> list[tuple[Any, str]]:
        from nodelab.node import Node

        return [(Token.Prompt, f"iex({Node.self()})"),
                (Token.PromptNum, str(self.shell.execution_count)),
                (Token.Prompt, "> ")]

    def continuation_prompt_tokens(self, width: int | None = None) -> list[tuple[Any, str]]:
        from nodelab.node import Node

        text = f"...({Node.self()})"
        width = width or len(text) + 3
        return [(Token.Prompt, text.ljust(width - 2) + "> ")]

    def out_prompt_tokens(self) -> list[tuple[Any, str]]:
        return []


def run_shell(node: str, *, cookie: str | None = None, tick_time: float | None = None,
              app: str | None = None) -> int:
    """Start ``node`` (a full name, ``kate@localhost``), then an IPython terminal in it.

    ``nodelab shell`` (:mod:`nodelab.tools.cli`) reads the command line and calls this.
    """
    from IPython.terminal.embed import InteractiveShellEmbed  # noqa: F401 - loads the terminal
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from prompt_toolkit.patch_stdout import patch_stdout

    from nodelab.dist import shipment
    from nodelab.errors import NodelabError
    from nodelab.node import Node

    shell = TerminalInteractiveShell.instance(banner1="", display_banner=False)
    shell.prompts = NodePrompts(shell)
    # patch_stdout lets text printed by other threads (remote processes writing through
    # this node's group leader) appear above the prompt instead of inside the input line;
    # the node starts inside it so that its group leader writes through the patch.
    with patch_stdout(raw=True):
        try:
            Node.start(node, cookie, tick_time=tick_time, namespace=shell.user_ns)
        except (NodelabError, ValueError, OSError) as error:
            print(f"nodelab shell: {error}", file=sys.stderr)
            return 2
        shipment.set_namespace_provider(lambda: shell.user_ns)
        shell.extension_manager.load_extension("nodelab")
        if app:
            from nodelab.otp.application import Application

            Application.ensure_all_started(app)
        print(f"nodelab shell on node {Node.self()} — Ctrl-D to leave", flush=True)
        shell.mainloop()
        if app:
            from nodelab.otp.application import Application

            Application.stop(app)
        Node.stop()
    return 0
