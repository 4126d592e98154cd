"""The nodelab kernel: ipykernel with the ``nodelab`` IPython extension loaded at start.

This is what the ``nodelab`` kernelspec runs (``python -m nodelab.jupyter.kernel -f
{connection_file}``; install it with ``python -m nodelab.jupyter.kernelspec install``). A
notebook on this kernel has ``%node``, ``%%node``, ``%spawn_link``... from its first cell,
the same as a stock ``python3`` kernel after ``%load_ext nodelab``.

For whoever changes the extension (contract with ``nodelab.jupyter.extension``):

* The extension is loaded through IPython's own extension loader, as one of the app's
  ``default_extensions``: a user's ``ipython_kernel_config.py`` that sets ``extensions``
  or ``--ext`` on the command line adds to it, and cannot drop it by accident.
* A failure to import or load it is *soft*: IPython logs "Error in loading extension:
  nodelab" with the traceback to the kernel's log, and the kernel starts without the
  magics (``%load_ext nodelab`` in a cell then shows the error). The kernel itself never
  fails to start because of nodelab.
* The extension is loaded before the first cell, so there is no parent request yet: a
  ``CellOutput`` captured at load time has an empty parent header (its output would show
  in no cell). Per-cell state belongs in ``pre_run_cell``.
* Everything else is stock ipykernel (same config files: the app is an ``IPKernelApp``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

#: IPython extensions the nodelab kernel loads at start, after IPython's own default.
EXTENSIONS = ("nodelab",)


def main(argv: Sequence[str] | None = None, *, extensions: Sequence[str] = EXTENSIONS) -> None:
    """Start the kernel (``argv`` as for ``ipykernel_launcher``: ``-f CONNECTION_FILE``).

    ``extensions`` replaces :data:`EXTENSIONS` (tests use it to check a soft failure).
    """
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    # IPython loads default_extensions + extensions + extra_extensions. default_extensions
    # is not configurable, so no config file or --ext can drop nodelab by accident.
    app.default_extensions = [*app.default_extensions, *extensions]
    app.initialize(list(argv) if argv is not None else None)
    app.start()


if __name__ == "__main__":
    # Like ipykernel_launcher: keep the notebook's directory off sys.path while ipykernel
    # and its dependencies are imported (a local zmq.py must not break the kernel);
    # IPython puts it back for the user's code.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    main()
