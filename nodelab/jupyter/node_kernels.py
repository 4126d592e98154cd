"""Start other node kernels from a notebook: the lesson's second and third terminal windows.

In the lesson each node is an ``iex`` in its own terminal. In a notebook, each other node
is a Jupyter kernel process of its own, started and driven from here::

    kate = start_node_kernel("kate@localhost", startup_code="...")
    kate.execute("print('hi')", on_output=lambda stream, text: print(text, end=""))
    kate.execute("1 + 1").result_text          # '2'
    kate.shutdown()

This module is a kernel's lifetime: starting it, stopping it, and sweeping what it left.
Running code in it and relaying its output to the right caller (``execute``, ``watch``)
is :mod:`nodelab.jupyter.node_kernel_client`. The module is long because a child must end
however its parent ends (its own shutdown, the parent's exit, the parent kernel's shutdown
or restart, SIGKILL), and each of those ways has its hook here, beside the kernelspec and
environment a child starts with. What this module guarantees, and why:

* **The child dies with its parent.** Kernels are started *not* independent, so
  jupyter_client puts ``JPY_PARENT_PID`` in their environment and ipykernel's parent
  poller ends the child (``os._exit``) within about a second after the parent is gone —
  SIGKILL included, when no clean-up code of ours can run. nbval ends kernels with
  ``now=True`` (SIGKILL), so that poller is the backstop; the clean paths are
  :func:`shutdown_all` at ``atexit`` and, inside a kernel, a hook on that kernel's
  ``do_shutdown`` (JupyterLab's "shut down" and "restart" send ``shutdown_request``, which
  calls it before the parent exits).
* **Files live in a run directory we own**, ``$NODELAB_HOME/run/kernels/`` (``~/.nodelab``
  by default): ``<label>-<parent pid>-<token>.json`` (the connection file) and ``.log``
  (the child's own stdout/stderr — its log lines, e.g. the "running over TCP without
  encryption" warning, would otherwise land in the parent's cell). A connection file
  whose parent pid is dead is swept at the next start; logs of dead parents are kept for
  a day, for the post-mortem.

Figures (2-core machine, ipykernel 7.4, median of 5 starts and 25 round trips, bare and
ours interleaved in one run; ``python benchmarks/kernel_start.py [KERNELSPEC]`` measures
them again):

* bare ``KernelManager.start_kernel`` + ``wait_for_ready``: 583 ms (601 ms in the second run)
* ``start_node_kernel`` -> ready: 534 ms with the built-in ipykernel spec (ratio 0.92),
  586 ms with the ``nodelab`` kernelspec, which imports nodelab at start (ratio 0.98);
  the goal was <= 1.2
* ``execute("1+1")`` round trip: 6.5 ms (7.4 ms on the nodelab kernel); the same on a bare
  client's ``execute_interactive``: 6.6 ms — ipykernel's own cost, the relay
  (:mod:`nodelab.jupyter.node_kernel_client`) adds nothing measurable

From inside a notebook cell, ``%node start kate`` (start + loading nodelab + ``%node``
there) took 0.56 s. The kernel's sockets are CurveZMQ-encrypted when its spec declares
support (ipykernel 7 does): same start-up time, and no plain-text warning in the log.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import os
import re
import secrets
import signal
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .node_kernel_client import (
    ExecuteResult,
    NodeKernelClient,
    NodeKernelDied,
    NodeKernelError,
    NodeKernelTimeout,
    OutputCallback,
    strip_ansi,
)

__all__ = [
    "ExecuteResult", "NodeKernel", "NodeKernelDied", "NodeKernelError", "NodeKernelTimeout",
    "OutputCallback", "on_parent_shutdown", "run_dir", "running_kernels", "shutdown_all",
    "start_node_kernel", "strip_ansi",
    "sweep_stale",
]

#: Kernelspec used when it is installed (``python -m nodelab.jupyter.kernelspec install``).
NODELAB_KERNEL = "nodelab"
#: How long a child gets to stop by itself before it is killed, by default (seconds).
SHUTDOWN_TIMEOUT = 5.0
#: Budget of the whole clean-up when the parent kernel itself is shut down or restarted:
#: jupyter_server sends SIGTERM 2.5 s after its shutdown request, so stay well below.
PARENT_SHUTDOWN_BUDGET = 2.0
#: Logs of dead parents older than this are swept (seconds).
LOG_KEEP = 24 * 3600.0

_SAFE_LABEL = re.compile(r"[^A-Za-z0-9_.@-]+")


# --- files ---------------------------------------------------------------------------------


def run_dir() -> Path:
    """``$NODELAB_HOME/run/kernels`` (mode 0700): connection files and logs of node kernels."""
    from nodelab.dist.cookie import nodelab_home

    path = nodelab_home() / "run" / "kernels"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parent_pid_of(path: Path) -> int | None:
    # <label>-<parent pid>-<token>.<ext>; the label may hold dashes, the token does not.
    parts = path.stem.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return None


def sweep_stale(directory: Path | None = None) -> list[Path]:
    """Remove connection files (and old logs) left by parents that are gone. Returns them."""
    directory = directory or run_dir()
    removed = []
    now = time.time()
    for path in directory.iterdir():
        parent = _parent_pid_of(path)
        if parent is None or parent == os.getpid() or _pid_alive(parent):
            continue
        try:
            if path.suffix == ".json" or (path.suffix == ".log"
                                          and now - path.stat().st_mtime > LOG_KEEP):
                path.unlink()
                removed.append(path)
        except OSError:  # another notebook swept it first
            pass
    return removed


# --- the registry --------------------------------------------------------------------------

_registry: dict[int, NodeKernel] = {}
_registry_lock = threading.Lock()
_atexit_registered = False
_counter = itertools.count(1)


def running_kernels() -> list[NodeKernel]:
    """The node kernels this process started and has not shut down, oldest first."""
    with _registry_lock:
        return [k for _, k in sorted(_registry.items())]


def shutdown_all(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Stop every node kernel this process started, all at once, within about ``timeout`` s.

    Each kernel is asked to shut down; one that does not stop in time is killed.
    """
    kernels = running_kernels()
    if not kernels:
        return
    threads = [threading.Thread(target=k.shutdown, kwargs={"timeout": timeout},
                                name=f"nodelab stop {k.label}", daemon=True) for k in kernels]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout + 1.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    # Whatever did not stop politely in time goes now (SIGKILL).
    for kernel in kernels:
        kernel.kill()


#: Other things this process started that stop with its kernel (BEAM windows):
#: ``hook(timeout)``, run beside :func:`shutdown_all`.
_parent_shutdown_hooks: list[Callable[[float], None]] = []


def on_parent_shutdown(hook: Callable[[float], None]) -> None:
    """Run ``hook(timeout)`` too when this kernel is shut down or restarted, or this process
    exits: at the same moments, and within the same budget, as the node kernels stop."""
    global _atexit_registered
    with _registry_lock:
        if hook not in _parent_shutdown_hooks:
            _parent_shutdown_hooks.append(hook)
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
    _hook_parent_kernel_shutdown()


def _stop_for_parent(timeout: float) -> None:
    """:func:`shutdown_all` and the other hooks, side by side."""
    with _registry_lock:
        hooks = list(_parent_shutdown_hooks)
    threads = [threading.Thread(target=hook, args=(timeout,), daemon=True,
                                name="nodelab stop on shutdown") for hook in hooks]
    for thread in threads:
        thread.start()
    try:
        shutdown_all(timeout=timeout)
    finally:
        deadline = time.monotonic() + timeout + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _at_exit() -> None:
    try:
        _stop_for_parent(PARENT_SHUTDOWN_BUDGET)
    except Exception:  # noqa: BLE001 - exiting: the children's parent poller is the backstop
        pass


def _register(kernel: NodeKernel) -> None:
    global _atexit_registered
    with _registry_lock:
        _registry[kernel._serial] = kernel
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
    _hook_parent_kernel_shutdown()


def _unregister(kernel: NodeKernel) -> None:
    with _registry_lock:
        _registry.pop(kernel._serial, None)


def _hook_parent_kernel_shutdown() -> None:
    """Inside an ipykernel: stop our node kernels when *that* kernel is shut down/restarted.

    ``shutdown_request`` (JupyterLab's shutdown and restart) calls ``kernel.do_shutdown``
    before the kernel's loops stop, so this runs while the process is still healthy — and
    before ``atexit``, which a kernel killed with ``now=True`` never reaches.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None or getattr(kernel, "_nodelab_do_shutdown_hooked", False):
        return
    original = kernel.do_shutdown

    async def do_shutdown(restart: bool) -> Any:
        # ipykernel awaits do_shutdown (a plain return value works too, with a warning).
        try:
            _stop_for_parent(PARENT_SHUTDOWN_BUDGET)
        except Exception:  # noqa: BLE001 - the parent's shutdown must go on regardless
            pass
        reply = original(restart)
        return await reply if inspect.isawaitable(reply) else reply

    kernel.do_shutdown = do_shutdown
    kernel._nodelab_do_shutdown_hooked = True


# --- how to run a kernel -------------------------------------------------------------------


def ipykernel_metadata() -> dict[str, Any]:
    """The kernelspec ``metadata`` of the installed ipykernel (debugger, encryption support)."""
    import json

    shipped = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    try:
        # Written by ipykernel's installation: cheap to read, and it matches the package.
        return dict(json.loads(shipped.read_text()).get("metadata") or {})
    except (OSError, ValueError):
        from ipykernel.kernelspec import get_kernel_dict  # imports ipykernel: ~0.2 s

        return dict(get_kernel_dict().get("metadata") or {})


def _builtin_spec() -> Any:
    """``python3``'s kernelspec, but always with *this* interpreter (never a user's python3)."""
    from jupyter_client.kernelspec import KernelSpec

    return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"],
                      display_name="Python 3 (node kernel)", language="python",
                      interrupt_mode="signal", resource_dir="",
                      metadata=ipykernel_metadata())


def _choose_spec(kernel_name: str | None) -> Any:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    wanted = NODELAB_KERNEL if kernel_name is None else kernel_name
    if wanted == "":
        return _builtin_spec()
    try:
        return KernelSpecManager().get_kernel_spec(wanted)
    except NoSuchKernel:
        if kernel_name is None:
            return _builtin_spec()
        raise NodeKernelError(f"no kernelspec named {kernel_name!r}: install it (for nodelab: "
                              "python -m nodelab.jupyter.kernelspec install --sys-prefix) or "
                              "pass kernel_name=None for the built-in one") from None


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # A source checkout that is not installed (tests, `python -m` from the repo): let the
    # child import the same nodelab. An installed nodelab is found without help, and
    # putting site-packages on PYTHONPATH could shadow the standard library.
    root = str(Path(__file__).resolve().parents[2])
    site_dirs = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    installed = {str(Path(p).resolve()) for p in site_dirs}
    if root not in installed:
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    env.pop("JPY_PARENT_PID", None)  # jupyter_client sets ours
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def _new_manager(spec: Any) -> Any:
    from jupyter_client import KernelManager

    class _Manager(KernelManager):
        # KernelManager looks its spec up by name; ours is chosen (or built) beforehand.
        @property
        def kernel_spec(self) -> Any:
            return spec

    # "auto": CurveZMQ-encrypt the kernel's sockets when its spec says it can (ipykernel 7
    # does). Same start-up time; other local users cannot read the code we send.
    return _Manager(kernel_name="", transport_encryption="auto")


# --- one kernel ----------------------------------------------------------------------------


class NodeKernel(NodeKernelClient):
    """A kernel process this process started: a node's "terminal window".

    Use :func:`start_node_kernel` to make one. Running code in it (:meth:`execute`,
    :meth:`watch`) is :class:`~nodelab.jupyter.node_kernel_client.NodeKernelClient`'s;
    this class adds the process: its files, :meth:`interrupt`, :meth:`shutdown`,
    :meth:`kill`.
    """

    def __init__(self, label: str, manager: Any, client: Any, *, connection_file: Path,
                 log_path: Path) -> None:
        super().__init__(label, client)
        self.connection_file = connection_file
        self.log_path = log_path
        self._km = manager
        self._serial = next(_counter)
        self._closed = False
        #: Seconds from :func:`start_node_kernel` to a kernel that answers (set by it).
        self.ready_after: float | None = None

    def __repr__(self) -> str:
        state = "alive" if self.is_alive() else "stopped"
        return f"<NodeKernel {self.label} pid={self.os_pid} {state}>"

    # --- facts -------------------------------------------------------------------------

    @property
    def os_pid(self) -> int | None:
        """The kernel's OS process id (None before it started)."""
        return getattr(self._process(), "pid", None)

    @property
    def manager(self) -> Any:
        """The jupyter_client ``KernelManager`` (for what this class does not cover)."""
        return self._km

    def _process(self) -> Any:
        return getattr(getattr(self._km, "provisioner", None), "process", None)

    def is_alive(self) -> bool:
        """True while the kernel process runs (and :meth:`shutdown` was not called)."""
        process = self._process()
        # Popen.poll, not KernelManager.is_alive: that one goes through an event loop
        # (a thread hop inside a kernel) for the same answer.
        return not self._closed and process is not None and process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the kernel's own stdout/stderr log (why did it die?)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _died(self, doing: str) -> NodeKernelDied:
        if self._closed:
            return NodeKernelDied(f"the kernel of {self.label} {doing}: it was shut down. "
                                  "Start it again with start_node_kernel.")
        tail = self.log_tail()
        return NodeKernelDied(
            f"the kernel of {self.label} {doing}: its process has ended. Start it again "
            f"(start_node_kernel). Its log is {self.log_path}"
            + (f"; it ends with:\n{tail}" if tail else "."))

    # --- control -------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Interrupt the code running in the kernel (SIGINT, like Ctrl-C in its window)."""
        if not self.is_alive():
            raise self._died("cannot be interrupted")
        self._km.interrupt_kernel()

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop the kernel: ask it to shut down, kill it if it is not gone after ``timeout`` s.

        Removes its connection file. Safe to call twice and on a dead kernel.
        """
        if self._closed:
            return
        self._closed = True
        _unregister(self)
        self._stop_reader()
        try:
            self._km.shutdown_wait_time = max(timeout, 0.2)
            self._km.shutdown_kernel(now=False)
        except Exception:  # noqa: BLE001 - already dead, or the manager is half gone
            self.kill()
        finally:
            try:
                self._kc.stop_channels()
            except Exception:  # noqa: BLE001 - the kernel is stopped already; closing is best effort
                pass
            try:
                self.connection_file.unlink(missing_ok=True)
                if self.log_path.stat().st_size == 0:  # nothing to read post-mortem
                    self.log_path.unlink()
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL the kernel process at once (no clean-up in the kernel)."""
        process = self._process()
        if process is None or process.poll() is not None:
            return
        try:
            process.send_signal(signal.SIGKILL)
            process.wait(5)
        except (OSError, subprocess.TimeoutExpired):  # gone already / a zombie's parent
            pass

    def __enter__(self) -> NodeKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# --- starting one --------------------------------------------------------------------------


def start_node_kernel(label: str, *, env: Mapping[str, str] | None = None,
                      startup_code: str | None = None, timeout: float = 30.0,
                      kernel_name: str | None = None, cwd: str | None = None) -> NodeKernel:
    """Start a kernel process for node ``label`` and wait until it answers.

    ``env`` is added to this process's environment for the child. ``startup_code`` runs
    in it before this returns (its failure stops the kernel and raises
    :class:`NodeKernelError` with the remote traceback). ``kernel_name=None`` uses the
    ``nodelab`` kernelspec when installed, else this interpreter's ipykernel; ``""``
    forces the latter; any other name is looked up. The kernel stops with
    :meth:`NodeKernel.shutdown`, :func:`shutdown_all`, at this process's exit, when this
    kernel (if we are one) is shut down, and ~1 s after this process dies in any way.
    """
    if not label or not isinstance(label, str):
        raise NodeKernelError(f"a node kernel needs a label such as 'kate@localhost', "
                              f"not {label!r}")
    started = time.monotonic()
    directory = run_dir()
    sweep_stale(directory)
    stem = f"{_SAFE_LABEL.sub('_', label)}-{os.getpid()}-{secrets.token_hex(4)}"
    connection_file = directory / f"{stem}.json"
    log_path = directory / f"{stem}.log"

    manager = _new_manager(_choose_spec(kernel_name))
    manager.connection_file = str(connection_file)
    with open(log_path, "ab", buffering=0) as log:
        try:
            # stdout/stderr: the child's log lines never reach the parent's cell. Not
            # independent: JPY_PARENT_PID makes the child exit when we die.
            manager.start_kernel(env=_child_env(env), stdout=log, stderr=log,
                                 cwd=cwd or os.getcwd(), independent=False)
        except Exception as error:
            connection_file.unlink(missing_ok=True)
            raise NodeKernelError(f"could not start a kernel for {label}: {error}. "
                                  f"Its log is {log_path}") from error
    client = manager.client()
    kernel = NodeKernel(label, manager, client, connection_file=connection_file,
                        log_path=log_path)
    _register(kernel)
    try:
        client.start_channels()
        try:
            client.wait_for_ready(timeout=max(0.1, timeout - (time.monotonic() - started)))
        except RuntimeError as error:
            if not kernel.is_alive():
                raise kernel._died("did not start") from None
            raise NodeKernelTimeout(f"the kernel of {label} did not answer within "
                                    f"{timeout:g} s ({error}); its log is {log_path}") from None
        kernel._start_reader()
        kernel.ready_after = time.monotonic() - started
        if startup_code:
            remaining = max(0.1, timeout - (time.monotonic() - started))
            result = kernel.execute(startup_code, timeout=remaining, store_history=False)
            if not result.ok:
                raise NodeKernelError(
                    f"the start-up code of {label} failed there:\n{result.error or result.status}"
                    + (f"\nIt printed:\n{result.stdout}{result.stderr}"
                       if result.stdout or result.stderr else ""))
    except BaseException:
        kernel.shutdown(timeout=1.0)
        raise
    return kernel
