"""Errors that nodelab raises, each with a message that says what to do next."""

from __future__ import annotations


class NodelabError(RuntimeError):
    """Base class of the errors nodelab raises on purpose."""


class NotAlive(NodelabError):
    """This OS process is not a named node yet, and the call needs one."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs a named node: start one first with Node.start('alex') "
            "(or %node --sname alex in a notebook)"
        )


class AlreadyAlive(NodelabError):
    """Node.start was called on a process that is already a named node."""


class NoConnection(NodelabError):
    """A node could not be reached, or the connection to it went down."""

    def __init__(self, node: str, detail: str = "") -> None:
        self.node = node
        text = format_exit(("nodedown", node))
        if detail:
            text += f" ({detail})"
        super().__init__(text)


class MessageTooLarge(NodelabError):
    """A message is bigger than the frame size limit of a connection."""


class CodeVersionMismatch(NodelabError):
    """A shipped function was compiled by another Python version than the one that runs it."""


class ProcessExit(BaseException):
    """Raised inside a process to end it with ``reason``.

    ``exit(self(), reason)`` raises it, and so does an exit signal that reaches a process
    which does not trap exits. It derives from ``BaseException`` so that a process's own
    ``except Exception:`` does not swallow its death, as on the BEAM, where an exit signal
    cannot be caught by ``try/rescue``.
    """

    def __init__(self, reason: object, origin: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.origin = origin

    def __str__(self) -> str:
        return f"process exited with reason: {format_reason(self.reason)}"


def format_reason(reason: object) -> str:
    """Print an exit reason the way an Elixir engineer would read it."""
    if isinstance(reason, str):
        return reason
    return repr(reason)


#: Elixir's words for ``:noproc`` (``Exception.format_exit/1``).
NOPROC_TEXT = (
    "no process: the process is not alive or there's no process currently associated with "
    "the given name, possibly because its application isn't started"
)


def format_exit(reason: object, indent: str = "    ") -> str:
    """Explain an exit reason in words, like Elixir's ``Exception.format_exit/1``.

    The one place that does: a shell's ``** (EXIT from ...)`` line, a failed call or await
    (``** (EXIT) ...``), a supervisor's log. ``indent`` goes before the second line of a
    crash (``** (ValueError) boom``), nested one level deeper inside a ``** (EXIT)`` line.
    """
    if reason == "noconnection":
        return "no connection"
    if reason == "noproc":
        return NOPROC_TEXT
    if reason == "timeout":
        return "time out"
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "nodedown":
        return f"no connection to {reason[1]}"
    if all(hasattr(reason, field) for field in ("kind", "message", "node", "traceback")):
        # A Crash: an exception raised in the process, on the node where it ran.
        return (f"an exception was raised on {reason.node}:\n"  # type: ignore[attr-defined]
                f"{indent}** ({reason.kind}) {reason.message}")  # type: ignore[attr-defined]
    return format_reason(reason)
