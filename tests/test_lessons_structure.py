"""The lesson notebooks as a course: two languages, one set of code cells, lessons that clean up.

These tests read the notebooks; they do not run them (nbval does, in ``./run-tests``). They
check what must hold for every lesson whatever its outputs:

* ``lessons/en`` and ``lessons/ko`` hold the same notebooks, generated from ``lessons/src`` and
  up to date with it, with identical code cells (source, tags, collapsed or not);
* Korean prose is Korean (Hangul) and English prose is not;
* every notebook loads the extension in its first code cell, ends with an exercise whose check
  cell follows a marked worked solution, and stops in its last code cell every node it started
  and did not stop earlier, then removes the temporary working folder it made, if any;
* nbval markers are cell tags, never ``# NBVAL`` comments, and no cell magic hides below a line;
* ``lessons/README.md`` lists the lessons in order, in both languages;
* ``lessons/sanitize.cfg`` masks PIDs, references, ports, paths and timings and nothing a lesson
  teaches;
* the chat app the notebooks build is, once complete, the one in ``lessons/chat``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _load_build():
    spec = importlib.util.spec_from_file_location("lessons_build", LESSONS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build()
NAMES = [path.stem for path in sorted((LESSONS / "src").glob("[0-9][0-9]_*.md"))]


def _notebook(lang: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(LESSONS / lang / f"{name}.ipynb", as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def test_the_course_has_its_lessons_in_order() -> None:
    numbers = [name.split("_", 1)[0] for name in NAMES]
    assert numbers == [f"{index:02d}" for index in range(len(NAMES))], NAMES
    assert len(NAMES) >= 7, "lessons 00 to 06 of issue 5"


def test_notebooks_are_up_to_date_with_their_sources() -> None:
    problems = build.check(build.lessons(), build.LANGUAGES)
    assert not problems, "\n".join(problems) + "\nrun: python lessons/build.py"


def test_both_languages_have_the_same_notebooks() -> None:
    english = sorted(path.name for path in (LESSONS / "en").glob("*.ipynb"))
    korean = sorted(path.name for path in (LESSONS / "ko").glob("*.ipynb"))
    assert english == korean
    assert english == [f"{name}.ipynb" for name in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_code_cells_are_identical_in_both_languages(name: str) -> None:
    english, korean = _notebook("en", name), _notebook("ko", name)
    assert [cell.cell_type for cell in english.cells] == [cell.cell_type for cell in korean.cells]

    def signature(cell: nbformat.NotebookNode) -> tuple:
        hidden = cell.metadata.get("jupyter", {}).get("source_hidden", False)
        return cell.source, _tags(cell), hidden

    assert ([signature(cell) for cell in _code_cells(english)]
            == [signature(cell) for cell in _code_cells(korean)])


@pytest.mark.parametrize("name", NAMES)
def test_korean_prose_is_korean_and_english_prose_is_not(name: str) -> None:
    for index, cell in enumerate(_notebook("ko", name).cells):
        if cell.cell_type == "markdown":
            assert HANGUL.search(cell.source), f"ko/{name} cell {index} has no Korean text"
    for index, cell in enumerate(_notebook("en", name).cells):
        if cell.cell_type == "markdown":
            assert not HANGUL.search(cell.source), f"en/{name} cell {index} contains Hangul"


@pytest.mark.parametrize("name", NAMES)
def test_first_code_cell_loads_the_extension(name: str) -> None:
    for lang in build.LANGUAGES:
        first = _code_cells(_notebook(lang, name))[0]
        assert first.source == build.LOAD_EXTENSION


@pytest.mark.parametrize("name", NAMES)
def test_nbval_markers_are_tags_and_cell_magics_come_first(name: str) -> None:
    for cell in _code_cells(_notebook("en", name)):
        assert "NBVAL" not in cell.source.upper(), (
            "use a cell tag (nbval-ignore-output, nbval-skip...), not a # NBVAL comment: "
            "a comment above a cell magic breaks it")
        for number, line in enumerate(cell.source.splitlines()):
            if number > 0:
                assert not line.startswith("%%"), (
                    f"a cell magic must be the first line:\n{cell.source}")
        assert set(_tags(cell)) <= build.KNOWN_TAGS


def _node_commands(source: str) -> list[tuple[str, str]]:
    """(action, node) for every `%node start NAME` / `%node stop NAME` line of a cell."""
    commands = []
    for line in source.splitlines():
        words = shlex.split(line.strip()) if line.strip().startswith("%node ") else []
        if len(words) >= 3 and words[1] in ("start", "stop"):
            commands.append((words[1], words[2]))
    return commands


@pytest.mark.parametrize("name", NAMES)
def test_the_last_code_cell_stops_the_nodes_still_running(name: str) -> None:
    cells = _code_cells(_notebook("en", name))
    running: set[str] = set()
    for cell in cells[:-1]:
        for action, node in _node_commands(cell.source):
            if action == "start":
                running.add(node)
            else:
                running.discard(node)
    assert running, f"{name} starts no other node (every lesson opens at least one window)"
    last = cells[-1]
    lines = [line.strip() for line in last.source.splitlines() if line.strip()]
    stops = [line for line in lines if line.startswith("%node stop ")]
    assert lines[:len(stops)] == stops and lines[len(stops):] in ([], WORKSPACE_CLEANUP), (
        f"the last code cell of {name} should stop nodes, then remove the lesson's working "
        f"folder if it made one:\n{last.source}")
    assert {node for _, node in _node_commands(last.source)} == running


#: How a lesson that works in a temporary folder leaves it and removes it (its last cell).
WORKSPACE_CLEANUP = ["%cd -q {lesson_folder}", "shutil.rmtree(workspace)"]


@pytest.mark.parametrize("name", NAMES)
def test_a_lesson_that_makes_a_working_folder_removes_it(name: str) -> None:
    # A lesson may make two: one for its Python path, removed when that path is tidied up,
    # and one for its BEAM part (which a learner without Elixir never reaches).
    cells = _code_cells(_notebook("en", name))
    makes = [index for index, cell in enumerate(cells) if "tempfile.mkdtemp(" in cell.source]
    removes = [index for index, cell in enumerate(cells)
               if "shutil.rmtree(workspace)" in cell.source]
    last = [line.strip() for line in cells[-1].source.splitlines() if line.strip()]
    if not makes:
        assert not set(WORKSPACE_CLEANUP) & set(last) and not removes
        return
    first = cells[makes[0]].source
    assert "lesson_folder = Path.cwd()" in first and "import shutil" in first
    for make, following in zip(makes, [*makes[1:], len(cells)], strict=True):
        assert "workspace = " in cells[make].source
        assert any(make < remove < following for remove in removes), (
            f"{name}: the working folder made in code cell {make} is removed before another "
            "one is made (shutil.rmtree(workspace))")
        tidy = [line.strip() for line in cells[max(r for r in removes if r < following)]
                .source.splitlines() if line.strip()]
        assert tidy[-len(WORKSPACE_CLEANUP):] == WORKSPACE_CLEANUP, (
            f"{name}: a lesson leaves its working folder before it removes it")
    assert last[-len(WORKSPACE_CLEANUP):] == WORKSPACE_CLEANUP, (
        f"{name} makes a temporary working folder: its last cell goes back to the lesson's "
        "folder and removes it")


@pytest.mark.parametrize("name", NAMES)
def test_each_lesson_ends_with_an_exercise_and_its_check(name: str) -> None:
    for lang in build.LANGUAGES:
        cells = _notebook(lang, name).cells
        kinds = [("solution" in _tags(cell), "check" in _tags(cell)) for cell in cells]
        solutions = [index for index, (solution, _) in enumerate(kinds) if solution]
        checks = [index for index, (_, check) in enumerate(kinds) if check]
        assert solutions and len(checks) == 1, f"{lang}/{name}: one check after a solution"
        assert max(solutions) < checks[0], f"{lang}/{name}: the check follows the solution"
        for index in solutions:
            assert cells[index].metadata.get("jupyter", {}).get("source_hidden"), (
                f"{lang}/{name}: a worked solution is collapsed until the learner opens it")
        marker = cells[min(solutions) - 1]
        assert marker.cell_type == "markdown" and (
            "Solution" in marker.source or "풀이" in marker.source), (
            f"{lang}/{name}: a markdown cell announces the worked solution")
        check = cells[checks[0]].source
        assert "assert " in check and "✔ OK" in check
        # The end of the Python path: the BEAM part, when there is one, comes after it.
        end = _beam_part(cells, lang) or len(cells)
        assert end - 4 <= checks[0] < end, (
            f"{lang}/{name}: the exercise is at the end of the Python path")


#: The title of a lesson's BEAM part, and the cell it starts with (nodelab/notebook.py): a
#: learner without Elixir reads how to install it, and the cells after it print that line.
BEAM_PART_TITLE = {"en": "The same on the BEAM", "ko": "BEAM에서 똑같이"}
BEAM_GUARD = "from nodelab.notebook import the_rest_needs_elixir; the_rest_needs_elixir()"
#: The lessons that follow a part of the original lesson: each runs its Elixir for real.
WITH_A_BEAM_PART = ("01", "02", "03", "04", "05")
#: What only a real BEAM runs: an Elixir node, mix, elixir or iex in a shell.
BEAM_ONLY = re.compile(r"--elixir\b|^!(?:cd [^&]*&& *)?(?:MIX_ENV=\w+ +)?(?:mix|elixir|iex)\b",
                       re.M)


def _is_guard(source: str) -> bool:
    """The guard cell, whether written on one line or as an import and a call."""
    try:
        return ast.dump(ast.parse(source)) == ast.dump(ast.parse(BEAM_GUARD))
    except SyntaxError:
        return False


def _beam_part(cells: list[nbformat.NotebookNode], lang: str) -> int | None:
    """Index of the markdown cell that opens the lesson's BEAM part, if it has one."""
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown" and cell.source.startswith(
                f"## {BEAM_PART_TITLE[lang]}"):
            return index
    return None


@pytest.mark.parametrize("name", NAMES)
def test_a_beam_part_comes_last_and_starts_with_the_guard(name: str) -> None:
    for lang in build.LANGUAGES:
        cells = _notebook(lang, name).cells
        code = [index for index, cell in enumerate(cells) if cell.cell_type == "code"]
        opens = _beam_part(cells, lang)
        if name.startswith("07_"):  # all of lesson 7 is the BEAM: its guard comes first
            assert _is_guard(cells[code[1]].source), f"{lang}/{name}"
            continue
        beam = [index for index in code if BEAM_ONLY.search(cells[index].source)]
        if name[:2] in WITH_A_BEAM_PART:
            assert opens is not None, (
                f"{lang}/{name} has no '## {BEAM_PART_TITLE[lang]}' part after its exercise")
            assert beam, f"{lang}/{name}: its BEAM part runs nothing on the BEAM"
        if opens is None:
            assert not beam, f"{lang}/{name} runs the BEAM without a '{BEAM_PART_TITLE[lang]}'"
            continue
        first = next(index for index in code if index > opens)
        assert _is_guard(cells[first].source), (
            f"{lang}/{name}: the BEAM part starts with the cell {BEAM_GUARD!r}")
        assert all(index > first for index in beam), (
            f"{lang}/{name}: a cell before the BEAM part's guard needs the BEAM")
        checks = [index for index in code if "check" in _tags(cells[index])]
        assert checks and max(checks) < opens, (
            f"{lang}/{name}: the BEAM part follows the Python exercise and its check")


def test_the_beam_guard_is_the_one_of_nodelab_notebook() -> None:
    namespace: dict = {}
    exec(BEAM_GUARD.replace("the_rest_needs_elixir()", ""), namespace)  # the import only
    assert callable(namespace["the_rest_needs_elixir"])


def test_readme_lists_the_lessons_in_order_in_both_languages() -> None:
    readme = (LESSONS / "README.md").read_text(encoding="utf-8")
    for lang in build.LANGUAGES:
        linked = re.findall(rf"\]\({lang}/(\d\d_[\w]+)\.ipynb\)", readme)
        assert linked == NAMES, f"lessons/README.md should link {lang}/ lessons in order"
    assert readme.index("](en/") < readme.index("## 한국어") < readme.index("](ko/")


def _sanitize(text: str) -> str:
    patterns = re.findall(r"^regex: (.*)$\n^replace: (.*)$",
                          (LESSONS / "sanitize.cfg").read_text(encoding="utf-8"), flags=re.M)
    assert patterns, "lessons/sanitize.cfg holds no regex/replace pairs"
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize("varying", [
    ("#PID<0.105.0>", "#PID<1.2841.0>"),
    ("#Reference<0.0.0.7>", "#Reference<2.0.1.123>"),
    ("started kate@localhost (kernel process 4242)", "started kate@localhost (kernel process 99)"),
    ("listening on 127.0.0.1:43121", "listening on 127.0.0.1:4370"),
    ("/tmp/nodelab-lesson05-k2j_x9/chat/tests/test_chat.py:5: NoConnection",
     "/var/tmp/nodelab-lesson05-abc123/chat/tests/test_chat.py:5: NoConnection"),
    ("1 passed in 0.52s", "1 passed in 12.07s"),
    ("\x1b[31m\x1b[31m\x1b[1m1 failed\x1b[0m\x1b[31m in 0.97s\x1b[0m",
     "\x1b[31m\x1b[31m\x1b[1m1 failed\x1b[0m\x1b[31m in 1.5s\x1b[0m"),
    ("/work/main/nodelab/otp/server.py:115: nodelab.otp.errors.CallNoConnection",
     "/home/ci/src/nodelab/otp/server.py:131: nodelab.otp.errors.CallNoConnection"),
    ("\x1b[1m\x1b[31m/work/main/nodelab/otp/server.py\x1b[0m:121: CallNoConnection",
     "\x1b[1m\x1b[31m/check/work/main/nodelab/otp/server.py\x1b[0m:130: CallNoConnection"),
    ("round trip 4.7 ms", "round trip 13 ms"),
    ("Finished in 0.02 seconds (0.01s async, 0.00s sync)",
     "Finished in 1.5 seconds (0.00s async, 1.50s sync)"),
    ("Randomized with seed 540645", "Randomized with seed 0"),
    ("06:57:51.837 [warning] ** Can not start", "23:01:02.003 [warning] ** Can not start"),
])
def test_sanitizer_masks_what_varies(varying: tuple[str, str]) -> None:
    first, second = varying
    assert _sanitize(first) == _sanitize(second)


@pytest.mark.parametrize("taught", [
    "Hi, my name is Kate", "chicken?", "hi", "how are you?", "'sup?'", "'pong'", "'pang'",
    "kate@localhost", "alex@localhost", "no connection to moebi@localhost",
    "Excluding tags: [distributed: true]", "1 failed", "1 deselected",
    "('nodedown', 'kate@localhost')",
    "'noconnection'", "True", "False", "'ok'", "'Chat.TaskSupervisor'",
    "1 test, 1 failure", "1 test, 0 failures, 1 excluded", "All tests have been excluded.",
    "[kate@localhost] nil", "test/chat_test.exs:7",
    "** Connection attempt from node :alex_ex@localhost rejected. Invalid challenge reply. **",
])
def test_sanitizer_keeps_what_lessons_teach(taught: str) -> None:
    assert _sanitize(taught) == taught


def _writes(name: str) -> dict[str, str]:
    """The last version of each file that lesson ``name`` writes with %%writefile."""
    written: dict[str, str] = {}
    for cell in _code_cells(_notebook("en", name)):
        first, _, body = cell.source.partition("\n")
        if first.startswith("%%writefile "):
            written[first.split(maxsplit=1)[1]] = body
    return written


APP_FILES = ("chat/__init__.py", "chat/application.py", "config/config.py", "config/dev.py",
             "config/test.py", "config/prod.py")


def test_the_notebooks_write_the_chat_app_of_lessons_chat() -> None:
    # The app is complete in the lesson that writes its configuration (lesson 5); later
    # lessons may rebuild an earlier stage of it, on purpose.
    reference = LESSONS / "chat"
    if not reference.is_dir():
        pytest.skip("lessons/chat (the reference chat app) is not there yet")
    complete = [name for name in NAMES if set(APP_FILES) <= set(_writes(name))]
    assert complete, f"no lesson writes all of {APP_FILES}"
    written = _writes(complete[-1])
    for path in APP_FILES:
        expected = (reference / path).read_text(encoding="utf-8")
        assert written[path].rstrip("\n") == expected.rstrip("\n"), (
            f"{complete[-1]} writes a {path} that differs from lessons/chat/{path}: the app "
            "the notebooks build must be the one in lessons/chat")
