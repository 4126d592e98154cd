"""The chat application in this test process, and the lesson's ``mix test`` scenarios.

* In the test environment (``config/test.py``) every message runs on the local task
  supervisor: ``send_message("moebi@localhost", "hi")`` prints ``hi`` and ``chicken?`` here.
* In the dev environment with moebi absent, the call fails like the seed's ``mix test``:
  ``no connection to moebi@localhost``.
* ``pytest lessons/chat/tests`` is the lesson's ``mix test``: without a node name the
  distributed test is excluded; with ``--sname`` it runs, starting moebi itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodelab import NoConnection
from nodelab.otp import Application, CallNoConnection, Supervisor, Task, TaskSupervisor

REPO = Path(__file__).resolve().parents[2]
LESSONS = REPO / "lessons"


@pytest.fixture
def dev_routing(chat_here):
    """config/dev.py's remote_supervisor, for one test."""
    old = Application.get_env("chat", "remote_supervisor")
    Application.put_env("chat", "remote_supervisor",
                        lambda recipient: ("Chat.TaskSupervisor", recipient))
    yield
    Application.put_env("chat", "remote_supervisor", old)


def test_the_application_tree(chat_here) -> None:
    assert "chat" in Application.started_applications()
    [(child_id, pid, kind, modules)] = Supervisor.which_children("Chat.Supervisor")
    assert (child_id, kind, modules) == ("Chat.TaskSupervisor", "supervisor", [TaskSupervisor])
    assert pid is not None
    assert Supervisor.count_children("Chat.Supervisor") == {
        "specs": 1, "active": 1, "supervisors": 1, "workers": 0}


def test_in_the_test_environment_everything_runs_here(chat_here, capsys) -> None:
    import chat

    assert Application.get_env("chat", "remote_supervisor")("moebi@localhost") == (
        "Chat.TaskSupervisor")
    assert chat.send_message("moebi@localhost", "hi") == "ok"
    assert capsys.readouterr().out == "hi\nchicken?\n"


def test_without_moebi_the_call_fails_with_no_connection(otp_node, dev_routing) -> None:
    import chat

    with pytest.raises(CallNoConnection) as raised:
        chat.send_message("moebi@localhost", "hi")
    text = str(raised.value)
    assert "no connection to moebi@localhost" in text
    assert "Chat.TaskSupervisor" in text and "receive_message_for_moebi" in text
    assert isinstance(raised.value, NoConnection)


def _pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``pytest lessons/chat/tests ...`` in a child process, as a learner would run it.

    Only the nodelab plugin is loaded: the other installed plugins (nbval, playwright, ...)
    would add 3 s to each run and nothing to what is tested.
    """
    child_env = {k: v for k, v in os.environ.items()
                 if k not in ("NODELAB_ENV", "NODELAB_APP_PATH", "PYTEST_ADDOPTS")}
    child_env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(LESSONS / "chat" / "tests"), "-q",
         "-p", "nodelab.tools.pytest_plugin", "-p", "no:cacheprovider", *args],
        cwd=REPO, env=child_env, capture_output=True, text=True, timeout=60)


def test_mix_test_excludes_the_distributed_test() -> None:
    run = _pytest()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Excluding tags: [distributed: true]" in run.stdout
    assert "1 passed, 1 deselected" in run.stdout


def test_mix_test_on_a_named_node_starts_moebi_and_passes() -> None:
    run = _pytest("--sname", f"sophie{os.getpid()}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout


def test_mix_test_in_dev_without_moebi_fails_like_the_seed() -> None:
    run = _pytest("--sname", f"sophie{os.getpid()}", "-k", "test_send_message and not moebi",
                  env={"NODELAB_ENV": "dev"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no connection to moebi@localhost" in run.stdout
    assert "1 failed" in run.stdout


def test_tasks_follow_the_node_output_when_it_is_replaced(otp_node, chat_here, monkeypatch):
    """A notebook replaces its node's output (set_node_output) after the app may have
    started: tasks started later must print to the new one."""
    from nodelab.runtime.group_leader import OutputRouter, set_node_output

    monkeypatch.setattr(sys, "stdout", OutputRouter(sys.stdout))
    seen: list[str] = []
    set_node_output(lambda stream, text: seen.append(text))
    try:
        for _ in range(3):  # the first uses the waiting process, the others new ones
            Task.await_(TaskSupervisor.async_("Chat.TaskSupervisor", lambda: print("here")))
    finally:
        set_node_output(lambda stream, text: getattr(sys.stdout, "underlying", sys.stdout)
                        .write(text))
    assert "".join(seen) == "here\n" * 3
