"""The shape of the code: imports run one way, from start-up down to the components, and
never in a circle (function-local imports included); benchmarks stand alone.

Layers, lowest first (a module may import its own layer and the ones below it):

    0  models, losses                 plain nn.Modules: no trainer, no Hydra
    1  trainer.config                 the schemas: nothing from the project
    2  trainer (top level), trainer.data, trainer.search
                                      what every folder uses
    3  trainer.loop                   the loop and the components that own their cadence
    4  trainer.run, trainer.inference one run start to finish; what uses a checkpoint
    5  trainer.experiments            identity, plans, locks, the runs index
    6  trainer.launch                 Hydra start-up and callbacks
    7  trainer.__main__ and the `python -m trainer.<tool>` entry points
    8  sweeps (reports, Hydra plugins) what looks across runs
    9  benchmarks                     each one on its own, sharing benchmarks.common only
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "losses", "trainer", "sweeps", "benchmarks")
# the `python -m` entry points, and the runs CLI they start (it composes configs: start-up)
ENTRY_POINTS = {
    "trainer.__main__", "trainer.evaluate", "trainer.enhance", "trainer.export", "trainer.runs",
    "trainer.experiments.cli",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if "hydra_plugins" in parts:  # Hydra imports its plugins as hydra_plugins.<name>
        parts = parts[parts.index("hydra_plugins") :]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = project_modules()


def resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str) -> set[str]:
    """Every project module `name` imports, at any depth of its code (function-local too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base]) if base else ".".join(up)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            hit = resolve(target)
            if hit and hit != name and not name.startswith(hit + "."):
                found.add(hit)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> int:
    top = name.split(".")[0]
    if top in ("models", "losses"):
        return 0
    if top in ("sweeps", "hydra_plugins"):
        return 8
    if top == "benchmarks":
        return 9
    if name in ENTRY_POINTS:
        return 7
    if name == "trainer.config":
        return 1
    second = name.split(".")[1] if name.count(".") else ""
    return {"loop": 3, "run": 4, "inference": 4, "experiments": 5, "launch": 6}.get(second, 2)


def circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_the_project():
    # a walker that found nothing would pass every check below
    assert "trainer.loop.engine" in MODULES and "trainer.config" in MODULES
    assert "trainer.loop.engine" in GRAPH["trainer.run"]


def test_no_import_circle():
    assert circles() == []


def test_config_imports_nothing_from_the_project():
    assert GRAPH["trainer.config"] == set()


def test_imports_run_down_the_layers():
    upward = sorted(
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if layer(b) > layer(a)
    )
    assert upward == []


def test_benchmarks_share_only_their_common_module():
    crossed = sorted(
        f"{a} imports {b}"
        for a, targets in GRAPH.items()
        if a.startswith("benchmarks.")
        for b in targets
        if b.startswith("benchmarks") and b != "benchmarks.common"
    )
    assert crossed == []


@pytest.mark.parametrize("test", sorted((ROOT / "tests").glob("*.py")), ids=lambda p: p.name)
def test_tests_import_no_benchmark(test):
    for node in ast.walk(ast.parse(test.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        assert not any(n == "benchmarks" or n.startswith("benchmarks.") for n in names), test.name


def test_every_folder_says_its_job():
    for init in sorted((ROOT / "trainer").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(ROOT)} has no docstring saying what the folder is for"
