"""``Task.Supervisor.async({Chat.TaskSupervisor, node}, Chat, :receive_message, ["hi"])``
across the border, both ways (issue 10, part 4).

This test process is the nodelab node ``alex@localhost`` running the Python chat app's task
supervisor (registered as ``"Chat.TaskSupervisor"``, reached from Elixir as
``Chat.TaskSupervisor``, i.e. ``:"Elixir.Chat.TaskSupervisor"``); ``kate`` and ``moebi`` are
real Elixir nodes running ``lessons/chat_ex`` (copied to a temporary directory and compiled
once). What is checked: the protocol of Elixir 1.14's ``Task.Supervisor`` from both sides,
where the task's print lands (on the supervisor's node), the errors (an unknown name, a node
that is not there), and the seed's moebi exchange across languages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from beam import (
    COOKIE,
    BeamNode,
    ElixirError,
    copy_project,
    requires_elixir,
    running_epmd,
    start_nodes,
    stop_nodes,
)

from nodelab import (
    ANY,
    Atom,
    Node,
    group_leader,
    monitor,
    receive,
    self,
    send,
    spawn,
    start_group_leader,
)
from nodelab.dist import shipment
from nodelab.dist.beam_peer import python_target
from nodelab.otp import Application, Task, TaskSupervisor
from nodelab.otp.errors import CallError, CallNoConnection, TaskError, TaskNoConnection
from nodelab.runtime.group_leader import install_router

pytestmark = requires_elixir

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "lessons" / "chat_ex"
ALEX, KATE, MOEBI = "alex@localhost", "kate@localhost", "moebi@localhost"
SUP = "Chat.TaskSupervisor"


def relay(message, node):
    """Run ``Chat.receive_message(message)`` on ``node``'s task supervisor; its result."""
    return Task.await_(TaskSupervisor.async_((SUP, node), "Chat", "receive_message", [message]))


FLAKY_RUNS: dict[str, int] = {}


def flaky(key: str) -> str:
    """Crash the first time it runs for ``key``, print ``key`` the second time."""
    FLAKY_RUNS[key] = FLAKY_RUNS.get(key, 0) + 1
    if FLAKY_RUNS[key] == 1:
        raise RuntimeError("the first run of a transient task fails")
    print(key)
    return "ok"


def wait_for_ever() -> None:
    """A task that runs until it is stopped (it waits for a message nobody sends)."""
    receive("never sent")


#: What Elixir reaches as ``TaskSupervisorAcross`` on alex (the node's namespace).
NAMESPACE = {"TaskSupervisorAcross": types.SimpleNamespace(relay=relay, flaky=flaky,
                                                           wait_for_ever=wait_for_ever)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    home = tmp_path_factory.mktemp("mix-home")
    env = {"MIX_HOME": str(home), "HEX_HOME": str(home / "hex")}
    path = copy_project(SOURCE, tmp_path_factory.mktemp("chat_ex") / "chat")
    build = subprocess.run(["mix", "compile"], cwd=path, env={**os.environ, **env,
                                                              "MIX_ENV": "dev"},
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    yield path, env


@pytest.fixture(scope="module")
def cluster(project: tuple[Path, dict]) -> Iterator[tuple[BeamNode, BeamNode, list[str]]]:
    """alex (this process, the Python chat app's task supervisor, whose tasks print into
    ``written``), kate and moebi (Elixir, chat_ex in dev)."""
    path, env = project
    sys.path.insert(0, str(ROOT / "lessons" / "chat"))
    written: list[str] = []
    with running_epmd():
        Node.start("alex", cookie=COOKIE, namespace=NAMESPACE)
        install_router()
        leader = start_group_leader(lambda _stream, text: written.append(text))
        me = self()

        def application() -> None:
            group_leader(leader, self())
            TaskSupervisor.start_link(name=SUP)
            send(me, "up")
            receive("stop")

        holder = spawn(application)
        receive("up", timeout=10)
        nodes = (BeamNode("kate", project=path, mix_env="dev", env=env),
                 BeamNode("moebi", project=path, mix_env="dev", env=env))
        try:
            start_nodes(*nodes)
            yield nodes[0], nodes[1], written
        finally:
            stop_nodes(*nodes)
            send(holder, "stop")
            Node.stop()
            sys.path.remove(str(ROOT / "lessons" / "chat"))


def wait_written(written: list[str], text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in "".join(written) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert text in "".join(written), written


# --- Elixir -> nodelab ----------------------------------------------------------------------

def test_elixir_runs_a_supervised_task_on_the_python_node(cluster) -> None:
    kate, _moebi, written = cluster
    install_router()  # pytest's capture replaced sys.stdout since the node started
    since = len(kate.output())
    got = kate.eval(f'Task.Supervisor.async({{Chat.TaskSupervisor, :"{ALEX}"}}, Chat, '
                    ':receive_message, ["hi"]) |> Task.await()')
    assert got == '"ok"'  # Python's "ok" is a string, an Elixir binary
    wait_written(written, "hi\n")  # printed on alex, where the supervisor lives
    # The lesson's own call, from the Elixir app.
    assert kate.eval(f'Chat.send_message(:"{ALEX}", "how are you?")') == '"ok"'
    wait_written(written, "how are you?\n")
    assert "hi" not in kate.output(since)
    # async_nolink, and an unknown function: the task exits :undef.
    got = kate.eval(f't = Task.Supervisor.async_nolink({{Chat.TaskSupervisor, :"{ALEX}"}}, '
                    'Chat, :nope, []); Task.yield(t, 5000)')
    assert got.startswith("{:exit, {:undef, [{Chat, :nope, [], []}]}}") or \
        got.startswith('{:exit, {:undef, [{:"Elixir.Chat"'), got


def test_elixir_errors_no_process_and_nodedown(cluster) -> None:
    kate, _moebi, _written = cluster
    with pytest.raises(ElixirError) as error:
        kate.eval(f'Task.Supervisor.async({{Nope.Sup, :"{ALEX}"}}, Chat, :receive_message, '
                  '["hi"])')
    assert "no process" in str(error.value)
    with pytest.raises(ElixirError) as error:
        kate.eval('Task.Supervisor.async({Chat.TaskSupervisor, :"zed@localhost"}, Chat, '
                  ':receive_message, ["hi"])')
    assert "nodedown" in str(error.value) or "no connection" in str(error.value)


# --- nodelab -> Elixir ----------------------------------------------------------------------

def test_python_runs_a_supervised_task_on_an_elixir_node(cluster) -> None:
    kate, _moebi, written = cluster
    install_router()  # pytest's capture replaced sys.stdout since the node started
    since, before = len(kate.output()), len(written)
    task = TaskSupervisor.async_((SUP, KATE), "Chat", "receive_message", ["hi"])
    assert task.pid.node == KATE
    assert Task.await_(task) == "ok"
    assert isinstance(Task.await_(TaskSupervisor.async_nolink((SUP, KATE), "Chat",
                                                              "receive_message", ["yo"])), Atom)
    assert kate.wait_for_output("hi\nyo\n", since=since) == "hi\nyo\n"  # kate printed it
    assert written[before:] == []
    with pytest.raises(TypeError, match="module, a function name and a list of arguments"):
        TaskSupervisor.async_((SUP, KATE), lambda: 1)
    # The Elixir task raises: its exit reaches await_ (async_nolink: this shell lives).
    with pytest.raises(TaskError, match="ArithmeticError|badarith"):
        Task.await_(TaskSupervisor.async_nolink((SUP, KATE), Atom("erlang"), "div", [1, 0]))


def test_python_start_child_children_and_terminate_child_on_elixir(cluster) -> None:
    kate, _moebi, written = cluster
    install_router()
    since, before = len(kate.output()), len(written)
    ok, pid = TaskSupervisor.start_child((SUP, KATE), "Chat", "receive_message", ["fire"])
    assert (ok, type(ok), pid.node) == ("ok", Atom, KATE)  # the BEAM's {:ok, pid}
    kate.wait_for_output("fire\n", since=since)  # (an earlier test's error log may come too)
    assert written[before:] == []
    _, sleeper = TaskSupervisor.start_child((SUP, KATE), Atom("timer"), "sleep", [20000])
    assert sleeper in TaskSupervisor.children((SUP, KATE))
    watch = monitor(sleeper)
    assert TaskSupervisor.terminate_child((SUP, KATE), sleeper) == "ok"
    assert receive(("DOWN", watch, ANY, ANY, ANY), timeout=10)[4] == "shutdown"
    assert sleeper not in TaskSupervisor.children((SUP, KATE))
    assert TaskSupervisor.terminate_child((SUP, KATE), sleeper) == ("error", "not_found")
    with pytest.raises(TypeError, match="module, a function name and a list of arguments"):
        TaskSupervisor.start_child((SUP, KATE), lambda: 1)


def test_elixir_start_child_children_and_terminate_child_on_python(cluster) -> None:
    kate, _moebi, written = cluster
    install_router()
    sup = f'{{Chat.TaskSupervisor, :"{ALEX}"}}'
    assert kate.eval(f'{{:ok, pid}} = Task.Supervisor.start_child({sup}, Chat, '
                     ':receive_message, ["fire"]); node(pid)') == f":{ALEX}"
    wait_written(written, "fire\n")  # run on alex at once, with no reply to kate
    assert kate.eval(f'{{:ok, sleeper}} = Task.Supervisor.start_child({sup}, '
                     'TaskSupervisorAcross, :wait_for_ever, []); '
                     f'sleeper in Task.Supervisor.children({sup})') == "true"
    counts = kate.eval(f"DynamicSupervisor.count_children({sup})")
    assert counts.startswith("%{active: ") and "supervisors: 0" in counts, counts
    assert kate.eval(f"ref = Process.monitor(sleeper); "
                     f"Task.Supervisor.terminate_child({sup}, sleeper)") == ":ok"
    assert kate.eval("receive do {:DOWN, ^ref, _, _, reason} -> reason after 10000 -> "
                     ":no_down end") == ":shutdown"
    assert kate.eval(f"Task.Supervisor.terminate_child({sup}, sleeper)") == \
        "{:error, :not_found}"
    # restart: :transient, as Elixir's supervisor does it: run again after a crash.
    assert kate.eval(f'{{:ok, _}} = Task.Supervisor.start_child({sup}, TaskSupervisorAcross, '
                     ':flaky, ["once more"], restart: :transient); :started') == ":started"
    wait_written(written, "once more\n")
    assert FLAKY_RUNS["once more"] == 2


def test_python_errors_no_process_and_no_connection(cluster) -> None:
    with pytest.raises(CallError, match="noproc|no process|Nothing is registered"):
        TaskSupervisor.async_(("Nope.Sup", KATE), "Chat", "receive_message", ["hi"])
    with pytest.raises(CallNoConnection, match="no connection to zed@localhost"):
        TaskSupervisor.async_((SUP, "zed@localhost"), "Chat", "receive_message", ["hi"])


# --- the seed's exchange across languages ----------------------------------------------------

def test_python_to_elixir_moebi_and_chicken_back_on_the_python_node(cluster) -> None:
    _kate, moebi, written = cluster
    install_router()
    since, before = len(moebi.output()), len(written)
    # What the Python chat app's moebi clause asks of moebi's Chat.TaskSupervisor, with
    # moebi an Elixir node: Chat.receive_message_for_moebi("hi", :"alex@localhost").
    task = TaskSupervisor.async_((SUP, MOEBI), "Chat", "receive_message_for_moebi",
                                 ["hi", Atom(ALEX)])
    assert Task.await_(task, 10) == "ok"  # the result of alex's receive_message, via moebi
    assert moebi.wait_for_output("hi\n", since=since) == "hi\n"
    # moebi's clause spawned a task on alex's Chat.TaskSupervisor: chicken? printed here,
    # before moebi's task (which awaited it) answered.
    assert "".join(written[before:]) == "chicken?\n"


def test_elixir_to_python_chicken_lands_on_elixir(cluster) -> None:
    kate, _moebi, written = cluster
    install_router()  # pytest's capture replaced sys.stdout since the node started
    since, before = len(kate.output()), len(written)
    # The mirror half that needs no Python chat app: an Elixir node asks the Python node
    # for moebi's clause's first step, and the Python task answers by running a task on
    # kate's Chat.TaskSupervisor (Python -> Elixir, from inside a task started by Elixir).
    got = kate.eval(f'Task.Supervisor.async({{Chat.TaskSupervisor, :"{ALEX}"}}, '
                    f'TaskSupervisorAcross, :relay, ["chicken?", :"{KATE}"]) |> Task.await()')
    assert got == ":ok"
    assert kate.wait_for_output("chicken?\n", since=since) == "chicken?\n"
    assert "".join(written[before:]) == ""


def test_an_elixir_alias_is_the_python_module_underscored(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule behind "Chat" -> chat, on any node: Macro.underscore, as Elixir names files.
    (tmp_path / "my_app").mkdir()
    (tmp_path / "my_app" / "__init__.py").write_text("")
    (tmp_path / "my_app" / "chat.py").write_text("def hello():\n    return 'hi'\n")
    (tmp_path / "needs_more.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert shipment.import_function("MyApp.Chat", "hello")() == "hi"
        assert python_target("Elixir.MyApp.Chat", "hello") is sys.modules["my_app.chat"].hello
        # A module that exists but fails to import says so, not "no module named NeedsMore".
        with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
            shipment.import_function("NeedsMore", "anything")
        with pytest.raises(ModuleNotFoundError,
                           match="No module named 'no_where' .*alias 'NoWhere'.*nor 'NoWhere'"):
            shipment.import_function("NoWhere", "anything")
    finally:
        for name in ("my_app", "my_app.chat", "needs_more"):
            sys.modules.pop(name, None)


# --- the Python chat app (lessons/chat) and the Elixir one (lessons/chat_ex) ------------------

@pytest.fixture
def chat_in_dev(cluster) -> Iterator[types.ModuleType]:
    """The Python chat app on alex with ``config/dev.py``'s routing: a message for kate runs
    on kate's ``Chat.TaskSupervisor``."""
    import chat

    old = Application.get_env("chat", "remote_supervisor")
    Application.put_env("chat", "remote_supervisor", lambda recipient: (SUP, recipient))
    try:
        yield chat
    finally:
        if old is None:
            Application.delete_env("chat", "remote_supervisor")
        else:
            Application.put_env("chat", "remote_supervisor", old)


def test_the_python_chat_app_sends_to_elixir_kate(cluster, chat_in_dev) -> None:
    kate, _moebi, written = cluster
    install_router()
    since, before = len(kate.output()), len(written)
    # The lesson's call, unchanged: "Chat" is Elixir.Chat on kate.
    assert chat_in_dev.send_message(KATE, "hi") == "ok"  # Elixir's :ok, an Atom
    assert kate.wait_for_output("hi\n", since=since) == "hi\n"
    assert written[before:] == []


def test_the_python_chat_app_asks_elixir_moebi_and_chicken_prints_on_python(
        cluster, chat_in_dev) -> None:
    _kate, moebi, written = cluster
    install_router()
    since, before = len(moebi.output()), len(written)
    # Python's moebi clause: Chat.receive_message_for_moebi("hi", :"alex@localhost") on
    # moebi, whose Elixir send_message(:"alex@localhost", "chicken?") starts a task on
    # alex's Chat.TaskSupervisor, here.
    assert chat_in_dev.send_message(MOEBI, "hi") == "ok"
    assert moebi.wait_for_output("hi\n", since=since) == "hi\n"
    # moebi's task awaited alex's before it answered: chicken? is here already.
    assert "".join(written[before:]) == "chicken?\n"
    assert "chicken?" not in moebi.output(since)


def test_the_elixir_node_goes_down_while_python_awaits(cluster) -> None:
    kate, _moebi, _written = cluster  # last test: kate does not come back
    task = TaskSupervisor.async_nolink((SUP, KATE), Atom("timer"), "sleep", [20000])
    started = time.monotonic()
    kate.kill()
    with pytest.raises(TaskNoConnection, match="no connection to kate@localhost"):
        Task.await_(task, 10)
    assert time.monotonic() - started < 5
    with pytest.raises(CallNoConnection, match="no connection to kate@localhost"):
        TaskSupervisor.async_((SUP, KATE), "Chat", "receive_message", ["hi"])
