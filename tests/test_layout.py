"""The folders along the data flow: each module imports only from the layers below its own
(the `[tool.importlinter]` contract in pyproject.toml, README "Layout"); training, the
independent reference, never imports the effective flow."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint(folder: str) -> subprocess.CompletedProcess:
    """import-linter on the package found first in `folder`, with the project's contract."""
    environment = {**os.environ, "PYTHONPATH": folder}
    command = [
        sys.executable,
        "-c",
        "from importlinter.cli import lint_imports_command; lint_imports_command()",
    ]
    return subprocess.run(
        [*command, "--no-cache", "--no-logo", os.path.join(ROOT, "pyproject.toml")],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, wrong_import, named",
    [
        ("_model/cost.py", "from .._run import files", "flowtrunc._model.cost -> flowtrunc._run.files"),
        (
            "_training/training.py",
            "from .._flow import field",
            "flowtrunc._training.training -> flowtrunc._flow.field",
        ),
        ("_flow/orbit.py", "from .. import _cli", "flowtrunc._flow.orbit -> flowtrunc._cli"),
    ],
)
def test_a_wrong_import_breaks_the_contract(tmp_path, module, wrong_import, named):
    copy = tmp_path / "flowtrunc"
    shutil.copytree(os.path.join(ROOT, "flowtrunc"), copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a") as f:
        f.write(f"\n{wrong_import}  # noqa\n")
    result = _lint(str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    assert named in result.stdout
