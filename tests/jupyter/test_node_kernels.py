"""Node kernels: real kernel processes started, driven and stopped from Python.

Every kernel here is a real ipykernel process. The suite's conftest points Jupyter,
IPython and NODELAB_HOME at a temporary directory, so the run directory, connection files
and kernelspecs written here never touch the user's home. Each test checks with /proc that
the kernels it started are gone.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from nodelab.jupyter import kernelspec
from nodelab.jupyter.node_kernels import (
    NodeKernelError,
    NodeKernelTimeout,
    run_dir,
    running_kernels,
    start_node_kernel,
)

ROOT = Path(__file__).resolve().parents[2]
#: Parent poller period is 1 s; allow for a loaded 2-core machine.
DEATH_DEADLINE = 4.0


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    start = time.monotonic()
    while not (value := predicate()):
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.02)
    return value


@pytest.fixture(scope="module")
def kate(wait_gone):
    kernel = start_node_kernel("kate@localhost", kernel_name="", env={"NODELAB_TEST_VAR": "42"},
                               startup_code="greeting = 'hello from kate'")
    yield kernel
    pid = kernel.os_pid
    kernel.shutdown()
    wait_gone(pid, DEATH_DEADLINE)


def test_execute_streams_output_and_returns_the_value(kate) -> None:
    seen: list[tuple[str, str]] = []
    result = kate.execute(
        "import os, sys\n"
        "print(greeting)\n"
        "print('to stderr', file=sys.stderr)\n"
        "int(os.environ['NODELAB_TEST_VAR']) + 1",
        on_output=lambda stream, text: seen.append((stream, text)), timeout=10)
    assert result.ok and result.result_text == "43"
    assert ("stdout", "hello from kate\n") in seen and ("stderr", "to stderr\n") in seen
    assert result.stdout == "hello from kate\n"


def test_remote_error_comes_back_with_its_traceback(kate) -> None:
    result = kate.execute("def f():\n    return 1 / 0\nf()", timeout=10)
    assert result.status == "error"
    assert (result.ename, result.evalue) == ("ZeroDivisionError", "division by zero")
    assert "return 1 / 0" in result.error and "\x1b[" not in result.error
    with pytest.raises(NodeKernelError, match="ZeroDivisionError"):
        result.raise_for_error()
    # The window stays usable after an error (stop_on_error is off).
    assert kate.execute("2 * 21", timeout=10).result_text == "42"


def test_rich_output_is_returned_and_its_text_streamed(kate) -> None:
    seen: list[tuple[str, str]] = []
    bundles: list[dict] = []
    code = ("from IPython.display import SVG, display\n"
            "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"/>'))")
    result = kate.execute(code, on_output=lambda s, t: seen.append((s, t)), timeout=10)
    assert [o["output_type"] for o in result.outputs] == ["display_data"]
    assert "image/svg+xml" in result.outputs[0]["data"]
    assert seen == [("stdout", "<IPython.core.display.SVG object>\n")]
    kate.execute(code, on_display=bundles.append, timeout=10)
    assert "image/svg+xml" in bundles[0]


def test_child_log_goes_to_the_log_file_not_the_parent(kate, capfd) -> None:
    kate.execute("import sys; sys.__stderr__.write('kernel log line\\n'); sys.__stderr__.flush()",
                 timeout=10)
    assert wait_for(lambda: "kernel log line" in kate.log_path.read_text(), what="log line")
    assert "kernel log line" not in capfd.readouterr().err
    assert kate.log_path.parent == run_dir() and kate.connection_file.parent == run_dir()
    assert oct(run_dir().stat().st_mode & 0o777) == "0o700"


def test_output_printed_outside_an_execute_is_kept_then_watched(kate) -> None:
    """A thread in kate prints after its execute returned: nothing is lost.

    Measured here too: ipykernel 7 publishes it under the parent of the *last* request
    (the finished one), not with an empty parent.
    """
    # A second client, with its own session, sees every iopub message unrouted.
    raw = BlockingKernelClient(connection_file=str(kate.connection_file))
    raw.load_connection_file()
    raw.start_channels(shell=False, stdin=False, hb=False, control=False)
    try:
        started = kate.execute(
            "import threading, time\n"
            "threading.Thread(target=lambda: (time.sleep(0.3), print('later, from kate'))).start()",
            timeout=10)
        assert started.ok
        wait_for(lambda: kate._unclaimed, what="the late line kept for a watcher")
        parents = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not parents:
            msg = raw.get_iopub_msg(timeout=1)
            if msg["msg_type"] == "stream" and "later, from kate" in msg["content"]["text"]:
                parents.append(msg["parent_header"].get("msg_id"))
        assert parents == [started.msg_id]
    finally:
        raw.stop_channels()

    watched: list[tuple[str, str]] = []
    kate.watch(lambda stream, text: watched.append((stream, text)))
    try:
        assert watched == [("stdout", "later, from kate\n")]  # the backlog, handed over
        kate.execute("threading.Thread(target=lambda: (time.sleep(0.2), print('and again')))"
                     ".start()", timeout=10)
        wait_for(lambda: ("stdout", "and again\n") in watched, what="watched line")
    finally:
        kate.watch(None)


def test_timeout_then_interrupt(kate) -> None:
    late: list[tuple[str, str]] = []
    kate.watch(lambda stream, text: late.append((stream, text)))
    try:
        with pytest.raises(NodeKernelTimeout, match="interrupt"):
            kate.execute("import time; time.sleep(30)", timeout=0.3)
        kate.interrupt()
        # The interrupted code's KeyboardInterrupt is output of a finished execute.
        wait_for(lambda: any("KeyboardInterrupt" in text for _, text in late),
                 what="KeyboardInterrupt relayed")
        assert kate.execute("'still here'", timeout=10).result_text == "'still here'"
    finally:
        kate.watch(None)


def test_start_sweeps_stale_files_and_shutdown_cleans_up(wait_gone) -> None:
    stale = run_dir() / "ghost@localhost-999999999-00000000.json"
    stale.write_text("{}")
    kernel = start_node_kernel("bob", kernel_name="")
    assert not stale.exists(), "connection file of a dead parent was not swept"
    pid, connection = kernel.os_pid, kernel.connection_file
    assert connection.exists() and kernel.is_alive() and kernel in running_kernels()
    with kernel:
        assert kernel.execute("1 + 1", timeout=10).result_text == "2"
    assert not kernel.is_alive() and kernel not in running_kernels()
    assert not connection.exists()
    wait_gone(pid, DEATH_DEADLINE)
    kernel.shutdown()  # twice is fine


def test_failing_startup_code_stops_the_kernel_and_says_why() -> None:
    before = {k.os_pid for k in running_kernels()}
    expected = "(?s)start-up code of carl failed.*NameError.*It printed:\nbooting"
    with pytest.raises(NodeKernelError, match=expected):
        start_node_kernel("carl", kernel_name="", startup_code="print('booting')\nnot_defined")
    assert {k.os_pid for k in running_kernels()} == before


PARENT = textwrap.dedent("""
    import json, sys, time
    from nodelab.jupyter.node_kernels import start_node_kernel
    kernels = [start_node_kernel(f"k{i}", kernel_name="") for i in range(int(sys.argv[1]))]
    print(json.dumps([[k.os_pid, str(k.connection_file)] for k in kernels]), flush=True)
    if sys.argv[2] == "wait":
        time.sleep(60)
""")


def _start_parent(count: int, then: str) -> tuple[subprocess.Popen, list[tuple[int, Path]]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(count), then],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = parent.stdout.readline()
    if not line:
        parent.kill()
        pytest.fail(f"parent failed: {parent.communicate(timeout=10)[1]}")
    return parent, [(pid, Path(path)) for pid, path in json.loads(line)]


def test_kernel_exits_when_its_parent_is_killed_with_sigkill(alive, wait_gone) -> None:
    """No clean-up code can run in the parent: ipykernel's parent poller is the backstop."""
    parent, kernels = _start_parent(1, "wait")
    try:
        (pid, connection), = kernels
        assert alive(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        wait_gone(pid, DEATH_DEADLINE)
    finally:
        parent.kill()
        parent.communicate(timeout=5)
    # The parent could not remove its connection file: the next start sweeps it.
    start_node_kernel("sweeper", kernel_name="").shutdown()
    assert not connection.exists()


def test_kernels_stop_when_their_parent_exits_normally(wait_gone) -> None:
    """atexit shuts every node kernel down: their connection files go too (the poller would not)."""
    parent, kernels = _start_parent(2, "exit")
    parent.communicate(timeout=20)
    for pid, connection in kernels:
        wait_gone(pid, 1.0)  # already gone when the parent exited, well before the poller
        assert not connection.exists()


def test_kernels_stop_when_the_parent_kernel_is_shut_down(alive, wait_gone) -> None:
    """A notebook kernel that started kate: shutting it down (JupyterLab's shutdown/restart)
    stops kate through the do_shutdown hook, before the parent exits."""
    parent = start_node_kernel("notebook", kernel_name="")
    parent_pid = parent.os_pid
    try:
        result = parent.execute(
            "from nodelab.jupyter.node_kernels import start_node_kernel\n"
            "child = start_node_kernel('kate-in-notebook', kernel_name='')\n"
            "child.execute('6 * 7').result_text, child.os_pid, str(child.connection_file)",
            timeout=30)
        hooked = parent.execute("get_ipython().kernel._nodelab_do_shutdown_hooked", timeout=10)
        assert hooked.result_text == "True"
        answer, child_pid, connection = ast.literal_eval(result.result_text)
        assert answer == "42" and alive(child_pid)
    finally:
        parent.shutdown()
    wait_gone(parent_pid, DEATH_DEADLINE)
    wait_gone(child_pid, 1.0)
    assert not Path(connection).exists()


# --- the kernelspec and the nodelab kernel ------------------------------------------------


def test_kernelspec_install_list_uninstall(tmp_path, monkeypatch, capsys) -> None:
    prefix = tmp_path / "env"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    assert kernelspec.main(["install", "--prefix", str(prefix)]) == 0
    spec_dir = prefix / "share" / "jupyter" / "kernels" / "nodelab"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == ["python", "-m", "nodelab.jupyter.kernel", "-f", "{connection_file}"]
    assert spec["display_name"] == "Python 3 (nodelab)" and spec["language"] == "python"
    assert (spec_dir / "logo-svg.svg").exists()
    # The file in the repo is what gets installed.
    assert spec == json.loads((ROOT / "kernels" / "nodelab" / "kernel.json").read_text())
    assert "nodelab" in kernelspec.installed_specs()
    assert kernelspec.main(["list"]) == 0
    assert str(spec_dir) in capsys.readouterr().out
    assert kernelspec.main(["uninstall", "--prefix", str(prefix)]) == 0
    assert not spec_dir.exists()
    assert kernelspec.main(["uninstall", "--prefix", str(prefix)]) == 1


def test_nodelab_kernel_loads_the_extension_and_fails_softly(tmp_path, monkeypatch) -> None:
    prefix = tmp_path / "env"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    installed = kernelspec.install(prefix=str(prefix))
    broken = installed.parent / "nodelab-broken"
    broken.mkdir()
    (broken / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", "from nodelab.jupyter.kernel import main; "
                 "main(extensions=['nodelab_no_such_extension'])", "-f", "{connection_file}"],
        "display_name": "broken", "language": "python"}))

    with start_node_kernel("with-nodelab") as kernel:  # kernel_name=None: nodelab if installed
        loaded = kernel.execute("sorted(get_ipython().extension_manager.loaded)", timeout=10)
        assert "'nodelab'" in loaded.result_text
    with start_node_kernel("soft", kernel_name="nodelab-broken") as kernel:
        assert kernel.execute("1 + 1", timeout=10).result_text == "2"
        assert "nodelab_no_such_extension" in kernel.log_tail(50)
    with pytest.raises(NodeKernelError, match="no kernelspec named 'nope'"):
        start_node_kernel("x", kernel_name="nope")
