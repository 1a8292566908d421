"""Small sweep configs and a CLI launcher shared by the sweep tests."""

import os
import subprocess
import sys

import numpy as np
import xarray as xr

SMALL = """\
widths = [16, 32]
base_width = 16
params = ["mup"]
seeds = 2
[task]
name = "gegenbauer"
probe_examples = 16
options = {{ dim = 6, degree = 2 }}
[optimizer]
lr = {lr}
[train]
steps = {steps}
batch_size = 16
checkpoint_every = {every}
"""


def small_config(steps: int = 200, every: int = 20, lr: float = 0.1, extra: str = "") -> str:
    return SMALL.format(steps=steps, every=every, lr=lr) + extra


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "widthscan.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def assert_same_results(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    for name in a.coords:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
