"""The seed's Chat app in real Elixir (``lessons/chat_ex``), run as the lesson runs it.

``mix test`` on a node that is not alive excludes the ``:distributed`` test; kate, moebi and
alex run the app (``-S mix run --no-halt``) and chat through ``Task.Supervisor`` on each
other's ``Chat.TaskSupervisor``; a test run on a named node (sophie) passes while moebi is
up and fails with ``no connection to moebi@localhost`` once moebi is gone. Then moebi comes
back as a Python node running the Python chat app (``lessons/chat``), and the Elixir nodes
still get their ``chicken?``.

The project is copied to a temporary directory and compiled there once per session (dev and
test builds side by side), so no ``_build`` lands in the repository.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from beam import (
    COOKIE,
    BeamNode,
    ElixirError,
    copy_project,
    epmd_names,
    requires_elixir,
    run_elixir,
    running_epmd,
    start_nodes,
    stop_nodes,
)

from nodelab.tools import peer

pytestmark = requires_elixir

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
SOURCE = LESSONS / "chat_ex"


@pytest.fixture(scope="module")
def epmd() -> Iterator[int]:
    with running_epmd() as port:
        yield port


@pytest.fixture(scope="module")
def mix_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Mix's own home in the sandbox: nothing is read from or written to ~/.mix."""
    home = tmp_path_factory.mktemp("mix-home")
    return {"MIX_HOME": str(home), "HEX_HOME": str(home / "hex")}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mix_env: dict[str, str]) -> Path:
    """lessons/chat_ex copied to a temporary directory, compiled for dev and for test."""
    path = copy_project(SOURCE, tmp_path_factory.mktemp("chat_ex") / "chat")
    builds = {env: subprocess.Popen(
        ["mix", "compile"], cwd=path, env={**os.environ, **mix_env, "MIX_ENV": env},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for env in ("dev", "test")}
    for env, build in builds.items():
        try:
            out, _ = build.communicate(timeout=120)
        finally:
            if build.poll() is None:
                build.kill()
                build.wait()
        assert build.returncode == 0, f"mix compile (MIX_ENV={env}) failed:\n{out}"
        assert "warning" not in out, out
    return path


def test_mix_test_excludes_the_distributed_test(project: Path,
                                                mix_env: dict[str, str]) -> None:
    result = run_elixir(["test"], program="mix", cwd=project, env=mix_env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Excluding tags: [distributed: true]\n\nAll tests have been excluded.\n" in out
    assert "1 test, 0 failures, 1 excluded" in out


@pytest.fixture(scope="module")
def chat_nodes(epmd: int, project: Path,
               mix_env: dict[str, str]) -> Iterator[tuple[BeamNode, BeamNode, BeamNode]]:
    """kate, moebi and alex, each running the app in dev (``-S mix run --no-halt``)."""
    nodes = tuple(BeamNode(name, project=project, mix_env="dev", env=mix_env)
                  for name in ("kate", "moebi", "alex"))
    start_nodes(*nodes)
    try:
        yield nodes
    finally:
        stop_nodes(*nodes)


def sophie_runs_the_tests(project: Path, mix_env: dict[str, str]) -> CompletedProcess:
    """``mix test`` on a named node, as the seed runs the distributed test, with the dev
    configuration (``remote_supervisor`` is then moebi's; with test.exs's the whole
    exchange would stay on sophie)."""
    return run_elixir(["--sname", "sophie@localhost", "--cookie", COOKIE, "-S", "mix", "test"],
                      cwd=project, env={**mix_env, "MIX_ENV": "dev"})


def test_alex_and_kate_chat(chat_nodes: tuple[BeamNode, BeamNode, BeamNode]) -> None:
    kate, _moebi, alex = chat_nodes
    # The task runs under kate's Chat.TaskSupervisor: kate prints, alex gets :ok.
    assert alex.eval('Chat.send_message(:kate@localhost, "hi")') == ":ok"
    assert kate.wait_for_output("hi\n") == "hi\n"
    assert kate.eval('Chat.send_message(:alex@localhost, "how are you?")') == ":ok"
    assert alex.wait_for_output("how are you?\n") == "how are you?\n"


def test_moebi_answers_chicken(chat_nodes: tuple[BeamNode, BeamNode, BeamNode]) -> None:
    kate, moebi, alex = chat_nodes
    seen_by_kate, seen_by_moebi, seen_by_alex = (
        len(node.output()) for node in (kate, moebi, alex))
    assert alex.eval('Chat.send_message(:moebi@localhost, "hi")') == ":ok"
    # moebi's task awaits the task it started on alex, so alex printed before the :ok.
    assert alex.output(seen_by_alex) == "chicken?\n"
    assert moebi.wait_for_output("hi\n", since=seen_by_moebi) == "hi\n"
    assert kate.output(seen_by_kate) == ""  # sorry, kate


def test_the_distributed_test_passes_on_a_named_node_while_moebi_is_up(
        chat_nodes: tuple[BeamNode, BeamNode, BeamNode], project: Path,
        mix_env: dict[str, str]) -> None:
    _kate, moebi, _alex = chat_nodes
    seen = len(moebi.output())
    run = sophie_runs_the_tests(project, mix_env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Excluding tags" not in run.stdout  # Node.alive? is true on sophie
    assert "chicken?\n" in run.stdout
    assert "1 test, 0 failures\n" in run.stdout
    assert moebi.wait_for_output("hi\n", since=seen) == "hi\n"


def test_eval_is_like_a_line_typed_into_iex(
        chat_nodes: tuple[BeamNode, BeamNode, BeamNode]) -> None:
    """tests/beam.py's contract, on alex: values come back inspected, the evaluating process
    and its variables persist (flush() sees its mailbox), errors read as iex prints them."""
    _kate, _moebi, alex = chat_nodes
    assert alex.eval('pid = self(); send(pid, {:hi, "sup?"}); :sent') == ":sent"
    seen = len(alex.output())
    assert alex.eval("flush()") == ":ok"
    assert alex.output(seen) == '{:hi, "sup?"}\n'
    assert alex.eval("pid == self()") == "true"
    assert alex.eval("Node.list() |> Enum.sort()") == "[:kate@localhost, :moebi@localhost]"
    with pytest.raises(ElixirError) as raised:
        alex.eval('Chat.send_message(:nobody@localhost, "hi")')
    assert raised.value.banner.startswith(
        "** (exit) exited in: GenServer.call({Chat.TaskSupervisor, :nobody@localhost}, ")
    assert raised.value.banner.endswith("\n    ** (EXIT) no connection to nobody@localhost")
    with pytest.raises(ElixirError, match=r"^\*\* \(EXIT from #PID<0\.\d+\.0>\) shell "
                       "process exited with reason: :boom$"):
        alex.eval("spawn_link(fn -> exit(:boom) end); Process.sleep(1000)")
    assert alex.eval("1 + 1") == "2"  # a new evaluating process took over


# Last in the file: it stops moebi, the module's nodes are not needed afterwards.
def test_the_distributed_test_fails_without_moebi(
        chat_nodes: tuple[BeamNode, BeamNode, BeamNode], project: Path,
        mix_env: dict[str, str]) -> None:
    _kate, moebi, _alex = chat_nodes
    moebi.stop()
    assert "moebi" not in epmd_names()
    run = sophie_runs_the_tests(project, mix_env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert ("** (exit) exited in: GenServer.call({Chat.TaskSupervisor, :moebi@localhost}, "
            "{:start_task, ") in run.stdout
    assert "\n         ** (EXIT) no connection to moebi@localhost\n" in run.stdout
    assert "1 test, 1 failure\n" in run.stdout


# After the test above: moebi comes back as a Python node, running the Python chat app.
def test_moebi_as_a_python_node_answers_elixir_alex(
        chat_nodes: tuple[BeamNode, BeamNode, BeamNode], tmp_path: Path) -> None:
    kate, moebi, alex = chat_nodes
    moebi.stop()  # the Elixir moebi, if the test above has not stopped it
    python_moebi = peer.start("moebi", cookie=COOKIE, app="chat", log_dir=tmp_path,
                              env={"NODELAB_ENV": "dev", "NODELAB_APP_PATH": str(LESSONS)})
    try:
        seen_by_alex, seen_by_kate = len(alex.output()), len(kate.output())
        # Elixir's moebi clause runs Chat.receive_message_for_moebi("hi", :alex@localhost) on
        # moebi: the Python chat app, whose send_message(:alex@localhost, "chicken?") runs
        # Elixir's Chat.receive_message on alex's Chat.TaskSupervisor.
        assert alex.eval('Chat.send_message(:moebi@localhost, "hi")') == ":ok"
        assert alex.output(seen_by_alex) == "chicken?\n"  # before the :ok, as between BEAMs
        assert "hi" in python_moebi.wait_for_output("hi\n").splitlines()
        assert "chicken?" not in python_moebi.output
        # Whoever writes to moebi gets the answer on their own node: kate too.
        assert kate.eval('Chat.send_message(:moebi@localhost, "how are you?")') == ":ok"
        assert kate.output(seen_by_kate) == "chicken?\n"
        python_moebi.wait_for_output("how are you?\n")
    finally:
        python_moebi.stop()
