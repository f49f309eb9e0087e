"""`tunescope.diagnose` is a pure package: it imports nothing from the store, the readers, the
run or the CLI — not at module level, not under TYPE_CHECKING, not inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import tunescope.diagnose

PACKAGE = Path(tunescope.diagnose.__file__).parent
FORBIDDEN = ("store", "io", "run", "cli", "ui", "integrations", "finetune", "actuate", "probes")


def _imports(path: Path) -> list[str]:
    """Every module an import statement in `path` names, resolved to tunescope.<...>."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 2:  # from ..x import y
                out.append(f"tunescope.{node.module or ''}")
            elif node.level == 0 and node.module:
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_diagnose_imports_nothing_from_the_layers_above_it() -> None:
    offending = []
    for path in sorted(PACKAGE.glob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "tunescope" and len(parts) > 1 and parts[1] in FORBIDDEN:
                offending.append(f"{path.name}: {name}")
    assert offending == []
    assert len(list(PACKAGE.glob("*.py"))) >= 10  # the scan saw the package
