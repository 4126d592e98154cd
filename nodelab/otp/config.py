"""Application configuration, like Elixir's ``Config`` and ``Application.get_env``.

A project keeps its configuration in ``config/config.py``, which may pull in the file of
the current environment, exactly like ``config/config.exs``::

    # config/config.py
    from nodelab.otp.config import config, config_env, import_config

    import_config(f"{config_env()}.py")

    # config/dev.py
    from nodelab.otp.config import config

    config("chat", remote_supervisor=lambda recipient: ("Chat.TaskSupervisor", recipient))

    # config/test.py
    from nodelab.otp.config import config

    config("chat", remote_supervisor=lambda _recipient: "Chat.TaskSupervisor")

The environment is ``NODELAB_ENV`` (default ``"dev"``; the nodelab pytest plugin sets
``"test"``), as ``MIX_ENV`` is for mix. ``Application.start("chat")`` loads the project's
configuration before it starts the application, as mix does, and the code reads it with
``Application.get_env("chat", "remote_supervisor")``. Values may be anything, functions
included. The configuration lives in the node (one OS process), like the BEAM's
application environment: every node loads its own.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .errors import ApplicationError

#: The environment when NODELAB_ENV is not set (mix's default is dev too).
DEFAULT_ENV = "dev"

_store: dict[str, dict[str, Any]] = {}
_store_lock = threading.RLock()


class _Loading(threading.local):
    """The configuration being read by this thread: its files, its env, what it set."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.env: str | None = None
        self.pending: dict[str, dict[str, Any]] | None = None


_loading = _Loading()


# --- what config files call ---------------------------------------------------------------------

def config_env() -> str:
    """The environment being configured: ``"dev"``, ``"test"``, ``"prod"``... (``NODELAB_ENV``)."""
    if _loading.env is not None:
        return _loading.env
    return os.environ.get("NODELAB_ENV", "").strip() or DEFAULT_ENV


def config(app: str, values: dict[str, Any] | None = None, /, **keywords: Any) -> None:
    """Set configuration keys of ``app``: ``config("chat", remote_supervisor=fn)``.

    A dict may be passed for keys that are not Python identifiers. Called from a config
    file, the values apply when the whole file has been read; called elsewhere, at once.
    Dict values are merged into what is already there (Elixir merges keyword lists).
    """
    if not isinstance(app, str) or not app:
        raise TypeError(f"the application is named by a string like 'chat', not {app!r}")
    new = dict(values or {})
    new.update(keywords)
    if _loading.pending is not None:
        _merge(_loading.pending.setdefault(app, {}), new)
    else:
        with _store_lock:
            _merge(_store.setdefault(app, {}), new)


def import_config(file: str) -> None:
    """Read another config file, relative to the one being read: ``import_config("dev.py")``."""
    if not _loading.files:
        raise ApplicationError("import_config can only be called from a config file that is "
                               "being loaded (config/config.py)")
    path = (_loading.files[-1].parent / file).resolve()
    if not path.is_file():
        raise ApplicationError(
            f"{_loading.files[-1]} imports {file!r}, but {path} does not exist: create it, "
            f"e.g. with config(...) calls for the {config_env()!r} environment")
    if path in _loading.files:
        raise ApplicationError(f"{path} imports itself (through {_loading.files[-1].name})")
    _exec_file(path)


# --- loading -------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike[str], env: str | None = None) -> dict[str, dict[str, Any]]:
    """Read the config file ``path`` (and what it imports) for ``env``; apply it; return it.

    ``env`` defaults to :func:`config_env`. Nothing is applied when a file fails: the error
    names the file and line.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise ApplicationError(f"no config file at {file}")
    outer = (_loading.files, _loading.env, _loading.pending)
    _loading.files, _loading.env, _loading.pending = [], env or config_env(), {}
    try:
        _exec_file(file)
        pending = _loading.pending
    finally:
        _loading.files, _loading.env, _loading.pending = outer
    with _store_lock:
        for app, values in pending.items():
            _merge(_store.setdefault(app, {}), values)
    return pending


def _exec_file(path: Path) -> None:
    namespace = {
        "__file__": str(path), "__name__": f"nodelab_config_{path.stem}",
        "config": config, "config_env": config_env, "import_config": import_config,
    }
    _loading.files.append(path)
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, namespace)  # a config file is the project's own Python code
    finally:
        _loading.files.pop()


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged = dict(old)
            _merge(merged, value)
            into[key] = merged
        else:
            into[key] = value


# --- the application environment -----------------------------------------------------------------

def get_env(app: str, key: str, default: Any = None) -> Any:
    """The value of ``key`` in ``app``'s environment, or ``default``."""
    with _store_lock:
        return _store.get(app, {}).get(key, default)


def fetch_env(app: str, key: str) -> Any:
    """Like :func:`get_env`, but raise when ``key`` was never set (Elixir's ``fetch_env!``)."""
    with _store_lock:
        values = _store.get(app, {})
        if key in values:
            return values[key]
    raise ApplicationError(
        f"could not fetch application environment {key!r} for application {app!r} because "
        f"configuration at {key!r} was not set: set it in config/{config_env()}.py with "
        f"config({app!r}, {key}=...), or with Application.put_env")


def put_env(app: str, key: str, value: Any) -> str:
    """Set ``key`` in ``app``'s environment (on this node only); returns ``"ok"``."""
    with _store_lock:
        _store.setdefault(app, {})[key] = value
    return "ok"


def delete_env(app: str, key: str) -> str:
    with _store_lock:
        _store.get(app, {}).pop(key, None)
    return "ok"


def get_all_env(app: str) -> dict[str, Any]:
    """A copy of ``app``'s whole environment."""
    with _store_lock:
        return dict(_store.get(app, {}))
