"""The layers of ARCHITECTURE.md, checked on the source: what may import what, no cycles, and
modules small enough to read."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "operators", "cs3f", "cs3f_tools")
SDK = ("monai", "holoscan")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the modules it imports (anywhere in the file, functions included)."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            names = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names |= {f"{node.module}.{alias.name}" for alias in node.names}
            graph[_module_name(path)] = names
    return graph


GRAPH = _imports()


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("cs3f", {"app", "operators", "cs3f_tools", *SDK}),
        ("operators", {"app", "cs3f_tools"}),
        ("app", {"cs3f_tools"}),
    ],
)
def test_arrows_point_down(layer, forbidden):
    wrong = {
        (module, name)
        for module, names in GRAPH.items()
        if _top(module) == layer
        for name in names
        if _top(name) in forbidden
    }
    assert not wrong


def test_no_import_cycle():
    modules = set(GRAPH)
    edges = {m: {n for n in GRAPH[m] if n in modules and n != m} for m in modules}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            assert state.get(target) != 1, f"cycle: {' -> '.join(path + [module, target])}"
            if target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])


def test_modules_stay_readable():
    long = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long
