"""Every `from lora_studio... import name` in the package and bench/ names something that exists.

Imports inside functions (kept lazy so the UI never loads torch) run only when their branch does, so a
name moved or renamed in a refactor fails at a user's click, or on a GPU path CI never takes. This walks
the source once and resolves each such name without running the function.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import lora_studio

ROOT = Path(lora_studio.__file__).parent


def _imports():
    for path in sorted(ROOT.parent.glob("bench/*.py")):  # scripts: their absolute imports only
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("lora_studio"):
                for alias in node.names:
                    yield f"{path.relative_to(ROOT.parent)}:{node.lineno}", node.module, alias.name
    for path in sorted(ROOT.rglob("*.py")):
        package = ".".join(("lora_studio", *path.relative_to(ROOT).with_suffix("").parts))
        if path.name != "__init__.py":
            package = package.rpartition(".")[0]
        else:
            package = package.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lora_studio")):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                for alias in node.names:
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", module, alias.name


def test_every_internal_import_resolves():
    missing = []
    for where, module, name in _imports():
        if module.endswith("__main__") or name == "*":
            continue
        mod = importlib.import_module(module)
        if hasattr(mod, name):
            continue
        try:
            importlib.import_module(f"{module}.{name}")
        except ImportError:
            missing.append(f"{where}: {module} has no {name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("module", ["lora_studio.engines", "lora_studio.services", "lora_studio.ui"])
def test_the_walk_sees_the_lazy_imports(module):
    assert any(m.startswith(module) for _, m, _ in _imports())
