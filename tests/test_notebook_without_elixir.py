"""``the_rest_needs_elixir()``: a lesson's BEAM part on a machine without Erlang and Elixir.

The lessons' "the same on the BEAM" parts start with this call. A learner who has not
installed Elixir must read one line saying how to install it, and "Run All" must still go
through the notebook to its end: every later cell prints that line instead of running, and
no cell fails. Real kernels, as JupyterLab runs them: one whose ``PATH`` has no ``elixir``
and no ``erl``, and one with the machine's own ``PATH``, where the call does nothing. Then
two whole lessons run without the BEAM's programs: lesson 4's Python path and exercise as
usual, its BEAM part one line per cell; lesson 7, one line per cell.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from real_kernel import Kernel

from nodelab.notebook import INSTALL_ELIXIR

GUARD = "from nodelab.notebook import the_rest_needs_elixir; the_rest_needs_elixir()"


def _kernel(tmp_path_factory: pytest.TempPathFactory, path: str | None) -> Iterator[Kernel]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("runtime"))
    kernel = Kernel(env)
    try:
        yield kernel
    finally:
        kernel.shutdown()


#: Cells a lesson's BEAM part holds, after the guard: none may run without Elixir.
LATER_CELLS = {
    "line-magic": "%node start kate --elixir",
    "cell-magic": '%%node kate\nIO.puts "Hi, my name is Kate"',
    "raises": "1 / 0",
    "shell": "!elixir --version",
    "value": "answer = 42\nanswer",
}


@pytest.fixture(scope="module")
def without_elixir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A notebook run in a kernel whose PATH is one empty folder (no elixir, no erl, nor
    anything else): what each cell showed, in order."""
    empty = tmp_path_factory.mktemp("path-without-elixir")
    witness = tmp_path_factory.mktemp("witness") / "ran"
    for kernel in _kernel(tmp_path_factory, str(empty)):
        shown = {"load": kernel.run("import nodelab.notebook"),
                 "before": kernel.run("print(6 * 7)\nimport shutil\nshutil.which('elixir')"),
                 "guard": kernel.run(GUARD)}
        shown.update((name, kernel.run(cell)) for name, cell in LATER_CELLS.items())
        shown["witness"] = kernel.run(f"open({str(witness)!r}, 'w').close()")
        shown["witness_exists"] = witness.exists()
        shown["alive"] = kernel.manager.is_alive()
        yield shown


def _printed_only(line: str) -> dict[str, str]:
    return {"stdout": line, "stderr": "", "result": "", "error": "", "status": "ok"}


def test_cells_before_the_guard_run_as_usual(without_elixir: dict) -> None:
    assert without_elixir["load"] == _printed_only("")
    assert without_elixir["before"] == _printed_only("42\n")  # which() found no elixir: None


def test_the_guard_prints_the_install_line_once(without_elixir: dict) -> None:
    assert without_elixir["guard"] == _printed_only(INSTALL_ELIXIR + "\n")
    assert "apt-get install erlang-base elixir" in INSTALL_ELIXIR


@pytest.mark.parametrize("name", sorted(LATER_CELLS))
def test_every_later_cell_prints_the_line_instead_of_running(without_elixir: dict,
                                                              name: str) -> None:
    assert without_elixir[name] == _printed_only(INSTALL_ELIXIR + "\n"), LATER_CELLS[name]


def test_nothing_later_ran_and_the_kernel_lives(without_elixir: dict) -> None:
    assert without_elixir["witness"] == _printed_only(INSTALL_ELIXIR + "\n")
    assert not without_elixir["witness_exists"], "a cell after the guard ran"
    assert without_elixir["alive"]


@pytest.mark.skipif(shutil.which("elixir") is None or shutil.which("erl") is None,
                    reason="Elixir/Erlang are not installed: apt-get install erlang-base elixir")
def test_with_elixir_the_guard_shows_nothing_and_cells_run(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    for kernel in _kernel(tmp_path_factory, None):
        kernel.run("import nodelab.notebook")
        assert kernel.run(GUARD) == {"stdout": "", "stderr": "", "result": "", "error": "",
                                     "status": "ok"}
        assert kernel.run("answer = 6 * 7\nanswer")["result"] == "42"
        raised = kernel.run("1 / 0")
        assert raised["status"] == "error" and raised["error"].startswith("ZeroDivisionError")


# --- whole lessons, as a learner without Elixir runs them ------------------------------------

#: The BEAM's programs a learner without Erlang/Elixir does not have.
BEAM_PROGRAMS = frozenset({"erl", "elixir", "iex", "mix", "elixirc", "epmd", "escript"})
LESSONS = Path(__file__).resolve().parent.parent / "lessons"


def _path_without_the_beam(folder: Path) -> str:
    """A PATH of one folder that links every program of this PATH but the BEAM's."""
    folder.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        if not directory or not Path(directory).is_dir():
            continue
        for program in Path(directory).iterdir():
            if program.name not in BEAM_PROGRAMS and os.access(program, os.X_OK):
                link = folder / program.name
                link.unlink(missing_ok=True)  # the first directory of PATH wins, as for PATH
                link.symlink_to(program)
    return str(folder)


@pytest.mark.parametrize("name", ["04_replying_from_a_remote_node", "07_python_meets_the_beam"])
def test_a_lesson_runs_to_its_end_without_elixir(tmp_path: Path, name: str) -> None:
    """The Python path runs as usual; from the guard on, every cell prints the install line;
    no cell fails (lesson 4: a Python part, then its BEAM part; lesson 7: all BEAM)."""
    from nbclient import NotebookClient

    path = LESSONS / "en" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, PATH=_path_without_the_beam(tmp_path / "bin"))
    NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    guard = next(index for index, cell in enumerate(code) if "the_rest_needs_elixir()" in
                 cell.source)
    failed = [cell.source.splitlines()[0] for cell in code
              if any(output.output_type == "error" for output in cell.outputs)]
    assert not failed, f"{name}: cells failed without Elixir: {failed}"
    for index, cell in enumerate(code[guard:], start=guard):
        # (one print may reach the notebook as two stream messages: join them)
        printed = "".join(output.get("text", "") for output in cell.outputs)
        kinds = {(output.output_type, output.get("name")) for output in cell.outputs}
        assert printed == INSTALL_ELIXIR + "\n" and kinds == {("stream", "stdout")}, (
            f"{name}, code cell {index} after the guard: {cell.outputs}")
    if name.startswith("04"):  # its Python path ran, exercise check included
        [check] = [cell for cell in code if "check" in cell.metadata.get("tags", [])]
        assert "".join(output.get("text", "") for output in check.outputs) == "✔ OK\n"
