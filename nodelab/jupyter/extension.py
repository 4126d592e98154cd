"""``%load_ext nodelab``: the magics, and one group leader per cell.

Each cell that runs gets its own group leader process (Livebook's ``IOProxy`` is the
model): the cell's shell process — the notebook's stand-in for iex's shell — takes it as
its group leader, and every process spawned from the cell inherits it. So text printed by
a process that ``%spawn_link`` started on kate travels back to *this* cell, even after
other cells have run (ipykernel >= 7 would otherwise put a thread's late output into
whichever cell runs at that moment).
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from nodelab.dist import shipment
from nodelab.runtime import processes as P
from nodelab.runtime.group_leader import (
    install_router,
    set_node_output,
    start_group_leader,
    stop_group_leader,
)

_state: dict[str, Any] = {"loaded": False, "leaders": []}

#: Cell group leaders kept alive after their cell finished (late output still lands in
#: the old cell); older ones are stopped so that a long session does not pile threads up.
KEEP_LEADERS = 64


def _in_kernel(ipython: Any) -> bool:
    return getattr(ipython, "kernel", None) is not None


def _before_cell(info: Any = None) -> None:
    from .cell_output import CellOutput

    output = CellOutput.capture()
    leader = start_group_leader(lambda stream, text: output.write(text, stream))
    P.group_leader(leader, P.self())
    leaders = _state["leaders"]
    leaders.append((leader, output))
    while len(leaders) > KEEP_LEADERS:
        old, _ = leaders.pop(0)
        if not [pid for pid in P.led_by(old) if pid != old]:
            stop_group_leader(old)
    _state["current"] = output


def _complete_prelude(info: Any = None) -> None:
    # The prelude's lazy names (Task, TaskSupervisor, Atom, ...: dist/shipment.py) are
    # imported before the first cell a person runs, so that every cell finds the whole
    # prelude as promised, and before any other cell (the node's own start-up code, sent
    # without history) whose text names one — a superset of the names it looks up. A
    # window kernel thus gets ready without importing the OTP layer.
    lazy = shipment.lazy_prelude_names()
    if not lazy:
        return
    if getattr(info, "store_history", False):
        shipment.complete_prelude()
        return
    source = getattr(info, "raw_cell", None) or ""
    named = [name for name in lazy if name in source]
    if named:
        shipment.complete_prelude(named)


def _write_to_current_cell(stream: str, text: str) -> None:
    output = _state.get("current")
    if output is not None:
        output.write(text, stream)


def _after_cell(result: Any = None) -> None:
    output = _state.get("current")
    if output is not None:
        output.flush()


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; in a kernel, give every cell its own group leader."""
    from .magics import NodeMagics
    from .picture_magics import PictureMagics

    ipython.register_magics(NodeMagics)
    ipython.register_magics(PictureMagics)
    # `!nodelab` and `!pytest` in a lesson must find this environment's commands even when
    # JupyterLab was started from an unactivated virtual environment.
    bin_dir = os.path.dirname(sys.executable)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if _state["loaded"]:
        return
    _state["loaded"] = True
    if os.environ.pop("NODELAB_ENV_SET_BY_PYTEST", None):
        # Started by a test run (nbval): behave as a learner's notebook, in the dev env.
        os.environ.pop("NODELAB_ENV", None)
    shipment.set_namespace_provider(lambda: ipython.user_ns)
    shipment.defer_prelude(ipython.user_ns)  # completed by _complete_prelude, before cells
    shipment.install_prelude(ipython.user_ns)
    ipython.events.register("pre_run_cell", _complete_prelude)
    running = getattr(getattr(ipython, "displayhook", None), "exec_result", None)
    if running is not None:  # loaded by a cell (%load_ext nodelab), whose hooks have run
        _complete_prelude(getattr(running, "info", None))
    install_router()
    if _in_kernel(ipython):
        from . import windows

        ipython.events.register("pre_run_cell", _before_cell)
        ipython.events.register("post_run_cell", _after_cell)
        _before_cell()  # the cell that loads the extension
        # What this node's own processes print (a supervised task that runs here): in a
        # window kernel it waits for the notebook's next look; in the notebook's own
        # kernel it goes to the cell that is running.
        set_node_output(windows.keep_node_output if windows.is_window() else _write_to_current_cell)
    atexit.register(_shutdown)


def _shutdown() -> None:
    from ..node import Node
    from . import windows

    windows.stop_all()
    Node.stop()


def unload_ipython_extension(ipython: Any) -> None:
    if _state["loaded"]:
        ipython.events.unregister("pre_run_cell", _complete_prelude)
    if _state["loaded"] and _in_kernel(ipython):
        ipython.events.unregister("pre_run_cell", _before_cell)
        ipython.events.unregister("post_run_cell", _after_cell)
    _state["loaded"] = False
