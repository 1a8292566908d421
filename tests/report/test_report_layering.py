"""The report reads analysis results, never the sweep machinery: no module of
``widthscan.report`` imports ``widthscan.sweep`` (the "Paper vs measured" section judges
claims from ``widthscan.analysis.claims``)."""

from __future__ import annotations

import ast
from pathlib import Path

import widthscan.report


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_report_modules_do_not_import_the_sweep_package():
    root = Path(widthscan.report.__file__).parent
    modules = sorted(root.glob("*.py"))
    assert len(modules) > 5
    offenders = {p.name: sorted(m for m in _imports(p) if m.startswith("widthscan.sweep"))
                 for p in modules}
    assert not {k: v for k, v in offenders.items() if v}
    assert "widthscan.analysis.claims" in _imports(root / "paper.py")
