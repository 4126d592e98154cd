"""The cookie file: created 0600 on first use, refused when others can read it (like Erlang)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nodelab
from nodelab.dist.cookie import (
    CookieFileError,
    InvalidCookie,
    default_cookie_path,
    read_or_create_cookie,
    validate_cookie,
)

ROOT = str(Path(nodelab.__file__).resolve().parent.parent)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "nodelab-home"
    monkeypatch.setenv("NODELAB_HOME", str(directory))
    return directory


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_path_follows_nodelab_home(home: Path, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    assert default_cookie_path() == home / "cookie"
    monkeypatch.delenv("NODELAB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_cookie_path() == tmp_path / "user" / ".nodelab" / "cookie"


def test_first_use_creates_a_private_random_cookie(home: Path) -> None:
    cookie = read_or_create_cookie()
    path = home / "cookie"
    assert len(cookie) == 20 and cookie.isalpha() and cookie.isupper() and cookie.isascii()
    assert mode_of(path) == 0o600
    assert mode_of(home) == 0o700
    assert path.read_text() == cookie
    assert read_or_create_cookie() == cookie  # the next node finds the same one
    assert read_or_create_cookie(path) == cookie
    assert list(home.iterdir()) == [path]  # no temporary file left behind


def test_two_users_get_different_cookies(tmp_path: Path) -> None:
    assert read_or_create_cookie(tmp_path / "a") != read_or_create_cookie(tmp_path / "b")


def test_created_0600_even_with_a_permissive_umask(home: Path) -> None:
    # In a child process: the umask is per process and tests may run threads.
    code = ("import os; os.umask(0); from nodelab.dist.cookie import read_or_create_cookie; "
            "print(read_or_create_cookie())")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip()
    assert mode_of(home / "cookie") == 0o600
    assert (home / "cookie").read_text() == out


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o620])
def test_a_cookie_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "cookie"
    path.write_text("SECRETSECRET")
    path.chmod(mode)
    with pytest.raises(CookieFileError) as info:
        read_or_create_cookie(path)
    message = str(info.value)
    assert f"cookie file {path} has mode {mode:04o}" in message
    assert "accessible by its owner only" in message
    assert f"chmod 600 {path}" in message
    assert "\n" not in message
    path.chmod(0o600)  # doing what the message says fixes it
    assert read_or_create_cookie(path) == "SECRETSECRET"


def test_owner_only_modes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "cookie"
    path.write_text("secret_token\n")  # a trailing newline from an editor is fine
    for mode in (0o600, 0o400, 0o700):
        path.chmod(mode)
        assert read_or_create_cookie(path) == "secret_token"


@pytest.mark.parametrize(("content", "fragment"), [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b"caf\xc3\xa9", "is not ASCII text"),
    (b"a\x01b", "holds no valid cookie"),
    (b"x" * 300, "holds no valid cookie"),
])
def test_a_cookie_file_without_a_cookie_is_a_clear_error(tmp_path: Path, content: bytes,
                                                        fragment: str) -> None:
    path = tmp_path / "cookie"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CookieFileError, match=fragment) as info:
        read_or_create_cookie(path)
    assert str(path) in str(info.value)
    assert "remove it to get a new random cookie" in str(info.value)


def test_a_directory_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("not a directory")
    with pytest.raises(CookieFileError, match="is not a directory"):
        read_or_create_cookie(blocker / "cookie")


def test_a_cookie_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cookie").mkdir(mode=0o700)
    with pytest.raises(CookieFileError, match="is not a regular file"):
        read_or_create_cookie(tmp_path / "cookie")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0,
                    reason="changing a file's owner needs root")
def test_a_cookie_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cookie"
    path.write_text("SECRET")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(CookieFileError, match="belongs to user id 65534, not to you"):
        read_or_create_cookie(path)


def test_nodes_racing_to_create_the_cookie_all_get_the_same_one(home: Path) -> None:
    # Eight real processes start at once on a fresh machine: one cookie must win for all,
    # and nobody may read a half-written file.
    code = ("import sys, time, os\n"
            "from pathlib import Path\n"
            "go = Path(sys.argv[1])\n"
            "deadline = time.monotonic() + 20\n"
            "while not go.exists() and time.monotonic() < deadline: time.sleep(0.001)\n"
            "from nodelab.dist.cookie import read_or_create_cookie\n"
            "print(read_or_create_cookie())\n")
    go = home.parent / "go"
    env = dict(os.environ, PYTHONPATH=ROOT)
    children = [subprocess.Popen([sys.executable, "-c", code, str(go)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(8)]
    try:
        go.touch()
        results = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(5)
    assert all(child.returncode == 0 for child in children), results
    cookies = {out.strip() for out, _ in results}
    assert len(cookies) == 1
    assert (home / "cookie").read_text() in cookies
    assert mode_of(home / "cookie") == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["cookie"]


# --- validate_cookie --------------------------------------------------------------------


@pytest.mark.parametrize("cookie", ["secret_token", "a", "x" * 255, "with spaces ok", "!~"])
def test_good_cookies(cookie: str) -> None:
    assert validate_cookie(cookie) == cookie


@pytest.mark.parametrize(("cookie", "fragment"), [
    ("", "the cookie is empty"),
    ("x" * 256, "256 characters, at most 255"),
    ("caf\u00e9", "contains 'é'"),
    ("tab\there", "contains '\\t'"),
    ("new\nline", "contains '\\n'"),
    (None, "a cookie is a str, not NoneType"),
])
def test_bad_cookies(cookie: object, fragment: str) -> None:
    with pytest.raises(InvalidCookie) as info:
        validate_cookie(cookie)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@given(st.text(max_size=300))
def test_validate_cookie_accepts_exactly_printable_ascii(text: str) -> None:
    ok = 0 < len(text) <= 255 and all(" " <= ch <= "~" for ch in text)
    try:
        assert validate_cookie(text) == text
    except InvalidCookie:
        assert not ok
    else:
        assert ok
