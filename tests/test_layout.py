"""The house rules of the package's layout: small modules, no hidden imports, commands as leaves, layers as declared
in .importlinter (which `make lint` also checks)."""
from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from .helpers import ROOT

PACKAGE = ROOT / "trainer"
MODULES = sorted(PACKAGE.rglob("*.py"))
# `python -m trainer.X` and the root scripts: each passes straight on to its command in trainer/commands/.
DOORS = [PACKAGE / "evaluate.py", PACKAGE / "export.py", PACKAGE / "benchmark.py", PACKAGE / "plot.py",
         PACKAGE / "predict.py", PACKAGE / "push.py", PACKAGE / "study" / "__main__.py",
         PACKAGE / "study" / "report.py", ROOT / "train_cls.py", ROOT / "train_kd.py"]


def _own_module(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "trainer"
    return any(alias.name.split(".")[0] == "trainer" for alias in node.names)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small_and_import_the_package_at_the_top(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 300, f"{path.name} has over 300 lines: split it by job"
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name != "main":
            hidden = [n.lineno for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)) and _own_module(n)]
            assert not hidden, f"{path.name}:{hidden[0]}: {fn.name} imports the package inside a function"


@pytest.mark.parametrize("door", DOORS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_door_passes_straight_to_a_command(door):
    tree = ast.parse(door.read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [n.module for n in imports if isinstance(n, ast.ImportFrom)] == [imports[0].module]
    assert str(imports[0].module).startswith("trainer.commands.") and len(tree.body) <= 3


def test_every_command_module_has_a_main_or_a_training_entry():
    for path in sorted((PACKAGE / "commands").glob("*.py")):
        if path.name == "__init__.py":
            continue
        names = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert names & {"main", "main_cls"}, f"{path.name} is in commands/ but has no entry point"


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is not installed "
                    "(pip install import-linter, or the dev extra)")
def test_the_layers_hold():
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or "lint-imports"
    res = subprocess.run([exe, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
