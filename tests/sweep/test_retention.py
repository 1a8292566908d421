"""What a finished sweep keeps on disk: checkpoints per ``store.keep_checkpoints``, scalars
once unless ``store.keep_scalar_log``."""

import json

import numpy as np
import pytest
from sweep_helpers import small_config

import widthscan as ws
from widthscan.config import ConfigError


def _run(tmp_path, keep=None, log=None, out="out"):
    extra = "\n[store]\n" if keep or log is not None else ""
    extra += f'keep_checkpoints = "{keep}"\n' if keep else ""
    extra += f"keep_scalar_log = {str(log).lower()}\n" if log is not None else ""
    sweep = ws.Sweep.from_string(small_config(steps=30, every=10, extra=extra))
    assert sweep.run(tmp_path / out, progress=False).ok
    return sorted((tmp_path / out / "runs").glob("param=*/width=*"))


def test_default_keeps_no_checkpoint_tensors(tmp_path):
    runs = _run(tmp_path)
    assert len(runs) == 2
    for run in runs:
        names = {p.name for p in run.iterdir()}
        assert not names & {"checkpoint.safetensors", "checkpoint.prev.safetensors",
                            "checkpoints"}
        assert json.loads((run / "checkpoint.json").read_text())["meta"]["ensemble"][
            "step"] == 30  # the metadata stays: a damaged status.json is rebuilt from it
    ds = ws.load(tmp_path / "out")
    assert np.isfinite(ds["loss"].values).all() and ds.sizes["step"] == 30


def test_last_keeps_the_final_checkpoint(tmp_path):
    for run in _run(tmp_path, "last"):
        meta = json.loads((run / "checkpoint.json").read_text())["meta"]
        assert meta["ensemble"]["step"] == 30
        assert (run / "checkpoint.safetensors").exists() and not (run / "checkpoints").exists()


def test_all_keeps_every_checkpoint(tmp_path):
    for run in _run(tmp_path, "all"):
        kept = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert kept == ["000000010.safetensors", "000000020.safetensors", "000000030.safetensors"]
        assert (run / "checkpoint.safetensors").exists()


def test_bad_setting_is_one_clear_error():
    with pytest.raises(ConfigError, match="keep_checkpoints") as err:
        ws.Sweep.from_string(small_config(extra='\n[store]\nkeep_checkpoints = "some"\n'))
    assert "'last'" in str(err.value) and "'all'" in str(err.value)


def test_scalars_are_kept_once_by_default_and_read_the_same_as_the_log(tmp_path):
    for run in _run(tmp_path):
        assert (run / "scalars.parquet").exists() and not (run / "scalars.jsonl").exists()
    for run in _run(tmp_path, log=True, out="both"):
        assert (run / "scalars.parquet").exists() and (run / "scalars.jsonl").exists()
    parquet_only = ws.load_scalars(tmp_path / "out")
    both = ws.load_scalars(tmp_path / "both")
    assert len(parquet_only) == len(both) > 0
    assert parquet_only.equals(both)


def test_a_dropped_log_is_rebuilt_before_the_run_is_appended_to(tmp_path):
    from widthscan.store.run import RunStore

    store = RunStore(tmp_path / "r")
    first = [{"step": s, "seed": 0, "loss": 1.0 / (s + 1)} for s in range(5)]
    first[2]["lr"] = 0.5
    store.append_scalars(first)
    assert store.finalize() and store.drop_scalar_log()
    assert not (tmp_path / "r" / "scalars.jsonl").exists()
    again = RunStore(tmp_path / "r")
    again.append_scalars([{"step": 5, "seed": 0, "loss": 0.1}])
    df = again.read_scalars()
    assert list(df["step"]) == [0, 1, 2, 3, 4, 5]
    assert np.allclose(df["loss"], [1.0 / (s + 1) for s in range(5)] + [0.1])
    assert df["lr"].notna().sum() == 1 and df.loc[df["step"] == 2, "lr"].item() == 0.5
