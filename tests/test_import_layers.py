"""nodelab's import graph keeps its layers: ``lint-imports`` with pyproject's contracts.

``[tool.importlinter]`` in pyproject.toml says, top to bottom: the tools and the Jupyter
integration, the pictures, OTP, ``Node``, the distribution, the runtime (a node's inside),
the errors; a layer imports only the layers below it (also through a chain of imports, also
inside a function). The second test proves the check can fail at all: a tiny package with a
broken layer is reported as broken.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120

#: import-linter's console script, run with this interpreter (no PATH or venv layout needed).
LINT_IMPORTS = [sys.executable, "-c",
                "from importlinter.cli import lint_imports_command; lint_imports_command()"]


def lint_imports(config: Path, cwd: Path, *, pythonpath: Path | None = None
                 ) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    # --no-cache: nothing written into the checkout (the cache would be .import_linter_cache/).
    return subprocess.run([*LINT_IMPORTS, "--no-cache", "--no-logo", str(config)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_nodelab_keeps_its_import_contracts() -> None:
    checked = lint_imports(ROOT / "pyproject.toml", ROOT)
    assert "Contracts:" in checked.stdout, checked.stdout + checked.stderr
    assert checked.returncode == 0, (
        "an import breaks nodelab's layers (pyproject.toml, [tool.importlinter]):\n"
        + checked.stdout + checked.stderr)
    assert " 0 broken" in checked.stdout


def test_a_broken_layer_is_reported(tmp_path: Path) -> None:
    package = tmp_path / "fakelab"
    for name, source in {
        "__init__.py": "",
        "errors.py": "",
        "runtime.py": "from fakelab import errors\n",
        # The runtime must not know the node above it; here, inside a function, it does.
        "node.py": "from fakelab import runtime\n",
        "dist.py": "def later():\n    from fakelab import node\n",
    }.items():
        package.mkdir(exist_ok=True)
        (package / name).write_text(source)
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""\
        [tool.importlinter]
        root_package = "fakelab"

        [[tool.importlinter.contracts]]
        name = "fakelab layers"
        type = "layers"
        containers = ["fakelab"]
        layers = ["node", "runtime", "dist", "errors"]
        """))
    checked = lint_imports(config, tmp_path, pythonpath=tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "fakelab layers BROKEN" in checked.stdout, checked.stdout
    assert "fakelab.dist is not allowed to import fakelab.node" in checked.stdout
    assert "fakelab.dist -> fakelab.node (l.2)" in checked.stdout
