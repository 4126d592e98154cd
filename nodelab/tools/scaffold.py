"""``nodelab new chat --sup``: create an application project, like ``mix new chat --sup``.

The project::

    chat/
      README.md
      pyproject.toml         the project (mix.exs) and its pytest settings
      chat/__init__.py       the code (lib/chat.ex)
      chat/application.py    with --sup: the supervision tree (lib/chat/application.ex)
      config/config.py       imports config/<env>.py (config/config.exs)
      config/dev.py
      config/test.py
      tests/conftest.py      puts the project on the path and starts the app (test_helper.exs)
      tests/test_chat.py     a first, passing test (test/chat_test.exs)

Run it with ``nodelab node --sname kate --app chat`` from the directory that holds it (or
with ``NODELAB_APP_PATH`` pointing there); test it with ``pytest`` inside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import sys
from collections.abc import Sequence
from pathlib import Path

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def camel(app: str) -> str:
    """``chat`` -> ``Chat``, ``my_app`` -> ``MyApp``: the Elixir module name of an app."""
    return "".join(part.capitalize() for part in app.split("_") if part)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="where to create the project; its last part names the app")
    parser.add_argument("--sup", action="store_true",
                        help="with an application module and a supervision tree")
    parser.add_argument("--app", help="the application (package) name, if not the path's name")


def check_name(app: str) -> str | None:
    """Why ``app`` cannot be an application name, or None when it can."""
    if not _NAME.match(app):
        return (f"{app!r} is not a valid application name: use lowercase letters, digits and "
                "underscores, starting with a letter (like chat)")
    if keyword.iskeyword(app):
        return f"{app!r} is a Python keyword: choose another application name"
    spec = importlib.util.find_spec(app)
    if spec is not None and spec.origin is not None:  # a plain directory does not count
        return (f"{app!r} is already the name of an importable module, which the application "
                "would shadow: choose another name")
    return None


def files(app: str, sup: bool) -> dict[str, str]:
    """The project's files: relative path -> text."""
    mod = camel(app)
    result = {
        "README.md": f"""\
# {app}

An application made with `nodelab new{' --sup' if sup else ''}`.

    nodelab node --sname kate --app {app}     # run it on a node (from this directory or its
                                              # parent, or with NODELAB_APP_PATH pointing here)
    pytest                                    # test it (from this directory)
""",
        ".gitignore": "__pycache__/\n.pytest_cache/\n*.egg-info/\n",
        "pyproject.toml": f"""\
[project]
name = "{app}"
version = "0.1.0"
dependencies = ["nodelab"]

[tool.pytest.ini_options]
testpaths = ["tests"]
""",
        f"{app}/__init__.py": f'''\
"""Documentation for ``{app}``."""


def hello():
    """Hello world.

    >>> hello()
    'world'
    """
    return "world"
''',
        "config/config.py": '''\
# Loaded before the application starts, like config/config.exs.
# NODELAB_ENV chooses the environment (default dev; pytest sets test), like MIX_ENV.
from nodelab.otp.config import config_env, import_config

import_config(f"{config_env()}.py")
''',
        "config/dev.py": f'''\
from nodelab.otp.config import config  # noqa: F401 - for your settings

# config("{app}", key=value)  ->  Application.get_env("{app}", "key")
''',
        "config/test.py": f'''\
from nodelab.otp.config import config  # noqa: F401 - for your settings

# config("{app}", key=value)  ->  Application.get_env("{app}", "key") while testing
''',
        "tests/conftest.py": f'''\
"""What `mix test` does first: make ``{app}`` importable and start the application."""

import os
import sys
from pathlib import Path

import pytest
from nodelab.otp import Application

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
# Peer nodes started by the tests find the application through this.
APP_PATH = [str(PROJECT)] + os.environ.get("NODELAB_APP_PATH", "").split(os.pathsep)
os.environ["NODELAB_APP_PATH"] = os.pathsep.join(p for p in APP_PATH if p)


@pytest.fixture(scope="session", autouse=True)
def {app}_application():
    _, started = Application.ensure_all_started("{app}")
    yield
    if started:
        Application.stop("{app}")
''',
    }
    test = f'''import {app}


def test_greets_the_world():
    assert {app}.hello() == "world"
'''
    if sup:
        # Like mix new --sup: the tree starts empty; what goes into it is the app's business
        # (the lesson adds its Task supervisor there).
        result[f"{app}/application.py"] = f'''\
"""``{mod}.Application``, the application callback module: starts the tree."""

from nodelab.otp import Supervisor


def start(_type, _args):
    children = [
        # Starts a worker by calling start_worker(arg):
        # {{"id": "worker", "start": (start_worker, [arg])}},
    ]

    # See the Supervisor docs for other strategies and options.
    opts = {{"strategy": "one_for_one", "name": "{mod}.Supervisor"}}
    return Supervisor.start_link(children, **opts)
'''
    result[f"tests/test_{app}.py"] = test
    return result


def run(args: argparse.Namespace) -> int:
    """Create the project; one line on stderr and status 1 when it cannot."""
    target = Path(args.path)
    app = args.app or target.name
    problem = None
    if target.exists():
        problem = f"{target} already exists: choose another path, or remove it first"
    problem = problem or check_name(app)
    if problem is not None:
        print(f"nodelab new: {problem}", file=sys.stderr)
        return 1
    for relative, text in files(app, args.sup).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"* creating {path}")
    print(f"""
Your application is ready! You can test it with:

    cd {target}
    pytest

and run it on a node (from there, or from here) with:

    nodelab shell --sname alex --app {app}
""")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nodelab.tools.scaffold chat --sup`` (the same as ``nodelab new chat --sup``)."""
    parser = argparse.ArgumentParser(prog="nodelab new",
                                     description="create an application, like mix new")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
