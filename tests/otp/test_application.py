"""Applications and their configuration: find, configure, start, stop — in order."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodelab.otp import (
    Application,
    ApplicationError,
    Supervisor,
    config,
    config_env,
    import_config,
    load_config,
)
from nodelab.tools import peer

APPLICATION = '''\
from nodelab import Process, ProcessExit, receive, self, send, spawn_link
from nodelab.otp import Supervisor

from . import EVENTS


def worker(tag):
    def body(starter):
        Process.flag("trap_exit", True)
        send(starter, ("ready", self()))
        while True:
            message = receive()
            if message == "crash":
                raise RuntimeError(tag + " crashed")
            if type(message) is tuple and message[0] == "EXIT":
                EVENTS.append(("stop", tag))
                print("stopping " + tag, flush=True)
                raise ProcessExit(message[2])

    def start():
        pid = spawn_link(body, self())
        receive(("ready", pid), timeout=5)
        EVENTS.append(("start", tag))
        return ("ok", pid)

    return {{"id": tag, "start": (start, [])}}


def start(_type, _args):
    {start_body}


def stop(state):
    EVENTS.append(("app_stop", state))
'''

TREE = ('return Supervisor.start_link([worker("a"), worker("b")], name="{mod}.Supervisor", '
        'max_restarts={max_restarts})')


def make_app(root: Path, *, start_body: str | None = TREE, max_restarts: int = 3,
             configs: dict[str, str] | None = None) -> str:
    """Write a project ``root/<name>/`` and return the (unique) application name."""
    name = f"app_{secrets.token_hex(4)}"
    project = root / name
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text("EVENTS = []\n")
    if start_body is not None:
        body = start_body.format(mod=name.capitalize(), max_restarts=max_restarts)
        (project / name / "application.py").write_text(APPLICATION.format(start_body=body))
    if configs is not None:
        (project / "config").mkdir()
        for file, text in configs.items():
            (project / "config" / file).write_text(text.replace("APP", name))
    return name


ENV_CONFIGS = {
    "config.py": ("from nodelab.otp.config import config, config_env, import_config\n"
                  "config('APP', shared=1, nested={'a': 1})\n"
                  "import_config(f'{config_env()}.py')\n"),
    "dev.py": ("from nodelab.otp.config import config\n"
               "config('APP', where=lambda node: ('Sup', node), nested={'b': 2})\n"),
    "test.py": ("from nodelab.otp.config import config\n"
                "config('APP', where=lambda node: 'Sup')\n"),
}


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A place for applications, on NODELAB_APP_PATH; every one started is stopped after."""
    monkeypatch.setenv("NODELAB_APP_PATH", str(tmp_path))
    before = set(Application.started_applications())
    yield tmp_path
    for name in set(Application.started_applications()) - before:
        Application.stop(name)


# --- configuration -------------------------------------------------------------------------------

def test_config_env_comes_from_nodelab_env(monkeypatch) -> None:
    monkeypatch.delenv("NODELAB_ENV", raising=False)
    assert config_env() == "dev"
    monkeypatch.setenv("NODELAB_ENV", "prod")
    assert config_env() == "prod"


@pytest.mark.parametrize("env", ["dev", "test"])
def test_config_imports_the_file_of_the_environment(apps, env) -> None:
    name = make_app(apps, configs=ENV_CONFIGS, start_body=None)
    load_config(apps / name / "config" / "config.py", env=env)
    where = Application.get_env(name, "where")
    assert where("kate@localhost") == (("Sup", "kate@localhost") if env == "dev" else "Sup")
    assert Application.get_env(name, "shared") == 1
    nested = Application.get_env(name, "nested")
    assert nested == ({"a": 1, "b": 2} if env == "dev" else {"a": 1})  # merged, like Elixir


def test_config_errors_say_what_to_do(apps) -> None:
    name = make_app(apps, configs={"config.py": "from nodelab.otp.config import import_config\n"
                                                "import_config('staging.py')\n"},
                    start_body=None)
    with pytest.raises(ApplicationError, match="does not exist: create it"):
        load_config(apps / name / "config" / "config.py", env="staging")
    with pytest.raises(ApplicationError, match="only be called from a config file"):
        import_config("dev.py")
    with pytest.raises(ApplicationError, match="was not set"):
        Application.fetch_env(name, "missing")


def test_the_application_environment() -> None:
    assert Application.get_env("nobody", "key", "default") == "default"
    config("nobody", key=1, **{"other": 2})
    assert Application.put_env("nobody", "key", 3) == "ok"
    assert Application.get_all_env("nobody") == {"key": 3, "other": 2}
    Application.delete_env("nobody", "key")
    assert Application.get_env("nobody", "key") is None


# --- life cycle ----------------------------------------------------------------------------------

def test_start_and_stop_an_application(apps) -> None:
    name = make_app(apps, configs=ENV_CONFIGS)
    assert Application.start(name) == "ok"
    package = sys.modules[name]
    assert package.EVENTS == [("start", "a"), ("start", "b")]
    assert name in Application.started_applications()
    assert Application.project_dir(name) == (apps / name).resolve()
    assert [c[0] for c in Supervisor.which_children(f"{name.capitalize()}.Supervisor")] == [
        "b", "a"]
    assert Application.get_env(name, "shared") == 1  # its config was loaded first
    with pytest.raises(ApplicationError, match="already started"):
        Application.start(name)
    assert Application.ensure_all_started(name) == ("ok", [])
    package.EVENTS.clear()
    assert Application.stop(name) == "ok"
    # The tree stops in reverse start order, then the application's stop/1 runs.
    assert package.EVENTS == [("stop", "b"), ("stop", "a"), ("app_stop", None)]
    assert name not in Application.started_applications()
    assert Application.stop(name) == ("error", ("not_started", name))


def test_a_library_application_has_no_tree(apps) -> None:
    name = make_app(apps, start_body=None, configs=ENV_CONFIGS)
    assert Application.ensure_all_started(name) == ("ok", [name])
    assert name in Application.started_applications()
    assert Application.get_env(name, "shared") == 1
    assert Application.stop(name) == "ok"


def test_an_application_that_is_nowhere(apps) -> None:
    with pytest.raises(ApplicationError, match="NODELAB_APP_PATH"):
        Application.start("no_such_app_anywhere")


def test_a_failing_start_is_reported_and_leaves_nothing(apps) -> None:
    name = make_app(apps, start_body='raise RuntimeError("no database")')
    with pytest.raises(ApplicationError, match="no database"):
        Application.start(name)
    assert name not in Application.started_applications()
    bad = make_app(apps, start_body='return "yes"')
    with pytest.raises(ApplicationError, match="must return"):
        Application.start(bad)


def test_when_the_top_supervisor_gives_up_the_application_is_over(apps) -> None:
    name = make_app(apps, max_restarts=0)
    Application.start(name)
    [(_, pid, _, _)] = [c for c in Supervisor.which_children(f"{name.capitalize()}.Supervisor")
                        if c[0] == "a"]
    from nodelab import send

    send(pid, "crash")
    deadline = time.monotonic() + 5
    while name in Application.started_applications() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert name not in Application.started_applications()


# --- on a node -----------------------------------------------------------------------------------

def test_a_node_started_with_the_app_stops_the_tree_in_order(apps) -> None:
    name = make_app(apps)
    kate = peer.start(f"appnode{os.getpid()}", app=name, log_dir=apps,
                      env={"NODELAB_APP_PATH": str(apps)})
    try:
        assert kate.alive()
    finally:
        kate.stop()
    output = kate.output
    assert output.index("stopping b") < output.index("stopping a"), output


def test_node_start_with_app(apps) -> None:
    name = make_app(apps)
    code = (f"from nodelab import Node\nfrom nodelab.otp import Application\n"
            f"Node.start('appstart{os.getpid()}', app='{name}')\n"
            f"print(Application.started_applications())\n"
            f"Application.stop('{name}')\nNode.stop()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "NODELAB_APP_PATH": str(apps)})
    assert run.returncode == 0, run.stderr
    assert f"'{name}'" in run.stdout
    assert run.stdout.index("stopping b") < run.stdout.index("stopping a")
