"""A real Jupyter kernel for tests that look at what cells show, as JupyterLab would.

``Kernel(env).run(code)`` executes one cell and gives back what it showed, by kind:
``stdout``, ``stderr``, ``result`` (the ``text/plain`` of its value), ``error``
(``Name: value``) and ``status`` (the reply's). Shared by the tests of the BEAM windows and of
the lessons without Elixir.
"""

from __future__ import annotations

import os
import signal

from jupyter_client.manager import KernelManager, start_new_kernel


class Kernel:
    """A real ``python3`` kernel; ``run`` gives back what a cell shows, by kind."""

    def __init__(self, env: dict[str, str] | None = None, startup_timeout: float = 60) -> None:
        self.manager: KernelManager
        extra = {"env": env} if env is not None else {}  # None would mean an empty one
        self.manager, self.client = start_new_kernel(kernel_name="python3",
                                                     startup_timeout=startup_timeout, **extra)

    @property
    def pid(self) -> int:
        return self.manager.provisioner.process.pid

    def run(self, code: str, timeout: float = 60.0) -> dict[str, str]:
        shown = {"stdout": "", "stderr": "", "result": "", "error": ""}

        def hook(message: dict) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                shown[content["name"]] += content["text"]
            elif kind == "execute_result":
                shown["result"] += content["data"]["text/plain"]
            elif kind == "error":
                shown["error"] += f"{content['ename']}: {content['evalue']}"

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        shown["status"] = reply["content"]["status"]
        return shown

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)

    def kill(self) -> None:
        """SIGKILL, as when the machine kills a kernel: no clean-up code of its own runs."""
        os.kill(self.pid, signal.SIGKILL)
        self.manager.provisioner.process.wait(10)
        self.client.stop_channels()
        self.manager.cleanup_resources()
