"""Install the nodelab kernel so JupyterLab offers "Python 3 (nodelab)".

    python -m nodelab.jupyter.kernelspec install --sys-prefix   # into this venv (recommended)
    python -m nodelab.jupyter.kernelspec install --user         # into ~/.local/share/jupyter
    python -m nodelab.jupyter.kernelspec install --prefix /opt/env [--name nodelab]
    python -m nodelab.jupyter.kernelspec list
    python -m nodelab.jupyter.kernelspec uninstall [--sys-prefix | --user | --prefix P]

The kernel it installs is ``python -m nodelab.jupyter.kernel -f {connection_file}``:
ipykernel with the ``nodelab`` extension loaded (see :mod:`nodelab.jupyter.kernel`).
Jupyter replaces ``python`` by the interpreter that launches the kernel, so install it
with ``--sys-prefix`` into the environment that has nodelab: Jupyter started from that
environment then runs the kernel with it. Without an option, ``install`` picks
``--sys-prefix`` inside a virtual environment and ``--user`` otherwise.

The spec's files are ``kernels/nodelab/`` in the source tree (kernel.json and the logo);
an installed nodelab without that directory writes the same kernel.json from
:func:`kernel_json` (without the logo).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DISPLAY_NAME", "KERNEL_NAME", "install", "installed_specs", "kernel_json",
           "main", "uninstall"]

KERNEL_NAME = "nodelab"
DISPLAY_NAME = "Python 3 (nodelab)"
ARGV = ["python", "-m", "nodelab.jupyter.kernel", "-f", "{connection_file}"]
#: kernels/nodelab in a source checkout (also what an editable install sees).
SOURCE_DIR = Path(__file__).resolve().parents[2] / "kernels" / KERNEL_NAME


def kernel_json(display_name: str = DISPLAY_NAME) -> dict[str, Any]:
    """The kernel.json of the nodelab kernel.

    ``metadata`` is the installed ipykernel's own (the debugger, CurveZMQ encryption), so
    the spec never claims what the kernel cannot do.
    """
    from .node_kernels import ipykernel_metadata

    return {
        "argv": list(ARGV),
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": ipykernel_metadata(),
    }


def _destination(user: bool, sys_prefix: bool, prefix: str | None) -> tuple[bool, str | None]:
    if sum(bool(x) for x in (user, sys_prefix, prefix)) > 1:
        raise ValueError("choose one of user=True, sys_prefix=True and prefix=...")
    if sys_prefix:
        return False, sys.prefix
    if prefix:
        return False, prefix
    if user:
        return True, None
    # Nothing chosen: never the system-wide directory (it needs root and outlives venvs).
    in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
    return (False, sys.prefix) if in_venv else (True, None)


def install(*, user: bool = False, sys_prefix: bool = False, prefix: str | None = None,
            name: str = KERNEL_NAME, display_name: str = DISPLAY_NAME) -> Path:
    """Install the kernelspec; returns the directory it was installed to.

    Replaces an older nodelab spec of the same name at that place.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    as_user, where = _destination(user, sys_prefix, prefix)
    with tempfile.TemporaryDirectory() as staging:
        source = Path(staging) / name
        if SOURCE_DIR.is_dir():
            shutil.copytree(SOURCE_DIR, source)
        else:
            source.mkdir()
        spec = kernel_json(display_name)
        (source / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
        installed = KernelSpecManager().install_kernel_spec(
            str(source), kernel_name=name, user=as_user, prefix=where)
    return Path(installed)


def _kernels_dir(user: bool, sys_prefix: bool, prefix: str | None) -> Path:
    from jupyter_core.paths import jupyter_data_dir

    as_user, where = _destination(user, sys_prefix, prefix)
    if as_user:
        return Path(jupyter_data_dir()) / "kernels"
    return Path(where or sys.prefix) / "share" / "jupyter" / "kernels"


def uninstall(*, user: bool = False, sys_prefix: bool = False, prefix: str | None = None,
              name: str = KERNEL_NAME, anywhere: bool = False) -> Path | None:
    """Remove the kernelspec ``name``; returns where it was, or None if it was not there.

    With ``anywhere=True`` the first one Jupyter finds is removed, wherever it is.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    if anywhere:
        try:
            return Path(KernelSpecManager().remove_kernel_spec(name))
        except (NoSuchKernel, KeyError):
            return None
    path = _kernels_dir(user, sys_prefix, prefix) / name
    if not path.is_dir():
        return None
    shutil.rmtree(path)
    return path


def installed_specs() -> dict[str, dict[str, Any]]:
    """Every kernelspec Jupyter can see that runs the nodelab kernel: name -> info."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = {}
    for name, info in KernelSpecManager().get_all_specs().items():
        argv = info.get("spec", {}).get("argv", [])
        if "nodelab.jupyter.kernel" in argv:
            found[name] = info
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nodelab.jupyter.kernelspec",
        description="Install the nodelab Jupyter kernel (one kernel = one node).")
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("install", "install the kernelspec"),
                          ("uninstall", "remove the kernelspec")):
        sub = commands.add_parser(command, help=text)
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--user", action="store_true",
                           help="your Jupyter data directory (~/.local/share/jupyter)")
        where.add_argument("--sys-prefix", action="store_true",
                           help=f"this environment ({sys.prefix})")
        where.add_argument("--prefix", help="another environment's prefix")
        sub.add_argument("--name", default=KERNEL_NAME, help="kernel name (default: nodelab)")
        if command == "install":
            sub.add_argument("--display-name", default=DISPLAY_NAME,
                             help=f"name shown in JupyterLab (default: {DISPLAY_NAME!r})")
    commands.add_parser("list", help="show the installed nodelab kernelspecs")
    args = parser.parse_args(argv)

    if args.command == "install":
        path = install(user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix,
                       name=args.name, display_name=args.display_name)
        print(f"installed kernelspec {args.name} ({args.display_name!r}) in {path}")
        return 0
    if args.command == "uninstall":
        chosen = args.user or args.sys_prefix or args.prefix
        path = uninstall(user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix,
                         name=args.name, anywhere=not chosen)
        if path is None:
            print(f"no kernelspec named {args.name} there: `python -m nodelab.jupyter.kernelspec "
                  "list` shows where they are", file=sys.stderr)
            return 1
        print(f"removed kernelspec {args.name} from {path}")
        return 0
    specs = installed_specs()
    if not specs:
        print("no nodelab kernelspec is installed: run `python -m nodelab.jupyter.kernelspec "
              "install --sys-prefix`")
        return 0
    for name, info in sorted(specs.items()):
        print(f"{name:12} {info['spec'].get('display_name', ''):24} {info['resource_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
