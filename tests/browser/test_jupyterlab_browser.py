"""The lesson as a learner sees it: JupyterLab in a real, headless Chromium.

This test starts a real JupyterLab server on loopback (with its own temporary config, data,
runtime and IPython directories, so nothing touches the user's home), opens a small
notebook in Debian's ``/usr/bin/chromium`` driven by Playwright, runs every cell, and checks
what the learner would check by eye: the cell ``%spawn_link browser_kate Kate.say_name()``
shows ``Hi, my name is Kate`` -- printed by a process on *another* kernel process, node
``browser_kate`` -- and the new process's ``#PID<...>``, and no other cell shows that line.

A screenshot of the notebook is saved under ``$NODELAB_ARTIFACTS`` (default
``tests/browser/artifacts/``) whether the test passes or fails: look at it first when this
test fails.

The nodes are ``browser_alex`` and ``browser_kate`` so that they never meet the nodes of
other tests (the pytest process itself may be node ``alex``). Everything started here --
server, notebook kernel, node kernel, browser -- is stopped here, and the test checks
through /proc that every process the server started is gone.

Needs ``/usr/bin/chromium`` (``scripts/ensure-system-packages`` installs it) and the
``playwright`` Python package; Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium "
                "(bash scripts/ensure-system-packages does it as root)",
                allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the playwright Python package is missing: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NODELAB_ARTIFACTS") or ROOT / "tests" / "browser" / "artifacts")
NOTEBOOK = "browser_spawn_link.ipynb"
TOKEN = "nodelab-browser-test-token"

#: Bounded waits, in seconds. The whole test takes ~15 s on a 2-core machine.
SERVER_START = 30.0
PAGE_READY = 30.0
CELLS_DONE = 60.0
SHUTDOWN = 15.0

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-dev-shm-usage"]

KATE_SAYS = "Hi, my name is Kate"

#: The five cells; the last is the one under test.
CELLS = [
    'get_ipython().extension_manager.load_extension("nodelab")',
    "%node --sname browser_alex --cookie secret_token",
    "%node start browser_kate",
    "%%node browser_kate\n"
    "class Kate:\n"
    "    @staticmethod\n"
    "    def say_name():\n"
    f"        print({KATE_SAYS!r})",
    "%spawn_link browser_kate Kate.say_name()",
]
SPAWN_LINK_CELL = len(CELLS) - 1

#: User settings JupyterLab reads from $JUPYTER_CONFIG_DIR/lab/user-settings: no news or
#: update toast over the notebook (and no request to the internet for them), and every cell
#: attached to the page so that the test can read cells scrolled out of view.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none"},
}

#: True once the notebook is open and its kernel is idle (needs expose_app_in_browser).
NOTEBOOK_IDLE_JS = """(name) => {
    const app = window.jupyterapp;
    const panel = app && app.shell && app.shell.currentWidget;
    if (!panel || !panel.context || !panel.context.path.endsWith(name)) return false;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle' && panel.content.widgets.length > 0;
}"""

#: True once every cell ran and the kernel went back to idle.
ALL_CELLS_RAN_JS = """(count) => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cells = panel.content.widgets;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    return cells.length === count
        && cells.every((cell) => cell.model.executionCount !== null
                                 && cell.model.executionCount !== undefined)
        && !!kernel && kernel.status === 'idle';
}"""


# --- processes, from /proc -----------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _descendants(root: int) -> dict[int, str]:
    """Every living process below ``root``, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rfind(")") + 2:].split()
        if fields and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found[pid] = command.decode(errors="replace").strip()
        todo.extend(children.get(pid, []))
    return found


def _wait_gone(pids: dict[int, str], timeout: float) -> dict[int, str]:
    """Wait until none of ``pids`` runs; return those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := {pid: cmd for pid, cmd in pids.items() if _alive(pid)}) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# --- the JupyterLab server -----------------------------------------------------------------

@dataclass
class Lab:
    process: subprocess.Popen
    url: str
    log: Path

    def api(self, method: str, path: str) -> object:
        # The token in a header needs no _xsrf cookie (a cookie-authenticated call would).
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _write_home(base: Path) -> tuple[dict[str, str], Path]:
    """Temporary Jupyter/IPython directories, settings and the notebook; returns env, root."""
    env = dict(os.environ)
    for variable, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                          ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")]:
        (base / sub).mkdir()
        env[variable] = str(base / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("JUPYTER_PORT", None)
    env.pop("JUPYTER_TOKEN", None)
    for name, settings in USER_SETTINGS.items():
        path = base / "config" / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    root = base / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in CELLS],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    nbformat.write(notebook, root / NOTEBOOK)
    return env, root


def _server_url(runtime: Path, pid: int) -> str | None:
    # The server writes its real address (port 0 = a port the OS picked) here once it
    # listens; reading it back avoids the race of choosing a "free" port beforehand.
    info = runtime / f"jpserver-{pid}.json"
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):
        return None
    return f"http://127.0.0.1:{data['port']}"


def _start_lab(base: Path) -> Lab:
    env, root = _write_home(base)
    log = base / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
               "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with open(log, "wb") as sink:
        # A session of its own: the last-resort cleanup can signal the whole group.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                                   env=env, cwd=root, start_new_session=True)
    lab = Lab(process, "", log)
    deadline = time.monotonic() + SERVER_START
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {process.returncode} before it listened:\n"
                        + lab.log_tail())
        url = _server_url(Path(env["JUPYTER_RUNTIME_DIR"]), process.pid)
        if url:
            lab.url = url
            try:
                lab.api("GET", "/api/status")
                return lab
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    _stop_lab(lab)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START:.0f} s:\n" + lab.log_tail())


def _stop_lab(lab: Lab) -> dict[int, str]:
    """Stop the kernels, then the server; return the processes still running after that."""
    started = _descendants(lab.process.pid)
    if lab.url and lab.process.poll() is None:
        try:  # the kernels first, as the learner's "Shut Down All Kernels" does
            for kernel in lab.api("GET", "/api/kernels") or []:
                lab.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (urllib.error.URLError, OSError, ValueError):
            pass  # the server stop below shuts down the kernels too
    if lab.process.poll() is None:
        lab.process.send_signal(signal.SIGTERM)
        try:
            lab.process.wait(timeout=SHUTDOWN)
        except subprocess.TimeoutExpired:
            os.killpg(lab.process.pid, signal.SIGKILL)
            lab.process.wait(timeout=SHUTDOWN)
    # The node kernel (browser_kate) was started by the notebook kernel: it exits when its
    # parent has gone (ipykernel's parent poller, ~1 s).
    left = _wait_gone(started, SHUTDOWN)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    server = _start_lab(tmp_path)
    try:
        yield server
    finally:
        left = _stop_lab(server)
    if left:
        listing = "\n".join(f"  pid {pid}: {cmd[:160]}" for pid, cmd in left.items())
        pytest.fail("these processes of the JupyterLab server outlived it by "
                    f"{SHUTDOWN:.0f} s (killed now); a node kernel must exit with the "
                    f"kernel that started it:\n{listing}")


# --- the browser -----------------------------------------------------------------------------

def _outputs(page) -> list[str]:
    """The text of each cell's output area, in notebook order."""
    return page.locator(".jp-Notebook .jp-Cell").evaluate_all(
        "cells => cells.map(cell => {"
        "  const area = cell.querySelector('.jp-OutputArea');"
        "  return area ? area.innerText : ''; })")


@pytest.mark.timeout(120)
def test_spawn_link_prints_in_its_own_cell_in_a_real_browser(lab: Lab, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "jupyterlab-spawn-link.png"
    screenshot.unlink(missing_ok=True)
    with sync_api.sync_playwright() as playwright:
        # Debian's chromium wrapper always enables crashpad, whose handlers detach and keep
        # a database under $XDG_CONFIG_HOME: point that (and caches) at the test's directory,
        # not the user's home. The rest of the environment is kept, the leak check's tag too.
        home = tmp_path / "chromium-home"
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
                   XDG_CACHE_HOME=str(home / "cache"))
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             env=env, headless=True, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_READY * 1000)
            try:
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={TOKEN}",
                          wait_until="domcontentloaded")
                page.wait_for_function(NOTEBOOK_IDLE_JS, arg=NOTEBOOK,
                                       timeout=PAGE_READY * 1000)
                # Not awaited: the command's promise ends with the last cell, and the
                # bounded waits below are what decide how long that may take.
                page.evaluate("() => { window.jupyterapp.commands"
                              ".execute('notebook:run-all-cells'); }")
                last = page.locator(".jp-Notebook .jp-Cell").nth(SPAWN_LINK_CELL)
                sync_api.expect(last.locator(".jp-OutputArea")).to_contain_text(
                    KATE_SAYS, timeout=CELLS_DONE * 1000)
                page.wait_for_function(ALL_CELLS_RAN_JS, arg=len(CELLS),
                                       timeout=CELLS_DONE * 1000)
                outputs = _outputs(page)
            finally:
                # Evidence either way: what the learner would have seen at this moment.
                try:
                    page.screenshot(path=str(screenshot), timeout=10_000)
                    print(f"screenshot: {screenshot}")
                except sync_api.Error as error:  # keep the first failure, not this one
                    print(f"no screenshot: {error}")
        finally:
            browser.close()

    assert len(outputs) == len(CELLS), outputs
    assert KATE_SAYS in outputs[SPAWN_LINK_CELL], outputs
    assert "#PID<" in outputs[SPAWN_LINK_CELL], outputs
    elsewhere = [index for index, text in enumerate(outputs)
                 if KATE_SAYS in text and index != SPAWN_LINK_CELL]
    assert not elsewhere, f"kate's print also appeared in cell(s) {elsewhere}: {outputs}"
    assert "started browser_kate@localhost" in outputs[2], outputs
    for index, text in enumerate(outputs):
        assert "Error" not in text and "Traceback" not in text, (index, outputs)
