"""Probes stand on the stacked core (``widthscan.stack``) and never import ``train``."""

import ast
from pathlib import Path

import widthscan.probes

PROBES = Path(widthscan.probes.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def test_no_probe_module_imports_train():
    offenders = {p.name: sorted(m for m in imported_modules(p) if m.startswith("widthscan.train"))
                 for p in PROBES.glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
