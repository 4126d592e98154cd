"""The chat application of the lesson: Elixir's ``Chat`` module (``lib/chat.ex``).

Run it on two nodes, each started with the application (``iex --sname kate -S mix``)::

    nodelab shell --sname alex --app chat        # one terminal
    nodelab shell --sname kate --app chat        # another

and, on alex::

    >>> import chat
    >>> chat.send_message("kate@localhost", "hi")
    'ok'

kate prints ``hi``: the task ran on kate, supervised by kate's ``Chat.TaskSupervisor``,
so its output went to kate's group leader. Messages to ``moebi@localhost`` get an answer:
moebi prints the message and sends ``chicken?`` back to the sender.

Elixir's ``:ok`` is the string ``"ok"`` here. The module calls itself ``"Chat"``, as Elixir
does (``__MODULE__``): on a Python node that is this module, on an Elixir node running
``lessons/chat_ex`` it is Elixir's ``Chat``, so Python and Elixir nodes chat with each
other. For the same reason the sender's node travels as an atom, ``Atom(Node.self())``.
"""

from nodelab import Atom, Node
from nodelab.otp import Application, Task, TaskSupervisor

#: Moebi is a dog: he cannot type, so this node answers for him.
MOEBI = "moebi@localhost"


def receive_message(message):
    """Print ``message`` on this node; ``"ok"``, like ``IO.puts`` returns ``:ok``."""
    print(message)
    return "ok"


def receive_message_for_moebi(message, from_):
    """Runs on moebi: print the message, and answer the sender's node for Moebi.

    (``from`` is a Python keyword, hence ``from_``.)
    """
    print(message)
    return send_message(from_, "chicken?")


def send_message(recipient, message):
    """Have a task on ``recipient`` print ``message``; returns ``"ok"`` once it has.

    Elixir picks the clause by pattern matching on ``:moebi@localhost``; Python says it
    with an ``if``.
    """
    if recipient == MOEBI:
        return spawn_task("Chat", "receive_message_for_moebi", recipient,
                          [message, Atom(Node.self())])
    return spawn_task("Chat", "receive_message", recipient, [message])


def spawn_task(module, fun, recipient, args):
    """Run ``module.fun(*args)`` under the task supervisor for ``recipient``; its result."""
    return Task.await_(TaskSupervisor.async_(remote_supervisor(recipient), module, fun, args))


def remote_supervisor(recipient):
    """Which task supervisor runs a message for ``recipient``: set by ``config/<env>.py``.

    dev: ``("Chat.TaskSupervisor", recipient)``, the one on the recipient's node;
    test: ``"Chat.TaskSupervisor"``, the local one, so tests need no other node.
    (The lesson's ``Application.get_env(...)``; ``fetch_env`` is Elixir's ``fetch_env!``:
    if the configuration was not loaded it says so, instead of "'NoneType' object is not
    callable".)
    """
    return Application.fetch_env("chat", "remote_supervisor")(recipient)
