"""Killed sweeps resume to the same numbers; locks; changed configs; divergence."""

import json
import random
import signal
import time

import numpy as np
import pytest
from sweep_helpers import assert_same_results, cli, small_config

import widthscan as ws
from widthscan.store import load, load_status

PROBES = """
[probes.loss]
[probes.logits]
n_log = 5
n_linear = 3
"""


def finish(config, out):
    proc = cli("run", str(config), "-o", str(out), "--quiet")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return stdout


def steps_done(out) -> int:
    total = 0
    for path in out.rglob("status.json"):
        try:
            total += json.loads(path.read_text()).get("step", 0)
        except (OSError, ValueError):
            pass
    return total


def test_killed_sweep_resumes_to_identical_results(tmp_path, write_config):
    """SIGKILL a sweep five times, each time once it has made progress past the last kill."""
    config = write_config(small_config(steps=1500, every=25, extra=PROBES))
    reference = tmp_path / "reference"
    finish(config, reference)
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills, last = 0, 0
    for _ in range(5):
        proc = cli("run", str(config), "-o", str(out), "--quiet")
        deadline = time.time() + 120
        while proc.poll() is None and steps_done(out) <= last and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        last = steps_done(out)
    assert kills >= 3
    finish(config, out)
    assert (load_status(out)["state"] == "done").all()
    assert_same_results(load(reference), load(out))


def test_second_run_on_same_directory_refuses_and_names_holder(tmp_path, write_config):
    config = write_config(small_config(steps=100_000, every=500))
    out = tmp_path / "sweep"
    first = cli("run", str(config), "-o", str(out), "--quiet")
    deadline = time.time() + 60
    while not (out / "runs").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = cli("run", str(config), "-o", str(out), "--quiet")
    _, err = second.communicate(timeout=120)
    assert first.poll() is None, "the first run ended before the second tried the lock"
    assert second.returncode == 2
    assert str(first.pid) in err
    first.send_signal(signal.SIGKILL)
    first.communicate()
    status = load_status(out)
    assert set(status["state"]) <= {"running", "pending", "done"}
    with pytest.warns(UserWarning):
        ds = load(out)
    assert ds.attrs["incomplete"]


def test_changed_config_is_refused_with_a_diff(tmp_path, write_config):
    out = tmp_path / "sweep"
    ws.sweep.Sweep.from_string(small_config(steps=20, every=10)).run(out, progress=False)
    changed = ws.sweep.Sweep.from_string(small_config(steps=20, every=10, lr=0.3))
    with pytest.raises(ws.sweep.ConfigChangedError, match=r"optimizer.lr: 0.1 -> 0.3"):
        changed.run(out, progress=False)
    changed.run(out, progress=False, force_new=True)
    assert list(tmp_path.glob("sweep.old-*"))
    cfg = ws.config.load_config(out / "sweep.toml")
    assert cfg.optimizer.lr == 0.3


def test_divergent_width_is_recorded_and_nan_after_its_step(tmp_path):
    text = small_config(steps=40, every=10, lr=0.5).replace('params = ["mup"]',
                                                             'params = ["sp"]')
    text = text.replace("widths = [16, 32]", "widths = [16, 1024]")
    result = ws.sweep.Sweep.from_string(text).run(tmp_path / "s", progress=False)
    assert result.ok
    status = load_status(tmp_path / "s").set_index("width")
    assert status.loc[1024, "state"] == "diverged"
    assert status.loc[16, "state"] == "done"
    diverged = status.loc[1024, "diverged"]
    ds = load(tmp_path / "s")
    loss = ds["loss"].sel(param="sp", width=1024)
    for seed, step in diverged.items():
        row = loss.sel(seed=int(seed))
        assert np.isnan(row.sel(step=slice(step, None))).all()
        assert np.isfinite(row.sel(step=slice(None, step - 1))).all()
    assert np.isfinite(ds["loss"].sel(param="sp", width=16)).all()
