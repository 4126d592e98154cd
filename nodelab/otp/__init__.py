"""The OTP layer: tasks, supervisors, applications and their configuration.

The names Elixir's standard library gives them::

    from nodelab.otp import Application, Supervisor, Task, TaskSupervisor

    Task.await_(TaskSupervisor.async_(("Chat.TaskSupervisor", "kate@localhost"),
                                      chat, "receive_message", ["hi"]))

* :class:`Task` — ``Task.async_``, ``Task.await_``, ``Task.yield_``, ``Task.await_many``,
  ``Task.shutdown`` (``async``/``await`` are Python keywords, hence the underscore);
* :class:`TaskSupervisor` — Elixir's ``Task.Supervisor``;
* :class:`Supervisor` — strategies ``one_for_one``, ``one_for_all``, ``rest_for_one``;
* :class:`Application` — start/stop an application, ``get_env``/``put_env``;
* :func:`config`, :func:`config_env`, :func:`import_config` — for ``config/*.py`` files;
* :func:`call` — the request/reply of every server here (a minimal ``GenServer.call``).
"""

from nodelab.node import set_application_starter

from .application import Application
from .config import config, config_env, import_config, load_config
from .errors import (
    ApplicationError,
    CallError,
    CallNoConnection,
    CallTimeout,
    ExitError,
    StartError,
    TaskError,
    TaskNoConnection,
    TaskTimeout,
)
from .server import call
from .supervisor import Supervisor
from .task import Task
from .task_supervisor import TaskSupervisor

# ``Node.start(name, app="chat")`` starts an application; the node layer lies below this one
# and cannot import it, so the OTP layer tells it how.
set_application_starter(Application.ensure_all_started)

__all__ = [
    "Application", "ApplicationError", "CallError", "CallNoConnection", "CallTimeout",
    "ExitError", "StartError", "Supervisor", "Task", "TaskError", "TaskNoConnection",
    "TaskSupervisor", "TaskTimeout", "call", "config", "config_env", "import_config",
    "load_config",
]
