"""The layering rules of DESIGN.md, checked on the source: module-level imports, read with
``ast`` over ``src/garrison`` (imports inside functions and under ``if TYPE_CHECKING:`` do
not run at import time and are not counted).

Rules:

1. no import cycles between packages;
2. the pure cores (``domain``, ``policy``, ``detect`` and the pure core of ``audit``) import
   no ``store``, ``gateway`` or ``admin`` module, and no module of the audit storage side;
3. the data plane (``gateway``) and the admin plane (``admin``) do not import each other,
   not even inside a function; the HTTP edge they share (``garrison.edge``) imports neither;
4. inside ``garrison.store`` no modules import each other in a cycle: store modules take the
   writer's context (``store.journal``) rather than the ``Directory`` facade, which sits on
   top of them (the package's ``__init__`` re-exports the facade; a submodule's
   ``from garrison.store import schema`` names the submodule, not the facade).

``audit`` counts as two components, its pure core and its storage side (DESIGN.md: "a pure
core … and its storage side"): the storage side may use the store's SQLite settings while
the store writes audit events with the pure core, and that is no cycle.

Where the code breaks a rule today and the fix belongs to the planes split (issue 15 section
3: one composition root, a shared HTTP edge), the exact violating imports are listed below as
a ratchet: a new violation fails, and so does a listed one that is gone, until it is removed
from the list. The lists may only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "garrison"

PURE = frozenset({"domain", "policy", "detect", "audit"})
IO_PLANES = frozenset({"store", "gateway", "admin"})
AUDIT_STORAGE = "audit-storage"
# The audit log's storage side: SQLite, the writer thread, files on disk, exporters.
AUDIT_STORAGE_MODULES = frozenset(
    {
        "garrison.audit.exporters",
        "garrison.audit.leaves",
        "garrison.audit.outbox",
        "garrison.audit.parallel_verify",
        "garrison.audit.pg_sink",
        "garrison.audit.sinks",
        "garrison.audit.sqlite_reader",
        "garrison.audit.sqlite_sink",
        "garrison.audit.tree_sink",
        "garrison.audit.witness",
        "garrison.audit.writer",
    }
)

Edge = tuple[str, str]  # (importing module, imported module)

# Ratchet, rule 1: none left (the composition root moved to ``garrison.server``, the admin
# wire shape, metrics and TLS files out of the planes, ``parse_listen`` into the domain).
KNOWN_CYCLE_EDGES: frozenset[Edge] = frozenset()
# Ratchet, rule 2: none left.
KNOWN_PURE_EDGES: frozenset[Edge] = frozenset()
# Ratchet, rule 3: none left (the shared HTTP edge is ``garrison.edge``; the admin plane
# reads the process through ``garrison.edge.process.ProcessState``, which the composition
# root hands it).
KNOWN_PLANE_EDGES: frozenset[Edge] = frozenset()


# Ratchet, rule 4: none (the store's 8-module cycle through ``Directory`` was cut by
# ``store.journal``; issue 15 section 4).
KNOWN_STORE_CYCLES: frozenset[frozenset[str]] = frozenset()
STORE = "garrison.store"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not those in functions)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _runtime_imports(node.body)
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _runtime_imports(block)
            for handler in node.handlers:
                yield from _runtime_imports(handler.body)
        elif isinstance(node, ast.With):
            yield from _runtime_imports(node.body)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The Garrison modules ``name`` imports at module level."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in _runtime_imports(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        found.add(target)
        # ``from garrison.store import schema`` imports the module garrison.store.schema.
        found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules)
    return {m for m in found if m in modules}


def imports_anywhere(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The Garrison modules ``name`` imports anywhere in its text (in functions too, and
    under ``if TYPE_CHECKING:``), for the rules that hold whenever an import runs."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def component(module: str) -> str:
    """The package a module belongs to (top-level modules are their own component)."""
    if module in AUDIT_STORAGE_MODULES:
        return AUDIT_STORAGE
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "garrison"


def cross_edges(graph: dict[str, set[str]]) -> set[Edge]:
    return {(a, b) for a, targets in graph.items() for b in targets if component(a) != component(b)}


def strongly_connected(succ: dict[str, set[str]]) -> list[set[str]]:
    """Every strongly connected set of the graph ``succ`` (node → successors, every node a
    key), singletons included (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.add(w)
                if w == v:
                    break
            found.append(members)

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return found


def cycle_components(edges: set[Edge]) -> list[set[str]]:
    """Strongly connected sets of two or more components."""
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(component(a), set()).add(component(b))
        succ.setdefault(component(b), set())
    return [members for members in strongly_connected(succ) if len(members) > 1]


def cycle_edges(edges: set[Edge]) -> set[Edge]:
    cycles = cycle_components(edges)
    return {
        (a, b) for a, b in edges if any(component(a) in c and component(b) in c for c in cycles)
    }


def pure_edges(edges: set[Edge]) -> set[Edge]:
    bad = IO_PLANES | {AUDIT_STORAGE}
    return {(a, b) for a, b in edges if component(a) in PURE and component(b) in bad}


def plane_edges(edges: set[Edge]) -> set[Edge]:
    planes = {"gateway", "admin"}
    return {(a, b) for a, b in edges if {component(a), component(b)} == planes}


def store_edges(graph: dict[str, set[str]]) -> set[Edge]:
    """Module-level imports between ``garrison.store`` modules. An import of the package
    itself counts only when it takes a name the ``__init__`` defines: ``from garrison.store
    import schema`` imports the submodule (the package is always initialised before any of
    its submodules, so that edge orders nothing)."""
    modules = all_modules()
    edges: set[Edge] = set()
    for name, targets in graph.items():
        if not name.startswith(f"{STORE}."):
            continue
        for target in targets:
            if target.startswith(f"{STORE}."):
                edges.add((name, target))
            elif target == STORE and _takes_package_names(name, modules):
                edges.add((name, STORE))
    package = graph.get(STORE, set())
    edges.update((STORE, t) for t in package if t.startswith(f"{STORE}."))
    return edges


def _takes_package_names(name: str, modules: dict[str, Path]) -> bool:
    """Whether ``name`` imports from ``garrison.store`` a name that is not a submodule."""
    tree = ast.parse(modules[name].read_text(), str(modules[name]))
    for node in _runtime_imports(tree.body):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == STORE
            and not node.level
            and any(f"{STORE}.{a.name}" not in modules for a in node.names)
        ):
            return True
        if isinstance(node, ast.Import) and any(a.name == STORE for a in node.names):
            return True
    return False


def module_cycles(edges: set[Edge]) -> set[frozenset[str]]:
    """Strongly connected sets of two or more modules, or a module importing itself."""
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
        succ.setdefault(b, set())
    return {
        frozenset(members)
        for members in strongly_connected(succ)
        if len(members) > 1 or next(iter(members)) in succ[next(iter(members))]
    }


def test_the_analysis_reads_module_level_imports() -> None:
    graph = import_graph()
    assert "garrison.store.db" in graph["garrison.audit.sqlite_sink"]
    assert (
        "garrison.store.schema" in graph["garrison.store.snapshot"]
    )  # from garrison.store import schema
    assert graph["garrison.audit"] == {"garrison.audit.events"}  # TYPE_CHECKING imports skipped


def test_no_new_import_cycle_between_packages() -> None:
    found = cycle_edges(cross_edges(import_graph()))
    assert found - KNOWN_CYCLE_EDGES == set(), "a new import cycle between packages"
    assert KNOWN_CYCLE_EDGES - found == set(), "gone: remove these from KNOWN_CYCLE_EDGES"


def test_pure_cores_import_no_store_gateway_admin_or_audit_storage() -> None:
    found = pure_edges(cross_edges(import_graph()))
    assert found - KNOWN_PURE_EDGES == set()
    assert KNOWN_PURE_EDGES - found == set(), "gone: remove these from KNOWN_PURE_EDGES"


def test_data_plane_and_admin_plane_do_not_import_each_other() -> None:
    found = plane_edges(cross_edges(import_graph()))
    assert found - KNOWN_PLANE_EDGES == set(), "a new import between the planes"
    assert KNOWN_PLANE_EDGES - found == set(), "gone: remove these from KNOWN_PLANE_EDGES"


def test_the_planes_import_each_other_nowhere_and_the_edge_neither() -> None:
    """Stricter than the module-level rule: an import inside a function is an import too
    (the data plane once mounted the admin API by importing it in ``build_app``)."""
    modules = all_modules()
    planes = {"gateway", "admin"}
    found = set()
    for name, path in modules.items():
        for target in imports_anywhere(name, path, modules):
            pair = {component(name), component(target)}
            if pair == planes or (component(name) == "edge" and component(target) in planes):
                found.add((name, target))
    assert found == set()
    assert {"garrison.edge.request", "garrison.edge.process"} <= set(modules)


def test_store_modules_do_not_import_each_other_in_a_cycle() -> None:
    found = module_cycles(store_edges(import_graph()))
    assert found - KNOWN_STORE_CYCLES == set(), "a new import cycle inside garrison.store"
    assert KNOWN_STORE_CYCLES - found == set(), "gone: remove these from KNOWN_STORE_CYCLES"


def deferred_store_imports(modules: dict[str, Path]) -> set[str]:
    """Store modules that import a Garrison module inside a function: an import hidden
    there escapes the cycle check (the old cycle was held together that way)."""
    found = set()
    for name, path in modules.items():
        if not name.startswith(f"{STORE}.") and name != STORE:
            continue
        for func in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.ImportFrom)
                    and (node.level or (node.module or "").startswith("garrison"))
                ) or (
                    isinstance(node, ast.Import)
                    and any(a.name.startswith("garrison") for a in node.names)
                ):
                    found.add(name)
    return found


def test_store_modules_import_garrison_modules_at_module_level_only() -> None:
    assert deferred_store_imports(all_modules()) == set()


def test_store_modules_take_the_journal_not_the_directory_facade() -> None:
    """Only the package face imports the facade; a store module that needs the writer's
    context takes ``store.journal.Journal`` (even under ``TYPE_CHECKING``)."""
    modules = all_modules()
    importers = set()
    for name, path in modules.items():
        if not name.startswith(f"{STORE}.") or name == f"{STORE}.directory":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == f"{STORE}.directory":
                importers.add(name)
    assert importers == set()


def test_the_store_cycle_check_can_fail() -> None:
    """A made-up cycle is found, through the package face too; a submodule import is not
    an edge to the face."""
    assert module_cycles(
        {
            ("garrison.store.directory", "garrison.store.vendors"),
            ("garrison.store.vendors", "garrison.store.directory"),
            ("garrison.store.keys", "garrison.store.schema"),
        }
    ) == {frozenset({"garrison.store.directory", "garrison.store.vendors"})}
    assert module_cycles({("garrison.store.rows", "garrison.store.rows")})
    edges = store_edges(import_graph())
    assert ("garrison.store.snapshot", "garrison.store.schema") in edges
    assert ("garrison.store.snapshot", STORE) not in edges
    assert (STORE, "garrison.store.directory") in edges


def test_the_audit_storage_list_names_real_modules() -> None:
    assert set(all_modules()) >= AUDIT_STORAGE_MODULES


def test_a_cycle_is_found_and_each_rule_can_fail() -> None:
    """The checks are not vacuous: made-up imports break each rule."""
    edges = {
        ("garrison.detect.engine", "garrison.store.db"),
        ("garrison.store.db", "garrison.detect.rules"),
        ("garrison.gateway.app", "garrison.admin.api"),
    }
    assert cycle_edges(edges) == {
        ("garrison.detect.engine", "garrison.store.db"),
        ("garrison.store.db", "garrison.detect.rules"),
    }
    assert pure_edges(edges) == {("garrison.detect.engine", "garrison.store.db")}
    assert plane_edges(edges) == {("garrison.gateway.app", "garrison.admin.api")}
    assert pure_edges({("garrison.audit.verify", "garrison.audit.sqlite_reader")})
