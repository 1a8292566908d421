"""A flipped bit in any checksummed file is detected: never a wrong value, always either the
intact data or a fallback (previous checkpoint, JSONL for the parquet copy, dropped line)."""

import json
import random
import warnings

import pandas as pd
import pytest
import torch

from widthscan.store import RunStore, StoreWarning
from widthscan.store import checkpoint as ckpt
from widthscan.store.run import PARQUET_FILE, SCALARS_FILE

FLIPS = 40


def flip(path, position: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


def positions(path, n=FLIPS, seed=0):
    size = path.stat().st_size
    rng = random.Random(seed)
    return [(rng.randrange(size), rng.randrange(8)) for _ in range(n)]


def tensors(step):
    g = torch.Generator().manual_seed(step)
    return {"w": torch.randn(6, 5, generator=g),
            "v": torch.randn(7, generator=g, dtype=torch.float64), "n": torch.tensor(step)}


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def two_checkpoints(tmp_path):
    rs = RunStore(tmp_path)
    rs.save_checkpoint(tensors(10), {"step": 10})
    rs.save_checkpoint(tensors(20), {"step": 20})
    return tmp_path


def test_checkpoint_with_a_flipped_data_bit_falls_back_to_the_previous(two_checkpoints):
    path = two_checkpoints / ckpt.TENSORS_FILE
    flip(path, path.stat().st_size - 3, 2)
    with pytest.warns(StoreWarning, match="sha256 does not match"):
        got, meta = RunStore(two_checkpoints).load_checkpoint()
    assert same(got, tensors(10)) and meta == {"step": 10}


def test_any_flipped_bit_in_the_checkpoint_never_resumes_wrong_values(two_checkpoints):
    path = two_checkpoints / ckpt.TENSORS_FILE
    original = path.read_bytes()
    detected = 0
    for position, bit in positions(path):
        path.write_bytes(original)
        flip(path, position, bit)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = RunStore(two_checkpoints).load_checkpoint()
        assert got is not None
        tensors_, meta = got
        if same(tensors_, tensors(20)):
            assert meta == {"step": 20}
        else:
            assert same(tensors_, tensors(10)) and meta == {"step": 10}
            assert any(issubclass(w.category, StoreWarning) for w in caught)
            detected += 1
    assert detected >= FLIPS // 2


def test_flipped_bit_in_checkpoint_json_uses_the_checksummed_metadata(two_checkpoints):
    path = two_checkpoints / ckpt.META_FILE
    text = path.read_text()
    path.write_text(text.replace('"step": 20', '"step": 28'))
    with pytest.warns(StoreWarning, match="does not match"):
        got, meta = RunStore(two_checkpoints).load_checkpoint()
    assert same(got, tensors(20)) and meta == {"step": 20}
    assert json.loads(path.read_text())["meta"] == {"step": 20}


def test_both_checkpoints_damaged_starts_over(two_checkpoints):
    for name in (ckpt.TENSORS_FILE, ckpt.PREVIOUS_FILE):
        path = two_checkpoints / name
        flip(path, path.stat().st_size - 3, 0)
    with pytest.warns(StoreWarning, match="previous checkpoint is unusable"):
        assert RunStore(two_checkpoints).load_checkpoint() is None


def rows():
    return [{"step": s, "seed": k, "loss": 1.0 / (1 + s + k), "lr": 0.1}
            for s in range(6) for k in (0, 1)]


def test_any_flipped_bit_in_scalars_jsonl_drops_the_line_never_misreads(tmp_path):
    RunStore(tmp_path).append_scalars(rows())
    path = tmp_path / SCALARS_FILE
    original = path.read_bytes()
    truth = {(r["step"], r["seed"]): (r["loss"], r["lr"]) for r in rows()}
    for position, bit in positions(path, n=80):
        path.write_bytes(original)
        flip(path, position, bit)
        df = RunStore(tmp_path).read_scalars()
        got = {(s, k): (loss, lr) for s, k, loss, lr in
               zip(df["step"], df["seed"], df["loss"], df["lr"])}
        assert set(got.items()) <= set(truth.items()), (position, bit)
        assert len(got) < len(truth)
        assert df.attrs["bad_lines"] + df.attrs["torn_tail"] >= 1


def test_flipped_digit_in_scalars_jsonl_is_a_dropped_line(tmp_path):
    RunStore(tmp_path).append_scalars(rows())
    path = tmp_path / SCALARS_FILE
    path.write_bytes(path.read_bytes().replace(b'"loss":0.5,', b'"loss":0.7,', 1))
    df = RunStore(tmp_path).read_scalars()
    assert df.attrs["bad_lines"] == 1 and 0.7 not in df["loss"].tolist()
    assert len(df) == len(rows()) - 1


def test_any_flipped_bit_in_scalars_parquet_never_misreads(tmp_path):
    rs = RunStore(tmp_path)
    rs.append_scalars(rows())
    assert rs.finalize()
    truth = RunStore(tmp_path).read_scalars()
    path = tmp_path / PARQUET_FILE
    original = path.read_bytes()
    stamp = (tmp_path / SCALARS_FILE).stat().st_mtime_ns
    detected = 0
    for position, bit in positions(path, n=60):
        path.write_bytes(original)
        flip(path, position, bit)
        assert path.stat().st_mtime_ns >= stamp
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = RunStore(tmp_path).read_scalars()
        pd.testing.assert_frame_equal(df, truth, check_exact=True)
        detected += any(issubclass(w.category, StoreWarning) for w in caught)
    assert detected >= 30


def test_flipped_mantissa_bit_of_a_loss_in_scalars_parquet_is_detected(tmp_path):
    """The issue's case: a value changed inside the parquet still decodes; only the
    checksum catches it."""
    import struct

    rs = RunStore(tmp_path)
    rs.append_scalars(rows())
    assert rs.finalize()
    truth = RunStore(tmp_path).read_scalars()
    path = tmp_path / PARQUET_FILE
    data = path.read_bytes()
    at = data.find(struct.pack("<d", 1.0 / 7))
    assert at >= 0
    flip(path, at, 0)
    with pytest.warns(StoreWarning, match="checksum does not match"):
        df = RunStore(tmp_path).read_scalars()
    pd.testing.assert_frame_equal(df, truth, check_exact=True)


def test_flipped_bit_in_a_probe_shard_is_caught_by_the_zip_crc(tmp_path):
    import numpy as np

    from widthscan.measurement import Measurement
    from widthscan.store.probes import shard_path

    values = np.arange(2 * 16, dtype=np.float64).reshape(2, 16) / 7
    rs = RunStore(tmp_path)
    for step in (0, 1):
        rs.write_probe("logits", step, {"logits": Measurement(("example",), values + step)})
    path = shard_path(tmp_path / "probes" / "logits", 1)
    at = path.read_bytes().find((values[1, 3] + 1).tobytes())
    assert at >= 0
    flip(path, at, 0)
    series = RunStore(tmp_path).read_probes()["logits"]["logits"]
    assert series.steps.tolist() == [0]
    np.testing.assert_array_equal(series.values[0], values)
