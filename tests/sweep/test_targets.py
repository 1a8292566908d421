"""A sweep with probes stores the probe set's targets, so the report's ensemble sections
(bias/variance, C(k)) appear for real sweeps, for regression and for classification."""

import warnings

import numpy as np
import pytest
from sweep_helpers import small_config

import widthscan as ws
import widthscan.report

PROBES = """
[probes.loss]
[probes.logits]
n_log = 2
n_linear = 2
"""

TASKS = {
    "gegenbauer": {"dim": 6, "degree": 2},
    "teacher": {"dim": 6, "n_classes": 3},
}


@pytest.mark.parametrize("name", list(TASKS))
def test_probe_targets_are_stored_and_reach_the_report(tmp_path, name):
    options = ", ".join(f"{k} = {v}" for k, v in TASKS[name].items())
    text = small_config(steps=30, every=10, extra=PROBES)
    text = text.replace('name = "gegenbauer"', f'name = "{name}"').replace(
        "options = { dim = 6, degree = 2 }", f"options = {{ {options} }}")
    sweep = ws.Sweep.from_string(text)
    assert sweep.run(tmp_path / "out", progress=False).ok
    ds = ws.load(tmp_path / "out")
    task = ws.tasks.make(name, seed=sweep.config.task.seed, **TASKS[name])
    _, y = task.probe_set(16)
    targets = ds["targets"]
    assert targets.sizes["targets_example"] == ds["logits"].sizes["logits_example"] == 16
    for width in (16, 32):
        for seed in range(2):
            got = targets.sel(param="mup", width=width, seed=seed).isel(targets_step=0)
            np.testing.assert_array_equal(got.values, y.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html = widthscan.report.report(ds, tmp_path / "report.html").read_text()
    assert 'id="bias-variance"' in html
    assert f"Loss used: {'ce' if name == 'teacher' else 'mse'}" in html
