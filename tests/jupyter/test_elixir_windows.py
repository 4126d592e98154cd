"""``%node start kate --elixir``: a real Elixir node as the notebook's second window.

Real kernels, real BEAM: a kernel becomes alex, starts kate as ``elixir --sname
kate@localhost``, and ``%%node kate`` cells are Elixir evaluated there. The node must end
with the kernel, whether the kernel is shut down or SIGKILLed.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import real_kernel

pytestmark = pytest.mark.skipif(
    shutil.which("elixir") is None or shutil.which("erl") is None,
    reason="Elixir/Erlang are not installed: apt-get install erlang-base elixir")

#: How long a BEAM node may take to go after its kernel went (it stops by itself).
GONE_DEADLINE = 15.0
LOAD = 'get_ipython().extension_manager.load_extension("nodelab")'


def beam_pids(alive: Callable[[int], bool]) -> set[int]:
    """``beam.smp`` processes of this test run."""
    tag = f"NODELAB_TEST_RUN={os.environ.get('NODELAB_TEST_RUN', '')}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"beam.smp" in command and tag in environ.split(b"\0") and alive(int(entry)):
            found.add(int(entry))
    return found


class Kernel(real_kernel.Kernel):
    """A real kernel with nodelab loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.run(LOAD)

    def run(self, code: str, timeout: float = 90.0) -> dict[str, str]:
        return super().run(code, timeout)

    def beam_pid(self, node: str) -> int:
        shown = self.run("from nodelab.jupyter import windows\n"
                         f"windows.window({node!r}).os_pid")
        return int(shown["result"])


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    chat = tmp_path_factory.mktemp("mix") / "chat_ex"
    shutil.copytree(Path(__file__).parents[2] / "lessons" / "chat_ex", chat,
                    ignore=shutil.ignore_patterns("_build", "deps"))
    kernel = Kernel()
    try:
        started = time.monotonic()
        cells = {
            "name": kernel.run("%node --sname alex"),
            "start": kernel.run("%node start kate --elixir"),
        }
        cells["start_seconds"] = time.monotonic() - started
        cells["kate_pid"] = kernel.beam_pid("kate@localhost")
        cells["kate_command"] = Path(f"/proc/{cells['kate_pid']}/cmdline").read_bytes()
        cells["hi"] = kernel.run('%%node kate\nIO.puts "Hi, my name is Kate"\nname = "Kate"\n'
                                 'String.length(name) + 1')
        cells["kept"] = kernel.run("%%node kate\n{name, self() |> is_pid()}")
        cells["leader"] = kernel.run(
            "%%node kate\n{:dictionary, d} = Process.info(Process.group_leader(), :dictionary)"
            "\nnode(d[:nodelab_cell_leader])")
        cells["format"] = kernel.run('%%node kate\n:io.format("~p and ~s~n", [%{a: 1}, "text"])'
                                     '\nIO.write("no newline")\n:done')
        cells["warning"] = kernel.run("%%node kate\nfn -> unused = 1 end |> is_function()")
        cells["pretty"] = kernel.run("%%node kate\nEnum.to_list(1..30)")
        cells["cookie"] = kernel.run("%%node kate\nNode.get_cookie() |> Atom.to_string()")
        cells["alex_cookie"] = kernel.run("print(Node.get_cookie())")
        cells["compile_error"] = kernel.run("%%node kate\nundefined_thing(name)")
        cells["raise"] = kernel.run('%%node kate\nraise "boom"')
        cells["after_errors"] = kernel.run("%%node kate\nname <> \"!\"")
        # With the Erlang distribution of nodelab/dist, the notebook node and the BEAM
        # window share one cluster: the seed's first example, with a real kate.
        cells["ping"] = kernel.run("%ping kate")
        cells["kate_module"] = kernel.run(
            '%%node kate\ndefmodule Kate do\n  def say_name, do: IO.puts("Hi, my name is Kate")'
            "\nend\nNode.list()")
        cells["seed"] = kernel.run(
            "from nodelab import Node, monitor, receive, ANY\n"
            "from nodelab.jupyter.magics import settle\n"
            'pid = Node.spawn_link("kate@localhost", "Kate", "say_name", [])\n'
            'print(receive(("DOWN", monitor(pid), ANY, ANY, ANY), timeout=10)[4])\n'
            "settle(pid)")
        cells["spawn"] = kernel.run('%%node kate\nspawn(fn -> Process.sleep(300); '
                                    'IO.puts("late from #{node()}") end)\n:spawned')
        time.sleep(0.6)
        cells["next_look"] = kernel.run("%%node kate\n1 + 1")
        rounds = []
        for _ in range(5):
            begun = time.monotonic()
            kernel.run("%%node kate\n:ok")
            rounds.append(time.monotonic() - begun)
        cells["round_trip"] = sorted(rounds)[2]
        threading.Timer(2.0, kernel.manager.interrupt_kernel).start()  # the cell waits by then
        begun = time.monotonic()
        cells["interrupted"] = kernel.run("%%node kate\nreceive do :never -> :ok end")
        cells["interrupt_seconds"] = time.monotonic() - begun
        cells["after_interrupt"] = kernel.run("%%node kate\n40 + 2")
        cells["taken"] = kernel.run("%node start alex --elixir")
        cells["app"] = kernel.run(f"%node start chatty --elixir --app {chat}")
        cells["app_cell"] = kernel.run("%%node chatty\n"
                                       "is_pid(Process.whereis(Chat.TaskSupervisor))")
        cells["nodes"] = kernel.run("%nodes")
        kernel.run("%node stop chatty")
        cells["stop_option"] = kernel.run("%node stop kate --elixir")
        cells["bad_app"] = kernel.run("%node start moebi --elixir --app /nonexistent")
        cells["stop"] = kernel.run("%node stop kate")
        cells["stopped_cell"] = kernel.run("%%node kate\n1")
        # Without elixir on PATH: one line that says how to install it, and nothing else.
        cells["no_elixir"] = kernel.run(
            "import os, tempfile\n"
            "_saved_path, os.environ['PATH'] = os.environ['PATH'], tempfile.mkdtemp()\n"
            "try:\n"
            "    get_ipython().run_line_magic('node', 'start nobody --elixir')\n"
            "finally:\n"
            "    os.environ['PATH'] = _saved_path")
        cells["lives"] = kernel.run("%nodes")
        # A BEAM window still open when the kernel is shut down stops with it.
        kernel.run("%node start moebi --elixir")
        cells["moebi_pid"] = kernel.beam_pid("moebi@localhost")
    except BaseException:
        kernel.kill()
        raise
    cells["kernel"] = kernel
    yield cells
    if kernel.manager.is_alive():
        kernel.kill()


def test_start_says_kate_is_a_real_elixir_node(notebook) -> None:
    assert notebook["name"]["stderr"] == ""
    assert notebook["start"]["stderr"] == ""
    assert notebook["start"]["stdout"] == ("started kate@localhost, a real Elixir node: "
                                           "%%node kate cells are Elixir\n")
    assert b"beam.smp" in notebook["kate_command"]
    assert b"kate@localhost" in notebook["kate_command"]
    print(f"BEAM window start: {notebook['start_seconds']:.2f} s")


def test_a_cell_prints_labelled_lines_and_its_value_as_inspect(notebook) -> None:
    cell = notebook["hi"]
    assert cell["stdout"] == "[kate@localhost] Hi, my name is Kate\n[kate@localhost] 5\n"
    assert cell["stderr"] == "" and cell["error"] == ""


def test_variables_carry_over_like_iex(notebook) -> None:
    assert notebook["kept"]["stdout"] == '[kate@localhost] {"Kate", true}\n'


def test_the_cell_prints_through_the_notebook_nodes_group_leader(notebook) -> None:
    # kate's shell prints through a forwarder on kate whose target is a group leader on
    # alex, the notebook node: over Erlang distribution, as iex's spawned processes print
    # on their caller's node. The BEAM formats the text (~p is Erlang's), and a line left
    # open is ended before the value, as before.
    assert notebook["leader"]["stdout"] == "[kate@localhost] :alex@localhost\n", notebook["leader"]
    assert notebook["format"]["stdout"] == ("[kate@localhost] #{a => 1} and text\n"
                                            "[kate@localhost] no newline\n"
                                            "[kate@localhost] :done\n")
    assert notebook["format"]["stderr"] == ""


def test_warnings_values_and_the_cookie(notebook) -> None:
    warning = notebook["warning"]
    assert warning["stderr"].startswith('[kate@localhost] warning: variable "unused" is unused')
    assert warning["stdout"] == "[kate@localhost] true\n"
    # inspect as iex shows it: pretty, 80 columns, every line labelled.
    assert notebook["pretty"]["stdout"] == (
        "[kate@localhost] [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, "
        "20, 21, 22,\n[kate@localhost]  23, 24, 25, 26, 27, 28, 29, 30]\n")
    # kate has the notebook node's cookie, as %node start gives its kernels.
    cookie = notebook["alex_cookie"]["stdout"].strip()
    assert cookie and notebook["cookie"]["stdout"] == f'[kate@localhost] "{cookie}"\n'


def test_errors_show_as_the_beam_prints_them_and_the_next_cell_works(notebook) -> None:
    compile_error = notebook["compile_error"]
    assert compile_error["stderr"] == ("[kate@localhost] ** (CompileError) iex:1: undefined "
                                       "function undefined_thing/1 (there is no such import)\n")
    assert compile_error["stdout"] == "" and compile_error["error"] == ""
    assert notebook["raise"]["stderr"] == "[kate@localhost] ** (RuntimeError) boom\n"
    assert notebook["after_errors"]["stdout"] == '[kate@localhost] "Kate!"\n'


def test_the_notebook_node_and_the_beam_window_share_a_cluster(notebook) -> None:
    assert notebook["ping"]["result"] == "'pong'", notebook["ping"]
    assert notebook["kate_module"]["stdout"] == "[kate@localhost] [:alex@localhost]\n"
    # kate's IO.puts goes to the caller's group leader: this cell, unlabelled, as in iex.
    # (Its order against this cell's own print is the group leader's thread's business;
    # the DOWN says noproc when the process had ended before the monitor was set.)
    lines = notebook["seed"]["stdout"].splitlines()
    assert "Hi, my name is Kate" in lines and len(lines) == 2, notebook["seed"]
    assert set(lines) - {"Hi, my name is Kate"} <= {"normal", "noproc"}, notebook["seed"]


def test_late_output_of_a_spawned_process_reaches_the_next_look(notebook) -> None:
    assert notebook["spawn"]["stdout"] == "[kate@localhost] :spawned\n"
    assert notebook["next_look"]["stdout"] == ("[kate@localhost] late from kate@localhost\n"
                                               "[kate@localhost] 2\n")
    print(f"%%node kate round trip (median of 5, from the test): "
          f"{notebook['round_trip'] * 1000:.1f} ms")
    assert notebook["round_trip"] < 1.0


def test_nodes_marks_beam_nodes(notebook) -> None:
    assert notebook["nodes"]["stdout"].splitlines()[:2] == [
        "this node:  alex@localhost", "started:    chatty@localhost (BEAM), kate@localhost (BEAM)"]
    assert notebook["lives"]["stdout"].splitlines()[1] == "started:    (none)"


def test_an_interrupt_kills_the_shell_process_as_iex_does(notebook) -> None:
    cell = notebook["interrupted"]
    assert cell["stderr"].startswith(
        "[kate@localhost] the cell was interrupted: its shell process is killed\n"
        "[kate@localhost] ** (EXIT from #PID<"), cell
    assert cell["stderr"].endswith(") shell process exited with reason: killed\n")
    assert cell["error"] == "" and notebook["interrupt_seconds"] < 10
    assert notebook["after_interrupt"]["stdout"] == "[kate@localhost] 42\n"


def test_a_name_in_use_is_one_line(notebook) -> None:
    cell = notebook["taken"]
    assert cell["stderr"] == ("NodelabError: alex@localhost could not start: it stopped (exit "
                              "status 1): the name alex@localhost is taken by another node "
                              "(`epmd -names` lists them): stop that node or choose another "
                              "name\n"), cell


def test_app_runs_a_mix_project(notebook) -> None:
    assert notebook["app"]["stderr"] == "", notebook["app"]
    assert notebook["app_cell"]["stdout"].endswith("[chatty@localhost] true\n")


def test_bad_input_gets_one_line(notebook) -> None:
    for cell, start in [(notebook["stop_option"], "UsageError: --elixir is not an option of "
                                                  "%node stop"),
                        (notebook["bad_app"], "UsageError: with --elixir, --app takes the "
                                              "directory of a mix project")]:
        assert cell["stderr"].startswith(start), cell
        assert cell["stderr"].count("\n") == 1 and cell["error"] == ""


def test_stop_ends_the_beam(notebook, wait_gone) -> None:
    assert notebook["stop"]["stdout"] == "stopped kate@localhost\n"
    wait_gone(notebook["kate_pid"], GONE_DEADLINE)
    assert notebook["stopped_cell"]["stderr"].startswith(
        "NodelabError: kate@localhost is not running from this notebook")


def test_without_elixir_one_line_says_how_to_install_it(notebook) -> None:
    cell = notebook["no_elixir"]
    assert cell["stdout"] == "" and cell["error"] == ""
    assert cell["stderr"].count("\n") == 1, cell
    assert "apt-get install erlang-base elixir" in cell["stderr"]
    assert "https://elixir-lang.org/install.html" in cell["stderr"]
    assert notebook["lives"]["stdout"].startswith("this node:  alex@localhost")


def test_kernel_shutdown_stops_its_beam_nodes(notebook, alive, wait_gone) -> None:
    kernel, pid = notebook["kernel"], notebook["moebi_pid"]
    assert alive(pid)
    kernel.shutdown()
    wait_gone(pid, GONE_DEADLINE)


def test_a_killed_kernel_takes_its_beam_node_along(alive, wait_gone) -> None:
    before = beam_pids(alive)
    kernel = Kernel()
    try:
        shown = kernel.run("%node start kate2 --elixir --cookie secret_token")
        assert shown["stderr"] == "", shown
        pid = kernel.beam_pid("kate2@localhost")
        assert kernel.run("%%node kate2\nNode.get_cookie()")["stdout"] == (
            "[kate2@localhost] :secret_token\n")
    except BaseException:
        kernel.kill()
        raise
    kernel.kill()
    wait_gone(pid, GONE_DEADLINE)
    assert beam_pids(alive) <= before
