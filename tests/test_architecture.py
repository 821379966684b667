"""The package picture of docs/architecture.md, checked: imports flow one way, never in a circle.

Each top-level package is one program of the lab (or a layer every program shares), and may
import only the layers below its own: ``telemetry`` nothing of ours, ``core`` telemetry, the
programs the core, the supervisor the programs' seeding, and the dashboard, the bench and the CLI
everything beneath them. Two programs of one layer never import each other. The imports are read
from the source (``ast``), lazily placed ones included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORT_ROOT = "latency_lab"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("telemetry",),
    ("core",),
    ("service", "edge", "simulator"),
    ("worker", "seed"),
    ("lab",),
    ("dashboard", "benchmarks"),
    ("cli",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
BARE_NAMES = set(LAYER_OF)  # our folders, imported without latency_lab.
MAX_LINES = 500


def _python_files(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            if node.module == IMPORT_ROOT:  # from latency_lab import telemetry
                for alias in node.names:
                    yield node.lineno, f"{IMPORT_ROOT}.{alias.name}"


def _our_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == IMPORT_ROOT and len(parts) > 1:
        return parts[1]
    return None


def test_every_package_is_in_the_picture() -> None:
    linked = {p.name for p in (ROOT / IMPORT_ROOT).iterdir() if p.is_symlink()}
    assert linked == set(LAYER_OF)
    for name in linked:
        assert (ROOT / IMPORT_ROOT / name).resolve() == ROOT / name


@pytest.mark.parametrize("package", sorted(LAYER_OF))
def test_imports_flow_down_the_layers(package: str) -> None:
    level = LAYER_OF[package]
    wrong = []
    for path in _python_files(package):
        for line, module in _imported_modules(path):
            target = _our_package(module)
            if target is None or target == package:
                continue
            if LAYER_OF[target] >= level:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert wrong == [], f"{package} (layer {level}) may import only layers below it"


@pytest.mark.parametrize("folder", sorted([*LAYER_OF, "tests"]))
def test_our_code_is_imported_by_its_distinctive_name(folder: str) -> None:
    """``import service`` would be a second copy of a module (or someone else's package)."""
    bare = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _python_files(folder)
        if "user_projects" not in path.parts and "sample_app" not in path.parts
        for line, module in _imported_modules(path)
        if module.split(".")[0] in BARE_NAMES
    ]
    assert bare == []


def test_no_module_is_several_modules() -> None:
    """Files over 500 lines are split by what they do (a docstring may say why not)."""
    long = {
        str(path.relative_to(ROOT)): count
        for package in LAYER_OF
        for path in _python_files(package)
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
