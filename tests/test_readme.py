"""Every ```python block of README.md runs as written, in order, in one namespace (as a
reader following along in one session), in a fresh folder holding what the README's
first commands leave there: `widthscan-demo` (here a tiny sweep of the same kind) and a
`sweep.toml`."""

import os
import re
import warnings
from pathlib import Path

import pytest

import widthscan as ws

README = Path(__file__).resolve().parents[1] / "README.md"



def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def test_readme_has_python_blocks():
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 5


def test_every_readme_python_block_runs(tmp_path, monkeypatch, tiny_sweep):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.toml").write_text(tiny_sweep)
    ws.Sweep.from_string(tiny_sweep).run(tmp_path / "widthscan-demo", progress=False)
    namespace: dict = {"__name__": "__readme__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for line, code in python_blocks(README.read_text(encoding="utf-8")):
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as e:
                pytest.fail(f"README.md block at line {line} raises "
                            f"{type(e).__name__}: {e}")
    assert (tmp_path / "widthscan-demo" / "report.html").is_file()
    assert os.path.isdir(tmp_path / "runs" / "demo")


def test_first_block_is_install_and_demo_then_install_and_tests_as_ci_runs_them():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```\n(.*?)^```", text, re.S | re.M).group(1).strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("widthscan demo")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == first[1]
    install, *_ = first[1].split(" && python -m pytest")
    # the reference packages come last and without dependencies: pip then has no
    # dependency check left that could print "mup 1.0.0 requires ..."
    assert install.split(" && ")[-1] == "pip install --no-deps mup==1.0.0 pyhessian==0.1"
