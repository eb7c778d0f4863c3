"""What ``import discoverd`` costs: ``python -X importtime`` in fresh interpreters, median of N runs.

For each statement it prints the median cumulative import time of the ``discoverd`` package (the last
``-X importtime`` line for it: every module the statement imported, our own and third-party) and the
third-party top-level packages left in ``sys.modules`` (the standard library is not listed).

Usage: ``python bench/import_cost.py [--runs 9]``. Target: ``import discoverd`` ≤ 60 ms and no
third-party library loaded.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

STATEMENTS = (
    "import discoverd",
    "from discoverd import AsyncClient",
    "from discoverd import open_registry; open_registry('memory://')",
)

REPORT = (
    "import sys; print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules}"
    " - set(sys.stdlib_module_names) - {'discoverd', '__main__', '_distutils_hack'})))"
)


def one_run(statement: str) -> tuple[int, list[str]]:
    """Microseconds spent importing, and the third-party packages loaded, for one fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{statement}\n{REPORT}"],
        check=True,
        capture_output=True,
        text=True,
    )
    total = sum(_cumulative(line) for line in out.stderr.splitlines() if _top_level(line))
    modules = next(line.split()[1:] for line in out.stdout.splitlines() if line.startswith("MODULES"))
    return total, modules


def _top_level(line: str) -> bool:
    """A line of a module imported directly by the statement (no indentation before its name)."""
    parts = line.split("|")
    return len(parts) == 3 and parts[0].startswith("import time:") and not parts[2].startswith("  ")


def _cumulative(line: str) -> int:
    field = line.split("|")[1].strip()
    return int(field) if field.isdigit() else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=9)
    a = p.parse_args()
    for statement in STATEMENTS:
        runs = [one_run(statement) for _ in range(a.runs)]
        median_ms = statistics.median(t for t, _ in runs) / 1000
        third_party = sorted({m for _, mods in runs for m in mods})
        print(f"{statement!r}: {median_ms:.1f} ms (median of {a.runs}); third-party: {third_party or 'none'}")


if __name__ == "__main__":
    main()
