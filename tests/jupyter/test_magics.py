"""The magics in a real kernel, driven by nbclient as nbval drives the lessons.

The kernel is node alice: the test process itself may already be node alex.
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

KATE = (
    "class Kate:\\n"
    "    @staticmethod\\n"
    "    def say_name():\\n"
    "        print('Hi, my name is Kate')\\n"
)


def run_cells(*sources: str) -> list:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in sources])
    NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True).execute()
    return notebook.cells


def text_of(cell, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in cell.outputs
                   if o.output_type == "stream" and o.name == name)


def result_of(cell) -> str | None:
    for output in cell.outputs:
        if output.output_type == "execute_result":
            return output.data["text/plain"]
    return None


@pytest.fixture(scope="module")
def lesson_one():
    return run_cells(
        'get_ipython().extension_manager.load_extension("nodelab")',
        "%node --sname alice --cookie secret_token",
        "from nodelab.tools import peer\n"
        f'kate = peer.start("kate", cookie="secret_token", eval="{KATE}")',
        "%spawn_link kate Kate.say_name()",
        "%%spawn_link kate\nmessage = receive()\nprint('kate got', message)",
        "%spawn_link kate Kate.nope()",
        "%ping kate",
        "%ping nobody",
        "%node --sname bob",
        "%spawn_link",
        "%node start",
        "kate.stop()",
    )


def test_spawn_link_prints_in_its_own_cell_and_shows_the_pid(lesson_one) -> None:
    cell = lesson_one[3]
    assert text_of(cell) == "Hi, my name is Kate\n"
    assert result_of(cell).startswith("#PID<1.")


def test_a_cell_body_waits_only_until_the_process_waits_in_receive(lesson_one) -> None:
    assert result_of(lesson_one[4]).startswith("#PID<1.")
    assert text_of(lesson_one[4]) == ""


def test_a_remote_error_reaches_this_cell_and_ends_the_shell_like_iex(lesson_one) -> None:
    errors = text_of(lesson_one[5], "stderr")
    assert "** (AttributeError) type object 'Kate' has no attribute 'nope'" in errors
    assert "shell process exited with reason: an exception was raised on kate@localhost" in errors
    assert not any(o.output_type == "error" for o in lesson_one[5].outputs)  # kernel lives on


def test_ping(lesson_one) -> None:
    assert result_of(lesson_one[6]) == "'pong'"
    assert result_of(lesson_one[7]) == "'pang'"


@pytest.mark.parametrize("index, expected", [
    (8, "UsageError: this kernel is already node alice@localhost"),
    (9, "UsageError: usage: %spawn_link NODE EXPRESSION"),
    (10, "UsageError: say which node to start"),
])
def test_bad_arguments_get_one_clear_line(lesson_one, index: int, expected: str) -> None:
    errors = text_of(lesson_one[index], "stderr")
    assert errors.startswith(expected)
    assert errors.count("\n") == 1


def test_a_cookie_with_a_space_works_end_to_end() -> None:
    """``%node start`` builds kate's own ``%node`` line with ``shlex.join``: the cookie
    ``a b`` reaches kate whole, whether given with ``--cookie`` or taken from this node."""
    cells = run_cells(
        'get_ipython().extension_manager.load_extension("nodelab")',
        '%node --sname spacealex --cookie "a b"',
        '%node start spacekate --cookie "a b"',
        "%%node spacekate\nNode.get_cookie()",
        "%ping spacekate",
        "%node start spacemoebi",
        "%%node spacemoebi\nNode.get_cookie()",
        "%ping spacemoebi",
        "%node --sname spacealex --cookie",
        "%node stop spacekate spacemoebi",
    )
    errors = [text_of(cell, "stderr") for cell in cells[:8]]
    assert errors == [""] * 8, errors
    assert text_of(cells[2]) == "started spacekate@localhost in a kernel process of its own\n"
    assert text_of(cells[3]) == "[spacekate@localhost] 'a b'\n"
    assert result_of(cells[4]) == "'pong'"
    assert text_of(cells[6]) == "[spacemoebi@localhost] 'a b'\n"
    assert result_of(cells[7]) == "'pong'"
    # A bad line: one line on stderr, IPython's UsageError, and no traceback.
    assert text_of(cells[8], "stderr") == "UsageError: argument --cookie: expected one argument\n"
    assert not any(output.output_type == "error" for output in cells[8].outputs)
    assert text_of(cells[9]) == "stopped spacekate@localhost\nstopped spacemoebi@localhost\n"


NODELAB_MAGICS = ["%node", "%%node", "%spawn_link", "%%spawn_link", "%nodes", "%ping", "%flush",
                  "%%sequence", "%supervision_tree"]


@pytest.fixture(scope="module")
def help_pages() -> dict[str, str]:
    """What JupyterLab shows for ``%node?`` and the others: the execute reply's "page"."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    pages: dict[str, str] = {}
    try:
        client.execute_interactive('get_ipython().extension_manager.load_extension("nodelab")',
                                   timeout=60)
        for magic in NODELAB_MAGICS:
            reply = client.execute_interactive(f"{magic}?", timeout=30,
                                               output_hook=lambda message: None)
            pages[magic] = "".join(payload["data"]["text/plain"]
                                   for payload in reply["content"]["payload"]
                                   if payload.get("source") == "page")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return pages


@pytest.mark.parametrize("magic", NODELAB_MAGICS)
def test_question_mark_explains_every_magic(help_pages, magic: str) -> None:
    text = help_pages[magic]
    assert "Docstring:" in text, f"{magic}? showed {text!r}"
    docstring = text.split("Docstring:", 1)[1]
    assert "No documentation" not in docstring
    # Each explains itself with its own usage, as it is typed.
    assert magic.lstrip("%") in docstring and "%" in docstring, docstring


def test_a_look_shows_what_the_window_printed_just_before_it() -> None:
    # ipykernel publishes a thread's output within flush_interval, under the request that
    # came before: text printed just before a look reaches the notebook while the look
    # runs, under an old request. The look must show it, not the look after it. A long
    # flush_interval makes "just before" certain: only the look's own execute flushes it.
    cells = run_cells(
        'get_ipython().extension_manager.load_extension("nodelab")',
        "%node --sname carol --cookie secret_token",
        "%node start dave",
        "%%node dave\n"
        "import sys, threading, time\n"
        "sys.stderr.flush_interval = 60\n"
        "threading.Thread(target=lambda: (time.sleep(0.3),\n"
        "                                 print('printed before the look', file=sys.stderr)),\n"
        "                 daemon=True).start()",
        "import time; time.sleep(1.0)",
        "%%node dave\n# just look at the window",
        "%node stop dave",
    )
    assert [text_of(cell, "stderr") for cell in cells[3:6]] == [
        "", "", "[dave@localhost] printed before the look\n"], [c.outputs for c in cells]
