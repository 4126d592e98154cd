"""The magics read their arguments as a shell would, with IPython's argument parser.

The lines are split with ``shlex`` (so ``--cookie "a b"`` is one value, without its
quotes), read by each magic's ``@magic_arguments`` parser, and bad input is IPython's
``UsageError``: one line, ``UsageError: ...``, no traceback. The end-to-end test runs a
real kernel: ``test_a_cookie_with_a_space_works_end_to_end`` in ``test_magics.py``.
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from nodelab.jupyter.magics import NodeMagics, parse_arguments, parse_free_text
from nodelab.jupyter.picture_magics import PictureMagics


def test_options_are_read_as_a_shell_reads_them_before_between_or_after_the_words() -> None:
    args = parse_arguments(NodeMagics.node, 'start --app chat kate --cookie "a b"')
    assert (args.command, args.nodes, args.app, args.cookie) == ("start", ["kate"], "chat", "a b")
    assert parse_arguments(NodeMagics.node, "--cookie='it''s' --sname=alex").cookie == "its"
    assert parse_arguments(NodeMagics.node, "").command is None


@pytest.mark.parametrize(("magic", "line", "says"), [
    (NodeMagics.node, "--cookie", "argument --cookie: expected one argument"),
    (NodeMagics.node, "--sname alex --colour=red", "unrecognized arguments: --colour=red"),
    (NodeMagics.node, 'start kate --cookie "a b', "cannot read the arguments: No closing"),
    (NodeMagics.ping, "", "usage: %ping NODE"),
    (NodeMagics.ping, "kate moebi", "unrecognized arguments: moebi"),
    (NodeMagics.nodes, "everything", "unrecognized arguments: everything"),
    (PictureMagics.supervision_tree_magic, "--app", "argument --app: expected one argument"),
])
def test_bad_arguments_are_an_ipython_usage_error(magic, line: str, says: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_arguments(magic, line, missing="usage: %ping NODE")
    assert str(raised.value).startswith(says)
    assert "\n" not in str(raised.value)


def test_python_code_after_the_node_is_taken_as_it_was_typed() -> None:
    args = parse_free_text(NodeMagics.spawn_link_line, "kate  print('a  b', -1) ", missing="?")
    assert (args.node, args.expression) == ("kate", "print('a  b', -1)")
    with pytest.raises(UsageError, match="usage: %spawn_link NODE EXPRESSION"):
        parse_free_text(NodeMagics.spawn_link_line, "kate", missing="usage: %spawn_link NODE "
                                                                   "EXPRESSION")


def test_every_magic_shows_its_usage_line_in_its_help() -> None:
    assert "%node [--sname NAME]" in NodeMagics.node.__doc__
    assert "%%node NODE" in NodeMagics.node_cell.__doc__
    assert "%spawn_link NODE EXPRESSION" in NodeMagics.spawn_link_line.__doc__
    assert "%%spawn_link NODE" in NodeMagics.spawn_link_cell.__doc__
    assert "%ping NODE" in NodeMagics.ping.__doc__
    assert "%supervision_tree [--app APP] [NAME] [NODE]" in \
        PictureMagics.supervision_tree_magic.__doc__
