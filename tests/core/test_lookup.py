"""Finding a local process by PID: the PID this node made, the same PID as a peer sends it
back (with this node's name and creation written out), and never a PID of another run of
this node or another generation."""

from __future__ import annotations

from nodelab import receive, send, spawn
from nodelab.runtime import processes as P
from nodelab.runtime.pids import Pid, local_creation, local_node


def test_a_pid_is_found_however_it_names_this_node() -> None:
    def wait() -> None:
        receive("stop", timeout=5)

    pid = spawn(wait)
    written_out = Pid(local_node(), pid.serial, local_creation(), pid.generation)
    other_run = Pid(local_node(), pid.serial, local_creation() ^ 1, pid.generation)
    other_generation = Pid(local_node(), pid.serial, local_creation(), pid.generation + 1)
    other_node = Pid("kate@localhost", pid.serial, local_creation(), pid.generation)
    try:
        assert P.is_alive(pid) and P.is_alive(written_out)
        assert written_out == pid
        for stranger in (other_run, other_generation, other_node):
            assert stranger != pid
            assert P.info(stranger) is None, stranger
    finally:
        send(pid, "stop")
