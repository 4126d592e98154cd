"""Group leaders: where a process's ``print`` goes.

On the BEAM every process has a *group leader*, a process that performs its I/O. A
process spawned with ``spawn``/``spawn_link`` — on this node or on another one — inherits
the group leader of the process that spawned it. That is why ``Kate.say_name()`` run on
kate by ``Node.spawn_link`` from alex prints on alex: the text travels back to alex's
group leader. nodelab does the same with Python's ``print``:

* :class:`OutputRouter` replaces ``sys.stdout``. Text printed by a nodelab process goes to
  that process's group leader, wherever it lives; text printed by any other thread goes to
  the stream that was there before.
* The write is *synchronous*: ``print`` returns after the group leader wrote the text, so
  output keeps its order even when it crosses nodes.
* A group leader is an ordinary process (:func:`start_group_leader`) that answers
  ``("io_request", from, ref, ("put_chars", stream, text))`` with ``("io_reply", ref, "ok")``.
  A notebook makes one per cell so output lands in the cell that started the work.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from typing import Any

from nodelab.errors import ProcessExit
from nodelab.runtime import gen_server
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid

Writer = Callable[[str, str], None]  # (stream name, text)

#: Group leaders of this node whose writer can be called directly by a local printer.
_direct_writers: dict[int, Writer] = {}
#: What a process printed to a remote group leader without a newline yet: (pid, stream) -> text.
_pending: dict[tuple[Pid, str], list[str]] = {}
_install_lock = threading.Lock()

IO_TIMEOUT = 10.0


class _GroupLeader(gen_server.Server):
    """A group leader: a server of Erlang's I/O protocol (like Elixir's ``StringIO``)."""

    def __init__(self, write: Writer) -> None:
        self.write = write

    def handle_info(self, message: Any) -> None:
        if type(message) is tuple and len(message) == 4 and message[0] == gen_server.IO_REQUEST:
            _, sender, ref, request = message
            answer = _perform(self.write, request)
            if sender is not None:
                P.send(sender, (gen_server.IO_REPLY, ref, answer))
        elif message == "stop":
            raise ProcessExit(P.NORMAL)


def start_group_leader(write: Writer, *, name: str | None = None) -> Pid:
    """Start a group leader process that hands each piece of output to ``write``."""
    pid = P.start_process(gen_server.serve, (_GroupLeader(write),), group_leader=None, name=name)
    _direct_writers[pid.serial] = write
    return pid


def is_group_leader(pid: Pid) -> bool:
    """True when ``pid`` is a group leader of this node (one :func:`start_group_leader` made)."""
    return pid.is_local and pid.serial in _direct_writers


def stop_group_leader(pid: Pid) -> None:
    _direct_writers.pop(pid.serial, None)
    P.send(pid, "stop")


def _perform(write: Writer, request: Any) -> Any:
    """One request of Erlang's I/O protocol; its answer.

    nodelab's own ``("put_chars", "stdout" | "stderr", text)``, and what a BEAM process's
    ``IO.puts`` sends its group leader: ``{put_chars, unicode, Chars}``, ``{put_chars,
    unicode, io_lib, format, [Format, Args]}`` and the old ``{put_chars, Chars}``. Chars may
    be a binary (``str`` or ``bytes``) or an iolist. The BEAM's land exactly where a nodelab
    print to this group leader lands (the ``stdout`` stream). Anything else (``get_geometry``,
    ``get_line``...) is answered ``{error, enotsup}``.
    """
    if type(request) is not tuple or not request or request[0] != "put_chars":
        if type(request) is tuple and request and request[0] == "requests" and len(request) == 2:
            answer: Any = "ok"
            for each in request[1] if isinstance(request[1], list) else []:
                answer = _perform(write, each)
                if answer != "ok":
                    break
            return answer
        return ("error", "enotsup")
    if len(request) == 3:
        _, stream, chars = request
    elif len(request) == 2:
        stream, chars = "unicode", request[1]
    elif len(request) == 5 and request[1:3] == ("unicode", "io_lib") and request[3] == "format":
        args = request[4]
        if not (isinstance(args, list) and len(args) == 2):
            return ("error", "format")
        stream, chars = "unicode", _io_lib_format(args[0], args[1])
    else:
        return ("error", "enotsup")
    if stream not in ("stdout", "stderr"):
        stream = "stdout"  # an Erlang encoding (unicode, latin1): the group leader's output
    try:
        text = _chars(chars)
    except (TypeError, ValueError):
        return ("error", "badarg")
    try:
        write(stream, text)
    except Exception as error:  # noqa: BLE001 - the printer gets the error, not the leader
        return ("error", repr(error))
    return "ok"


def _chars(chars: Any) -> str:
    """Text, bytes or an Erlang iolist/chardata (nested lists of code points and binaries)."""
    if isinstance(chars, str):
        return chars
    if isinstance(chars, (bytes, bytearray)):
        return bytes(chars).decode("utf-8", "replace")
    if isinstance(chars, int) and not isinstance(chars, bool):
        return chr(chars)
    if isinstance(chars, list):
        return "".join(_chars(part) for part in chars)
    raise TypeError(f"not chardata: {chars!r:.60}")


def _io_lib_format(fmt: Any, args: Any) -> str:
    """The common directives of ``io_lib:format/2`` (``~s ~p ~w ~n ~~``), for ``:io.format``."""
    text = _chars(fmt)
    values = list(args) if isinstance(args, list) else []
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "~" and i + 1 < len(text):
            directive = text[i + 1]
            i += 2
            if directive == "n":
                out.append("\n")
            elif directive == "~":
                out.append("~")
            elif directive in "spwtPW" and values:
                value = values.pop(0)
                out.append(_chars(value) if directive in "st" and isinstance(
                    value, (str, bytes, list)) else repr(value))
            else:
                out.append("~" + directive)
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def put_chars(group_leader: Pid, text: str, stream: str = "stdout") -> None:
    """Write ``text`` through ``group_leader`` and wait until it is written.

    A checkpoint, and a critical section: an exit signal never cuts a write in two (the
    writer may hold a lock of the notebook's output); a process waiting for a remote
    group leader's reply still exits at once when it is killed.
    """
    P.check_exit()
    token = P.enter_critical()
    try:
        _put_chars(group_leader, text, stream)
    finally:
        P.leave_critical(token)


def _put_chars(group_leader: Pid, text: str, stream: str) -> None:
    if group_leader.is_local:
        write = _direct_writers.get(group_leader.serial)
        if write is not None and P.is_alive(group_leader):
            write(stream, text)
            return
    try:
        reply = gen_server.call(group_leader, ("put_chars", stream, text), IO_TIMEOUT, io=True)
    except gen_server.Down as down:
        reply = ("error", down.reason)
    except TimeoutError:
        reply = ("error", "timeout")
    if reply != "ok":
        # The group leader is gone (its node went down): keep the text, print it here.
        fallback = sys.__stdout__ if stream == "stdout" else sys.__stderr__
        if fallback is not None:
            fallback.write(text)
            fallback.flush()


class OutputRouter(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` replacement that sends a process's text to its group leader.

    Only ``stdout`` is routed (like the BEAM's ``:stdio``); ``stderr`` stays on the node
    where the process runs, like ``:standard_error``.
    """

    def __init__(self, underlying: Any, stream: str = "stdout") -> None:
        super().__init__()
        self.underlying = underlying
        self.stream = stream

    def write(self, text: str) -> int:
        route = P.caller()  # (pid, group leader) of a process; None for a plain thread
        if route is None or route[1] is None:
            return self.underlying.write(text)
        pid, gl = route
        if gl.is_local and gl.serial in _direct_writers:
            put_chars(gl, text, self.stream)
            return len(text)
        # Remote leader: send whole lines, so print("a", "b") costs one round trip, not four.
        key = (pid, self.stream)
        token = P.enter_critical()
        try:
            _pending.setdefault(key, []).append(text)
        finally:
            P.leave_critical(token)
        if "\n" in text:
            _send_pending(key, gl)
        return len(text)

    def flush(self) -> None:
        route = P.caller()
        if route is not None and route[1] is not None:
            _send_pending((route[0], self.stream), route[1])
        try:
            self.underlying.flush()
        except Exception:  # noqa: BLE001
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.underlying, name)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.underlying, "encoding", "utf-8")

    def isatty(self) -> bool:
        return bool(getattr(self.underlying, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.underlying.fileno()

    def writable(self) -> bool:
        return True


def _send_pending(key: tuple[Pid, str], gl: Pid) -> None:
    token = P.enter_critical()
    try:
        pending = _pending.pop(key, None)
    finally:
        P.leave_critical(token)
    if pending:
        put_chars(gl, "".join(pending), key[1])


def _flush_on_exit(pid: Pid, gl: Pid | None) -> None:
    """Send what a process printed without a final newline (it is exiting)."""
    if not _pending:
        return  # nearly always: every process exit passes here
    for stream in ("stdout", "stderr"):
        if (pid, stream) in _pending:
            if gl is not None:
                _send_pending((pid, stream), gl)
            else:
                _pending.pop((pid, stream), None)


P.on_process_exit(_flush_on_exit)


def direct_writers() -> dict[int, Writer]:
    """This node's group leaders whose writer a local printer calls directly, by serial
    (a copy; the sequence pictures use it to tell group leaders from other processes)."""
    return dict(_direct_writers)


def install_router() -> None:
    """Route ``print`` of nodelab processes through their group leaders (idempotent).

    Also starts this node's default group leader, which writes to the ``sys.stdout`` that
    was in place — a terminal for a headless node or a shell.
    """
    with _install_lock:
        if not isinstance(sys.stdout, OutputRouter):
            sys.stdout = OutputRouter(sys.stdout)
        leader = P.default_group_leader()
        if leader is None or not P.is_alive(leader):
            router = sys.stdout

            def write_to_node_output(stream: str, text: str) -> None:
                target = router.underlying if stream == "stdout" else (sys.stderr or sys.__stderr__)
                target.write(text)
                target.flush()

            P.set_default_group_leader(start_group_leader(write_to_node_output))


def set_node_output(write: Writer) -> Pid:
    """Replace this node's default group leader (what its own processes print goes to ``write``)."""
    install_router()
    old = P.default_group_leader()
    new = start_group_leader(write)
    P.set_default_group_leader(new)
    P.set_group_leader_of_all(old, new)
    if old is not None:
        stop_group_leader(old)
    return new
