"""Build the lesson notebooks: one source per lesson, two notebooks (English and Korean).

Each lesson is written once, in ``lessons/src/NN_name.md``, and this script turns it into
``lessons/en/NN_name.ipynb`` and ``lessons/ko/NN_name.ipynb``. The two notebooks share every
code cell (same source, same tags) and differ only in their prose, so the course cannot
drift apart between the languages.

Usage::

    python lessons/build.py              # write the notebooks (keeps stored outputs when no
                                         # code cell changed, drops them otherwise)
    python lessons/build.py --check      # exit 1 if a notebook is out of date with its source
    python lessons/build.py --execute    # build, then run every notebook top to bottom in a
                                         # real kernel and store its real outputs
    python lessons/build.py --execute --only 03 --lang en --kernel python3
    python lessons/build.py --verify-exercises   # run each notebook without its worked
                                         # solution: its check cell must fail, and only it

The source format
-----------------
A source is a sequence of blocks. A block starts with a directive line that begins with
``:::`` and runs until the next directive line::

    ::: ko
    한국어 문단 (one markdown cell of the Korean notebook)
    ::: en
    The same paragraph in English (the matching cell of the English notebook)
    ::: code [TAG ...] [hidden]
    %node --sname alex

* ``ko`` must be followed at once by ``en``: together they make one markdown cell.
* ``code`` is one code cell, the same in both notebooks. Words after ``code`` are cell tags
  (``nbval-ignore-output``, ``raises-exception``, ``solution``, ``check`` ...); ``hidden``
  collapses the cell's source in JupyterLab (used for worked solutions).
* ``note`` is a comment for authors; it is not copied into the notebooks.

Blank lines around a block's text are dropped. Outputs are never written by hand: only
``--execute`` stores them, from a real run.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
SOURCES = LESSONS / "src"
LANGUAGES = ("en", "ko")

#: Tags a code cell may carry. nbval reads the first three; the last two mark exercises.
KNOWN_TAGS = frozenset({"nbval-ignore-output", "nbval-skip", "raises-exception",
                        "solution", "check"})

#: The first code cell of every notebook: the magics in a plain ``python3`` kernel too
#: (``--nbval-current-env`` uses one). It ends with ``;`` so that the nodelab kernel, where
#: the extension is already loaded and the call returns "already loaded", shows nothing.
LOAD_EXTENSION = "import nodelab.notebook"

KERNELSPEC = {"name": "nodelab", "display_name": "Python 3 (nodelab)", "language": "python"}

CELL_TIMEOUT = 180  # seconds; a cell that starts nodes or runs pytest takes a few


class SourceError(ValueError):
    """A lesson source does not follow the format described in this module's docstring."""


@dataclass
class Cell:
    kind: str                      # "markdown" or "code"
    text: dict[str, str]           # language -> text (a code cell has the same for all)
    tags: list[str] = field(default_factory=list)
    hidden: bool = False
    line: int = 0                  # where the block starts in the source, for messages


@dataclass
class Lesson:
    name: str                      # "01_nodes_and_spawn_link"
    path: Path
    cells: list[Cell]

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]


_DIRECTIVE = re.compile(r"^:::\s*(\w+)(.*)$")


def parse(path: Path) -> Lesson:
    """Read one lesson source into cells, checking the format as it goes."""
    blocks: list[tuple[str, list[str], int, list[str]]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _DIRECTIVE.match(line)
        if match:
            blocks.append((match.group(1), match.group(2).split(), number, []))
        elif blocks:
            blocks[-1][3].append(line)
        elif line.strip():
            raise SourceError(f"{path}:{number}: text before the first '::: ' directive")

    cells: list[Cell] = []
    pending_ko: tuple[str, int] | None = None
    for kind, words, number, lines in blocks:
        text = "\n".join(lines).strip("\n")
        where = f"{path}:{number}"
        if pending_ko is not None and kind != "en":
            raise SourceError(f"{where}: the '::: ko' block at line {pending_ko[1]} must be "
                              "followed at once by its '::: en' translation")
        if kind == "note":
            continue
        if kind in ("ko", "en") and words:
            raise SourceError(f"{where}: '::: {kind}' takes no options")
        if kind == "ko":
            pending_ko = (text, number)
        elif kind == "en":
            if pending_ko is None:
                raise SourceError(f"{where}: '::: en' must follow a '::: ko' block")
            if not text or not pending_ko[0]:
                raise SourceError(f"{where}: empty prose")
            cells.append(Cell("markdown", {"ko": pending_ko[0], "en": text},
                              line=pending_ko[1]))
            pending_ko = None
        elif kind == "code":
            hidden = "hidden" in words
            tags = [word for word in words if word != "hidden"]
            unknown = sorted(set(tags) - KNOWN_TAGS)
            if unknown:
                raise SourceError(f"{where}: unknown tag(s) {unknown}; known tags: "
                                  f"{sorted(KNOWN_TAGS)}")
            if not text.strip():
                raise SourceError(f"{where}: empty code cell")
            cells.append(Cell("code", {lang: text for lang in LANGUAGES}, tags, hidden,
                              line=number))
        else:
            raise SourceError(f"{where}: unknown directive '::: {kind}' "
                              "(use ko, en, code or note)")
    if pending_ko is not None:
        raise SourceError(f"{path}:{pending_ko[1]}: '::: ko' block without '::: en'")
    first_code = next((cell for cell in cells if cell.kind == "code"), None)
    if first_code is None or first_code.text["en"] != LOAD_EXTENSION:
        raise SourceError(f"{path}: the first code cell must be exactly {LOAD_EXTENSION!r}")
    return Lesson(path.stem, path, cells)


def lessons() -> list[Lesson]:
    """Every lesson source, in course order."""
    return [parse(path) for path in sorted(SOURCES.glob("[0-9][0-9]_*.md"))]


def notebook(lesson: Lesson, lang: str) -> nbformat.NotebookNode:
    """The notebook of ``lesson`` in ``lang``, without outputs."""
    cells = []
    for index, cell in enumerate(lesson.cells):
        cell_id = f"c{index:03d}"
        if cell.kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell.text[lang], id=cell_id))
            continue
        metadata: dict = {}
        if cell.tags:
            metadata["tags"] = list(cell.tags)
        if cell.hidden:
            metadata["jupyter"] = {"source_hidden": True}
        cells.append(nbformat.v4.new_code_cell(cell.text[lang], id=cell_id, metadata=metadata))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = _notebook_metadata(lesson, lang)
    return nb


def _notebook_metadata(lesson: Lesson, lang: str) -> dict:
    return {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "nodelab": {"lesson": lesson.name, "language": lang,
                    "source": f"lessons/src/{lesson.path.name}",
                    "generated": "edit the source and run python lessons/build.py"},
    }


def target(lesson: Lesson, lang: str) -> Path:
    return LESSONS / lang / f"{lesson.name}.ipynb"


def _code_signature(nb: nbformat.NotebookNode) -> list[tuple[str, tuple[str, ...]]]:
    return [(cell.source, tuple(cell.metadata.get("tags", [])))
            for cell in nb.cells if cell.cell_type == "code"]


def _carry_outputs(new: nbformat.NotebookNode, old: nbformat.NotebookNode) -> bool:
    """Copy the stored outputs of ``old`` into ``new`` when their code cells are the same.

    Prose-only edits keep the outputs of the last real run; any change to code drops them,
    because they would no longer be what that code prints.
    """
    if _code_signature(new) != _code_signature(old):
        return False
    old_code = [cell for cell in old.cells if cell.cell_type == "code"]
    new_code = [cell for cell in new.cells if cell.cell_type == "code"]
    for new_cell, old_cell in zip(new_code, old_code, strict=True):
        new_cell.outputs = copy.deepcopy(old_cell.get("outputs", []))
        new_cell.execution_count = old_cell.get("execution_count")
    return any(cell.outputs for cell in new_code)


def _comparable(nb: nbformat.NotebookNode) -> list[tuple]:
    return [(cell.cell_type, cell.source, tuple(cell.metadata.get("tags", [])),
             bool(cell.metadata.get("jupyter", {}).get("source_hidden", False)))
            for cell in nb.cells]


def _read(path: Path) -> nbformat.NotebookNode | None:
    if not path.exists():
        return None
    return nbformat.read(path, as_version=4)


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def build(selected: list[Lesson], langs: tuple[str, ...], *, clean: bool = False) -> list[Path]:
    """Write the notebooks; return those that have no outputs yet (need ``--execute``)."""
    unexecuted = []
    for lesson in selected:
        for lang in langs:
            path = target(lesson, lang)
            nb = notebook(lesson, lang)
            old = None if clean else _read(path)
            if old is None or not _carry_outputs(nb, old):
                unexecuted.append(path)
            _write(nb, path)
    return unexecuted


def check(selected: list[Lesson], langs: tuple[str, ...]) -> list[str]:
    """What is out of date: notebooks missing, or whose cells differ from their source."""
    problems = []
    for lesson in selected:
        for lang in langs:
            path = target(lesson, lang)
            stored = _read(path)
            if stored is None:
                problems.append(f"{path.relative_to(LESSONS)} is missing")
            elif _comparable(stored) != _comparable(notebook(lesson, lang)):
                problems.append(f"{path.relative_to(LESSONS)} differs from "
                                f"src/{lesson.path.name}")
    known = {target(lesson, lang) for lesson in lessons() for lang in langs}
    for lang in langs:
        for path in sorted((LESSONS / lang).glob("*.ipynb")):
            if path not in known:
                problems.append(f"{path.relative_to(LESSONS)} has no source in src/")
    return problems


def _default_kernel() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    if "nodelab" in KernelSpecManager().find_kernel_specs():
        return "nodelab"
    print("the nodelab kernel is not installed; running in python3 (the first cell of every "
          "notebook loads the nodelab extension, so the lessons work there too)")
    return "python3"


def kernel_environment() -> dict[str, str]:
    """The environment of a kernel that runs a lesson: this one, and ``-p no:nbval`` for the
    pytest runs inside the lesson (lesson 5's cells run pytest, and loading nbval there costs
    2 s of CPU per run for nothing a learner's tests use; ``lessons/conftest.py`` does the
    same for nbval's own kernels). What the lessons print does not change."""
    env = dict(os.environ)
    options = env.get("PYTEST_ADDOPTS", "")
    if "-p no:nbval" not in options:
        env["PYTEST_ADDOPTS"] = f"{options} -p no:nbval".strip()
    return env


def execute(path: Path, kernel: str) -> None:
    """Run one notebook top to bottom in a fresh kernel and store its real outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    metadata = copy.deepcopy(nb.metadata)
    client = NotebookClient(
        nb, kernel_name=kernel, timeout=CELL_TIMEOUT, record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},  # the kernel starts next to it
    )
    client.execute(env=kernel_environment())
    nb.metadata = metadata  # not the machine's Python version: keep diffs to real changes
    _write(nb, path)


def verify_exercise(path: Path, kernel: str, instead: list[str] | None = None) -> str | None:
    """Run a notebook without its ``solution`` cells; None when its ``check`` cell (and no
    other cell) fails, as it should for a learner who has not solved the exercise yet.

    ``instead``: code cells run where the solution was — a learner's shortcut, such as the
    expected answer typed in, which the check must not take for a solution either.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    cells = []
    checked = False
    for cell in nb.cells:
        checked = checked or "check" in cell.metadata.get("tags", [])
        if checked and "the_rest_needs_elixir()" in cell.source:
            # The BEAM part after the exercise starts its own nodes and needs nothing from
            # the exercise (nbval runs it): stop here, it would only cost time.
            break
        if "solution" not in cell.metadata.get("tags", []):
            cells.append(cell)
        elif instead is not None:
            cells.extend(nbformat.v4.new_code_cell(source) for source in instead)
            instead = None
    nb.cells = cells
    NotebookClient(nb, kernel_name=kernel, timeout=CELL_TIMEOUT, record_timing=False,
                   allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}
                   ).execute(env=kernel_environment())
    failed = [cell for cell in nb.cells if cell.cell_type == "code"
              and "raises-exception" not in cell.metadata.get("tags", [])
              and any(out.output_type == "error" for out in cell.outputs)]
    checks = [cell for cell in failed if "check" in cell.metadata.get("tags", [])]
    if not checks:
        return "the check cell passed although the exercise was not solved"
    if len(failed) > len(checks):
        return "cells other than the check failed:\n" + "\n".join(
            cell.source.splitlines()[0] for cell in failed if cell not in checks)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that the notebooks match their sources")
    parser.add_argument("--execute", action="store_true",
                        help="run the notebooks and store their outputs")
    parser.add_argument("--verify-exercises", action="store_true",
                        help="run each notebook without its solution: its check must fail")
    parser.add_argument("--clean", action="store_true",
                        help="drop stored outputs even when no code changed")
    parser.add_argument("--only", action="append", default=[], metavar="NN",
                        help="only lessons whose number or name starts with this (repeatable)")
    parser.add_argument("--lang", choices=LANGUAGES, action="append",
                        help="only this language (repeatable; default both)")
    parser.add_argument("--kernel", default=None,
                        help="kernel for --execute (default: nodelab if installed, else python3)")
    args = parser.parse_args(argv)

    try:
        selected = lessons()
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.only:
        selected = [lesson for lesson in selected
                    if any(lesson.name.startswith(prefix) for prefix in args.only)]
        if not selected:
            print(f"error: no lesson matches {args.only}", file=sys.stderr)
            return 2
    langs = tuple(args.lang) if args.lang else LANGUAGES

    if args.check:
        problems = check(selected, langs)
        for problem in problems:
            print(problem)
        if problems:
            print("run: python lessons/build.py")
        return 1 if problems else 0

    if args.verify_exercises:
        kernel = args.kernel or _default_kernel()
        failures = 0
        for lesson in selected:
            for lang in langs:
                path = target(lesson, lang)
                problem = verify_exercise(path, kernel)
                failures += problem is not None
                print(f"{path.relative_to(LESSONS)}: {problem or 'the check fails until solved'}")
        return 1 if failures else 0

    unexecuted = build(selected, langs, clean=args.clean)
    print(f"wrote {len(selected) * len(langs)} notebooks")
    if not args.execute:
        for path in unexecuted:
            print(f"  no outputs yet: {path.relative_to(LESSONS)}")
        if unexecuted:
            print("store real outputs with: python lessons/build.py --execute")
        return 0

    import time

    kernel = args.kernel or _default_kernel()
    for lesson in selected:
        for lang in langs:
            path = target(lesson, lang)
            started = time.monotonic()
            print(f"running {path.relative_to(LESSONS)} ...", end=" ", flush=True)
            try:
                execute(path, kernel)
            except Exception as error:  # noqa: BLE001 - say which notebook, then stop
                print("failed")
                print(f"{path.relative_to(LESSONS)}: {error}", file=sys.stderr)
                return 1
            print(f"{time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
