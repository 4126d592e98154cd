"""``nodelab shell``: a terminal that is a node, driven through a real pseudo-terminal.

What a learner does in the lesson's second window: start ``nodelab shell --sname kate``, see
the node in the prompt, use the magics, and see what processes on other nodes print through
this node's group leader appear in the terminal — also while the prompt waits for input.
"""

from __future__ import annotations

import re
import sys
import time

import pexpect
import pytest

from nodelab.tools import peer

COOKIE = "shell_cookie"
COLOUR = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"  # the terminal's colour and cursor codes
PROMPT = rf"iex\(shellkate@localhost\){COLOUR}(\d+){COLOUR}> "


@pytest.fixture
def moebi(tmp_path):
    node = peer.start("shellmoebi", cookie=COOKIE, tick_time=1.0, log_dir=tmp_path)
    yield node
    node.stop()


def start_shell(name: str, *options: str) -> pexpect.spawn:
    """``nodelab shell --sname NAME`` in a pseudo-terminal wide enough for whole lines."""
    return pexpect.spawn(sys.executable, ["-m", "nodelab", "shell", "--sname", name,
                                          "--cookie", COOKIE, *options],
                         encoding="utf-8", timeout=30, dimensions=(40, 200))


@pytest.fixture
def terminal():
    """``nodelab shell --sname shellkate`` in a pseudo-terminal; closed after the test."""
    child = start_shell("shellkate", "--tick-time", "1")
    try:
        yield child
    finally:
        if child.isalive():
            try:
                leave(child)
            except pexpect.TIMEOUT:
                child.terminate(force=True)
        child.close()


def leave(child: pexpect.spawn) -> None:
    """Ctrl-D, and yes to IPython's "Do you really want to exit?"."""
    child.sendeof()
    child.expect("exit", timeout=10)
    child.sendline("y")
    child.expect(pexpect.EOF, timeout=15)


def run(child: pexpect.spawn, line: str, shows: str | None = None) -> str:
    """Type ``line``, wait for the next prompt (and for ``shows``, if given), return what the
    terminal showed meanwhile, without colour codes.

    The terminal redraws the current prompt as keys arrive, so "the next prompt" is the
    one with the next number. Output written through the node's group leader may land
    just before or just after that prompt, so the two are awaited in either order."""
    number = getattr(child, "next_prompt", None) or int(child.match.group(1)) + 1
    child.next_prompt = number + 1
    prompt = rf"iex\(shellkate@localhost\){COLOUR}{number}{COLOUR}> "
    child.sendline(line)
    wanted = [prompt] + ([re.escape(shows)] if shows is not None else [])
    seen = ""
    while wanted:
        index = child.expect(wanted)
        seen += child.before + child.after
        del wanted[index]
    return re.sub(COLOUR, "", seen)


def test_the_shell_is_the_node_with_its_name_in_the_prompt_and_the_magics(terminal,
                                                                         moebi) -> None:
    terminal.expect("nodelab shell on node shellkate@localhost")
    terminal.expect(PROMPT)
    run(terminal, "Node.self()", shows="'shellkate@localhost'")
    run(terminal, f"%ping {moebi.node}", shows="pong")
    run(terminal, "%nodes", shows=moebi.node)
    # A magic with a bad argument answers with one line and the shell goes on.
    run(terminal, "%ping", shows="usage")


def test_a_remote_print_appears_in_the_shell_also_while_the_prompt_waits(terminal,
                                                                         moebi) -> None:
    terminal.expect(PROMPT)
    shown = run(terminal, f"Node.spawn_link({moebi.node!r}, lambda: print('hi from moebi'))")
    # The spawned process prints on moebi, through its group leader: this shell. The print is
    # synchronous, but the PID comes back first, so allow the line to follow the prompt.
    if "hi from moebi" not in shown:
        terminal.expect("hi from moebi", timeout=10)
    # Nothing typed now: a print that arrives while the prompt waits still shows up.
    run(terminal, f"Node.spawn({moebi.node!r}, "
                  "lambda: (__import__('time').sleep(0.5), print('later from moebi')))")
    began = time.monotonic()
    terminal.expect("later from moebi", timeout=10)
    assert time.monotonic() - began < 10
    # And the shell still answers after it.
    run(terminal, "1 + 2", shows="3")


def test_leaving_the_shell_stops_the_node_and_frees_the_name(moebi) -> None:
    child = start_shell("shellkate")
    try:
        child.expect(PROMPT)
        leave(child)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    # The name is free again: a new node can take it at once.
    again = peer.start("shellkate", cookie=COOKIE, timeout=15)
    again.stop()


def test_a_name_in_use_is_one_clear_line(moebi) -> None:
    child = start_shell("shellmoebi")
    try:
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)
    assert child.exitstatus == 2
    lines = [line for line in child.before.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use" in lines[0], lines
