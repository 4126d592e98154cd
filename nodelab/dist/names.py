"""Node names: ``alex`` becomes ``alex@localhost``, ``alex@192.0.2.10`` is a long name.

A node is known to the others by a name of two parts, ``NAME@HOST``, exactly as in
Erlang and Elixir::

    >>> parse_node_name("alex")
    NodeName(name='alex', host='localhost', long=False)
    >>> str(parse_node_name("kate@192.0.2.10"))
    'kate@192.0.2.10'

``NAME`` tells nodes on the same host apart; the port mapper of ``HOST`` (see
:mod:`nodelab.dist.portmapper`) knows which TCP port each ``NAME`` listens on. ``HOST`` says
where to find that port mapper.

*Short* names (``iex --sname alex``) have a host without dots, usually ``localhost``: they
are meant for nodes on one machine. *Long* names (``iex --name alex@192.0.2.10``) have a
fully qualified host name or an IP address, and can reach other machines. As on the BEAM,
a node with a short name only talks to nodes with short names, and a long one to long ones.

``localhost`` is resolved to ``127.0.0.1`` without asking DNS (:func:`resolve_host`), so
short names work on a laptop with no network at all: name resolution was the first
support issue of Livebook, which is why it uses long names with IP addresses.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import NamedTuple

from nodelab.errors import NodelabError

#: The longest NAME part we accept (Erlang allows 255 bytes for the whole atom).
MAX_NAME_LENGTH = 64
#: The longest full node name, ``NAME@HOST`` (an Erlang atom holds 255 characters).
MAX_NODE_NAME_LENGTH = 255

_NAME_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME_LENGTH}}}")
# One DNS label: letters, digits and inner hyphens, at most 63 characters (RFC 1123).
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

_GOOD = ("a node name is NAME or NAME@HOST, NAME made of letters, digits, '_' and '-' "
         "(like alex or alex@localhost)")


class InvalidNodeName(NodelabError, ValueError):
    """A node name that is not ``NAME`` or ``NAME@HOST``; the message says what is wrong.

    It is a :class:`ValueError` too, so ``except ValueError`` around a parse keeps working.
    """


class NodeName(NamedTuple):
    """A parsed node name: ``name@host``, and whether it is a long name."""

    name: str
    host: str
    long: bool

    def __str__(self) -> str:
        return f"{self.name}@{self.host}"


def _invalid(text: object, reason: str, hint: str | None = _GOOD) -> InvalidNodeName:
    # repr() keeps the message on one line even for names with newlines or control bytes.
    shown = text if isinstance(text, str) else str(text)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidNodeName(f"invalid node name {shown!r}: {reason}"
                           + (f"; {hint}" if hint else ""))


def _ip_literal(host: str) -> str | None:
    """The host as a plain IP address string if it is an IPv4/IPv6 literal, else None."""
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _is_hostname(host: str) -> bool:
    if len(host) > 253:
        return False
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    # An all-digit last label ("1.2.3.999") is a mistyped IP address, not a host name.
    return all(_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def check_name_part(name: str, *, text: object = None) -> str:
    """Check the ``NAME`` part of a node name (what the port mapper stores); return it.

    Raises :class:`InvalidNodeName` naming the first offending character.
    """
    shown = name if text is None else text
    if not isinstance(name, str):
        raise _invalid(shown, f"a node name is a str, not {type(name).__name__}")
    if not name:
        raise _invalid(shown, "NAME is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(shown, f"NAME has {len(name)} characters, at most {MAX_NAME_LENGTH} "
                              "are allowed")
    if not _NAME_RE.fullmatch(name):
        bad = next(ch for ch in name if not (ch.isascii() and (ch.isalnum() or ch in "_-")))
        raise _invalid(shown, f"{bad!r} is not allowed in NAME")
    return name


def parse_node_name(text: str, *, long: bool | None = None) -> NodeName:
    """Parse ``alex``, ``alex@localhost``, ``alex@192.0.2.10`` or ``alex@host.example.com``.

    ``long=None`` decides from the host, like Elixir reads a node name: a host with a dot
    or an IP address makes a long name, a host without dots (``localhost``, ``somehost``)
    a short one, and a bare ``alex`` is ``alex@localhost``. ``long=False`` is ``--sname``:
    a dotted host is refused (``Can't set short node name!`` in Erlang). ``long=True`` is
    ``--name``: the name is long whatever the host, and must have one.

    Raises :class:`InvalidNodeName` with one line saying what is wrong.
    """
    # A name that parsed once parses the same way again (the result is an immutable
    # tuple): every Node.spawn checks its node's name, and the IP-literal test alone
    # (two ipaddress attempts that raise for "localhost") cost ~7 us of a ~130 us spawn.
    if type(text) is not str:
        return _parse_node_name(text, long)
    parsed = _parsed.get((text, long))
    if parsed is None:
        parsed = _parse_node_name(text, long)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()  # a bound, not a policy: a node talks to a handful of names
        _parsed[text, long] = parsed
    return parsed


#: Names already parsed, by (text, long): only names that parsed (a bad one raises each time).
_parsed: dict[tuple[str, bool | None], NodeName] = {}
_PARSED_MAX = 1024


def _parse_node_name(text: str, long: bool | None) -> NodeName:
    if not isinstance(text, str):
        raise _invalid(text, f"a node name is a str, not {type(text).__name__}")
    if text.count("@") > 1:
        raise _invalid(text, "it has more than one '@'")
    name, at, host = text.partition("@")
    check_name_part(name, text=text)
    if not at:
        if long:
            raise _invalid(text, "a long name (--name) needs a host, like "
                                 f"{name}@192.0.2.10 or {name}@host.example.com", None)
        return NodeName(name, "localhost", False)
    if not host:
        raise _invalid(text, "HOST after '@' is empty")
    ip = _ip_literal(host)
    if ip is None and not _is_hostname(host):
        bad = next((ch for ch in host if not (ch.isascii() and (ch.isalnum() or ch in ".-"))),
                   None)
        why = (f"{bad!r} is not allowed in HOST" if bad is not None
               else "HOST is not a valid host name or IP address")
        raise _invalid(text, why)
    if ip is not None:
        host = ip  # "[::1]" -> "::1", so that str() round-trips to one spelling
    full = f"{name}@{host}"
    if len(full) > MAX_NODE_NAME_LENGTH:
        raise _invalid(text, f"it has {len(full)} characters, at most {MAX_NODE_NAME_LENGTH} "
                             "are allowed")
    dotted = ip is not None or "." in host
    if long is None:
        long = dotted
    elif not long and dotted:
        raise _invalid(text, f"a short name (--sname) has a host without dots; use --name "
                             f"{full} for a long name, or --sname {name}", None)
    return NodeName(name, host, bool(long))


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (no DNS)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    ip = _ip_literal(host)
    return ip is not None and ipaddress.ip_address(ip).is_loopback


class UnknownHost(NodelabError, OSError):
    """A host name that does not resolve to an address."""


def resolve_host(host: str) -> str:
    """The IP address string to bind or connect to for ``host``.

    ``localhost`` is ``127.0.0.1`` without any DNS lookup (short names must work offline);
    IP literals are returned as they are; any other host is resolved with
    :func:`socket.getaddrinfo`, preferring IPv4. Raises :class:`UnknownHost` (an
    :class:`OSError`) when the host does not resolve.
    """
    if host.lower().rstrip(".") == "localhost":
        return "127.0.0.1"
    ip = _ip_literal(host)
    if ip is not None:
        return ip
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise UnknownHost(
            f"cannot resolve host {host!r} ({error}): use a name this machine can resolve "
            f"(check /etc/hosts or DNS), or give the IP address instead, like "
            f"alex@192.0.2.10") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # stable: IPv4 first
    return str(infos[0][4][0])
