"""Message sequence pictures: which process sent what to whom, across nodes.

Livebook's ``Kino.Process.render_seq_trace`` is the model. While a recording runs, every
``send`` on this node *and on every node it is connected to* is noted — when, from which
process, to which one, and a short label of the message — and afterwards the notes are
merged into one sequence diagram: processes are lifelines, grouped by node::

    with record_messages() as recording:
        pid = Node.spawn("kate@localhost", lambda: send(receive()[1], ("pong", self())))
        send(pid, ("ping", self()))
        receive()
    recording.diagram          # in a notebook: the picture; in a terminal: the text

or ``trace(fn, *args)`` for one function, or the ``%%sequence`` cell magic.

How it works, and its limits:

* The runtime calls a *tracer* on every ``send`` of a node (``set_tracer``). Starting a
  recording installs one here and, through a control request, on every connected node.
  A message sent to a node that was not traced yet starts tracing there first, on the
  same connection, so the chain of messages is followed to nodes the cell connects to.
* Only ``send`` is seen: spawning, linking and monitoring travel as control messages and
  are not drawn; a process first appears when it sends or is sent something.
* A message to a registered name is drawn to the process that holds the name (looked up
  on the node that owns the name), so its replies come from the same lifeline.
* Order: the notes are merged by wall-clock time. On one host all nodes read the same
  clock, and a message is always sent before the messages it causes, so the order is the
  causal one. (Across hosts, clock skew can swap messages closer together than the skew.)
* Deterministic labels for notebooks checked by nbval: processes are named by their
  registered name, or ``shell`` / ``group leader``, or numbered ``P1``, ``P2`` ... in order
  of first appearance — never by their PID, which changes from run to run.

One module, although long: recording a message sequence and drawing it are one concept, and
the recording's format is only read by the drawing.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from nodelab.runtime import pids
from nodelab.runtime import processes as P
from nodelab.runtime.group_leader import is_group_leader
from nodelab.runtime.pids import Pid, Ref

from ..errors import NodelabError
from . import _mermaid as M
from ._remote import Command, answer, ask, tell

#: After the recorded code returns, wait until no message was sent for this long (s) ...
QUIET = 0.05
#: ... but never longer than this (s): a process that keeps sending does not hang the cell.
MAX_WAIT = 2.0
#: How long a node gets to answer a start, poll or stop request (s).
REQUEST_TIMEOUT = 5.0
#: Messages kept per node per recording; beyond, they are counted, not kept.
MAX_EVENTS = 20_000
#: A recording that nobody stopped (its recorder died) ends by itself after this long (s).
MAX_AGE = 600.0
#: Messages drawn in one diagram; a longer one is cut (the text says how many were left).
MAX_SHOWN = 300
#: Length of a message label in the picture.
LABEL_LIMIT = 30


# --- what is recorded -----------------------------------------------------------------------

class Name(NamedTuple):
    """A destination given as a registered name, before it is resolved to a PID."""

    name: str
    node: str


class Runtime(NamedTuple):
    """The sender of a message sent by a thread that is not a process (the node itself)."""

    node: str


class Text:
    """A piece of a message summary that is shown as it is (``ref``, ``<<12 bytes>>``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __reduce__(self) -> tuple:
        return (Text, (self.text,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Text) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


class Event(NamedTuple):
    """One ``send``, as the sending node saw it."""

    time_ns: int
    node: str
    seq: int
    sender: Pid | None
    sender_role: str | None
    dest: Any  # Pid | Name
    dest_role: str | None
    summary: Any


_MAX_ITEMS = 4
_MAX_DEPTH = 3
_MAX_TEXT = 40


def summarize(value: Any, depth: int = 0) -> Any:
    """A small copy of a message that any node can decode: tuples, lists, short strings,
    numbers and PIDs are kept (cut to a few items); anything else becomes a :class:`Text`.

    The message itself is not kept: it may be large, or of a class only its node knows.
    """
    kind = type(value)
    if value is None or kind in (bool, int, float):
        return value
    if kind is str:
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if kind is Pid:
        return value
    if kind is Ref:
        return Text("ref")
    if kind is tuple or kind is list:
        if depth >= _MAX_DEPTH:
            return Text("(…)" if kind is tuple else "[…]")
        items = [summarize(item, depth + 1) for item in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            items.append(Text("…"))
        return tuple(items) if kind is tuple else items
    if kind is bytes:
        return Text(f"<<{len(value)} bytes>>")
    if kind is dict:
        return Text(f"%{{{len(value)} keys}}" if value else "%{}")
    if kind is P.Crash:
        return Text(f"Crash({value.kind})")
    return Text(f"{kind.__name__}(…)")


def role_of(pid: Pid | None, *, caller: bool = False) -> str | None:
    """How a process is named in a picture when it has a meaning of its own.

    Its registered name; ``"shell"`` for a shell process (a notebook cell, iex's shell);
    ``"group leader"`` for a process that writes output; otherwise None (it gets a number).
    ``caller=True``: ``pid`` is the calling thread's own process (a shell stays one after
    an exit signal ended it, until its thread gets a new one).
    """
    if pid is None:
        return None
    name = P.registered_name(pid)
    if name:
        return name
    if P.is_shell(None if caller else pid):
        return "shell"
    if is_group_leader(pid):
        return "group leader"
    return None


def _registry() -> dict[str, Pid]:
    names = {name: P.whereis(name) for name in P.registered()}
    return {name: pid for name, pid in names.items() if pid is not None}


def _directory() -> list[tuple[Pid, str]]:
    entries = []
    for pid in P.processes():
        role = role_of(pid)
        if role is not None:
            entries.append((pid, role))
    return entries


# --- the tracer of this node ------------------------------------------------------------------

class _Session:
    """One recording, as this node takes part in it."""

    __slots__ = ("token", "events", "nodes", "started", "registry", "dropped")

    def __init__(self, token: str, nodes: Iterable[str]) -> None:
        self.token = token
        self.events: list[Event] = []
        self.nodes = set(nodes)  # nodes known to trace this recording (told to start)
        self.started = time.monotonic()
        self.registry = _registry()
        self.dropped = 0

    def add(self, event: Event) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        else:
            self.dropped += 1


_sessions: dict[str, _Session] = {}
_finished: OrderedDict[str, None] = OrderedDict()  # recent tokens: a late start is ignored
_lock = threading.Lock()
_seq = itertools.count()
_tokens = itertools.count(1)


def _begin(token: str, nodes: Iterable[str]) -> None:
    with _lock:
        if token in _sessions or token in _finished:
            return
        tracer = P.tracer()
        if tracer is not None and tracer is not _tracer:
            raise NodelabError(
                f"another tracer is already installed on {pids.local_node()} "
                "(set_tracer): stop it before recording messages")
        _sessions[token] = _Session(token, nodes)
        P.set_tracer(_tracer)


def _end(token: str) -> _Session | None:
    with _lock:
        session = _sessions.pop(token, None)
        _finished[token] = None
        while len(_finished) > 256:
            _finished.popitem(last=False)
        if not _sessions and P.tracer() is _tracer:
            P.set_tracer(None)
    return session


def _expire() -> None:
    now = time.monotonic()
    for token in [t for t, s in list(_sessions.items()) if now - s.started > MAX_AGE]:
        _end(token)


def _tracer(sender: Pid | None, dest: Any, message: Any) -> None:
    """Called by ``send`` on this node while a recording runs. Never raises: a picture
    must not change what the program does."""
    sessions = _sessions
    if not sessions:
        return
    try:
        event = _event(sender, dest, message)
        for session in list(sessions.values()):
            if time.monotonic() - session.started > MAX_AGE:
                _expire()
                continue
            session.add(event)
        node = _remote_node(dest)
        if node is not None:
            _spread(node)
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _event(sender: Pid | None, dest: Any, message: Any) -> Event:
    local = pids.local_node()
    sender_role = role_of(sender, caller=True)
    role: str | None = None
    if type(dest) is Pid:
        key: Any = dest
        if dest.is_local:
            role = role_of(dest)
    else:
        if isinstance(dest, tuple) and len(dest) == 2:
            name, node = dest
        else:
            name, node = dest, local
        name = name if isinstance(name, str) else repr(name)
        role = name
        holder = P.whereis(name) if node == local else None
        key = holder if holder is not None else Name(name, str(node))
    return Event(time.time_ns(), local, next(_seq), sender, sender_role, key, role,
                 summarize(message))


def _remote_node(dest: Any) -> str | None:
    if type(dest) is Pid:
        return None if dest.is_local else dest.node
    if type(dest) is tuple and len(dest) == 2 and dest[1] != pids.local_node():
        return dest[1] if isinstance(dest[1], str) else None
    return None


def _spread(node: str) -> None:
    # The start request goes on the same connection as the message that follows it, so
    # the other node traces before it handles that message: the chain is not cut.
    for session in list(_sessions.values()):
        if node not in session.nodes:
            session.nodes.add(node)
            tell(node, TraceStart(session.token, tuple(sorted(session.nodes))))


class Report(NamedTuple):
    """What one node hands over when a recording stops."""

    node: str
    events: list[Event]
    directory: list[tuple[Pid, str]]
    registry_start: dict[str, Pid]
    registry_end: dict[str, Pid]
    nodes: list[str]
    dropped: int


def _report(session: _Session | None) -> Report:
    node = pids.local_node()
    if session is None:
        return Report(node, [], _directory(), {}, _registry(), [], 0)
    return Report(node, list(session.events), _directory(), session.registry, _registry(),
                  sorted(session.nodes), session.dropped)


# --- requests between nodes -------------------------------------------------------------------

class TraceStart(Command):
    """Start tracing recording ``token`` on the receiving node."""

    def __init__(self, token: str, nodes: tuple[str, ...]) -> None:
        self.token = token
        self.nodes = nodes

    def run(self, dist: Any, conn: Any, ref: Any, caller: Any) -> None:
        _begin(self.token, (*self.nodes, dist.full_name))
        answer(dist, conn.peer, ref, caller, "ok")


class TracePoll(Command):
    """How many messages the receiving node has noted so far, and which nodes it told."""

    def __init__(self, token: str) -> None:
        self.token = token

    def run(self, dist: Any, conn: Any, ref: Any, caller: Any) -> None:
        session = _sessions.get(self.token)
        value = (0, []) if session is None else (len(session.events) + session.dropped,
                                                 sorted(session.nodes))
        answer(dist, conn.peer, ref, caller, value)


class TraceStop(Command):
    """Stop tracing ``token`` on the receiving node and hand over its :class:`Report`."""

    def __init__(self, token: str) -> None:
        self.token = token

    def run(self, dist: Any, conn: Any, ref: Any, caller: Any) -> None:
        answer(dist, conn.peer, ref, caller, _report(_end(self.token)))


# --- a recording ------------------------------------------------------------------------------

class Recording:
    """Record the messages sent on this node and its connected nodes, then draw them.

    Use it as a context manager (:func:`record_messages`); after the ``with`` block,
    :attr:`diagram` holds the :class:`SequenceDiagram`. Or call :meth:`start` and
    :meth:`stop` yourself. ``quiet``/``max_wait``: after the recorded code, wait until no
    message was sent for ``quiet`` seconds (at most ``max_wait``), so that replies still
    on their way are drawn too.
    """

    def __init__(self, title: str | None = None, *, quiet: float = QUIET,
                 max_wait: float = MAX_WAIT, timeout: float = REQUEST_TIMEOUT) -> None:
        self.title = title
        self.quiet = quiet
        self.max_wait = max_wait
        self.timeout = timeout
        self.token: str | None = None
        self.nodes: set[str] = set()
        self.missing: dict[str, str] = {}
        self.diagram: SequenceDiagram | None = None

    def start(self) -> Recording:
        """Turn tracing on here and on every connected node."""
        if self.token is not None:
            raise NodelabError("this recording has already started: make a new one with "
                               "record_messages()")
        from ..node import Node

        local = pids.local_node()
        self.token = f"{local}/{os.getpid()}/{next(_tokens)}/{time.time_ns()}"
        peers = Node.list()
        self.nodes = {local, *peers}
        _begin(self.token, self.nodes)
        for node in peers:
            try:
                ask(node, TraceStart(self.token, tuple(sorted(self.nodes))), self.timeout)
            except (ConnectionError, TimeoutError, NodelabError) as error:
                self.missing[node] = _why(error)
        return self

    def stop(self) -> SequenceDiagram:
        """Wait for the messages still on their way, turn tracing off everywhere, draw."""
        if self.token is None:
            raise NodelabError("this recording was not started: use it in a with block, or "
                               "call start() first")
        if self.diagram is not None:
            return self.diagram
        local = pids.local_node()
        try:
            self._wait_quiet()
        finally:
            reports = self._collect(local)
        self.diagram = build_diagram(reports, title=self.title, missing=self.missing)
        return self.diagram

    def __enter__(self) -> Recording:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _remote_nodes(self) -> list[str]:
        local = pids.local_node()
        session = _sessions.get(self.token or "")
        if session is not None:
            self.nodes |= session.nodes
        return sorted(n for n in self.nodes if n != local and n not in self.missing)

    def _poll(self) -> int:
        session = _sessions.get(self.token or "")
        total = 0 if session is None else len(session.events) + session.dropped
        seen: set[str] = set()
        while True:
            todo = [n for n in self._remote_nodes() if n not in seen]
            if not todo:
                return total
            for node in todo:
                seen.add(node)
                try:
                    count, nodes = ask(node, TracePoll(self.token or ""), self.timeout)
                except (ConnectionError, TimeoutError, NodelabError) as error:
                    self.missing[node] = _why(error)
                    continue
                total += count
                self.nodes.update(nodes)

    def _wait_quiet(self) -> None:
        start = time.monotonic()
        deadline = start + self.max_wait
        last, since = -1, start
        while True:
            total = self._poll()
            now = time.monotonic()
            if total != last:
                last, since = total, now
            elif now - since >= self.quiet:
                return
            if now >= deadline:
                return
            time.sleep(min(self.quiet / 4, max(0.0, deadline - now)))

    def _collect(self, local: str) -> list[Report]:
        reports: list[Report] = []
        done: set[str] = set()
        while True:
            todo = [n for n in self._remote_nodes() if n not in done]
            if not todo:
                break
            for node in todo:
                done.add(node)
                try:
                    report = ask(node, TraceStop(self.token or ""), self.timeout)
                except (ConnectionError, TimeoutError, NodelabError) as error:
                    self.missing[node] = _why(error)
                    continue
                reports.append(report)
                self.nodes.update(report.nodes)
        mine = _report(_end(self.token or ""))
        self.nodes.update(mine.nodes)
        # A node told to start by this node only in the last moment: stop it too.
        for node in [n for n in self._remote_nodes() if n not in done]:
            try:
                reports.append(ask(node, TraceStop(self.token or ""), self.timeout))
            except (ConnectionError, TimeoutError, NodelabError) as error:
                self.missing[node] = _why(error)
        return [mine, *reports]


def _why(error: BaseException) -> str:
    if isinstance(error, ConnectionError):
        return "not reachable"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error)


def record_messages(title: str | None = None, *, quiet: float = QUIET,
                    max_wait: float = MAX_WAIT) -> Recording:
    """Record the messages sent inside a ``with`` block, on this node and connected ones.

    ::

        with record_messages("ping pong") as recording:
            send(pid, ("ping", self()))
            receive()
        recording.diagram       # a SequenceDiagram: a picture in Jupyter, text elsewhere
    """
    return Recording(title, quiet=quiet, max_wait=max_wait)


def trace(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> SequenceDiagram:
    """Run ``fn(*args, **kwargs)`` while recording messages; return the diagram.

    What ``fn`` returned is in the diagram's ``result`` (like Livebook's
    ``Kino.Process.render_seq_trace``). For a title, use :func:`record_messages`.
    """
    with Recording() as recording:
        result = fn(*args, **kwargs)
    diagram = recording.diagram
    assert diagram is not None
    diagram.result = result
    return diagram


# --- the picture --------------------------------------------------------------------------------

class Participant(NamedTuple):
    """One lifeline: a process (or a name, or a node's runtime) on a node."""

    alias: str
    node: str
    label: str


class Message(NamedTuple):
    """One arrow of the diagram."""

    sender: str  # participant labels
    dest: str
    label: str


class SequenceDiagram(M.Picture):
    """The messages of a recording, as Mermaid (for Jupyter) and as text (for terminals).

    ``participants`` and ``messages`` give the same content as data, in drawing order.
    """

    def __init__(self, participants: list[Participant], messages: list[Message], *,
                 title: str | None = None, notes: Iterable[str] = (),
                 omitted: int = 0) -> None:
        self.participants = participants
        self.messages = messages
        self.title = title
        self.notes = tuple(notes)
        self.omitted = omitted
        self.result: Any = None
        self.mermaid = self._mermaid() if messages else ""
        self.text = self._text()

    def _mermaid(self) -> str:
        lines = ["sequenceDiagram"]
        if self.title:
            lines.append(f"    title {M.escape(self.title)}")
        lines.append("    autonumber")
        alias = {p.label: p.alias for p in self.participants}
        for node, group in itertools.groupby(self.participants, key=lambda p: p.node):
            lines.append(f"    box {M.escape(node)}")
            for participant in group:
                lines.append(f"        participant {participant.alias} as "
                             f"{M.escape(participant.label)}")
            lines.append("    end")
        for message in self.messages:
            lines.append(f"    {alias[message.sender]}->>{alias[message.dest]}: "
                         f"{M.escape(message.label) or ' '}")
        if self.omitted:
            last = self.participants[0].alias
            lines.append(f"    Note over {last}: {self.omitted} more messages not drawn")
        return "\n".join(lines) + "\n"

    def _text(self) -> str:
        heading = self.title or "Message sequence"
        if not self.messages:
            body = ["(no messages were sent while recording)"]
        else:
            nodes = len({p.node for p in self.participants})
            heading += (f": {len(self.messages) + self.omitted} message"
                        f"{'s' if len(self.messages) + self.omitted != 1 else ''}, "
                        f"{len(self.participants)} process"
                        f"{'es' if len(self.participants) != 1 else ''} on {nodes} node"
                        f"{'s' if nodes != 1 else ''}")
            body = []
            for node, group in itertools.groupby(self.participants, key=lambda p: p.node):
                body.append(f"  {node}: {', '.join(p.label for p in group)}")
            width = len(str(len(self.messages)))
            left = max(len(m.sender) for m in self.messages)
            right = max(len(m.dest) for m in self.messages)
            for number, message in enumerate(self.messages, 1):
                body.append(f"  {number:>{width}}. {message.sender:<{left}} -> "
                            f"{message.dest:<{right}}  {message.label}".rstrip())
            if self.omitted:
                body.append(f"  ... and {self.omitted} more")
        body.extend(f"  note: {note}" for note in self.notes)
        return "\n".join([heading, *body])


def build_diagram(reports: list[Report], *, title: str | None = None,
                  missing: dict[str, str] | None = None) -> SequenceDiagram:
    """Merge what each node recorded into one :class:`SequenceDiagram`.

    The first report is the recording node's: its lifelines are drawn first (leftmost).
    """
    registries: dict[str, dict[str, Pid]] = {}
    roles: dict[Pid, str] = {}
    notes: list[str] = []
    for report in reports:
        registries[report.node] = {**report.registry_end, **report.registry_start}
        if report.dropped:
            notes.append(f"{report.node} sent {report.dropped} more messages than the "
                         f"{MAX_EVENTS} it keeps; they are not drawn")
    # Each node's notes are in its own order; merging by time keeps that order.
    events: list[Event] = list(heapq.merge(*(r.events for r in reports),
                                           key=lambda e: e.time_ns))
    for event in events:
        if event.sender is not None and event.sender_role:
            roles.setdefault(event.sender, event.sender_role)
        if type(event.dest) is Pid and event.dest_role:
            roles.setdefault(event.dest, event.dest_role)
    for report in reports:
        for pid, role in report.directory:
            roles.setdefault(pid, role)

    def resolve(dest: Any) -> Any:
        if type(dest) is Name:
            pid = registries.get(dest.node, {}).get(dest.name)
            if pid is not None:
                roles.setdefault(pid, dest.name)
                return pid
        return dest

    def node_of(key: Any) -> str:
        return key.node

    numbers = itertools.count(1)
    labels: dict[Any, str] = {}
    used: set[str] = set()

    def label_of(key: Any) -> str:
        label = labels.get(key)
        if label is not None:
            return label
        if type(key) is Pid:
            text = roles.get(key) or f"P{next(numbers)}"
        elif type(key) is Name:
            text = key.name
        else:
            text = "runtime"
        label = f"{M.short_node(node_of(key))} {text}"
        if label in used:
            label = next(f"{label} ({n})" for n in itertools.count(2)
                         if f"{label} ({n})" not in used)
        used.add(label)
        labels[key] = label
        return label

    order: list[Any] = []
    seen: set[Any] = set()
    arrows: list[tuple[Any, Any, Any]] = []
    for event in events:
        sender = event.sender if event.sender is not None else Runtime(event.node)
        dest = resolve(event.dest)
        for key in (sender, dest):
            if key not in seen:
                seen.add(key)
                order.append(key)
                label_of(key)
        arrows.append((sender, dest, event.summary))
    shown = arrows[:MAX_SHOWN]
    keys_shown = [k for k in order if any(k in (a[0], a[1]) for a in shown)]
    # The recording node (the first report) on the left, the others as they appear.
    node_order: list[str] = [reports[0].node] if reports and any(
        node_of(k) == reports[0].node for k in keys_shown) else []
    for key in keys_shown:
        if node_of(key) not in node_order:
            node_order.append(node_of(key))
    participants = []
    for node in node_order:
        for key in keys_shown:
            if node_of(key) == node:
                participants.append(Participant(f"p{len(participants) + 1}", node,
                                                label_of(key)))

    def pid_text(pid: Pid) -> str:
        return f"#PID<{label_of(pid)}>"

    messages = [Message(label_of(s), label_of(d), message_label(summary, pid_text))
                for s, d, summary in shown]
    for node, why in sorted((missing or {}).items()):
        notes.append(f"{node} did not answer ({why}): its messages are missing")
    return SequenceDiagram(participants, messages, title=title, notes=notes,
                           omitted=len(arrows) - len(shown))


def render_value(value: Any, pid_text: Callable[[Pid], str]) -> str:
    """A summary written like Python's repr, with PIDs as participant names."""
    kind = type(value)
    if kind is Pid:
        return pid_text(value)
    if kind is tuple:
        inner = ", ".join(render_value(v, pid_text) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if kind is list:
        return "[" + ", ".join(render_value(v, pid_text) for v in value) + "]"
    return repr(value)


def message_label(summary: Any, pid_text: Callable[[Pid], str]) -> str:
    """The text on an arrow: a tagged tuple shows its tag, anything else its (short) repr.

    ``("hi", pid)`` -> ``hi``; a ``GenServer``-style call shows what it asks
    (``call which_children``); output on its way to a group leader shows the text.
    """
    if type(summary) is tuple and summary and type(summary[0]) is str:
        head = summary[0]
        if head == "$gen_call" and len(summary) == 3:
            request = summary[2]
            if type(request) is tuple and request and type(request[0]) is str:
                return M.shorten(f"call {request[0]}", LABEL_LIMIT)
            if type(request) is str:
                return M.shorten(f"call {request}", LABEL_LIMIT)
            return "call"
        if (head == "io_request" and len(summary) == 4 and type(summary[3]) is tuple
                and len(summary[3]) == 3 and summary[3][0] == "put_chars"):
            text = summary[3][2]
            shown = repr(text.strip()) if type(text) is str else render_value(text, pid_text)
            return M.shorten(f"io_request {shown}", LABEL_LIMIT + 10)
        return M.shorten(head, LABEL_LIMIT)
    return M.shorten(render_value(summary, pid_text), LABEL_LIMIT)
