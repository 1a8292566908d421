"""Every store file a crash or a disk can damage: status.json, dims.json, sweep.toml,
scalars (torn tail, lost rows), temp files. Each is repaired or skipped with a warning."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import widthscan as ws
from widthscan.measurement import Measurement
from widthscan.store import RunStore, StoreWarning, load, load_status, run_dir
from widthscan.store.run import PARQUET_FILE, SCALARS_FILE, STATUS_FILE
from widthscan.sweep.status import status_table

WIDTHS = (16, 32)
SEEDS = [3, 5]
STEPS = 8


def logits(width, step):
    return np.stack([np.full(4, width + seed + step / 10) for seed in SEEDS])


def fake_sweep(root, checkpoint_step=STEPS):
    """Two finished runs with scalars, a logits probe and a checkpoint at ``checkpoint_step``."""
    (root / "sweep.toml").write_text('name = "fake"\nwidths = [16, 32]\n')
    for width in WIDTHS:
        rs = RunStore(run_dir(root, "mup", width))
        rs.write_config({"param": "mup", "width": width, "seeds": SEEDS,
                         "train": {"steps": STEPS}})
        for step in range(STEPS):
            rs.append_scalars([{"step": step, "seed": s, "loss": width + s + step / 10}
                               for s in SEEDS])
            rs.write_probe("logits", step, {"logits": Measurement(
                ("example",), logits(width, step), {"example": np.arange(4)})})
        rs.save_checkpoint({"w": torch.ones(2)}, {"ensemble": {
            "step": checkpoint_step, "seeds": SEEDS, "diverged_at": [None, 6]}})
        rs.write_status({"state": "done", "step": STEPS, "steps": STEPS, "seeds": SEEDS,
                         "diverged": {5: 6}})
    return root


GARBAGE = [b"", b"\x00\xff\xfe garbage", b"[1, 2]",
           b'{"state": "done", "st', b'{"state": "done", "diverged": {"x": 1}}']


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("checkpoint_step,state", [(STEPS, "done"), (4, "pending")])
def test_damaged_status_is_rebuilt_from_the_checkpoint(tmp_path, garbage, checkpoint_step,
                                                       state):
    root = fake_sweep(tmp_path, checkpoint_step)
    (run_dir(root, "mup", 16) / STATUS_FILE).write_bytes(garbage)
    with pytest.warns(StoreWarning, match="status.json is unreadable"):
        status = RunStore(run_dir(root, "mup", 16)).read_status()
    assert status["state"] == state and status["step"] == checkpoint_step
    assert status["seeds"] == SEEDS and status["diverged"] == {5: 6}
    with pytest.warns(StoreWarning):
        table = load_status(root).set_index("width")
    assert table.loc[16, "state"] == state and table.loc[32, "state"] == "done"
    assert "rebuilt" in table.loc[16, "damaged"] and pd.isna(table.loc[32, "damaged"])
    with pytest.warns(StoreWarning):
        shown = status_table(root)
    assert "rebuilt" in shown["damaged"].iloc[0]


@pytest.mark.parametrize("name", ["config.json", "error.txt", "checkpoint.json"])
@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00", b'{"seeds": "x"'])
def test_other_damaged_run_files_do_not_stop_status_or_load(tmp_path, name, garbage):
    root = fake_sweep(tmp_path)
    (run_dir(root, "mup", 16) / name).write_bytes(garbage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set(load_status(root)["state"]) == {"done"}
        assert len(status_table(root)) == 2
        ds = load(root)
    np.testing.assert_array_equal(ds["loss"].sel(param="mup", width=16, seed=3).values,
                                  [16 + 3 + s / 10 for s in range(STEPS)])


def test_status_without_checkpoint_or_config_is_pending_at_zero(tmp_path):
    rs = RunStore(tmp_path)
    (tmp_path / STATUS_FILE).write_bytes(b"{")
    with pytest.warns(StoreWarning):
        status = rs.read_status()
    assert status["state"] == "pending" and status["step"] == 0


@pytest.mark.parametrize("garbage", [b"\xff\x00", b'{"logits": 5}', b"[]",
                                     b'{"logits": {"dims": "example"}}'])
def test_damaged_dims_are_taken_from_a_sibling_run_then_rewritten(tmp_path, garbage):
    root = fake_sweep(tmp_path)
    dims = run_dir(root, "mup", 16) / "probes" / "logits" / "dims.json"
    dims.write_bytes(garbage)
    with pytest.warns(StoreWarning, match="dims.json"):
        ds = load(root, mask_diverged=False)
    assert ds["logits"].dims[-1] == "logits_example"
    for width in WIDTHS:
        for step in range(STEPS):
            got = ds["logits"].sel(param="mup", width=width, logits_step=step).values
            np.testing.assert_array_equal(got, logits(width, step))

    RunStore(run_dir(root, "mup", 16)).write_probe("logits", STEPS, {"logits": Measurement(
        ("example",), logits(16, STEPS), {"example": np.arange(4)})})
    assert json.loads(dims.read_text())["logits"]["dims"] == ["example"]


def test_damaged_dims_everywhere_still_load(tmp_path):
    root = fake_sweep(tmp_path)
    for width in WIDTHS:
        (run_dir(root, "mup", width) / "probes" / "logits" / "dims.json").write_bytes(b"\xff")
    with pytest.warns(StoreWarning):
        ds = load(root, mask_diverged=False)
    got = ds["logits"].sel(param="mup", width=32).isel(logits_step=-1).values
    np.testing.assert_array_equal(got, logits(32, STEPS - 1))


def test_damaged_dims_without_a_usable_sibling_leave_that_run_out(tmp_path, monkeypatch):
    from widthscan.store import probes
    from widthscan.store.tables import LoadWarning

    root = fake_sweep(tmp_path)
    (run_dir(root, "mup", 16) / "probes" / "logits" / "dims.json").write_bytes(b"\xff")
    monkeypatch.setattr(probes, "sibling_dims", lambda probe_dir: {})
    with pytest.warns(LoadWarning, match="param=mup,width=16: logits/logits has dims"):
        ds = load(root, mask_diverged=False)
    assert np.isnan(ds["logits"].sel(param="mup", width=16).values).all()
    np.testing.assert_array_equal(ds["logits"].sel(param="mup", width=32).isel(
        logits_step=0).values, logits(32, 0))


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00", b"widths = [", b"[[[["])
def test_unreadable_sweep_toml_loads_with_empty_config(tmp_path, garbage):
    root = fake_sweep(tmp_path)
    (root / "sweep.toml").write_bytes(garbage)
    if garbage.startswith(b"\xff"):
        with pytest.warns(StoreWarning, match="sweep.toml"):
            ds = load(root)
        assert ds.attrs["config"] == ""
    else:
        ds = load(root)
        assert ds.attrs["config"] == garbage.decode()
    np.testing.assert_array_equal(ds["loss"].sel(param="mup", width=16, seed=3).values,
                                  [16 + 3 + s / 10 for s in range(STEPS)])


def test_torn_jsonl_tail_uses_the_intact_parquet_copy(tmp_path):
    rs = RunStore(tmp_path)
    rows = [{"step": s, "seed": 0, "loss": 1 / (s + 1)} for s in range(5)]
    rs.append_scalars(rows)
    assert rs.finalize()
    with open(tmp_path / SCALARS_FILE, "r+b") as f:
        f.truncate(f.seek(0, 2) - 7)
    df = RunStore(tmp_path).read_scalars()
    assert df["step"].tolist() == list(range(5))
    assert df["loss"].tolist() == [r["loss"] for r in rows]
    (tmp_path / PARQUET_FILE).unlink()
    df = RunStore(tmp_path).read_scalars()
    assert df["step"].tolist() == list(range(4)) and df.attrs["torn_tail"]


def test_rows_lost_before_a_checkpoint_are_counted_and_carried(tmp_path):
    """Scalars are fsynced before a checkpoint commits; rows missing later are surfaced."""
    writer = RunStore(tmp_path)
    writer.append_scalars([{"step": s, "seed": k, "loss": 1.0} for s in range(6) for k in (0, 1)])
    writer.sync_scalars()
    meta = {"scalar_rows": writer.scalar_rows}
    assert meta["scalar_rows"] == 12
    lines = (tmp_path / SCALARS_FILE).read_bytes().splitlines(keepends=True)
    (tmp_path / SCALARS_FILE).write_bytes(b"".join(lines[:9]))

    resumed = RunStore(tmp_path)
    resumed.truncate_scalars(after_step=5)
    with pytest.warns(StoreWarning, match="3 rows written before the checkpoint"):
        damage = resumed.check_resumed_scalars(meta)
    assert damage == {"lost_rows": 3}
    again = RunStore(tmp_path)
    again.truncate_scalars(after_step=5)
    assert again.check_resumed_scalars({"scalar_rows": 9, "damage": damage}) == {"lost_rows": 3}


def test_sync_scalars_fsyncs_the_file(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}")), real(fd)))
    rs = RunStore(tmp_path)
    rs.append_scalars([{"step": 0, "seed": 0, "loss": 1.0}])
    assert not any(p.endswith(SCALARS_FILE) for p in synced)
    rs.sync_scalars()
    assert any(p.endswith(SCALARS_FILE) for p in synced)


def test_temp_files_of_killed_writers_are_removed(tmp_path):
    root = fake_sweep(tmp_path)
    litter = [root / ".sweep.toml.a1b2.tmp", run_dir(root, "mup", 16) / ".status.json.c3.tmp",
              run_dir(root, "mup", 32) / "probes" / "logits" / ".000000009.npz.d4.tmp"]
    for path in litter:
        path.write_bytes(b"partial")
    keep = run_dir(root, "mup", 16) / "notes.txt"
    keep.write_text("mine")
    ws.sweep.api._clean_temp(root)
    assert not any(p.exists() for p in litter) and keep.exists()
