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
import string
import sys
from collections.abc import Sequence
from importlib import resources
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


#: The project's files in the order ``nodelab new`` creates them: each is the template
#: ``templates/new/<path>.tmpl`` (package data), with ``APP`` in the path standing for the
#: application's name (``.gitignore`` is ``gitignore.tmpl``: package data globs skip dot
#: files). The templates are :class:`string.Template` texts: ``${app}``, ``${mod}`` (the
#: Elixir module name, ``Chat``) and ``${sup_flag}`` (`` --sup`` or nothing).
LAYOUT = ("README.md", ".gitignore", "pyproject.toml", "APP/__init__.py", "config/config.py",
          "config/dev.py", "config/test.py", "tests/conftest.py", "APP/application.py",
          "tests/test_APP.py")

#: Only with ``--sup`` (like ``mix new --sup``): the application module. Its tree starts
#: empty; what goes into it is the app's business (the lesson adds its Task supervisor).
SUP_ONLY = frozenset({"APP/application.py"})


def template(path: str) -> string.Template:
    """The template of the project file ``path`` (as written in :data:`LAYOUT`)."""
    name = path.lstrip(".") + ".tmpl"
    source = resources.files(__package__).joinpath("templates", "new", *name.split("/"))
    return string.Template(source.read_text(encoding="utf-8"))


def files(app: str, sup: bool) -> dict[str, str]:
    """The project's files: relative path -> text."""
    values = {"app": app, "mod": camel(app), "sup_flag": " --sup" if sup else ""}
    return {path.replace("APP", app): template(path).substitute(values)
            for path in LAYOUT if sup or path not in SUP_ONLY}


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
