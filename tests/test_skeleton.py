"""The package as installed: it imports, its command runs, its plugin is registered, and the
suite's own safety net (a sandboxed home, the leak check) works."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("module", ["nodelab", "nodelab.otp", "nodelab.jupyter"])
def test_package_imports(module: str) -> None:
    importlib.import_module(module)


def test_nodelab_command_runs() -> None:
    # The console script next to this interpreter: .venv/bin/nodelab under ./run-tests.
    script = Path(sys.executable).parent / "nodelab"
    assert script.exists(), (f"{script} is missing: install the package with "
                             f"`{sys.executable} -m pip install -e .[test]` (./run-tests does)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "usage: nodelab" in result.stdout
    for command in ("node", "shell"):
        assert command in result.stdout


def test_pytest_plugin_is_registered() -> None:
    plugins = importlib.metadata.entry_points(group="pytest11")
    assert any(plugin.value == "nodelab.tools.pytest_plugin" for plugin in plugins)


def test_nothing_is_written_to_the_users_home() -> None:
    # tests/conftest.py points every place nodelab, Jupyter and IPython write to at a
    # temporary directory, and EPMD away from its default port 4369.
    temp = Path(tempfile.gettempdir()).resolve()
    for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                     "IPYTHONDIR", "NODELAB_HOME"):
        path = Path(os.environ[variable]).resolve()
        assert path.is_dir() and path.is_relative_to(temp), f"{variable}={path}"
    assert os.environ["ERL_EPMD_PORT"] != "4369"


def test_the_leak_check_sees_a_leftover_process(leftover_processes) -> None:
    # A real child process that has not ended yet is what the end-of-session check reports.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while child.pid not in {item.pid for item in leftover_processes()}:
            assert time.monotonic() < deadline, "the leak check did not see a live child"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.pid not in {item.pid for item in leftover_processes()}


def test_the_leak_check_sees_a_detached_nodelab_process(leftover_processes) -> None:
    # A daemon that left our process tree (new session, parent gone) still carries the
    # run's tag in its environment, and its command line names nodelab.
    launcher = subprocess.run(
        [sys.executable, "-c",
         "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
         "'import time; time.sleep(60)', 'nodelab-leak-probe'], start_new_session=True, "
         "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
         "print(p.pid)"],
        capture_output=True, text=True, timeout=30, check=True)
    orphan = int(launcher.stdout)
    try:
        found = {item.pid: item for item in leftover_processes()}
        assert orphan in found
        assert found[orphan].why == "started by this test run"
    finally:
        os.kill(orphan, 9)
        deadline = time.monotonic() + 10
        while orphan in {item.pid for item in leftover_processes()}:
            assert time.monotonic() < deadline, "the killed probe did not go away"
            time.sleep(0.05)


def test_the_leak_check_sees_a_port_this_process_listens_on(listening_ports) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        assert port in listening_ports()
    finally:
        server.close()
    assert port not in listening_ports()


@pytest.mark.parametrize("script", ["start-course", "run-tests", ".ci/run",
                                    "scripts/ensure-venv", "scripts/ensure-system-packages"])
def test_top_level_scripts_are_executable_bash(script: str) -> None:
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} must be executable (chmod +x {script})"
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)


def test_no_folder_of_tests_is_skipped_by_norecursedirs(pytestconfig: pytest.Config) -> None:
    # pytest's default norecursedirs skips any folder named "dist" or "build": tests/dist
    # was once left out of the whole run without a word. No folder that holds tests may
    # match a pattern of the list pytest really uses.
    patterns = pytestconfig.getini("norecursedirs")
    folders = {path.parent for path in (ROOT / "tests").rglob("test_*.py")}
    skipped = sorted(str(folder.relative_to(ROOT)) for folder in folders
                     for part in folder.relative_to(ROOT).parts
                     if any(fnmatch.fnmatch(part, pattern) for pattern in patterns))
    assert skipped == [], f"pytest skips {skipped}: see norecursedirs in pyproject.toml"
