"""Magics that draw what processes do (Livebook's ``Kino.Process``, for notebooks).

=====================================  ====================================================
``%%sequence [TITLE]``                 run the cell, then draw every message it caused,
                                       across nodes, as a sequence diagram
``%supervision_tree NAME [NODE]``      draw the supervision tree under a supervisor
``%supervision_tree --app APP [NODE]`` draw the tree of a running application
=====================================  ====================================================

The pictures are Mermaid diagrams in Markdown output, which JupyterLab 4 draws without any
extension; a terminal (``nodelab shell``) shows them as text.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from nodelab.dist.names import parse_node_name
from nodelab.runtime.pids import Pid

from ..errors import NodelabError
from .magics import parse_arguments, show_failure

# ``nodelab.pictures`` (the recorder and the drawing code, ~20 ms of imports) is imported
# by the first magic that draws, not when the kernel starts: most cells never draw. Another
# node's picture request still finds it, since decoding the request imports it.


def _node(text: str) -> str:
    try:
        return str(parse_node_name(text))
    except ValueError as error:
        raise UsageError(f"{text!r} is not a node name ({error}): use e.g. kate or "
                         "kate@localhost") from None


@magics_class
class PictureMagics(Magics):
    """``%%sequence`` and ``%supervision_tree`` (see the module docstring)."""

    @magic_arguments("%sequence")
    @argument("title", nargs="?", metavar="TITLE",
              help="the diagram's title: the rest of the line, as it is typed")
    @cell_magic
    def sequence(self, line: str, cell: str) -> None:
        """Run the cell and draw the messages it caused as a sequence diagram.

        Usage::

          %%sequence [TITLE]
          pid = Node.spawn("kate@localhost", lambda: send(receive()[1], ("pong", self())))
          send(pid, ("ping", self()))
          receive()

        While the cell runs, every ``send`` on this node and on every node it is connected
        to (or connects to during the cell) is recorded. After the cell, the magic waits
        until no message was sent for 50 ms (at most 2 s) so replies on their way are
        drawn too, then shows the diagram under the cell's own output: one lifeline per
        process, grouped by node, named by registered name, ``shell``, ``group leader``,
        or ``P1``, ``P2``... in order of appearance (never raw PIDs, so nbval sees the
        same picture every run). Only messages are drawn: spawns, links and monitors are
        not messages. The same as ``with nodelab.pictures.record_messages(): ...``.
        """
        title = line.strip()
        # The title is free text (quotes and all): one value for the parser.
        title = self.sequence.parser.parse_args(["--", title] if title else []).title
        from ..pictures import record_messages

        try:
            recording = record_messages(title).start()
        except NodelabError as error:
            show_failure(error)
            self.shell.run_cell(cell, store_history=False)
            return
        try:
            self.shell.run_cell(cell, store_history=False)
        finally:
            diagram = recording.stop()
        sys.stdout.flush()
        display(diagram)

    @magic_arguments("supervision_tree")
    @argument("name", nargs="?", metavar="NAME",
              help="the supervisor: its registered name, or a variable holding its PID")
    @argument("node", nargs="?", metavar="NODE",
              help="the node it runs on, e.g. kate (default: this node)")
    @argument("--app", metavar="APP", help="draw the tree of this running application")
    @line_magic("supervision_tree")
    def supervision_tree_magic(self, line: str) -> None:
        """Draw a supervision tree: a supervisor, its strategy, its children, down the tree.

        Usage: ``%supervision_tree NAME [NODE]`` or ``%supervision_tree --app APP [NODE]``::

          %supervision_tree Chat.Supervisor            # a supervisor of this node
          %supervision_tree Chat.Supervisor kate       # ... of kate@localhost
          %supervision_tree sup                        # a variable holding a PID
          %supervision_tree --app chat [kate]          # the tree of the application chat

        Supervisors are boxes showing their strategy; workers are rounded; processes with
        no name are numbered P1, P2... The same as
        ``nodelab.pictures.supervision_tree(("Chat.Supervisor", "kate@localhost"))``.
        """
        args = parse_arguments(self.supervision_tree_magic, line)
        try:
            display(self._tree(args.app, [w for w in (args.name, args.node) if w is not None]))
        except (NodelabError, TypeError, ValueError) as error:
            show_failure(error)

    def _tree(self, app: str | None, words: list[str]) -> Any:
        from ..pictures import app_tree, supervision_tree

        if app is not None:
            if len(words) > 1:
                raise UsageError("usage: %supervision_tree --app APP [NODE]")
            return app_tree(app, _node(words[0]) if words else None)
        if not words:
            raise UsageError("usage: %supervision_tree NAME [NODE], e.g. "
                             "%supervision_tree Chat.Supervisor kate")
        node = _node(words[1]) if len(words) == 2 else None
        return supervision_tree(self._supervisor(words[0]), node)

    def _supervisor(self, word: str) -> Any:
        # A variable of the notebook that holds a PID (or what start_link returned) is
        # taken as that supervisor; any other word is a registered name.
        value = self.shell.user_ns.get(word) if word.isidentifier() else None
        if isinstance(value, Pid) or (isinstance(value, tuple) and len(value) == 2):
            return value
        return word
