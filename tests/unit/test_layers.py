"""The package's imports point down only (docs/layers.md): a layer never imports one above it, and no two
modules import each other, directly or round a longer loop. Imports inside functions and under TYPE_CHECKING
count too: deferring an import hides a cycle, it does not remove it. Imports under `if TYPE_CHECKING:` count
for the direction (a type from above is still an arrow up) but not for cycles (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "wgmagic"

# Lowest first. A module may import its own layer and the layers below it. Within one layer, only the
# cycle check applies. Keep in step with docs/layers.md.
LAYERS: list[tuple[str, ...]] = [
    ("wgmagic._version", "wgmagic.errors", "wgmagic.explain"),
    ("wgmagic.addresses", "wgmagic.config", "wgmagic.connstr", "wgmagic.files", "wgmagic.platform", "wgmagic.via"),
    ("wgmagic.wireguard", "wgmagic.netstack", "wgmagic.proto"),
    ("wgmagic.runtime",),
    ("wgmagic.sql",),
    ("wgmagic.tools",),
    ("wgmagic.notebook",),
    ("wgmagic.demo",),
    ("wgmagic.cli", "wgmagic.__main__"),
    ("wgmagic",),  # the package's own __init__: the extension hook and the lazy public names
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def rank(module: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS and docs/layers.md"
    return best


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def imports_of(module: str, *, runtime_only: bool = False) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = _type_checking_nodes(tree) if runtime_only else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("wgmagic") and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}
RUNTIME_GRAPH = {module: imports_of(module, runtime_only=True) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        rank(module)


def test_imports_point_down() -> None:
    upward = sorted(f"{m} -> {i}" for m, targets in GRAPH.items() for i in targets if rank(i) > rank(m))
    assert not upward, "imports that point up a layer:\n  " + "\n  ".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles() -> None:
    cycles = _cycles(RUNTIME_GRAPH)
    assert not cycles, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


CORES = ("wgmagic.wireguard", "wgmagic.netstack", "wgmagic.proto")


def core_type_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The cores' imports with the TYPE_CHECKING ones counted. One kind of type-only import is left out: an
    events module's, whose records name the objects they are about (an event carries its connection; it never
    calls it). Any other type-only import that closes a loop is a circle a small Protocol should open, as
    tcp/listener.py's ListenerHost opens the one between the listener and the stack."""
    cores = {m for m in graph if m.startswith(tuple(p + "." for p in CORES)) or m in CORES}
    typed = {m: {t for t in graph[m] if t in cores} for m in cores}
    for module in typed:
        if module.rpartition(".")[2] == "events":
            typed[module] &= RUNTIME_GRAPH[module]
    return typed


def test_no_type_level_cycles_in_the_cores() -> None:
    """The sans-I/O cores have no circle even at the type level (a module typed by another that is typed by it,
    as the TCP listener once named the Stack whose private members it called, and wireguard/admission.py and
    expiry.py the Device: each now names what it uses in a Protocol, ListenerHost, AdmissionHost, ExpiryHost)."""
    cycles = _cycles(core_type_graph(GRAPH))
    assert not cycles, "type-level import cycles in the cores:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


def test_the_type_level_check_sees_a_type_only_circle() -> None:
    """The check itself: a listener that names its stack under TYPE_CHECKING is a circle (the runtime check,
    which skips TYPE_CHECKING imports, would not see it)."""
    graph = {m: set(t) for m, t in GRAPH.items()}
    graph["wgmagic.netstack.tcp.listener"].add("wgmagic.netstack.stack")
    assert any("wgmagic.netstack.tcp.listener" in c and "wgmagic.netstack.stack" in c
               for c in _cycles(core_type_graph(graph)))


def test_nothing_at_the_top_that_belongs_to_a_layer() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    allowed = {"__init__", "__main__", "_version", "addresses", "cli", "config", "connstr", "errors", "explain",
               "files", "platform", "via"}
    assert top <= allowed, f"modules at the top that belong to a layer: {sorted(top - allowed)}"
