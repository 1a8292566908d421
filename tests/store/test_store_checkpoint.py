import json

import pytest
import torch

from widthscan.store import RunStore, StoreWarning
from widthscan.store import checkpoint as ckpt_mod


def _tensors(seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    stacked = torch.randn(3, 5, 7, generator=g)
    return {
        "w32": torch.randn(5, 3, generator=g),
        "w64": base,
        "bf16": torch.randn(2, 8, generator=g).to(torch.bfloat16),
        "step": torch.tensor(seed, dtype=torch.int64),
        "transposed": base.t(),
        "member0": stacked[0],
        "member1": stacked[1],
    }


def _assert_same(got, want):
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        assert torch.equal(got[k], v), k


def test_checkpoint_roundtrip_exact(tmp_path):
    rs = RunStore(tmp_path)
    assert rs.load_checkpoint() is None
    tensors = _tensors(1)
    meta = {"step": 120, "optimizer": "adam", "lr": 1e-3, "seeds": [0, 1, 2]}
    rs.save_checkpoint(tensors, meta)
    got, got_meta = RunStore(tmp_path).load_checkpoint()
    _assert_same(got, tensors)
    assert got_meta == meta
    rs.save_checkpoint(_tensors(2), {"step": 240})
    got, got_meta = rs.load_checkpoint()
    _assert_same(got, _tensors(2))
    assert got_meta == {"step": 240}


def test_torn_pair_is_detected_and_resolved_to_the_tensors_file(tmp_path, monkeypatch):
    rs = RunStore(tmp_path)
    rs.save_checkpoint(_tensors(1), {"step": 100})
    old_json = (tmp_path / ckpt_mod.META_FILE).read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between the two renames")

    monkeypatch.setattr(ckpt_mod, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        rs.save_checkpoint(_tensors(2), {"step": 200})
    monkeypatch.undo()
    assert (tmp_path / ckpt_mod.META_FILE).read_text() == old_json

    with pytest.warns(StoreWarning, match="torn checkpoint"):
        got, meta = rs.load_checkpoint()
    _assert_same(got, _tensors(2))
    assert meta == {"step": 200}
    assert json.loads((tmp_path / ckpt_mod.META_FILE).read_text())["meta"] == {"step": 200}


def test_torn_pair_without_embedded_meta_is_refused(tmp_path):
    from safetensors.torch import save_file

    rs = RunStore(tmp_path)
    rs.save_checkpoint(_tensors(1), {"step": 100})
    save_file({"w": torch.zeros(2)}, str(tmp_path / ckpt_mod.TENSORS_FILE), metadata={"nonce": "x"})
    with pytest.warns(StoreWarning, match="torn checkpoint"):
        assert rs.load_checkpoint() is None


def test_non_tensor_entry_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="not a tensor"):
        RunStore(tmp_path).save_checkpoint({"w": [1.0, 2.0]}, {})
    assert not (tmp_path / ckpt_mod.TENSORS_FILE).exists()
