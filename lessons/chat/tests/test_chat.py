"""The lesson's ``test/chat_test.exs``, in pytest.

``pytest`` alone runs in the test environment: ``config/test.py`` sends every message
to the local task supervisor, so ``test_send_message`` passes with no other node.

``test_send_message_to_moebi`` is marked ``distributed`` (ExUnit's ``@tag
:distributed``): it only runs when the test run is a named node, ``pytest --sname
sophie``, and — beyond the lesson — it starts moebi itself with the ``peers`` fixture
(like OTP's ``peer`` module), so it needs no manual step.
"""

import chat
import pytest

from nodelab.otp import Application


def test_send_message(capsys):
    assert chat.send_message("moebi@localhost", "hi") == "ok"
    # Everything ran here: the test's own task supervisor printed both lines.
    assert capsys.readouterr().out == "hi\nchicken?\n"


@pytest.fixture
def remote_supervisors():
    """Route messages to the recipient's node, as config/dev.py does, for one test."""
    old = Application.get_env("chat", "remote_supervisor")
    Application.put_env("chat", "remote_supervisor",
                        lambda recipient: ("Chat.TaskSupervisor", recipient))
    yield
    Application.put_env("chat", "remote_supervisor", old)


@pytest.mark.distributed
def test_send_message_to_moebi(peers, remote_supervisors):
    moebi = peers.start("moebi", app="chat", env={"NODELAB_ENV": "dev"})
    assert chat.send_message("moebi@localhost", "hi") == "ok"
    moebi.wait_for_output("hi")
