import json
import math

import numpy as np
import pandas as pd
import pytest

from widthscan.store import RunStore
from widthscan.store.run import PARQUET_FILE, SCALARS_FILE


def _strict(text):
    def reject(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return [json.loads(line, parse_constant=reject) for line in text.splitlines()]


def test_nonfinite_roundtrip_and_strict_json(tmp_path):
    rs = RunStore(tmp_path)
    values = [float("nan"), float("inf"), float("-inf"), 0.25, np.float32(-2.5), np.float64("nan")]
    rs.append_scalars([{"step": i, "seed": 4, "loss": v} for i, v in enumerate(values)])
    rows = _strict((tmp_path / SCALARS_FILE).read_text())
    assert len(rows) == len(values)

    df = rs.read_scalars()
    assert list(df.columns) == ["step", "seed", "loss"]
    assert df["step"].tolist() == list(range(len(values)))
    assert (df["seed"] == 4).all()
    got = df["loss"].to_numpy()
    assert np.isnan(got[0]) and np.isnan(got[5])
    assert got[1] == math.inf and got[2] == -math.inf
    assert got[3] == 0.25 and got[4] == -2.5


def test_row_without_step_or_seed_is_rejected(tmp_path):
    rs = RunStore(tmp_path)
    with pytest.raises(ValueError, match="seed"):
        rs.append_scalars([{"step": 0, "loss": 1.0}])
    with pytest.raises(ValueError, match="step"):
        rs.append_scalars([{"step": 1.5, "seed": 0, "loss": 1.0}])
    assert not (tmp_path / SCALARS_FILE).exists()


def test_torn_last_line_is_dropped_then_repaired(tmp_path):
    rs = RunStore(tmp_path)
    rs.append_scalars([{"step": s, "seed": 0, "loss": 1.0 / (s + 1)} for s in range(3)])
    with open(tmp_path / SCALARS_FILE, "ab") as f:
        f.write(b'{"step":3,"seed":0,"lo')

    df = RunStore(tmp_path).read_scalars()
    assert df["step"].tolist() == [0, 1, 2]
    assert df.attrs["torn_tail"] is True

    writer = RunStore(tmp_path)
    writer.append_scalars([{"step": 3, "seed": 0, "loss": 0.25}])
    df = writer.read_scalars()
    assert df["step"].tolist() == [0, 1, 2, 3]
    assert df["loss"].tolist() == [1.0, 0.5, 1.0 / 3, 0.25]
    assert df.attrs["torn_tail"] is False and df.attrs["bad_lines"] == 0


def test_invalid_middle_line_is_skipped(tmp_path):
    (tmp_path / SCALARS_FILE).write_text(
        '{"step":0,"seed":0,"loss":1}\nnot json\n{"seed":0}\n{"step":1,"seed":0,"loss":2}\n'
    )
    rs = RunStore(tmp_path)
    df = rs.read_scalars()
    assert df["loss"].tolist() == [1.0, 2.0]
    assert rs.last_read_bad_lines == 2


def _rows(steps, seeds=(0, 1), attempt=0):
    return [
        {"step": s, "seed": k, "loss": 10.0 * k + s + attempt / 10, "lr": 0.1}
        for s in steps
        for k in seeds
    ]


def test_truncate_then_resume_equals_uninterrupted(tmp_path):
    from widthscan.measurement import Measurement

    straight = RunStore(tmp_path / "a")
    straight.append_scalars(_rows(range(10)))

    crashed = RunStore(tmp_path / "b")
    crashed.append_scalars(_rows(range(8)))
    for step in (0, 4, 7):
        crashed.write_probe("logits", step, {"logits": Measurement(("e",), np.zeros((2, 3)))})
    with open(tmp_path / "b" / SCALARS_FILE, "ab") as f:
        f.write(b'{"step":8,"se')

    resumed = RunStore(tmp_path / "b")
    resumed.truncate_scalars(after_step=5)
    kept = sorted(p.name for p in (tmp_path / "b" / "probes" / "logits").glob("*.npz"))
    assert kept == ["000000000.npz", "000000004.npz"]
    assert resumed.read_scalars()["step"].max() == 5
    resumed.append_scalars(_rows(range(6, 10)))

    assert (tmp_path / "b" / SCALARS_FILE).read_bytes() == (
        tmp_path / "a" / SCALARS_FILE
    ).read_bytes()
    pd.testing.assert_frame_equal(resumed.read_scalars(), straight.read_scalars(), check_exact=True)


def test_resume_without_truncation_prefers_relogged_steps(tmp_path):
    rs = RunStore(tmp_path)
    rs.append_scalars(_rows(range(6), attempt=1))
    rs.append_scalars(_rows(range(3, 8), attempt=2))
    df = rs.read_scalars()
    assert df["step"].tolist() == [s for s in range(8) for _ in (0, 1)]
    expected = [10.0 * k + s + (0.1 if s < 3 else 0.2) for s in range(8) for k in (0, 1)]
    np.testing.assert_allclose(df["loss"].to_numpy(), expected)


def test_finalize_writes_parquet_that_matches_and_appends_invalidate_it(tmp_path):
    rs = RunStore(tmp_path)
    rows = _rows(range(4))
    rows[0]["loss"] = float("inf")
    rs.append_scalars(rows)
    from_jsonl = rs.read_scalars()
    assert rs.finalize()
    assert (tmp_path / PARQUET_FILE).exists()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / PARQUET_FILE), from_jsonl, check_like=False
    )
    resumed = RunStore(tmp_path)
    resumed.append_scalars(_rows([4]))
    assert not (tmp_path / PARQUET_FILE).exists()
    assert resumed.read_scalars()["step"].max() == 4
