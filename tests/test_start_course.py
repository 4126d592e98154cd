"""The README's first command: ``./start-course`` serves JupyterLab on ``lessons/`` with the
nodelab kernel installed and without the "get notified about Jupyter news?" prompt. Started
for real (on a free loopback port, no browser), asked over HTTP what it serves, then stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "start-course-test"


def _get(url: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@pytest.mark.skipif(Path(sys.executable).parent != ROOT / ".venv" / "bin",
                    reason="./start-course uses the project's .venv; run the suite with "
                           "./run-tests so that the tests use it too")
def test_start_course_serves_the_lessons_with_the_nodelab_kernel(tmp_path,
                                                                 unused_port) -> None:
    port = unused_port
    log = (tmp_path / "start-course.log").open("wb")
    server = subprocess.Popen(
        ["bash", str(ROOT / "start-course"), "--no-browser", "--ip", "127.0.0.1",
         "--port", str(port), f"--IdentityProvider.token={TOKEN}",
         "--ServerApp.open_browser=False"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        status = None
        while status is None:
            assert server.poll() is None, (
                f"./start-course exited with {server.returncode}:\n"
                + (tmp_path / "start-course.log").read_text(errors="replace")[-3000:])
            assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
            try:
                status = _get(f"{base}/api/status")
            except OSError:
                time.sleep(0.3)
        # The file browser opens on lessons/: both languages are at its top.
        top = {item["name"] for item in _get(f"{base}/api/contents")["content"]}
        assert {"en", "ko"} <= top, top
        lessons = {item["name"] for item in _get(f"{base}/api/contents/en")["content"]}
        assert "01_nodes_and_spawn_link.ipynb" in lessons
        # The nodelab kernel is installed, and JupyterLab itself is what serves /lab.
        specs = _get(f"{base}/api/kernelspecs")["kernelspecs"]
        assert "nodelab" in specs, sorted(specs)
        assert specs["nodelab"]["spec"]["display_name"] == "Python 3 (nodelab)"
        # No "get notified about Jupyter news?" prompt: the course's settings override says
        # never, and JupyterLab serves it as the setting's default.
        notification = _get(
            f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification")
        properties = notification["schema"]["properties"]
        assert properties["fetchNews"]["default"] == "false", properties["fetchNews"]
        assert properties["checkForUpdates"]["default"] is False
        request = urllib.request.Request(f"{base}/lab?token={TOKEN}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and b"JupyterLab" in response.read()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
        log.close()
