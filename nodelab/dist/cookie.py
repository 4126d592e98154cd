"""The cookie: the shared secret that lets two nodes talk to each other.

Two nodes connect only when they know the same cookie (``iex --cookie secret_token``).
Without ``--cookie``, a node uses the one in the user's cookie file, like Erlang's
``~/.erlang.cookie``: ``~/.nodelab/cookie`` (or ``$NODELAB_HOME/cookie``). The first node
ever started creates it with 20 random uppercase letters, readable by its owner only, so
every node of that user on that machine trusts the others and nobody else's.

The cookie never crosses the wire: the handshake (:mod:`nodelab.dist.erlang_handshake`) proves that
both sides know it. Anyone who can read the cookie can run code on your nodes, which is
why a cookie file that others can read is refused, exactly as Erlang does::

    CookieFileError: cookie file /home/alex/.nodelab/cookie has mode 0644, but it must be
    accessible by its owner only: fix it with chmod 600 /home/alex/.nodelab/cookie
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import string
from pathlib import Path

from nodelab.errors import NodelabError

#: Erlang's cookies are 20 uppercase letters; so are ours.
COOKIE_LENGTH = 20
MAX_COOKIE_LENGTH = 255


class InvalidCookie(NodelabError, ValueError):
    """A cookie that is empty, too long or not printable ASCII."""


class CookieFileError(NodelabError):
    """The cookie file cannot be used (others can read it, it is empty, unreadable...)."""


def nodelab_home() -> Path:
    """``$NODELAB_HOME``, or ``~/.nodelab``: where the cookie file and mapper logs live."""
    configured = os.environ.get("NODELAB_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".nodelab"


def default_cookie_path() -> Path:
    """The user's cookie file: ``$NODELAB_HOME/cookie`` (``~/.nodelab/cookie`` by default)."""
    return nodelab_home() / "cookie"


def validate_cookie(cookie: str) -> str:
    """Return ``cookie`` if it is 1..255 printable ASCII characters, else raise InvalidCookie."""
    if not isinstance(cookie, str):
        raise InvalidCookie(f"a cookie is a str, not {type(cookie).__name__}: "
                            "pass it like cookie='secret_token'")
    if not cookie:
        raise InvalidCookie("the cookie is empty: give a secret shared by the nodes that "
                            "may talk, like --cookie secret_token")
    if len(cookie) > MAX_COOKIE_LENGTH:
        raise InvalidCookie(f"the cookie has {len(cookie)} characters, at most "
                            f"{MAX_COOKIE_LENGTH} are allowed")
    bad = next((ch for ch in cookie if not (" " <= ch <= "~")), None)
    if bad is not None:
        raise InvalidCookie(f"the cookie contains {bad!r}: a cookie is printable ASCII "
                            "(letters, digits, punctuation, spaces), like secret_token")
    return cookie


def _ensure_directory(directory: Path) -> None:
    # The directory is private too (0700): it also holds the port mapper's logs. An
    # existing directory is left as the user made it; only the file's mode is a rule.
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise CookieFileError(f"{directory} exists but is not a directory: remove it, or "
                                  "set NODELAB_HOME to another directory") from None


def _create(path: Path) -> None:
    """Create the cookie file with a new random cookie, unless it exists already.

    The file appears atomically with its full content: a temporary file is created with
    ``O_CREAT|O_EXCL`` and mode 0600 (never readable by others, not even for an instant),
    written, then hard-linked to its name, which fails if another process won the race.
    So a concurrent reader never sees a half-written cookie.
    """
    cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(COOKIE_LENGTH))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could have removed bits we need; never adds any
        os.write(fd, cookie.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another node created it first: use theirs
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: fall back to creating the name itself.
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, flags, 0o600)
            try:
                os.write(fd, cookie.encode("ascii"))
            finally:
                os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _check_mode(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CookieFileError(f"cookie file {path} is not a regular file: remove it and a new "
                              "one is created on the next start")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CookieFileError(f"cookie file {path} belongs to user id {st.st_uid}, not to you "
                              f"({os.getuid()}): a cookie file must be your own; remove it, "
                              "or set NODELAB_HOME to a directory of yours")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CookieFileError(f"cookie file {path} has mode {mode:04o}, but it must be "
                              f"accessible by its owner only: fix it with chmod 600 {path}")


def read_or_create_cookie(path: Path | None = None) -> str:
    """The cookie from the cookie file, creating the file on first use.

    ``path`` defaults to :func:`default_cookie_path`. A new file holds 20 random uppercase
    letters and has mode 0600. Raises :class:`CookieFileError` when the file may be read
    or written by group or others (``chmod 600`` it), is empty, or holds no valid cookie.
    """
    path = Path(path) if path is not None else default_cookie_path()
    path = path.expanduser()
    if not path.exists() and not path.is_symlink():
        _ensure_directory(path.parent)
        _create(path)
    try:
        # fstat of the open file: the mode we check is that of the very file we read.
        with open(path, "rb") as file:
            _check_mode(path, os.fstat(file.fileno()))
            data = file.read(MAX_COOKIE_LENGTH + 2)
    except IsADirectoryError:
        raise CookieFileError(f"cookie file {path} is not a regular file: remove it and a new "
                              "one is created on the next start") from None
    except OSError as error:
        raise CookieFileError(f"cannot read cookie file {path}: {error.strerror or error}; "
                              "fix its permissions (chmod 600) or remove it") from None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CookieFileError(f"cookie file {path} is not ASCII text: put one line of "
                              "printable ASCII in it, or remove it to get a new random "
                              "cookie") from None
    if not text:
        raise CookieFileError(f"cookie file {path} is empty: put a cookie in it (one line of "
                              "printable ASCII, like secret_token), or remove it to get a new "
                              "random cookie")
    try:
        return validate_cookie(text)
    except InvalidCookie as error:
        raise CookieFileError(f"cookie file {path} holds no valid cookie ({error}); "
                              "fix it, or remove it to get a new random cookie") from None
