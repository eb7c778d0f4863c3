"""Checks the layer rule of the architecture guide: a lower layer never imports an upper one.

errors ← model ← config ← core ← backends ← server | client ← cli | testing;
``server`` and ``client`` never import each other; ``core`` imports no third-party I/O library.
Exits 1 and lists the offending imports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "discoverd"
RANK = {
    "errors": 0,
    "model": 1,
    "config": 2,
    "core": 3,
    "backends": 4,
    "server": 5,
    "client": 5,
    "cli": 6,
    "testing": 6,
    "__init__": 7,
    "__main__": 7,
}
FORBIDDEN_IN_CORE = {"asyncio", "aiohttp", "httptools", "uvloop", "socket", "redis", "time"}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def main() -> int:
    errors = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        mod = ".".join(rel.parts)
        mine = layer(mod if mod.count(".") else mod + ".__init__")
        if path.name == "__init__.py" and path.parent != ROOT:
            mine = rel.parts[1]
        for imp in imports(path):
            if imp.split(".")[0] in FORBIDDEN_IN_CORE and mine == "core":
                errors.append(f"{mod}: core must stay I/O-free but imports {imp}")
            if not imp.startswith("discoverd."):
                continue
            theirs = layer(imp)
            if {mine, theirs} == {"server", "client"}:
                errors.append(f"{mod}: server and client never import each other ({imp})")
            elif RANK.get(theirs, 0) > RANK.get(mine, 0):
                errors.append(f"{mod}: layer {mine} must not import upper layer {imp}")
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
