"""``Chat.Application``: the supervision tree ``nodelab node --app chat`` starts.

One child, a task supervisor registered as ``"Chat.TaskSupervisor"``: any node that
runs the application can be asked to run supervised tasks by name, as
``("Chat.TaskSupervisor", "kate@localhost")``.
"""

from nodelab.otp import Supervisor, TaskSupervisor


def start(_type, _args):
    children = [
        (TaskSupervisor, {"name": "Chat.TaskSupervisor"}),
    ]

    opts = {"strategy": "one_for_one", "name": "Chat.Supervisor"}
    return Supervisor.start_link(children, **opts)
