"""What the lessons' stored outputs show, and the order a learner sees it in.

* No stored output holds a path of the machine that ran it: the checkout, a temporary
  folder, a home directory. A learner's copy of the course runs elsewhere, and nbval would
  compare those paths too.
* ``%%spawn_link kate`` with two prints: both lines reach the cell *before* the cell's
  result (the PID), also when the machine is busy. nbval cannot see this order (it compares
  the outputs of a cell, and merges streams), so this test reads the raw iopub messages of a
  real kernel, as JupyterLab does, with two busy loops taking the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import BlockingKernelClient

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("*/[0-9][0-9]_*.ipynb"))

# --- stored outputs ------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _output_texts(output: nbformat.NotebookNode) -> list[str]:
    if output.output_type == "stream":
        return [output.text]
    if output.output_type == "error":
        return [output.ename, output.evalue, *output.traceback]
    return [value if isinstance(value, str) else "\n".join(value)
            for value in output.get("data", {}).values() if isinstance(value, (str, list))]


def _machine_paths() -> list[str]:
    """Absolute paths that say where (and on which machine) the notebooks were run."""
    paths = {str(ROOT), str(ROOT.resolve()), tempfile.gettempdir(), "/tmp/", "/var/tmp/",
             "/home/", "/root/", "/Users/", str(Path.home())}
    return sorted(path for path in paths if path not in ("/", ""))


@pytest.mark.parametrize("notebook", NOTEBOOKS,
                         ids=[f"{path.parent.name}/{path.stem}" for path in NOTEBOOKS])
def test_no_stored_output_holds_a_path_of_this_machine(notebook: Path) -> None:
    assert NOTEBOOKS, "no lesson notebooks"
    nb = nbformat.read(notebook, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            for text in _output_texts(output):
                plain = ANSI.sub("", text)
                found += [(index, path, plain[max(0, plain.find(path) - 40):
                                              plain.find(path) + 80])
                          for path in _machine_paths() if path in plain]
                found += [(index, "nodelab-lessonNN-", line) for line in plain.splitlines()
                          if re.search(r"nodelab-lesson\d\d-", line)]
    assert not found, (f"{notebook.relative_to(LESSONS)}: stored outputs show where they were "
                       "run (cell, path, text):\n" + "\n".join(map(repr, found)))


@pytest.mark.parametrize("notebook", NOTEBOOKS,
                         ids=[f"{path.parent.name}/{path.stem}" for path in NOTEBOOKS])
def test_stored_spawn_link_cells_show_the_prints_before_the_result(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "%spawn_link" not in cell.source:
            continue
        kinds = [output.output_type for output in cell.outputs]
        if "execute_result" in kinds:
            result = kinds.index("execute_result")
            assert "stream" not in kinds[result:], (
                f"{notebook.relative_to(LESSONS)} cell {index}: a print of the spawned process "
                f"is stored after the cell's result: {kinds}")


def test_the_path_check_sees_a_path() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "x", outputs=[nbformat.v4.new_output("stream", name="stdout",
                                             text=f"\x1b[1m{ROOT}/nodelab/otp/server.py\x1b[0m:121")])])
    [output] = nb.cells[0].outputs
    assert any(path in ANSI.sub("", text) for text in _output_texts(output)
               for path in _machine_paths())


# --- the order of a remote print and the cell's result, under load --------------------------

#: The cell of lesson 1 that a learner saw print its second line after the PID.
SPAWN_LINK_CELL = """%%spawn_link {kate}
print("running on", Node.self())
print("my group leader lives on", group_leader().node)"""

#: Measured on a 2-core machine with the race present: 11 of 80 runs out of order, so 60
#: rounds miss it once in ~10,000 runs; a round takes ~0.1 s.
ROUNDS = 60


def _busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for _ in range(count)]


def _run(client: BlockingKernelClient, code: str, timeout: float = 60.0) -> list[tuple]:
    """Execute ``code``; its iopub messages (type, content) in arrival order, up to idle."""
    msg_id = client.execute(code)
    messages: list[tuple] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status":
            if content["execution_state"] == "idle":
                return messages
            continue
        messages.append((kind, content))
    raise AssertionError(f"{code!r} did not finish within {timeout} s: {messages}")


def _fail_on_error(code: str, messages: list[tuple]) -> None:
    errors = [content for kind, content in messages if kind == "error"]
    stderr = [content["text"] for kind, content in messages
              if kind == "stream" and content["name"] == "stderr"]
    assert not errors and not stderr, f"{code!r} failed: {errors or stderr}"


def test_a_spawn_link_cell_prints_everything_before_its_result_under_load() -> None:
    from nodelab.jupyter.node_kernels import start_node_kernel

    suffix = os.getpid()
    alex, kate = f"orderalex{suffix}", f"orderkate{suffix}"
    busy = _busy_loops(2)
    kernel = start_node_kernel(alex, kernel_name="", cwd=str(ROOT),
                               env={"PYTHONPATH": os.pathsep.join(
                                   [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])})
    client = BlockingKernelClient(connection_file=str(kernel.connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=30)
        for code in ("import nodelab.notebook", f"%node --sname {alex}", f"%node start {kate}"):
            _fail_on_error(code, _run(client, code, timeout=120))
        cell = SPAWN_LINK_CELL.format(kate=kate)
        expected = (f"running on {kate}@localhost\n"
                    f"my group leader lives on {alex}@localhost\n")
        wrong = []
        for round_ in range(ROUNDS):
            messages = _run(client, cell)
            _fail_on_error(cell, messages)
            kinds = [kind for kind, _ in messages]
            text = "".join(content["text"] for kind, content in messages if kind == "stream")
            last_stream = max((i for i, kind in enumerate(kinds) if kind == "stream"), default=-1)
            result = kinds.index("execute_result") if "execute_result" in kinds else -1
            if text != expected or not 0 <= last_stream < result:
                wrong.append((round_, [(kind, content.get("text")
                                        or content.get("data", {}).get("text/plain"))
                                       for kind, content in messages]))
        assert not wrong, (
            f"{len(wrong)} of {ROUNDS} runs of the %%spawn_link cell did not show both lines "
            "before the PID (round, iopub messages in order):\n"
            + "\n".join(map(repr, wrong)))
        _run(client, f"%node stop {kate}", timeout=60)
    finally:
        for loop in busy:
            loop.kill()
        for loop in busy:
            loop.wait(10)
        client.stop_channels()
        kernel.shutdown()


# --- the failing test of lesson 5, as a learner's pytest prints it ---------------------------

@pytest.mark.parametrize("tb", ["line", "auto"])
def test_a_failing_distributed_call_is_reported_as_mix_test_does(tb: str) -> None:
    """``no connection to moebi@localhost`` once, in Elixir's words, with no absolute path,
    no internal class name, and the way out for a test run: ``pytest --sname NAME``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NODELAB_ENV", "NODELAB_APP_PATH", "PYTEST_ADDOPTS")}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", NODELAB_ENV="dev",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-q", f"--tb={tb}", "-rN",
         "-p", "nodelab.tools.pytest_plugin", "-p", "no:cacheprovider",
         "-W", "ignore::pytest.PytestConfigWarning",  # the repository's options for its plugins
         "-k", "test_send_message and not moebi"],
        cwd=LESSONS / "chat", env=env, capture_output=True, text=True, timeout=120)
    out = ANSI.sub("", run.stdout)
    assert run.returncode == 1, out + run.stderr
    assert out.count("** (exit) exited in: TaskSupervisor.async_(") == 1, out
    assert "\n    ** (EXIT) no connection to moebi@localhost\n" in out, out
    assert "tests/test_chat.py:" in out, out
    assert "run pytest --sname NAME" in out and "Node.start(" not in out, out
    assert "CallNoConnection" not in out and "nodelab.otp" not in out, out
    assert not any(path in out for path in _machine_paths()), out
