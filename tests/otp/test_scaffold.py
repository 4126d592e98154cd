"""``nodelab new``: the project it makes passes its own tests, like ``mix new`` does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def nodelab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodelab", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30)


def pytest_in(project: Path) -> subprocess.CompletedProcess:
    # Only the nodelab plugin: the other installed plugins cost seconds and test nothing here.
    env = {k: v for k, v in os.environ.items()
           if k not in ("NODELAB_ENV", "NODELAB_APP_PATH", "PYTEST_ADDOPTS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q",
                           "-p", "nodelab.tools.pytest_plugin",
                           "-p", "no:cacheprovider"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)


def test_new_with_sup_makes_an_application_whose_tests_pass(tmp_path: Path) -> None:
    made = nodelab("new", "chat", "--sup", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "chat"
    for relative in ("chat/__init__.py", "chat/application.py", "config/config.py",
                     "config/dev.py", "config/test.py", "tests/test_chat.py",
                     "tests/conftest.py", "pyproject.toml", "README.md"):
        assert (project / relative).is_file(), relative
        assert f"* creating {Path('chat') / relative}" in made.stdout
    # Like mix new --sup: a supervisor with no children yet, and a commented example.
    application = (project / "chat" / "application.py").read_text()
    assert "children = [\n        # Starts a worker" in application
    assert "TaskSupervisor" not in application
    tested = pytest_in(project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def test_new_without_sup_has_no_tree(tmp_path: Path) -> None:
    made = nodelab("new", "my_lib", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "my_lib"
    assert not (project / "my_lib" / "application.py").exists()
    tested = pytest_in(project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout


def test_the_made_project_is_lint_clean(tmp_path: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    nodelab("new", "chat", "--sup", cwd=tmp_path)
    checked = subprocess.run([ruff, "check", "--isolated", "--select", "E,F,W,I,B,UP", "chat"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize(("name", "why"), [
    ("chat", "already exists"),
    ("Bad-Name", "is not a valid application name"),
    ("json", "already the name of an importable module"),
    ("class", "is a Python keyword"),
])
def test_new_refuses_with_one_line(tmp_path: Path, name: str, why: str) -> None:
    (tmp_path / "chat").mkdir()
    refused = nodelab("new", name, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and why in refused.stderr
    assert refused.stderr.startswith("nodelab new: ")
