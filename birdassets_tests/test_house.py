"""The shape of the code, checked: no import cycles, short functions, thin assets, one home per concept.

These read the package's source with ``ast`` (nothing is imported), so they run in a second.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "birdassets"
MAX_FUNCTION_LINES = 80
MAX_ASSET_LINES = 25


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def module_level_imports(name: str, tree: ast.Module, modules: set[str]) -> set[str]:
    """birdassets modules imported when ``name`` is imported (function-level and TYPE_CHECKING imports excluded)."""
    found = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or is_type_checking_block(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}  # imported first anyway
    return {target for target in found if target in modules and target != name and target not in ancestors}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    for start in sorted(graph):
        if state[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state[child] == 1:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def import_graph() -> dict[str, set[str]]:
    trees = sources()
    return {name: module_level_imports(name, tree, set(trees)) for name, tree in trees.items()}


def package_of(module: str) -> str:
    """``birdassets.models.vit.network`` -> ``birdassets.models``; top-level modules are their own unit."""
    return ".".join(module.split(".")[:2])


def test_no_module_imports_itself_back():
    assert find_cycle(import_graph()) is None


def test_no_package_imports_itself_back():
    """Collapsed to first-level packages (models, checkpoints, sources, store, ...), imports form no cycle
    (the old models.registry -> checkpoints -> models.vit loop)."""
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        if module == "birdassets":
            continue
        packages[package_of(module)].update(package_of(t) for t in targets if package_of(t) != package_of(module))
    packages = {name: {t for t in targets if t != "birdassets"} for name, targets in packages.items()}
    assert find_cycle(packages) is None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def functions(tree: ast.Module):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def length(node: ast.AST) -> int:
    return node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_80_lines():
    long = [f"{module}.{node.name}: {length(node)} lines" for module, tree in sources().items()
            for node in functions(tree) if length(node) > MAX_FUNCTION_LINES]
    assert long == []


def is_asset(node: ast.FunctionDef) -> bool:
    return any(ast.unparse(d.func if isinstance(d, ast.Call) else d) in ("dg.asset", "asset")
               for d in node.decorator_list)


def test_every_asset_body_calls_a_step_in_at_most_25_lines():
    assets = [(module, node) for module, tree in sources().items() if module.startswith("birdassets.defs")
              for node in functions(tree) if is_asset(node)]
    assert {node.name for _, node in assets} >= {"raw_audio", "mel_dataset", "folds", "encoder", "embeddings",
                                                   "probe", "scores", "metrics_db", "detections"}
    too_long = [f"{module}.{node.name}: {length(node)}" for module, node in assets if length(node) > MAX_ASSET_LINES]
    assert too_long == []
    for module, node in assets:
        assert "steps." in ast.unparse(node), f"{module}.{node.name} does not call a step"


def test_the_core_imports_no_dagster():
    dagster_users = sorted(module for module, tree in sources().items()
                           if not module.startswith(("birdassets.defs", "birdassets.definitions", "birdassets.cli"))
                           and any(isinstance(n, (ast.Import, ast.ImportFrom)) and "dagster" in ast.unparse(n)
                                   for n in ast.walk(tree)))
    assert dagster_users == []


@pytest.mark.parametrize("pair", [("bench", "benchmark"), ("embed", "embeddings"), ("detect", "detection")])
def test_no_two_modules_differ_by_a_suffix(pair):
    stems = {path.stem for path in PACKAGE.rglob("*.py")} | {path.name for path in PACKAGE.rglob("*") if path.is_dir()}
    assert not set(pair) <= stems


def test_module_names_are_not_look_alikes():
    """No module or package name is another's name plus a suffix (bench/benchmark, embed/embeddings)."""
    names = {path.stem for path in PACKAGE.rglob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in PACKAGE.rglob("*") if path.is_dir() and path.name != "__pycache__"}
    clashes = sorted((a, b) for a in names for b in names if a != b and b.startswith(a) and len(a) >= 4)
    assert clashes == []
