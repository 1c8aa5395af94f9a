"""The dependency rules of ARCHITECTURE.md hold: `lint-imports` (import-linter, contracts in
pyproject.toml's [tool.importlinter]) run as CI runs it, from this venv, on the real tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_layering_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), "import-linter is not installed: pip install -e '.[test]'"
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def function_level_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of worker code made inside a function or class body:
    the way an import cycle hides from the module graph until it is called."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
            if inner and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names if alias.name.startswith("workers"))
            elif inner and isinstance(child, ast.ImportFrom) and (child.module or "").startswith("workers"):
                found.append((child.lineno, child.module or ""))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def test_the_scan_finds_a_function_level_import_of_worker_code() -> None:
    source = "import workers.app\ndef f():\n    from workers.gpu import GpuRunner\n    import os\n"
    assert function_level_imports(source) == [(3, "workers.gpu")]


def test_worker_code_imports_worker_code_only_at_module_level() -> None:
    # Deferred imports of worker modules hid the app -> resources -> moderation -> app cycle
    # from import-linter's view of start-up order; what only one worker kind loads (torch,
    # via workers.gpu) is chosen by the process's entry point instead (workers.gpu_worker).
    found = {
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / "workers").rglob("*.py"))
        for line, module in function_level_imports(path.read_text())
    }
    assert not found, sorted(found)
