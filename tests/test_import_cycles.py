"""No import circle in zibrato/, counting imports under TYPE_CHECKING and inside functions.

A circle makes every module of it load (and be understood) with all the
others; ``listen/drain`` <-> ``listen/servers``, ``worker`` -> ``client`` (for
a type), ``client`` <-> ``instruments`` and the OpenTelemetry provider <->
its instruments (for the ``Meter`` type) were the last ones. ``from . import
x`` of a submodule imports the submodule, not a name of the package.
"""

from __future__ import annotations

import ast
import pathlib

from expecter import expect

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "zibrato"


def module_imports() -> dict[str, set[str]]:
    """Each zibrato module and the zibrato modules it imports (anywhere in it)."""
    paths = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.with_suffix("").relative_to(PACKAGE.parent).parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        paths[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                submodules = {f"{module}.{alias.name}" for alias in node.names} & paths.keys()
                found.update(submodules)
                if len(submodules) < len(node.names):  # a name from the module itself, not only its submodules
                    found.add(module)
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    expect(circles({"a": {"b"}, "b": {"a"}, "c": {"a"}})) == [{"a", "b"}]


def test_no_module_of_the_package_is_in_an_import_circle():
    expect([sorted(group) for group in circles(module_imports())]) == []


def test_the_worker_types_its_self_metrics_client_without_importing_the_client():
    expect("zibrato.client" in module_imports()["zibrato.worker"]) == False
