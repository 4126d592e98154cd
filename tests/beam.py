"""Helpers for tests that run real BEAM (Erlang/Elixir) nodes.

Three things, each bounded in time and leaving no process behind:

``running_epmd()``
    The port mapper the BEAM nodes of a test run register with: whatever ``ERL_EPMD_PORT``
    says (``tests/conftest.py`` picks a free port for the whole run; 4369 if unset). An epmd
    already listening there (nodelab's EPMD, or another fixture's) is used as it is; otherwise
    one is started in the foreground and stopped when the ``with`` block ends. A node that
    finds no epmd would start a daemon that outlives the run, so start nodes inside it.

``BeamNode``
    A real node, ``elixir --sname NAME@localhost --cookie C`` (optionally ``-S mix run
    --no-halt`` in a mix project), as a context manager. ``eval("Elixir code")`` evaluates
    in the node, like a line typed into its iex, and returns the ``inspect``ed value (or
    raises ``ElixirError`` with the banner iex would print); ``output()`` is what the node
    printed so far. The node reads its requests from its stdin and answers on its stdout, so
    a round trip costs about a millisecond (``elixir --rpc-eval``, a VM started per call,
    costs 0.3-2 s); when its stdin closes (``stop()``, or the test process dying) it stops.

``run_elixir`` / ``copy_project``
    One-shot commands (``mix test``, ``elixir --sname sophie -S mix test``) with a timeout,
    and a copy of a mix project in a temporary directory so builds never land in the repo.

Requests are ``ID BASE64(code)`` lines; replies are lines ``\\x02TOKEN ID ok|error
BASE64...`` on the node's stdout, written through the same io server (``user``) as the
node's own prints, so a reply comes after everything its evaluation printed on that node.
Like iex, the evaluating process persists between calls (``self()``, its mailbox, variables,
aliases and imports, ``IEx.Helpers`` such as ``flush()``), and is replaced when an exit
signal kills it (the reply is then ``** (EXIT from #PID<...>) shell process exited with
reason: ...``, as iex prints it).
"""

from __future__ import annotations

import base64
import codecs
import itertools
import os
import secrets
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

COOKIE = "secret_token"

requires_elixir = pytest.mark.skipif(
    shutil.which("elixir") is None or shutil.which("epmd") is None,
    reason="Elixir/Erlang are not installed: install erlang-base elixir "
           "(./run-tests does as root)")

# Scheduler busy-waiting burns CPU that other nodes of a crowded 2-core machine need.
QUIET_SCHEDULERS = "+sbwt none +sbwtdcpu none +sbwtdio none"


# ---- epmd --------------------------------------------------------------------------------

def epmd_port() -> int:
    """The port mapper port of this run: ``ERL_EPMD_PORT``, else Erlang's default 4369."""
    return int(os.environ.get("ERL_EPMD_PORT") or 4369)


def epmd_names(port: int | None = None, timeout: float = 5.0) -> dict[str, int]:
    """The nodes registered with the epmd on ``port`` (``epmd -names``): name -> port.
    Raises ``OSError`` when nothing answers there."""
    port = epmd_port() if port is None else port
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">H", 1) + b"n")  # NAMES_REQ
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    names = {}
    for line in data[4:].decode(errors="replace").splitlines():
        # "name kate at port 40125"
        parts = line.split()
        if len(parts) == 5 and parts[0] == "name":
            names[parts[1]] = int(parts[4])
    return names


def epmd_listening(port: int | None = None) -> bool:
    try:
        epmd_names(port, timeout=2.0)
    except OSError:
        return False
    return True


@contextmanager
def running_epmd(port: int | None = None, timeout: float = 10.0) -> Iterator[int]:
    """Yields the port of a listening epmd (``ERL_EPMD_PORT`` by default). If none listens
    there, starts ``epmd -port PORT`` in the foreground and stops it at the end; an epmd that
    was already there is left alone."""
    port = epmd_port() if port is None else port
    if epmd_listening(port):
        yield port
        return
    epmd = shutil.which("epmd")
    if epmd is None:
        pytest.skip("epmd is not installed: install erlang-base elixir "
                    "(./run-tests does as root)")
    proc = subprocess.Popen([epmd, "-port", str(port)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, ERL_EPMD_PORT=str(port)))
    try:
        deadline = time.monotonic() + timeout
        while not epmd_listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"epmd -port {port} exited with {proc.returncode} "
                                   "(is the port taken?)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"epmd did not listen on port {port} within {timeout} s")
            time.sleep(0.02)
        yield port
    finally:
        _end(proc, timeout=5.0)


def _end(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


# ---- the control program each node runs ---------------------------------------------------

# Evaluated with `elixir -e` (or `mix run -e`, after the project's application started).
# A reader process turns stdin lines into requests; a manager hands them one at a time to a
# persistent evaluator (so `flush()` never sees a queued request) and replaces the evaluator
# when an exit signal kills it; end of input stops the node gracefully.
_CONTROL = r'''
defmodule NodelabBeamControl do
  @moduledoc false

  def start(token) do
    manager = spawn(fn -> manage(token) end)
    spawn(fn -> read(manager) end)
    :ok
  end

  defp read(manager) do
    case IO.gets("") do
      line when is_binary(line) ->
        send(manager, {:request, line})
        read(manager)

      _eof_or_error ->
        System.stop(0)
    end
  end

  defp manage(token) do
    {evaluator, ref} = evaluator(token)
    emit(token, "ready", "ok", [Atom.to_string(Node.self())])
    manage(token, evaluator, ref, nil, :queue.new())
  end

  defp manage(token, evaluator, ref, busy, queue) do
    receive do
      {:request, line} ->
        [id, code] = String.split(String.trim_trailing(line), " ", parts: 2)
        queue = :queue.in({id, Base.decode64!(code)}, queue)
        next(token, evaluator, ref, busy, queue)

      {:done, id} when id == busy ->
        next(token, evaluator, ref, nil, queue)

      {:DOWN, ^ref, :process, pid, reason} ->
        if busy do
          emit(token, busy, "error", [
            "** (EXIT from #{inspect(pid)}) shell process exited with reason: " <>
              Exception.format_exit(reason),
            ""
          ])
        end

        {evaluator, ref} = evaluator(token)
        next(token, evaluator, ref, nil, queue)
    end
  end

  defp next(token, evaluator, ref, nil, queue) do
    case :queue.out(queue) do
      {{:value, {id, code}}, queue} ->
        send(evaluator, {:eval, id, code})
        manage(token, evaluator, ref, id, queue)

      {:empty, queue} ->
        manage(token, evaluator, ref, nil, queue)
    end
  end

  defp next(token, evaluator, ref, busy, queue), do: manage(token, evaluator, ref, busy, queue)

  defp evaluator(token) do
    manager = self()
    env = Code.env_for_eval(file: "iex")
    {_, _, env} = Code.eval_quoted_with_env(quote(do: import(IEx.Helpers, warn: false)), [], env)
    spawn_monitor(fn -> evaluate(token, manager, [], env) end)
  end

  defp evaluate(token, manager, binding, env) do
    receive do
      {:eval, id, code} ->
        {binding, env} =
          try do
            quoted = Code.string_to_quoted!(code, file: "iex")
            {value, binding, env} = Code.eval_quoted_with_env(quoted, binding, env)
            emit(token, id, "ok", [inspect(value)])
            {binding, env}
          catch
            kind, reason ->
              emit(token, id, "error", [
                Exception.format_banner(kind, reason, __STACKTRACE__),
                Exception.format_stacktrace(__STACKTRACE__)
              ])

              {binding, env}
          end

        send(manager, {:done, id})
        evaluate(token, manager, binding, env)
    end
  end

  defp emit(token, id, status, fields) do
    :io.put_chars(:user, [2, token, " ", id, " ", status,
                          Enum.map(fields, &[" ", Base.encode64(&1)]), "\n"])
  end
end

NodelabBeamControl.start("@TOKEN@")
'''


class ElixirError(Exception):
    """An evaluation raised, threw or exited; ``banner`` is iex's first line(s), e.g.
    ``** (exit) exited in: GenServer.call(...)\\n    ** (EXIT) no connection to ...``."""

    def __init__(self, node: str, code: str, banner: str, stacktrace: str) -> None:
        super().__init__(banner)
        self.node = node
        self.code = code
        self.banner = banner
        self.stacktrace = stacktrace


class BeamNode:
    """A real Elixir node named ``NAME@localhost``, driven from the test.

    ``project``: a mix project directory; the node then runs ``-S mix run --no-halt`` there
    (its application started before ``start()`` returns; compile it first, see
    ``run_elixir``). ``mix_env`` sets ``MIX_ENV``, ``net_ticktime`` the kernel's tick time,
    ``env`` adds environment variables. Every wait is bounded by a timeout."""

    def __init__(self, name: str, *, cookie: str = COOKIE, project: str | Path | None = None,
                 mix_env: str | None = None, net_ticktime: int | None = None,
                 env: Mapping[str, str] | None = None, erl_flags: str = "",
                 start_timeout: float = 60.0) -> None:
        self.name = name if "@" in name else f"{name}@localhost"
        self.cookie = cookie
        self.project = Path(project) if project is not None else None
        self.mix_env = mix_env
        self.net_ticktime = net_ticktime
        self.env = dict(env or {})
        self.erl_flags = erl_flags
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._token = secrets.token_hex(8)
        self._marker = b"\x02" + self._token.encode() + b" "
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._replies: dict[str, list[str]] = {}
        self._eval_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self.start_seconds = 0.0  # from launch to the first answer

    # -- life cycle --

    def command(self) -> list[str]:
        elixir = shutil.which("elixir")
        if elixir is None:
            pytest.skip("Elixir is not installed: install erlang-base elixir "
                        "(./run-tests does as root)")
        erl = " ".join(flag for flag in (
            QUIET_SCHEDULERS,
            f"-kernel net_ticktime {self.net_ticktime}" if self.net_ticktime else "",
            self.erl_flags) if flag)
        control = _CONTROL.replace("@TOKEN@", self._token)
        head = [elixir, "--sname", self.name, "--cookie", self.cookie, "--erl", erl]
        if self.project is not None:
            return [*head, "-S", "mix", "run", "--no-halt", "-e", control]
        return [*head, "--no-halt", "-e", control]

    def start(self) -> BeamNode:
        """Starts the node and waits until it answers (its application, if any, started)."""
        return self.launch().wait_ready()

    def launch(self) -> BeamNode:
        """Starts the node's OS process without waiting for it (see ``start_nodes``)."""
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port()), **self.env)
        if self.mix_env is not None:
            env["MIX_ENV"] = self.mix_env
        started = time.monotonic()
        # A session of its own: a Ctrl-C in the terminal must not open the BEAM's break
        # menu (it would read our requests); the node still ends with us, by end of input.
        self.proc = subprocess.Popen(self.command(), cwd=self.project, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True),
                             name=f"beam-stdout-{self.name}", daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False),
                             name=f"beam-stderr-{self.name}", daemon=True)]
        for thread in self._threads:
            thread.start()
        self._started = started
        return self

    def wait_ready(self) -> BeamNode:
        """Waits (at most ``start_timeout``) until the node answers; stops it if it does not."""
        try:
            self._wait_reply("ready", self.start_timeout, "start")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - self._started
        return self

    def __enter__(self) -> BeamNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ends the node: end of input makes it call ``System.stop(0)`` (``:init.stop``);
        SIGKILL if it is still there after ``timeout``. Returns its exit status."""
        if self.proc is None:
            return None
        self.close_input()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(5.0)
        if not self._pumping():
            for stream in (self.proc.stdout, self.proc.stderr):
                stream.close()
        return self.proc.returncode

    def close_input(self) -> None:
        """Asks the node to stop (end of its input) without waiting: see ``stop_nodes``."""
        if self.proc is not None and self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL, as a crash: the other nodes see ``:noconnection``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- evaluation --

    def eval(self, code: str, timeout: float = 30.0) -> str:
        """Evaluates Elixir ``code`` in the node and returns ``inspect(value)``; raises
        ``ElixirError`` when it raises, throws or exits (or an exit signal kills the
        evaluating process), ``TimeoutError`` after ``timeout`` seconds."""
        if not self.alive():
            raise RuntimeError(f"{self.name} is not running{self._tail()}")
        with self._eval_lock:
            request = str(next(self._ids))
            line = f"{request} {base64.b64encode(code.encode()).decode()}\n"
            try:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except OSError as error:
                raise RuntimeError(f"{self.name} stopped reading{self._tail()}") from error
            status, *fields = self._wait_reply(request, timeout, f"evaluate {code!r}")
        if status == "ok":
            return fields[0]
        raise ElixirError(self.name, code, fields[0], fields[1] if len(fields) > 1 else "")

    # -- what the node printed --

    def output(self, since: int = 0) -> str:
        """Everything the node printed on stdout (its ``IO.puts``, Logger's console) so far,
        from offset ``since`` (a previous ``len(node.output())``), replies left out."""
        with self._changed:
            return "".join(self._stdout)[since:]

    def errors(self) -> str:
        """What the node wrote on stderr so far."""
        with self._changed:
            return "".join(self._stderr)

    def wait_for_output(self, text: str, timeout: float = 10.0, since: int = 0) -> str:
        """Waits until ``text`` appears in ``output(since)`` and returns that output; raises
        ``AssertionError`` showing what was printed when it does not within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in (out := "".join(self._stdout)[since:]):
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive() and not self._pumping()):
                    raise AssertionError(f"{self.name} did not print {text!r} within "
                                         f"{timeout} s; it printed {out!r}{self._tail()}")
                self._changed.wait(min(left, 0.5))
            return out

    # -- internals --

    def _pumping(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _tail(self) -> str:
        out = "".join(self._stdout)[-2000:]
        err = "".join(self._stderr)[-2000:]
        return f"\n--- stdout (end) ---\n{out}\n--- stderr (end) ---\n{err}"

    def _wait_reply(self, request: str, timeout: float, what: str) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while request not in self._replies:
                left = deadline - time.monotonic()
                if not self._pumping():  # stdout closed: the node is gone
                    raise RuntimeError(f"{self.name} ended before it could {what} (exit "
                                       f"status {self.proc.poll()}){self._tail()}")
                if left <= 0:
                    raise TimeoutError(f"{self.name} did not {what} within {timeout} s"
                                       f"{self._tail()}")
                self._changed.wait(min(left, 0.5))
            return self._replies.pop(request)

    def _pump(self, stream, replies: bool) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sink = self._stdout if replies else self._stderr
        pending = b""
        try:
            while chunk := os.read(stream.fileno(), 65536):
                if not replies:
                    with self._changed:
                        sink.append(decoder.decode(chunk))
                        self._changed.notify_all()
                    continue
                pending += chunk
                with self._changed:
                    pending = self._split(pending, decoder)
                    self._changed.notify_all()
        except OSError:
            pass
        finally:
            with self._changed:
                sink.append(decoder.decode(pending, final=True))
                self._changed.notify_all()

    def _split(self, data: bytes, decoder: codecs.IncrementalDecoder) -> bytes:
        """Moves printed text to ``_stdout`` and complete reply lines to ``_replies``;
        returns what must wait for more bytes (a reply line not yet ended, or a tail that
        could be the start of a marker)."""
        marker = self._marker
        while True:
            start = data.find(marker)
            if start < 0:
                keep = next((n for n in range(min(len(marker) - 1, len(data)), 0, -1)
                             if marker.startswith(data[-n:])), 0)
                self._stdout.append(decoder.decode(data[:len(data) - keep]))
                return data[len(data) - keep:]
            self._stdout.append(decoder.decode(data[:start]))
            end = data.find(b"\n", start)
            if end < 0:
                return data[start:]
            request, status, *fields = data[start + len(marker):end].decode().split(" ")
            self._replies[request] = [status, *(base64.b64decode(field).decode(
                errors="replace") for field in fields)]
            data = data[end + 1:]


def start_nodes(*nodes: BeamNode) -> tuple[BeamNode, ...]:
    """Starts several nodes side by side (a node takes 0.3 s to a few seconds to boot on a
    busy machine) and waits until all answer; on failure, stops those already started."""
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready()
    except BaseException:
        stop_nodes(*nodes)
        raise
    return nodes


def stop_nodes(*nodes: BeamNode, timeout: float = 10.0) -> None:
    """Stops several nodes side by side: all are asked at once (a graceful stop takes 1-2 s
    on a busy machine), then each is waited for, and killed after ``timeout``."""
    for node in nodes:
        node.close_input()
    for node in nodes:
        node.stop(timeout)


# ---- one-shot commands and projects -------------------------------------------------------

def run_elixir(args: Sequence[str], *, cwd: str | Path | None = None,
               env: Mapping[str, str] | None = None, timeout: float = 120.0,
               program: str = "elixir") -> subprocess.CompletedProcess:
    """Runs ``elixir ARGS`` (or ``mix ARGS`` with ``program="mix"``) to the end with this
    run's ``ERL_EPMD_PORT``; stdout and stderr are captured as text. A run that outlives
    ``timeout`` is killed and raises ``subprocess.TimeoutExpired``."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed: install erlang-base elixir "
                    "(./run-tests does as root)")
    full_env = dict(os.environ, ERL_EPMD_PORT=str(epmd_port()), **(env or {}))
    return subprocess.run([path, *args], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace", timeout=timeout,
                          start_new_session=True)


def copy_project(source: str | Path, destination: str | Path) -> Path:
    """A copy of the mix project ``source`` at ``destination`` without its build output
    (``_build``, ``deps``), so compiling it never writes into the repository."""
    return Path(shutil.copytree(source, destination,
                                ignore=shutil.ignore_patterns("_build", "deps", "*.dump")))
