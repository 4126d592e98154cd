"""Supervision tree pictures: a supervisor, its children, their children.

Livebook's ``Kino.Process.render_sup_tree`` is the model::

    supervision_tree("Chat.Supervisor")                       # on this node
    supervision_tree(("Chat.Supervisor", "kate@localhost"))   # on kate
    app_tree("chat", "kate@localhost")                        # the tree of an application

The walk asks each supervisor ``Supervisor.which_children`` (as Elixir's
``Supervisor.which_children/1``) and goes down into children of type ``"supervisor"``.
It runs *on the node that owns the tree* — a request to that node starts a process
there that walks it and sends back the result — so a remote tree costs one round trip,
not one per supervisor. The picture shows each supervisor's strategy, each child's id,
supervisors as boxes and workers as rounded boxes; processes without a name are numbered
``P1``, ``P2``... in drawing order, so the picture is the same every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodelab.runtime import pids
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid

from ..errors import NodelabError, format_exit
from . import _mermaid as M
from ._remote import Command, RemoteFailure, answer, ask

#: How long a walk may take, including a request to another node (s).
TIMEOUT = 10.0


@dataclass
class TreeNode:
    """One process of a supervision tree, as found by the walk."""

    id: str | None  # the child id in its supervisor (None for the root, or a task)
    pid: Pid | None  # None: the child is not running (Elixir's :undefined)
    node: str
    type: str  # "supervisor" or "worker"
    name: str | None = None  # its registered name
    kind: str | None = None  # "Supervisor", "TaskSupervisor", or None when unknown
    strategy: str | None = None
    modules: list[str] = field(default_factory=list)
    children: list[TreeNode] = field(default_factory=list)
    error: str | None = None  # why its children could not be listed


# --- the walk (runs on the node that owns the supervisor) ------------------------------------

def _module_name(module: Any) -> str:
    return getattr(module, "__qualname__", None) or getattr(module, "__name__", None) or str(module)


def _id_text(child_id: Any) -> str | None:
    if child_id is None or isinstance(child_id, str):
        return child_id
    if isinstance(child_id, type) or hasattr(child_id, "__name__"):
        return _module_name(child_id)
    return repr(child_id)


def _introspect(pid: Pid) -> tuple[str | None, str | None]:
    """Which kind of supervisor ``pid`` runs, and its strategy.

    ``which_children`` does not say (nor does Elixir's), so nodelab's supervisors also
    answer a ``("$describe",)`` call (what ``sys:get_state`` gives Livebook's pictures of
    BEAM trees). A process that does not know it (a hand-made supervisor answering only
    ``which_children``) is drawn without a strategy.
    """
    from ..otp import server

    try:
        answer = server.call(pid, ("$describe",), DESCRIBE_TIMEOUT)
    except Exception:  # noqa: BLE001 - drawn without a strategy rather than not at all
        return None, None
    if (isinstance(answer, tuple) and len(answer) == 2
            and answer[0] in ("Supervisor", "TaskSupervisor") and answer[1] in _STRATEGIES):
        return answer
    return None, None


#: How long a supervisor may take to say what it is before it is drawn without it.
DESCRIBE_TIMEOUT = 2.0

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


def which_children(supervisor: Any) -> list[tuple[Any, Any, str, list[Any]]]:
    """The one place the walk asks a supervisor for its children (``[(id, pid, type,
    modules), ...]``, newest first as in Elixir)."""
    from ..otp import Supervisor

    return Supervisor.which_children(supervisor)


def describe(target: Any, *, child_id: Any = None, depth: int = 0) -> TreeNode:
    """Walk the tree under ``target`` (a PID or a name of *this* node); call it in a process."""
    local = pids.local_node()
    if isinstance(target, Pid):
        pid: Pid | None = target
    else:
        pid = P.whereis(target)
        if pid is None:
            raise NodelabError(
                f"no process is registered as {target!r} on {local}: check the name (e.g. "
                "'Chat.Supervisor'), and that the application that starts it runs there")
    if not pid.is_local:
        return _remote_describe(pid, child_id)
    if not P.is_alive(pid):
        raise NodelabError(f"{pid!r} is not a live process of {local}")
    kind, strategy = _introspect(pid)
    root = TreeNode(_id_text(child_id), pid, local, "supervisor", name=P.registered_name(pid),
                    kind=kind, strategy=strategy)
    if depth > 32:
        root.error = "too deep"
        return root
    try:
        children = which_children(pid)
    except Exception as error:  # noqa: BLE001 - a dying supervisor is drawn, not fatal
        root.error = f"{type(error).__name__}: {error}"
        return root
    if kind == "Supervisor":
        children = list(reversed(children))  # start order reads better than newest first
    for cid, cpid, ctype, modules in children:
        names = [_module_name(m) for m in modules or []]
        if ctype == "supervisor" and isinstance(cpid, Pid):
            try:
                child = describe(cpid, child_id=cid, depth=depth + 1)
            except NodelabError as error:
                child = TreeNode(_id_text(cid), cpid, cpid.node, "supervisor",
                                 error=str(error))
            child.modules = names
        else:
            child = TreeNode(_id_text(cid), cpid if isinstance(cpid, Pid) else None,
                             cpid.node if isinstance(cpid, Pid) else local,
                             ctype if ctype in ("worker", "supervisor") else "worker",
                             name=P.registered_name(cpid) if isinstance(cpid, Pid) else None,
                             modules=names)
        root.children.append(child)
    return root


def _application_top(app: str) -> Pid:
    try:
        from ..otp import application
    except ImportError:
        raise NodelabError("the OTP layer is not available on this node") from None
    top = application.top_supervisor(app)
    if top is None:
        started = ", ".join(application.Application.started_applications()) or "none"
        raise NodelabError(f"the application {app!r} is not running on {pids.local_node()} "
                           f"(running: {started}): start it, e.g. with --app {app}")
    return top


def _remote_describe(pid: Pid, child_id: Any) -> TreeNode:
    tree = ask(pid.node, TreeRequest(pid), TIMEOUT)
    tree.id = _id_text(child_id)
    return tree


class TreeRequest(Command):
    """Walk a tree on the receiving node: ``target`` is a PID, a name, or ``("$app", app)``."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def run(self, dist: Any, conn: Any, ref: Any, caller: Any) -> None:
        peer = conn.peer
        target = self.target

        def walk() -> None:
            try:
                if isinstance(target, tuple) and target[:1] == ("$app",):
                    value: Any = describe(_application_top(target[1]))
                else:
                    value = describe(target)
            except Exception as error:  # noqa: BLE001 - the asking node shows why
                value = RemoteFailure(str(error))
            answer(dist, peer, ref, caller, value)

        # Calls to supervisors wait: not in the connection's reader thread.
        P.start_process(walk, (), group_leader=P.default_group_leader())


# --- the picture ---------------------------------------------------------------------------

def _label_lines(tree: TreeNode, number: Any) -> list[str]:
    """The lines of a box: what the child is called, then what it is."""
    if tree.name and tree.id and tree.name != tree.id:
        title = f"{tree.id} ({tree.name})"
    else:
        title = tree.name or tree.id
    if title is None:
        is_task = any(m in ("Task",) for m in tree.modules)
        title = f"{'task' if is_task else tree.type} P{next(number)}"
    lines = [title]
    if tree.type == "supervisor":
        what = tree.strategy or "supervisor"
        if tree.kind == "TaskSupervisor":
            what = f"TaskSupervisor, {what}"
        lines.append(what)
    if tree.pid is None:
        lines.append("not running")
    if tree.error:
        lines.append(f"error: {tree.error}")
    return lines


class SupervisionTree(M.Picture):
    """A supervision tree as Mermaid (``graph TD``, for Jupyter) and as text."""

    def __init__(self, root: TreeNode, *, title: str | None = None) -> None:
        self.root = root
        self.title = title
        self.notes = ()
        counter = iter(range(1, 1 << 30))
        self.labels: dict[int, list[str]] = {}
        for tree in _walk(root):
            self.labels[id(tree)] = _label_lines(tree, counter)
        self.mermaid = self._mermaid()
        self.text = self._text()

    def _mermaid(self) -> str:
        lines = ["graph TD"]
        if self.title:
            lines = ["---", f"title: {M.escape(self.title)}", "---", *lines]
        ids: dict[int, str] = {}
        by_node: dict[str, list[TreeNode]] = {}
        for tree in _walk(self.root):
            ids[id(tree)] = f"n{len(ids) + 1}"
            by_node.setdefault(tree.node, []).append(tree)
        for index, (node, trees) in enumerate(by_node.items(), 1):
            lines.append(f'    subgraph s{index} ["{M.escape(node)}"]')
            # Without it Mermaid lays a subgraph's nodes out left to right when the edges
            # are declared outside it (checked in JupyterLab 4.6's Mermaid 11).
            lines.append("        direction TB")
            for tree in trees:
                text = "<br/>".join(M.escape(line) for line in self.labels[id(tree)])
                shape = f'[["{text}"]]' if tree.type == "supervisor" else f'("{text}")'
                lines.append(f"        {ids[id(tree)]}{shape}")
            lines.append("    end")
        for tree in _walk(self.root):
            for child in tree.children:
                lines.append(f"    {ids[id(tree)]} --> {ids[id(child)]}")
        stopped = [ids[id(t)] for t in _walk(self.root) if t.pid is None or t.error]
        if stopped:
            lines.append("    classDef stopped stroke-dasharray: 5 5")
            lines.append(f"    class {','.join(stopped)} stopped")
        return "\n".join(lines) + "\n"

    def _text(self) -> str:
        out: list[str] = []
        if self.title:
            out.append(self.title)

        def line_of(tree: TreeNode) -> str:
            first, *rest = self.labels[id(tree)]
            return f"{first}  ({', '.join([tree.type, *rest])})"

        out.append(f"{line_of(self.root)}  {self.root.node}")

        def walk(tree: TreeNode, prefix: str) -> None:
            for index, child in enumerate(tree.children):
                last = index == len(tree.children) - 1
                where = f"  {child.node}" if child.node != tree.node else ""
                out.append(f"{prefix}{'└── ' if last else '├── '}{line_of(child)}{where}")
                walk(child, prefix + ("    " if last else "│   "))

        walk(self.root, "")
        return "\n".join(out)


def _walk(tree: TreeNode) -> list[TreeNode]:
    found = [tree]
    for child in tree.children:
        found.extend(_walk(child))
    return found


def _target(supervisor: Any, node: str | None) -> tuple[Any, str]:
    if isinstance(supervisor, tuple) and len(supervisor) == 2 and supervisor[0] == "ok" \
            and isinstance(supervisor[1], Pid):
        supervisor = supervisor[1]  # what start_link returned
    if isinstance(supervisor, Pid):
        return supervisor, supervisor.node
    if isinstance(supervisor, tuple) and len(supervisor) == 2 and all(
            isinstance(part, str) for part in supervisor):
        return supervisor[0], supervisor[1]
    if isinstance(supervisor, str) and supervisor:
        return supervisor, node or pids.local_node()
    raise TypeError(f"{supervisor!r} is not a supervisor: use a PID, a registered name like "
                    "'Chat.Supervisor', or (name, node) like ('Chat.Supervisor', "
                    "'kate@localhost')")


def _walk_from(target: Any, node: str) -> TreeNode:
    if node in (pids.local_node(), pids.NO_NODE):
        if isinstance(target, tuple):
            return describe(_application_top(target[1]))
        return describe(target)
    try:
        return ask(node, TreeRequest(target), TIMEOUT)
    except ConnectionError:
        raise NodelabError(f"{format_exit(('nodedown', node))}: is it running, with the same "
                           "cookie?") from None
    except TimeoutError:
        raise NodelabError(f"{node} did not send the tree within {TIMEOUT:g} s") from None


def supervision_tree(supervisor: Any, node: str | None = None, *,
                     title: str | None = None) -> SupervisionTree:
    """Draw the supervision tree under ``supervisor``.

    ``supervisor`` is a PID, a registered name (on this node, or on ``node``), ``(name,
    node)``, or what ``Supervisor.start_link`` returned. The result shows as a diagram in
    Jupyter and as an indented tree in a terminal.
    """
    target, where = _target(supervisor, node)
    return SupervisionTree(_walk_from(target, where), title=title)


def app_tree(app: str, node: str | None = None) -> SupervisionTree:
    """Draw the supervision tree of the running application ``app`` (on ``node``)."""
    if not isinstance(app, str) or not app:
        raise TypeError(f"an application is named by a string like 'chat', not {app!r}")
    where = node or pids.local_node()
    return SupervisionTree(_walk_from(("$app", app), where), title=f"application {app}")
