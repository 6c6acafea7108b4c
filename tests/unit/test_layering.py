"""Architecture rules from DESIGN.md: no Prefect under ``mlcanary/``; importing has no side effects."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "mlcanary"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__") for path in SOURCES
)


def _is_prefect(module: str | None) -> bool:
    return module is not None and (module == "prefect" or module.startswith("prefect."))


def _imported_names(node: ast.AST) -> list[str]:
    """Absolute module names an AST node imports (``import_module("x")`` / ``__import__("x")`` too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module] if node.level == 0 and node.module else []
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def prefect_imports(source: str) -> list[int]:
    """Line numbers of every import of ``prefect`` (static, or by name through importlib)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if any(_is_prefect(name) for name in _imported_names(node))
    ]


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import prefect", True),
        ("import prefect.flows", True),
        ("import os, prefect.client.schemas as s", True),
        ("from prefect import flow", True),
        ("from prefect.tasks import task", True),
        ("def f():\n    from prefect import get_run_logger\n", True),
        ("if TYPE_CHECKING:\n    import prefect\n", True),
        ("import importlib\nimportlib.import_module('prefect.deployments')", True),
        ("__import__('prefect')", True),
        ("import prefectural", False),
        ("from prefect_helpers import x", False),
        ("from mlcanary import prefect_like", False),
        ("text = 'import prefect'", False),
        ("# import prefect", False),
    ],
)
def test_prefect_import_detector(source: str, found: bool) -> None:
    assert bool(prefect_imports(source)) is found


def test_package_sources_are_found() -> None:
    names = {path.relative_to(PACKAGE).as_posix() for path in SOURCES}
    assert {"__init__.py", "config.py", "data/loader.py", "data/synthetic.py"} <= names
    assert "mlcanary.data.loader" in MODULES
    assert "mlcanary" in MODULES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_prefect_import_under_mlcanary(path: Path) -> None:
    lines = prefect_imports(path.read_text(encoding="utf-8"))
    assert not lines, f"{path.relative_to(REPO_ROOT)} imports prefect on line(s) {lines} (see DESIGN.md)"


def test_ruff_bans_prefect_outside_tasks_and_flows() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lint = config["tool"]["ruff"]["lint"]
    banned = lint["flake8-tidy-imports"]["banned-api"]
    assert "prefect" in banned
    assert "TID" in lint["select"] or "TID251" in lint["select"]
    ignores = lint.get("per-file-ignores", {})
    for pattern, rules in ignores.items():
        if "TID251" in rules:
            assert not pattern.startswith("mlcanary"), pattern


_IMPORT_ALL = """
import importlib, json, sys, threading, traceback
errors = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        errors[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
print(json.dumps({
    "errors": errors,
    "threads": [t.name for t in threading.enumerate()],
    "active_count": threading.active_count(),
    "prefect": sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect.")),
}))
"""


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("import-cwd")
    home = tmp_path_factory.mktemp("import-home")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLCANARY_", "MLFLOW_", "PREFECT_"))
    }
    env.update(PYTHONPATH=str(REPO_ROOT), HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *MODULES],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["cwd_files"] = _files_under(cwd)
    report["home_files"] = _files_under(home)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_module_imports(imported: dict[str, Any], module: str) -> None:
    assert module not in imported["errors"], imported["errors"].get(module)


@pytest.mark.slow
def test_importing_creates_no_files(imported: dict[str, Any]) -> None:
    assert imported["cwd_files"] == []
    assert imported["home_files"] == []


@pytest.mark.slow
def test_importing_starts_no_threads(imported: dict[str, Any]) -> None:
    assert imported["active_count"] == 1, imported["threads"]


@pytest.mark.slow
def test_importing_mlcanary_does_not_load_prefect(imported: dict[str, Any]) -> None:
    assert imported["prefect"] == []
