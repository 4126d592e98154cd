"""CellOutput: text written for a cell lands in *that* cell, from any thread, at any time.

Checked against real kernels: the raw iopub messages (their ``parent_header.msg_id`` is
what JupyterLab uses to place output) and a real nbclient run (what nbval sees).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import BlockingKernelClient
from nbclient import NotebookClient

from nodelab.jupyter.cell_output import CellOutput
from nodelab.jupyter.node_kernels import start_node_kernel

ROOT = Path(__file__).resolve().parents[2]

CELL_1 = textwrap.dedent("""
    import sys, threading, time
    from nodelab.jupyter.cell_output import CellOutput

    class Wrapper:  # stands in for nodelab's OutputRouter: must be bypassed, not written to
        def __init__(self, underlying):
            self.underlying, self.writes = underlying, []
        def write(self, text):
            self.writes.append(text)
            return self.underlying.write(text)
        def flush(self):
            self.underlying.flush()
        def __getattr__(self, name):
            return getattr(self.underlying, name)

    sys.stdout = Wrapper(sys.stdout)
    out = CellOutput.capture()
    print("cell 1 itself")

    def relay():
        time.sleep(0.6)          # cell 1 is long finished; cell 2 is running
        out.write("late line for cell 1\\n")
        out.write("late error for cell 1\\n", "stderr")
        out.display({"text/plain": "a picture", "image/svg+xml": "<svg/>"}, raw=True)
        out.flush()

    threading.Thread(target=relay).start()
""")

CELL_2 = "import time; print('cell 2 starts'); time.sleep(1.2); print('cell 2 ends')"


def test_late_output_goes_to_the_cell_that_captured_it() -> None:
    kernel = start_node_kernel("cells", kernel_name="")
    client = BlockingKernelClient(connection_file=str(kernel.connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=10)
        first, second = client.execute(CELL_1), client.execute(CELL_2)
        messages, idle = [], set()
        deadline = time.monotonic() + 15
        while second not in idle and time.monotonic() < deadline:
            msg = client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            parent = msg["parent_header"].get("msg_id")
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
            messages.append((parent, msg["msg_type"], msg["content"], set(idle)))
        assert second in idle, "cell 2 did not finish"

        def outputs_of(msg_id: str) -> list:
            return [(kind, content.get("name"), content.get("text") or content.get("data"))
                    for parent, kind, content, _ in messages
                    if parent == msg_id and kind in ("stream", "display_data")]

        assert outputs_of(first) == [
            ("stream", "stdout", "cell 1 itself\n"),
            ("stream", "stdout", "late line for cell 1\n"),
            ("stream", "stderr", "late error for cell 1\n"),
            ("display_data", None, {"text/plain": "a picture", "image/svg+xml": "<svg/>"}),
        ]
        assert outputs_of(second) == [("stream", "stdout", "cell 2 starts\n"),
                                      ("stream", "stdout", "cell 2 ends\n")]
        # The late lines really arrived while cell 2 ran (after cell 1's idle, before cell 2's).
        late = [seen for parent, kind, content, seen in messages
                if kind == "stream" and "late line" in content.get("text", "")]
        assert late and first in late[0] and second not in late[0]
        # ...and went around the wrapper in sys.stdout, straight to ipykernel's stream.
        writes = kernel.execute("sys.stdout.writes", timeout=10).result_text
        assert "cell 1 itself" in writes and "late" not in writes
    finally:
        client.stop_channels()
        pid = kernel.os_pid
        kernel.shutdown()
        assert not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


NOTEBOOK_CELLS = [
    # 1: a relay thread writes for this cell; the cell waits for it, then flushes.
    textwrap.dedent("""
        import threading, time
        from nodelab.jupyter.cell_output import CellOutput
        out = CellOutput.capture()
        def relay():
            time.sleep(0.3)
            for n in range(3):
                out.write(f"relayed {n}\\n")
            out.display({"text/plain": "tree", "image/svg+xml": "<svg/>"}, raw=True)
        worker = threading.Thread(target=relay)
        worker.start()
        worker.join()
        assert out.flush()
    """),
    # 2: a writer for cell 2 that starts writing only after cell 2 ended: never in cell 2
    #    (nbclient has moved on, which is nbval's limit), and never in cell 3.
    textwrap.dedent("""
        late = CellOutput.capture()
        threading.Timer(0.2, lambda: late.write("too late\\n")).start()
        print("cell 2")
    """),
    "time.sleep(0.6); print('cell 3')",
]


def test_nbclient_sees_output_written_from_another_thread_before_the_cell_returns(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    # A kernelspec of *this* interpreter, found first: never some other python3 on the machine.
    spec = tmp_path / "jupyter" / "kernels" / "this-python"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "this python", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    client = NotebookClient(nb, timeout=30, kernel_name="this-python",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    first, second, third = (cell.outputs for cell in nb.cells)
    assert [o.get("text") for o in first if o.output_type == "stream"] == [
        "relayed 0\nrelayed 1\nrelayed 2\n"]
    assert [o.data["image/svg+xml"] for o in first if o.output_type == "display_data"] == [
        "<svg/>"]
    assert [o.text for o in second] == ["cell 2\n"]
    assert [o.text for o in third] == ["cell 3\n"]


def test_outside_a_kernel_it_writes_to_the_process_stdout_and_stderr() -> None:
    code = textwrap.dedent("""
        import sys, threading
        from nodelab.jupyter.cell_output import CellOutput
        out = CellOutput.capture()
        assert not out.in_kernel
        sys.stdout = None  # what it writes to is the process's own stdout, not sys.stdout
        thread = threading.Thread(target=lambda: out.write("from a thread\\n"))
        thread.start(); thread.join()
        out.write("oops\\n", "stderr")
        out.display({"text/plain": "a tree", "image/svg+xml": "<svg/>"}, raw=True)
        print("visible", file=out.stream())
        out.flush()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from a thread\na tree\nvisible\n"
    assert done.stderr == "oops\n"


def test_bad_arguments_say_what_to_do() -> None:
    out = CellOutput.capture()  # pytest is not a kernel: the terminal writer
    with pytest.raises(ValueError, match="'stdout' or 'stderr'"):
        out.write("x", "stdlog")
    with pytest.raises(TypeError, match="str"):
        out.write(42)  # type: ignore[arg-type]
