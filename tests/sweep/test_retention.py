"""What a finished sweep keeps on disk: checkpoints per ``store.keep_checkpoints``."""

import json

import numpy as np
import pytest
from sweep_helpers import small_config

import widthscan as ws
from widthscan.config import ConfigError


def _run(tmp_path, keep=None):
    extra = f'\n[store]\nkeep_checkpoints = "{keep}"\n' if keep else ""
    sweep = ws.Sweep.from_string(small_config(steps=30, every=10, extra=extra))
    assert sweep.run(tmp_path / "out", progress=False).ok
    return sorted((tmp_path / "out" / "runs").glob("param=*/width=*"))


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
