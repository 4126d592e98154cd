"""``import nodelab.notebook``: nodelab's magics in this notebook, whatever its kernel.

The lessons start with this line. In the "Python 3 (nodelab)" kernel the magics are
already there and the import changes nothing; in a plain ``python3`` kernel (nbval's
``--nbval-current-env``, a stock Jupyter) it loads them, like ``%load_ext nodelab`` would,
but without printing "already loaded" — so a notebook's outputs are the same under both.
"""

import shutil

from IPython import get_ipython

_shell = get_ipython()
if _shell is not None:
    _shell.extension_manager.load_extension("nodelab")

#: The one line a learner without Erlang/Elixir reads, at the start of a part that needs them
#: and in place of each of its cells.
INSTALL_ELIXIR = ("this part needs Erlang and Elixir: apt-get install erlang-base elixir "
                  "(or https://elixir-lang.org/install.html), then restart the kernel")


def elixir_installed() -> bool:
    """Whether ``elixir`` and ``erl`` are on this kernel's ``PATH``."""
    return bool(shutil.which("elixir") and shutil.which("erl"))


def the_rest_needs_elixir() -> None:
    """Start a part of a lesson that runs on a real BEAM.

    With Erlang and Elixir installed this does nothing, and the cell shows nothing. Without
    them it prints :data:`INSTALL_ELIXIR` once, and every later cell of the notebook prints
    that line instead of running, so "Run All" goes through to the end without an error:
    the BEAM parts come last in a lesson, after everything that runs on Python alone (its
    exercise, and the tidying up of its nodes and folders). Installing them and restarting
    the kernel brings the cells back, as the line says.

    Nothing is returned, so that the cell's stored output is the same on every machine that
    has Elixir; ask :func:`elixir_installed` for a yes or no.
    """
    if elixir_installed():
        return
    shell = get_ipython()
    if shell is not None:
        # A cleanup transformer sees a cell's lines before IPython parses them (magics
        # included), so even a %%node cell becomes the one print.
        shell.input_transformers_cleanup.append(_print_install_line)
    print(INSTALL_ELIXIR)


def _print_install_line(lines: list[str]) -> list[str]:
    return [f"print({INSTALL_ELIXIR!r})\n"]
