import json
import signal

import numpy as np
import pytest
from _store_subproc import expect_line, spawn

from widthscan.measurement import Measurement
from widthscan.store import RunStore


def _kernel(step, k=2):
    rng = np.random.default_rng(step)
    return rng.standard_normal((k, 3, 4, 4)).astype(np.float32)


def test_probe_shards_roundtrip_exactly(tmp_path):
    rs = RunStore(tmp_path)
    layers = np.array(["blocks.0.mlp", "blocks.1.mlp", "head"])
    hist = {s: np.arange(2 * 3 * 5).reshape(2, 3, 5) * (s + 1) for s in (1, 10, 100)}
    for step in (100, 1, 10):
        rs.write_probe(
            "kernels",
            step,
            {
                "kernel": Measurement(
                    ("layer", "example", "example2"), _kernel(step), {"layer": layers}
                ),
                "counts": Measurement(("layer", "bin"), hist[step], {"layer": layers}),
                "sharp": Measurement((), np.array([step, -step], dtype=np.float64)),
            },
        )
    assert sorted(p.name for p in (tmp_path / "probes" / "kernels").iterdir()) == [
        "000000001.npz",
        "000000010.npz",
        "000000100.npz",
        "dims.json",
    ]
    dims = json.loads((tmp_path / "probes" / "kernels" / "dims.json").read_text())
    assert dims["kernel"] == {
        "dims": ["layer", "example", "example2"],
        "coords": {"layer": list(layers)},
        "shape": list(_kernel(1).shape[1:]),
        "members": _kernel(1).shape[0],
        "dtype": _kernel(1).dtype.str,
    }

    got = RunStore(tmp_path).read_probes()
    assert list(got) == ["kernels"]
    kern = got["kernels"]["kernel"]
    assert kern.dims == ("layer", "example", "example2")
    assert kern.coords["layer"].tolist() == layers.tolist()
    assert kern.steps.tolist() == [1, 10, 100]
    assert kern.values.dtype == np.float32
    np.testing.assert_array_equal(kern.values, np.stack([_kernel(s) for s in (1, 10, 100)]))
    counts = got["kernels"]["counts"]
    assert counts.values.dtype == hist[1].dtype
    np.testing.assert_array_equal(counts.values, np.stack([hist[s] for s in (1, 10, 100)]))
    sharp = got["kernels"]["sharp"]
    assert sharp.dims == () and sharp.values.tolist() == [[1, -1], [10, -10], [100, -100]]


def test_var_missing_at_some_steps_is_nan(tmp_path):
    rs = RunStore(tmp_path)
    rs.write_probe("p", 0, {"a": Measurement((), np.ones(2, dtype=np.int64))})
    rs.write_probe("p", 5, {"a": Measurement((), np.ones(2)), "b": Measurement((), np.zeros(2))})
    got = rs.read_probes()["p"]
    assert got["b"].steps.tolist() == [0, 5]
    assert np.isnan(got["b"].values[0]).all() and (got["b"].values[1] == 0).all()


def test_invalid_measurements_are_rejected(tmp_path):
    rs = RunStore(tmp_path)
    with pytest.raises(ValueError, match="axes"):
        rs.write_probe("p", 0, {"x": Measurement(("example",), np.zeros((2, 3, 4)))})
    with pytest.raises(ValueError, match="labels"):
        rs.write_probe("p", 0, {"x": Measurement(("layer",), np.zeros((2, 3)), {"layer": ["a"]})})
    rs.write_probe("p", 0, {"x": Measurement(("example",), np.zeros((2, 3)))})
    with pytest.raises(ValueError, match="changed"):
        RunStore(tmp_path).write_probe("p", 1, {"x": Measurement(("output",), np.zeros((2, 3)))})
    with pytest.raises(ValueError, match="probe"):
        rs.write_probe("../evil", 0, {})


def test_stray_temp_and_broken_shards_are_ignored(tmp_path):
    rs = RunStore(tmp_path)
    rs.write_probe("p", 3, {"x": Measurement(("e",), np.full((2, 4), 3.0))})
    probe_dir = tmp_path / "probes" / "p"
    (probe_dir / ".000000004.npz.1a2b3c.tmp").write_bytes(b"PK\x03\x04 partial")
    (probe_dir / "000000005.npz").write_bytes(b"PK\x03\x04 truncated by hand")
    got = rs.read_probes()["p"]["x"]
    assert got.steps.tolist() == [3]
    assert (got.values == 3.0).all()
    assert rs.clean_temp() == 1
    assert not (probe_dir / ".000000004.npz.1a2b3c.tmp").exists()


WRITER = """
import sys
import numpy as np
from widthscan.measurement import Measurement
from widthscan.store import RunStore
rs = RunStore(sys.argv[1])
step = 0
while True:
    v = np.full((2, 256, 512), float(step), dtype=np.float32)
    rs.write_probe("big", step, {"x": Measurement(("a", "b"), v), "s": Measurement((), v[:, 0, 0])})
    print(step, flush=True)
    step += 1
"""


def test_shards_of_a_killed_writer_all_load(tmp_path):
    proc = spawn(WRITER, str(tmp_path))
    try:
        expect_line(proc, "12")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()
    probe_dir = tmp_path / "probes" / "big"
    shards = sorted(probe_dir.glob("[0-9]*.npz"))
    assert len(shards) >= 13
    for path in shards:
        with np.load(path, allow_pickle=False) as z:
            assert z["x"].shape == (2, 256, 512)
            assert (z["x"] == int(path.stem)).all()
    got = RunStore(tmp_path).read_probes()["big"]["x"]
    assert got.steps.tolist() == list(range(len(shards)))
    assert all((got.values[i] == i).all() for i in range(len(shards)))
