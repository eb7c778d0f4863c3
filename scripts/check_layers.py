"""Checks the architecture of ``discoverd``: layers, import cycles and third-party wrappers.

Layers, lowest first (a module may import its own layer and the layers below it)::

    errors | jsoncodec | deprecation ← model ← config ← core ← calling ← backends
        ← server | client | grpc ← cli | testing | integrations ← root

Findings (one line each; the script exits 1 if there is any):

1. **Upward or sideways imports**: a lower layer importing a higher one; ``server`` and ``client``
   importing each other; any module importing the package root (``import discoverd``,
   ``from discoverd import __version__``) — the root is the top layer; the version comes from the
   package metadata (``importlib.metadata.version("discoverd")``).
2. **Import cycles** between modules of the package, counting every import: top level, inside
   functions and under ``if TYPE_CHECKING:`` (hiding a cycle from the interpreter does not remove it).
   ``from discoverd.x import y`` is an import of ``discoverd.x.y`` when that is a module, else of
   ``discoverd.x``; importing a module does not count as importing its parent packages, so a
   submodule that imports its package's ``__init__`` is a cycle only if the ``__init__`` imports back.
   Each strongly connected component (Tarjan) is one finding.
3. **Third-party libraries outside their wrapper**: :data:`WRAPPERS` names the module(s) that may
   import each third-party library; anything else imports the wrapper. A third-party library missing
   from the table is a finding too. The standard library is ``sys.stdlib_module_names``;
   ``core`` also imports none of :data:`CORE_FORBIDDEN` (it is synchronous and I/O-free).
4. **Run-time patching**: assigning a function to another object's attribute (``obj.hook = lambda
   ...``, ``obj.method = some_function``, ``obj.handler = self.method``: extending an object by
   replacing its methods or setting hook attributes from outside), and ``# type: ignore[method-assign]``.
   Collaborators are passed to constructors instead.

Usage: ``python scripts/check_layers.py [--root PATH]`` (default: the repository's ``src/discoverd``).
The last line is a summary: ``N module(s), M import edge(s), K cycle(s), F finding(s)``.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PACKAGE: Final = "discoverd"
DEFAULT_ROOT: Final = Path(__file__).resolve().parent.parent / "src" / PACKAGE

#: Rank of each layer (the first component under the package; the root itself is ``__init__``).
RANK: Final[Mapping[str, int]] = {
    "errors": 0,
    "jsoncodec": 0,
    "deprecation": 0,
    "model": 1,
    "config": 2,
    "core": 3,
    "calling": 4,
    "backends": 5,
    "server": 6,
    "client": 6,
    "grpc": 6,  # discoverd/grpc.py: xds:/// channels and their bootstrap, the client side of xDS
    "cli": 7,
    "testing": 7,
    "integrations": 7,  # framework glue (ASGI, aiohttp, gunicorn, Django, httpx) over the client SDK
    "__init__": 8,
    "__main__": 8,
}

#: Layers of the same rank that must not import each other.
SIBLINGS: Final = (frozenset({"server", "client"}),)

#: Third-party top-level package → the module(s) allowed to import it. Everything else goes through them.
WRAPPERS: Final[Mapping[str, frozenset[str]]] = {
    "orjson": frozenset({"discoverd.jsoncodec"}),
    "msgpack": frozenset({"discoverd.core.gossip.messages"}),
    "cryptography": frozenset({"discoverd.core.gossip.keyring"}),
    "redis": frozenset({"discoverd.backends.redis_client"}),
    "httptools": frozenset({"discoverd.server.http"}),
    "uvloop": frozenset({"discoverd.server.runner"}),
    "prometheus_client": frozenset({"discoverd.server.metrics"}),
    # Three wrappers: the calling layer's HTTP client (the caller's, and the client SDK's requests to
    # registry nodes), the server's client to its replication peers, which keeps its own on its side,
    # and the glue that runs a client for an aiohttp.web application (web.AppKey, cleanup_ctx).
    "aiohttp": frozenset(
        {"discoverd.calling.http", "discoverd.server.peer_http", "discoverd.integrations.aiohttp"}
    ),
    "httpx": frozenset({"discoverd.calling.httpx_transport"}),
    # grpcio: the server's xDS server and the client's xds:/// channels, one module on each side
    # (server and client never import each other, so they cannot share one wrapper).
    "grpc": frozenset({"discoverd.server.xds.server", "discoverd.grpc"}),
    # xds-protos' generated Envoy messages and the protobuf runtime: one module names them all.
    "envoy": frozenset({"discoverd.server.xds.protos"}),
    "xds": frozenset({"discoverd.server.xds.protos"}),
    "udpa": frozenset({"discoverd.server.xds.protos"}),
    "validate": frozenset({"discoverd.server.xds.protos"}),
    "google": frozenset({"discoverd.server.xds.protos"}),
}

#: Standard-library modules ``core`` never imports (a prefix matches its submodules too): sockets, processes,
#: event loops and clocks (time comes in as ``now``). ``threading`` (locks) and ``os`` (``urandom``) are fine.
CORE_FORBIDDEN: Final = frozenset(
    {
        "asyncio",
        "concurrent",
        "multiprocessing",
        "select",
        "selectors",
        "signal",
        "socket",
        "socketserver",
        "ssl",
        "subprocess",
        "time",
        "http",
        "urllib.request",
    }
)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Import:
    """One imported module as written in ``importer`` (a statement naming several gives several)."""

    importer: str
    path: Path
    line: int
    target: str  # the resolved module of the package, or the dotted name of an outside module
    internal: bool
    context: str  # "top level", "in a function" or "under TYPE_CHECKING"
    statement: str


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Report:
    modules: int = 0
    edges: int = 0
    cycles: list[list[str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.modules} module(s), {self.edges} import edge(s), "
            f"{len(self.cycles)} cycle(s), {len(self.findings)} finding(s)"
        )


# -- modules and imports -------------------------------------------------------------------------


def discover(root: Path) -> dict[str, Module]:
    """Every ``.py`` module under ``root`` (the package directory), by dotted name."""
    out: dict[str, Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        out[name] = Module(name, path, is_package)
    return out


def layer(module: str) -> str:
    """The layer of a module of the package: its first component below the root, ``__init__`` for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str, modules: Mapping[str, Module]) -> str:
    """The longest prefix of the dotted ``name`` that is a known module."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def _relative_base(module: Module, level: int) -> str | None:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        return None
    return ".".join(parts[: len(parts) - (level - 1)])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: Iterable[ast.AST], context: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in or below ``nodes`` with where it runs (the outermost reason wins)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, context
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(node.body, "in a function" if context == "top level" else context)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, "under TYPE_CHECKING" if context == "top level" else context)
            yield from _walk(node.orelse, context)
        else:
            yield from _walk(ast.iter_child_nodes(node), context)


def module_imports(module: Module, modules: Mapping[str, Module]) -> tuple[list[Import], list[Finding]]:
    """The imports of one module, internal ones resolved to modules of the package; plus parse problems."""
    shown = display(module.path)
    try:
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    except (SyntaxError, UnicodeDecodeError) as e:
        return [], [Finding(shown, getattr(e, "lineno", 0) or 0, f"cannot parse: {e}")]
    package = module.name.split(".")[0]
    out: list[Import] = []
    problems: list[Finding] = []
    for node, context in _walk(tree.body, "top level"):
        statement = ast.unparse(node)

        def add(
            target: str,
            internal: bool,
            node: ast.stmt = node,
            context: str = context,
            statement: str = statement,
        ) -> None:
            out.append(Import(module.name, module.path, node.lineno, target, internal, context, statement))

        if isinstance(node, ast.Import):
            for alias in node.names:
                internal = alias.name.split(".")[0] == package
                add(resolve(alias.name, modules) if internal else alias.name, internal)
            continue
        if node.level:
            base = _relative_base(module, node.level)
            if base is None:
                problems.append(
                    Finding(shown, node.lineno, f"relative import beyond the package: {statement}")
                )
                continue
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        if source.split(".")[0] != package:
            add(source, False)
            continue
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            add(submodule if submodule in modules else resolve(source, modules), True)
    return out, problems


def display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- rules ---------------------------------------------------------------------------------------


def layer_findings(imports: Sequence[Import], package: str = PACKAGE) -> list[Finding]:
    """Rule 1: imports that go up, sideways between siblings, or to the package root."""
    out: list[Finding] = []
    for imp in imports:
        if not imp.internal or imp.target == imp.importer:
            continue
        mine, theirs = layer(imp.importer), layer(imp.target)
        if mine not in RANK or theirs not in RANK:
            continue  # reported once per module by unknown_layers
        where = display(imp.path)
        if imp.target == package and mine not in ("__init__", "__main__"):
            out.append(
                Finding(
                    where,
                    imp.line,
                    f"{imp.importer} ({mine}) imports the package root ({imp.statement}): the root is the "
                    "top layer; take the version from importlib.metadata.version("
                    f'"{package}") and other names from the module that defines them',
                )
            )
        elif any({mine, theirs} == pair for pair in SIBLINGS):
            out.append(
                Finding(
                    where,
                    imp.line,
                    f"{mine} and {theirs} never import each other: {imp.importer} imports {imp.target}",
                )
            )
        elif RANK[theirs] > RANK[mine]:
            out.append(
                Finding(
                    where,
                    imp.line,
                    f"layer {mine} must not import the upper layer {theirs}: {imp.importer} imports "
                    f"{imp.target} ({imp.context})",
                )
            )
    return out


def unknown_layers(modules: Mapping[str, Module]) -> list[Finding]:
    """Every module belongs to a layer of :data:`RANK`."""
    return [
        Finding(
            display(m.path),
            1,
            f"{m.name} is in no layer: add {layer(m.name)!r} to RANK in {display(Path(__file__))}",
        )
        for m in modules.values()
        if layer(m.name) not in RANK
    ]


def third_party_findings(imports: Sequence[Import]) -> list[Finding]:
    """Rule 3: third-party libraries only in their wrappers; ``core`` imports no I/O module."""
    out: list[Finding] = []
    for imp in imports:
        if imp.internal:
            continue
        top = imp.target.split(".")[0]
        where = display(imp.path)
        if top in sys.stdlib_module_names:
            forbidden = next(
                (f for f in CORE_FORBIDDEN if imp.target == f or imp.target.startswith(f + ".")), None
            )
            if forbidden and layer(imp.importer) == "core":
                out.append(Finding(where, imp.line, f"core must stay I/O-free but imports {imp.target}"))
            continue
        allowed = WRAPPERS.get(top)
        if allowed is None:
            out.append(
                Finding(
                    where,
                    imp.line,
                    f"unlisted third-party library {top} ({imp.statement}): add it to WRAPPERS with the one "
                    "module that wraps it",
                )
            )
        elif imp.importer not in allowed:
            out.append(
                Finding(
                    where,
                    imp.line,
                    f"{top} is wrapped by {' and '.join(sorted(allowed))}; {imp.importer} imports it "
                    f"directly ({imp.statement})",
                )
            )
    return out


def graph_of(imports: Sequence[Import]) -> dict[str, set[str]]:
    """Importer → imported modules of the package (every import, no self-edges)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set())
        if imp.internal and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
            graph.setdefault(imp.target, set())
    return graph


def strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(graph.get(start, ())))))
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def _shortest_cycle(start: str, members: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest path start → … → start inside ``members`` (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    return [start, start]


def cycle_finding(component: list[str], graph: Mapping[str, set[str]], imports: Sequence[Import]) -> Finding:
    """One line for a strongly connected component: its modules and one concrete cycle with its imports."""
    first: dict[tuple[str, str], Import] = {}
    for imp in imports:
        first.setdefault((imp.importer, imp.target), imp)
    path = _shortest_cycle(component[0], set(component), graph)
    steps = []
    for a, b in itertools.pairwise(path):
        imp = first[(a, b)]
        steps.append(f"{a} → {b} (line {imp.line}, {imp.context})")
    head = first[(path[0], path[1])]
    return Finding(
        display(head.path),
        head.line,
        f"import cycle among {len(component)} modules [{', '.join(component)}]: {'; '.join(steps)}",
    )


# -- run-time patching -----------------------------------------------------------------------------


def patching_findings(module: Module) -> list[Finding]:
    """Assignments of a function to another object's attribute in ``module`` (rule 4)."""
    text = module.path.read_text()
    tree = ast.parse(text, str(module.path))
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    out = [
        Finding(display(module.path), number, "replaces a method (type: ignore[method-assign])")
        for number, line in enumerate(text.splitlines(), 1)
        if "method-assign" in line
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if _foreign_attribute(target) and _is_function(value, functions):
                message = f"assigns a function to another object's attribute: {ast.unparse(node)[:80]}"
                out.append(Finding(display(module.path), node.lineno, message))
    return out


def _foreign_attribute(target: ast.expr) -> bool:
    """An attribute of something other than ``self``/``cls``."""
    if not isinstance(target, ast.Attribute):
        return False
    return not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))


def _is_function(value: ast.expr, functions: set[str]) -> bool:
    """A lambda, a function of the module, or a method of ``self`` (named like a def of the module)."""
    if isinstance(value, ast.Lambda):
        return True
    if isinstance(value, ast.Name):
        return value.id in functions
    return (
        isinstance(value, ast.Attribute)
        and isinstance(value.value, ast.Name)
        and value.value.id == "self"
        and value.attr in functions
    )


def check(root: Path) -> Report:
    """Every finding for the package at ``root``."""
    modules = discover(root)
    imports: list[Import] = []
    report = Report(modules=len(modules))
    for module in modules.values():
        found, problems = module_imports(module, modules)
        imports.extend(found)
        report.findings.extend(problems)
    report.findings.extend(unknown_layers(modules))
    report.findings.extend(layer_findings(imports, root.name))
    report.findings.extend(third_party_findings(imports))
    for module in modules.values():
        report.findings.extend(patching_findings(module))
    report.findings.sort()
    graph = graph_of(imports)
    report.edges = sum(len(targets) for targets in graph.values())
    report.cycles = strongly_connected(graph)
    report.findings.extend(cycle_finding(c, graph, imports) for c in report.cycles)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the package directory to check")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "__init__.py").is_file():
        print(f"{root}: not a package directory (no __init__.py)")
        return 2
    report = check(root.resolve())
    for finding in report.findings:
        print(finding)
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
