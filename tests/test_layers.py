"""The package's layers (README "Where things are"): every module imports only from its own layer or the layers
below it, folders of the same rank do not import each other, and no modules import each other in a cycle.
Imports inside function bodies count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "listopd"

# folder (or top-level module) -> rank; a module may import ranks <= its own, same-rank folders only itself
RANKS = {"util": 0, "core": 1, "task": 2, "train": 3, "grading": 3, "serving": 4, "experiment": 4,
         "commands": 5, "cli": 6, "__main__": 7, "__init__": 7}
ROOT_NAMES = {"__version__", "__doc__"}  # what any layer may take from the package root itself


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported listopd module) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "listopd"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "listopd":
            if node.module == "listopd":  # `from listopd import x`: x is a submodule or a root name
                for a in node.names:
                    if a.name not in ROOT_NAMES:
                        out.append((node.lineno, f"listopd.{a.name}"))
            else:
                out.append((node.lineno, node.module))
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, p in modules.items():
        for _, target in imports(p):
            while target not in modules and "." in target:  # `from listopd.x.y import name` names module x.y
                target = target.rsplit(".", 1)[0]
            if target != m and target in modules:
                edges[m].add(target)
    return edges


def test_every_folder_has_a_rank():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert folders | top <= set(RANKS), f"give these a rank in RANKS: {sorted((folders | top) - set(RANKS))}"


def test_imports_point_down_the_layers():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        here = module_name(path)
        for line, target in imports(path):
            if target == "listopd" and layer(here) != "__init__":
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: imports the package root (lazy public API)")
                continue
            if target == "listopd":
                continue
            a, b = layer(here), layer(target)
            if RANKS[b] > RANKS[a] or (RANKS[b] == RANKS[a] and a != b):
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: {a} (rank {RANKS[a]}) imports {target} "
                           f"({b}, rank {RANKS[b]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    edges = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"modules importing each other in a cycle: {cycles}"


def test_the_checker_sees_a_violation(tmp_path):
    """The checks above are not vacuous: an upward import and a lazy import inside a function are found."""
    bad = tmp_path / "probe.py"
    bad.write_text("def f():\n    from listopd.train.opd import run_opd\n", encoding="utf-8")
    assert imports(bad) == [(2, "listopd.train.opd")]
    assert layer("listopd.core.theory") == "core" and RANKS[layer("listopd.train.opd")] > RANKS["core"]
    assert len(graph()) > 40 and any(graph().values())
