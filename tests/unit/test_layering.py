"""Architecture rules: the allowed import directions between packages (the table in
docs/architecture.md), a pure core, no Prefect under ``mlcanary/``, importing has no side effects."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
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


# -- the allowed directions between packages ----------------------------------------------------

ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
CORE = "rollout"
CORE_THIRD_PARTY = frozenset({"numpy", "scipy", "pydantic"})
"""Besides the standard library, the only libraries the pure core may import."""
EVERYTHING = "every package but `testing`"


def allowed_directions(markdown: str) -> dict[str, frozenset[str]]:
    """The table between ``<!-- layers:start -->`` and ``<!-- layers:end -->``: package → the
    ``mlcanary`` packages it may import."""
    block = markdown.split("<!-- layers:start -->", 1)[1].split("<!-- layers:end -->", 1)[0]
    rows = [line for line in block.strip().splitlines()[2:] if line.startswith("|")]
    table = {}
    for row in rows:
        package_cell, allowed_cell = (cell.strip() for cell in row.strip("|").split("|"))
        table[package_cell.strip("`")] = frozenset(re.findall(r"`([a-z_]+)`", allowed_cell))
    packages = frozenset(table)
    for row in rows:
        package_cell, allowed_cell = (cell.strip() for cell in row.strip("|").split("|"))
        if allowed_cell == EVERYTHING:
            table[package_cell.strip("`")] = packages - {"testing", package_cell.strip("`")}
    return table


def package_of(module: str) -> str | None:
    """The top-level package of an ``mlcanary`` module (``mlcanary.rollout.decide`` → ``rollout``;
    a flat module is its own package), or None for anything outside ``mlcanary``."""
    parts = module.split(".")
    if parts[0] != "mlcanary":
        return None
    return parts[1] if len(parts) > 1 else "mlcanary"


def imports_of(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``source``: at the top, inside functions and under
    ``TYPE_CHECKING`` alike; ``from mlcanary import x`` counts as ``mlcanary.x``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "mlcanary":
            for alias in node.names:
                yield node.lineno, f"mlcanary.{alias.name}"
            continue
        for name in _imported_names(node):
            yield node.lineno, name


def layering_violations(package: str, source: str, table: dict[str, frozenset[str]]) -> list[str]:
    """Why ``source`` (a module of ``package``) breaks the rules, one line per import."""
    found = []
    for line, module in imports_of(source):
        top = module.split(".")[0]
        if top in ("tasks", "flows"):
            found.append(f"line {line}: {module} (the Prefect layers sit above mlcanary)")
            continue
        target = package_of(module)
        if package == CORE and target is None and top not in sys.stdlib_module_names | CORE_THIRD_PARTY:
            found.append(f"line {line}: {module} (the core imports only the stdlib, numpy, scipy, pydantic)")
        if target is None or target == package:
            continue
        if target not in table.get(package, frozenset()):
            found.append(f"line {line}: {module} ({package} may not import {target})")
    return found


TABLE = allowed_directions(ARCHITECTURE.read_text(encoding="utf-8"))


def test_the_table_covers_every_package_and_the_core_imports_nothing() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    packages |= {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert packages == set(TABLE), "docs/architecture.md's table must list exactly the packages of mlcanary/"
    assert TABLE[CORE] == frozenset()
    assert not any("testing" in allowed for name, allowed in TABLE.items() if name != "testing")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_imports_follow_the_allowed_directions(path: Path) -> None:
    package = package_of(".".join(path.relative_to(REPO_ROOT).with_suffix("").parts))
    assert package is not None
    problems = layering_violations(package, path.read_text(encoding="utf-8"), TABLE)
    assert not problems, f"{path.relative_to(REPO_ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("package", "source", "broken"),
    [
        ("rollout", "from mlcanary.registry.mlflow_registry import MlflowRegistry", True),
        ("rollout", "def f():\n    from mlcanary.serving.local.backend import LocalBackend\n", True),
        ("rollout", "if TYPE_CHECKING:\n    from mlcanary.telemetry.store import InferenceLogStore\n", True),
        ("rollout", "import mlflow", True),
        ("rollout", "from sqlalchemy import select", True),
        ("rollout", "import httpx", True),
        ("rollout", "from mlcanary import config", True),
        ("rollout", "import numpy as np\nfrom scipy import stats\nfrom pydantic import BaseModel", False),
        ("rollout", "import json, math\nfrom mlcanary.rollout.state import Phase", False),
        ("telemetry", "from mlcanary.serving.local.stack import up", True),
        ("registry", "from mlcanary.telemetry.store import InferenceLogStore", True),
        ("serving", "from mlcanary.registry.protocol import ModelRegistry", False),
        ("platform", "import mlcanary.cli.main", True),
        ("wiring", "from mlcanary.testing.fakes import FakeWorld", True),
        ("demo", "import tasks.rollout", True),
        ("cli", "from mlcanary import platform", False),
        ("testing", "from mlcanary.registry.protocol import NewVersion", False),
        ("rollout", "from mlcanary.telemetry.prometheus import PrometheusMetricsSource", True),
        ("telemetry", "from mlcanary.serving.kserve.backend import KServeBackend", True),
        ("telemetry", "from mlcanary.config import PrometheusSettings", False),
        ("serving", "from mlcanary.telemetry.events import InferenceEvent", False),
        ("serving", "from mlcanary.rollout.arms import CANDIDATE, CHAMPION, Arm", False),
        ("serving", "from mlcanary.wiring import serving_backend", True),
    ],
)
def test_layering_detector(package: str, source: str, broken: bool) -> None:
    assert bool(layering_violations(package, source, TABLE)) is broken


def documented_files(markdown: str) -> set[str]:
    """Paths relative to ``mlcanary/`` named in the first cell of the page's tables: a section headed
    ``## `mlcanary/<package>/` …`` names its files relative to that package (or with it), the
    others relative to ``mlcanary/``."""
    found: set[str] = set()
    prefix = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = re.match(r"^## `mlcanary/([a-z_/]+)/`", line)
            prefix = heading.group(1) + "/" if heading else ""
        elif line.startswith("| `"):
            names = re.findall(r"`([^`]+)`", line.split("|")[1])
            found |= {name if name.startswith(prefix) else prefix + name for name in names}
    return found


def test_the_architecture_page_lists_every_module_by_file() -> None:
    documented = documented_files(ARCHITECTURE.read_text(encoding="utf-8"))
    missing = [
        path.relative_to(PACKAGE).as_posix()
        for path in SOURCES
        if path.name != "__init__.py" and path.relative_to(PACKAGE).as_posix() not in documented
    ]
    assert not missing, f"docs/architecture.md does not list: {', '.join(missing)}"


def test_the_file_list_reader_resolves_package_sections() -> None:
    markdown = (
        "## `mlcanary/rollout/` — the core\n\n| file | what |\n|---|---|\n| `arms.py` | arms |\n\n"
        "| `rollout/ports.py` | ports |\n\n"
        "## Adapters\n\n| file | what |\n|---|---|\n| `serving/kserve/arms.py` | pods → arms |\n"
    )
    assert documented_files(markdown) == {"rollout/arms.py", "rollout/ports.py", "serving/kserve/arms.py"}


def test_the_table_parser_reads_every_row() -> None:
    markdown = (
        "<!-- layers:start -->\n| package | may import |\n|---|---|\n| `a` | nothing |\n"
        "| `b` | `a` |\n| `c` | every package but `testing` |\n| `testing` | `a`, `b` |\n<!-- layers:end -->"
    )
    assert allowed_directions(markdown) == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a", "b"}),
        "testing": frozenset({"a", "b"}),
    }


# -- no Prefect under mlcanary/ -----------------------------------------------------------------


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
    assert {
        "__init__.py",
        "config/__init__.py",
        "config/sections.py",
        "data/loader.py",
        "data/synthetic.py",
    } <= names
    assert "mlcanary.data.loader" in MODULES
    assert "mlcanary" in MODULES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_no_prefect_import_under_mlcanary(path: Path) -> None:
    lines = prefect_imports(path.read_text(encoding="utf-8"))
    assert not lines, (
        f"{path.relative_to(REPO_ROOT)} imports prefect on line(s) {lines} (see docs/architecture.md)"
    )


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
