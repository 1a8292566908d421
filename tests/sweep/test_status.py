"""The status table and the progress lines read what runs write while they train."""

import io
from types import SimpleNamespace

import numpy as np

from widthscan.store import RunStore, SweepLock, run_dir
from widthscan.sweep import Sweep
from widthscan.sweep import progress as progress_module
from widthscan.sweep.progress import SweepProgress, eta_text
from widthscan.sweep.status import status_table

CONFIG = """\
widths = [16, 32, 64]
base_width = 16
params = ["mup", "sp"]
seeds = 2
[task]
name = "gegenbauer"
options = { dim = 6, degree = 2 }
[train]
steps = 60
batch_size = 16
"""


def started_sweep(tmp_path, logged: int = 25):
    """A sweep dir as a run leaves it `logged` steps into mup w=32 (checkpoint at 0):
    status.json still says step 0, scalars.jsonl has the steps since."""
    (tmp_path / "sweep.toml").write_text(CONFIG)
    store = RunStore(run_dir(tmp_path, "mup", 32))
    store.write_status({"state": "running", "step": 0, "steps": 60, "param": "mup",
                        "width": 32, "diverged": {}})
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.1, 1.0, size=(logged, 2))
    store.append_scalars({"step": t, "seed": s, "loss": float(losses[t, s]), "lr": 0.1}
                         for t in range(logged) for s in range(2))
    return losses


def test_status_lists_every_planned_run_with_live_step_and_loss(tmp_path):
    losses = started_sweep(tmp_path)
    with SweepLock(tmp_path):
        table = status_table(tmp_path)
    assert len(table) == 6
    row = table[table["run"] == "mup w=32"].iloc[0]
    assert row["state"] == "running"
    assert row["step"] == "25/60"
    assert [float(x) for x in row["last loss (per seed)"].split()] == \
        [float(f"{v:.4g}") for v in losses[-1]]
    assert set(table[table["run"] != "mup w=32"]["state"]) == {"pending"}


def test_a_run_whose_holder_died_is_interrupted(tmp_path):
    started_sweep(tmp_path)
    row = status_table(tmp_path).set_index("run").loc["mup w=32"]
    assert row["state"] == "interrupted (resumes at step 0)"
    assert row["step"] == "25/60"


def test_progress_lines_say_run_step_loss_and_eta(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    losses = started_sweep(tmp_path, logged=30)
    out = io.StringIO()
    progress = SweepProgress(tmp_path, [("mup", 32), ("mup", 16)], 60, stream=out, live=False,
                             every_s=0.0)
    progress.poll()
    first = out.getvalue().splitlines()
    assert first == [f"[0/2 runs done] mup w=32: step 30/60, loss {losses[-1].mean():.4g} "
                     f"(mean of 2 seeds) (started) · sweep ETA ?"]
    RunStore(run_dir(tmp_path, "mup", 32)).append_scalars(
        {"step": t, "seed": s, "loss": 0.5, "lr": 0.1} for t in range(30, 45) for s in range(2))
    clock[0] += 10.0
    progress.poll()
    # 15 steps in 10 s: this run's last 15 steps take 10 s; the sweep's left: those and 60
    # steps of width 16, at half the cost of a width-32 step: 10 s + 20 s
    assert out.getvalue().splitlines()[-1] == (
        "[0/2 runs done] mup w=32: step 45/60, loss 0.5 (mean of 2 seeds), ETA 10s"
        " · sweep ETA 30s")


def test_eta_text():
    assert [eta_text(s) for s in (None, 5, 185, 3725)] == ["?", "5s", "3m05s", "1h02m"]


def test_a_running_sweep_reports_progress_when_not_a_terminal(tmp_path, capsys):
    small = CONFIG.replace("[16, 32, 64]", "[16, 32]").replace('["mup", "sp"]', '["mup"]')
    Sweep.from_string(small.replace("steps = 60", "steps = 12")).run(tmp_path, progress=True)
    lines = capsys.readouterr().err.splitlines()
    done = [ln for ln in lines if ln.endswith("(done)") or "(done) ·" in ln]
    assert {ln.split("]")[1].split(":")[0].strip() for ln in done} == {"mup w=16", "mup w=32"}
    assert all("step 12/12, loss" in ln for ln in done)
