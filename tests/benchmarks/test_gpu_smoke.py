"""benchmarks/gpu.py --smoke runs on the CPU, so the GPU benchmark never rots."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_smoke_runs_every_part_on_the_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WIDTHSCAN_CACHE": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu",
                           "--smoke", "--repeats", "1"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ERROR" not in out and "failed" not in out, out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    expected = {"mlp": 3, "sequential": 3, "resnet18": 2, "transformer": 2}  # widths + data row
    for family, n in expected.items():
        assert rows.count(family) == n, (family, out)
    assert "sweep (resnet18 on synthetic_vision" in out
