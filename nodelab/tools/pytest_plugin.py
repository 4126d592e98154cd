"""pytest plugin: distributed tests, like ExUnit's ``@tag :distributed``.

Installed with nodelab (entry point ``pytest11``), so any ``pytest`` run has it:

* the marker ``@pytest.mark.distributed`` for tests that need other nodes;
* ``--sname NAME`` / ``--name NAME@HOST`` and ``--cookie C`` make the test run a named
  node (like running ``mix test`` inside ``iex --sname sophie -S mix``);
* without a name, tests marked ``distributed`` are excluded, and the run says so in one
  line — the analogue of ExUnit's ``Excluding tags: [distributed: true]``;
* the run uses the ``test`` environment (``NODELAB_ENV=test``, like ``MIX_ENV=test``),
  so an application reads ``config/test.py``;
* a test that fails because a call or an await exited (``no connection to moebi@localhost``)
  is reported as ``mix test`` reports it, ``** (exit) exited in: ...`` and its
  ``** (EXIT) ...`` line, once, without nodelab's own frames (``--tb=long`` or ``native``
  still show the whole traceback);
* the ``peers`` fixture starts peer nodes for one test and stops them afterwards, like
  OTP's ``peer`` module, so a distributed test needs no manual step::

      @pytest.mark.distributed
      def test_send_message(peers):
          peers.start("moebi", app="chat")
          assert chat.send_message("moebi@localhost", "hi") == "ok"
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

#: Marks a NODELAB_ENV that this plugin set (not the user).
ENV_SET_BY_PYTEST = "NODELAB_ENV_SET_BY_PYTEST"

_EXCLUDED_KEY = pytest.StashKey[list]()
_STARTED_KEY = pytest.StashKey[bool]()
_ALL_EXCLUDED_KEY = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nodelab", "nodelab distributed tests")
    group.addoption("--sname", dest="nodelab_sname", default=None,
                    help="run the tests as the named node NAME@localhost (includes tests "
                         "marked distributed)")
    group.addoption("--name", dest="nodelab_name", default=None,
                    help="run the tests as the long-named node NAME@HOST")
    group.addoption("--cookie", dest="nodelab_cookie", default=None,
                    help="the cookie of the test node and of the peers it starts")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "distributed: the test needs other nodes; excluded unless the test run "
                   "is a named node (pytest --sname NAME)")
    # `mix test` runs in the test environment; so does pytest, unless told otherwise.
    if "NODELAB_ENV" not in os.environ:
        os.environ["NODELAB_ENV"] = "test"
        # Kernels that nbval starts inherit this environment, but a notebook is an
        # interactive session (iex, not mix test): the extension drops the test env there.
        os.environ[ENV_SET_BY_PYTEST] = "1"
    config.stash[_EXCLUDED_KEY] = []
    config.stash[_STARTED_KEY] = False
    name = config.getoption("nodelab_sname") or config.getoption("nodelab_name")
    if name:
        from nodelab.node import Node

        Node.start(name, config.getoption("nodelab_cookie"))
        config.stash[_STARTED_KEY] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_STARTED_KEY, False):
        from nodelab.node import Node

        Node.stop()


def _run_is_a_named_node() -> bool:
    from nodelab.node import Node

    return Node.alive()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _run_is_a_named_node():
        return
    excluded = [item for item in items if item.get_closest_marker("distributed")]
    if not excluded:
        return
    config.stash[_EXCLUDED_KEY] = excluded
    items[:] = [item for item in items if not item.get_closest_marker("distributed")]
    config.stash[_ALL_EXCLUDED_KEY] = not items
    config.hook.pytest_deselected(items=excluded)


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    excluded = config.stash.get(_EXCLUDED_KEY, [])
    if not excluded:
        return []
    count = len(excluded)
    return [
        f"Excluding tags: [distributed: true] — {count} test{'s' if count != 1 else ''} "
        "excluded because this run is not a named node (run pytest --sname NAME to include them)"
    ]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config.stash.get(_ALL_EXCLUDED_KEY, False):
        terminalreporter.write_line("All tests have been excluded.")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # ExUnit exits 0 when every test was excluded; pytest would say "no tests ran" (5).
    if session.config.stash.get(_ALL_EXCLUDED_KEY, False) and exitstatus == 5:
        session.exitstatus = 0


#: Traceback styles in which an exit is reported the Elixir way (the others show everything).
_EXIT_STYLES = ("auto", "short", "line")


def _exit_text(error: BaseException) -> str | None:
    """``** (exit) exited in: ...`` and what to do, for an exit of nodelab's OTP layer."""
    from nodelab.errors import NoConnection
    from nodelab.otp.errors import ExitError

    if not isinstance(error, ExitError):
        return None
    text, hint = str(error), error.hint
    if hint and text.endswith("\n" + hint):
        text = text[: -len(hint) - 1]
    hints = hint.splitlines()
    if isinstance(error, NoConnection) and not _run_is_a_named_node():
        # The runtime says Node.start('alex'); in a test run the way is a name for the run.
        hints = [f"this test run is not a named node, so it cannot reach {error.node}: run "
                 "pytest --sname NAME (and mark the test @pytest.mark.distributed)"]
    return "\n".join([f"** (exit) {text}", *hints])


class _ExitCrash:
    """Where the test failed and the exit's text: what ``--tb=line`` and ``-r`` print."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path, self.lineno, self.message = path, lineno, message

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"

    def toterminal(self, tw: Any) -> None:
        tw.write(self.path, bold=True, red=True)
        tw.line(f":{self.lineno}: {self.message}", red=True)


class _ExitReport:
    """A test's failure by an exit, as ``mix test`` shows it: the test's line, the code
    there, and the ``** (exit)`` text once."""

    def __init__(self, crash: _ExitCrash, test: str, code: str, line_style: bool) -> None:
        self.reprcrash, self.test, self.code, self.line_style = crash, test, code, line_style

    def toterminal(self, tw: Any) -> None:
        if self.line_style:
            return  # --tb=line prints the crash line (reprcrash), which holds it all
        tw.write(self.reprcrash.path, bold=True, red=True)
        tw.line(f":{self.reprcrash.lineno}: in {self.test}")
        if self.code:
            tw.line(f"    {self.code}")
        tw.line(self.reprcrash.message, red=True)

    def __str__(self) -> str:
        return str(self.reprcrash)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    style = item.config.getoption("tbstyle", "auto")
    if not (report.failed and call.excinfo is not None and style in _EXIT_STYLES):
        return report
    text = _exit_text(call.excinfo.value)
    if text is None:
        return report
    # The innermost frame in the test's own file: that line called what exited.
    path, lineno, code = str(item.path), 0, ""
    for entry in call.excinfo.traceback:
        if str(entry.path) == str(item.path):
            lineno = entry.lineno + 1
            try:
                code = " ".join(part.strip() for part in str(entry.statement).splitlines())
            except Exception:  # noqa: BLE001 - the source may be gone; the line number stays
                code = ""
    try:
        path = str(item.path.relative_to(item.config.rootpath))
    except ValueError:
        pass
    report.longrepr = _ExitReport(_ExitCrash(path, lineno, text), item.name, code,
                                  line_style=style == "line")
    return report


class Peers:
    """Peer nodes started for one test; all of them stop when the test ends."""

    def __init__(self, cookie: str | None, log_dir: str) -> None:
        self.cookie = cookie
        self.log_dir = log_dir
        self.started: list[Any] = []

    def start(self, name: str, **options: Any) -> Any:
        """Start node ``name`` (e.g. ``"moebi"``, with ``app="chat"``) and wait until it is up."""
        from nodelab.node import Node
        from nodelab.tools import peer

        if not Node.alive():
            raise RuntimeError(
                "peers.start needs the test run to be a named node: run pytest --sname NAME, "
                "and mark the test @pytest.mark.distributed")
        options.setdefault("cookie", self.cookie or Node.get_cookie())
        options.setdefault("log_dir", self.log_dir)
        options.setdefault("env", {"NODELAB_ENV": os.environ.get("NODELAB_ENV", "test")})
        node = peer.start(name, **options)
        self.started.append(node)
        return node

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture
def peers(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Peers]:
    """Start peer nodes for this test: ``peers.start("moebi", app="chat")``."""
    started = Peers(request.config.getoption("nodelab_cookie"), str(tmp_path))
    try:
        yield started
    finally:
        started.stop_all()
