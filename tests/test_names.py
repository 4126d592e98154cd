"""Node names: what is accepted, what is refused (with one clear line), and DNS-free localhost."""

from __future__ import annotations

import socket
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodelab.dist.names import (
    InvalidNodeName,
    NodeName,
    UnknownHost,
    parse_node_name,
    resolve_host,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("alex", NodeName("alex", "localhost", False)),
    ("alex@localhost", NodeName("alex", "localhost", False)),
    ("alex@somehost", NodeName("alex", "somehost", False)),
    ("alex@192.0.2.10", NodeName("alex", "192.0.2.10", True)),
    ("alex@host.example.com", NodeName("alex", "host.example.com", True)),
    ("alex@::1", NodeName("alex", "::1", True)),
    ("alex@[::1]", NodeName("alex", "::1", True)),
    ("Chat_node-2@localhost", NodeName("Chat_node-2", "localhost", False)),
    ("x" * 64, NodeName("x" * 64, "localhost", False)),
])
def test_good_names(text: str, expected: NodeName) -> None:
    assert parse_node_name(text) == expected


def test_str_is_name_at_host() -> None:
    assert str(parse_node_name("kate")) == "kate@localhost"
    assert str(parse_node_name("kate@192.0.2.10")) == "kate@192.0.2.10"


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "NAME is empty"),
    ("@localhost", "NAME is empty"),
    ("al ex", "' ' is not allowed in NAME"),
    ("al.ex", "'.' is not allowed in NAME"),
    ("алекс", "is not allowed in NAME"),  # non-ASCII
    ("alé", "'é' is not allowed in NAME"),
    ("a@b@c", "more than one '@'"),
    ("alex@", "HOST after '@' is empty"),
    ("alex@ho st", "' ' is not allowed in HOST"),
    ("alex@ho_st", "'_' is not allowed in HOST"),
    ("alex@-host", "not a valid host name"),
    ("alex@1.2.3.999", "not a valid host name"),
    ("x" * 65, "NAME has 65 characters, at most 64"),
    ("alex@" + ".".join(["a" * 61] * 4) + ".com", "256 characters, at most 255"),
    ("alex\n", "'\\n' is not allowed in NAME"),
])
def test_bad_names_say_what_is_wrong_on_one_line(text: str, fragment: str) -> None:
    with pytest.raises(InvalidNodeName) as info:
        parse_node_name(text)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("invalid node name ")
    assert "\n" not in message
    assert "like alex or alex@localhost" in message


def test_invalid_node_name_is_a_value_error_and_a_nodelab_error() -> None:
    from nodelab.errors import NodelabError

    with pytest.raises(ValueError, match="invalid node name"):
        parse_node_name("al ex")
    assert issubclass(InvalidNodeName, NodelabError)


def test_non_str_is_refused() -> None:
    with pytest.raises(InvalidNodeName, match="a node name is a str, not int"):
        parse_node_name(42)  # type: ignore[arg-type]


def test_short_and_long_flags_like_sname_and_name() -> None:
    # --name forces a long name, whatever the host (as erl -name alex@localhost does).
    assert parse_node_name("alex@localhost", long=True) == NodeName("alex", "localhost", True)
    with pytest.raises(InvalidNodeName, match="a long name .--name. needs a host"):
        parse_node_name("alex", long=True)
    # --sname refuses a dotted host or an IP (erl: "Can't set short node name!").
    with pytest.raises(InvalidNodeName, match="use --name alex@host.example.com"):
        parse_node_name("alex@host.example.com", long=False)
    with pytest.raises(InvalidNodeName, match="a short name"):
        parse_node_name("alex@127.0.0.1", long=False)
    assert parse_node_name("alex", long=False) == NodeName("alex", "localhost", False)


# --- properties ----------------------------------------------------------------------

NAME_PART = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1,
                    max_size=64)
LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
HOSTNAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join).filter(
    lambda host: len(host) <= 253 and not host.rsplit(".", 1)[-1].isdigit())
HOST = st.one_of(st.just("localhost"), HOSTNAME, st.ip_addresses(v=4).map(str),
                 st.ip_addresses(v=6).map(str))


@given(name=NAME_PART, host=HOST)
def test_any_valid_name_round_trips(name: str, host: str) -> None:
    text = f"{name}@{host}"
    if len(text) > 255:
        with pytest.raises(InvalidNodeName, match="at most 255"):
            parse_node_name(text)
        return
    parsed = parse_node_name(text)
    assert str(parsed) == text
    assert (parsed.name, parsed.host) == (name, host)
    assert parsed.long == ("." in host or ":" in host)
    assert parse_node_name(str(parsed), long=parsed.long) == parsed


@given(name=NAME_PART)
def test_a_bare_name_is_short_on_localhost(name: str) -> None:
    assert parse_node_name(name) == NodeName(name, "localhost", False)


@given(text=st.text(), long=st.sampled_from([None, True, False]))
def test_random_text_is_a_name_or_an_invalid_node_name(text: str, long: bool | None) -> None:
    try:
        parsed = parse_node_name(text, long=long)
    except InvalidNodeName as error:
        assert "\n" not in str(error)
        return
    assert parse_node_name(str(parsed), long=parsed.long) == parsed


@given(text=st.text(alphabet=string.ascii_letters + string.digits + "_-.@:[] ", max_size=80))
def test_name_like_text_is_a_name_or_an_invalid_node_name(text: str) -> None:
    try:
        parse_node_name(text)
    except InvalidNodeName:
        pass


# --- resolving hosts -------------------------------------------------------------------


def test_localhost_resolves_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_resolver(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "this test has no resolver")

    # A machine with no DNS and an empty /etc/hosts: short names must still work.
    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    assert resolve_host("localhost") == "127.0.0.1"
    assert resolve_host("LOCALHOST") == "127.0.0.1"
    assert resolve_host("192.0.2.10") == "192.0.2.10"
    assert resolve_host("::1") == "::1"
    assert resolve_host("[::1]") == "::1"


def test_an_unknown_host_is_a_clear_os_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(UnknownHost) as info:
        resolve_host("nowhere.example")
    assert isinstance(info.value, OSError)
    assert "cannot resolve host 'nowhere.example'" in str(info.value)
    assert "give the IP address instead" in str(info.value)


def test_other_hosts_use_the_resolver_and_prefer_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: list(answers))
    assert resolve_host("kate.example.com") == "192.0.2.7"
