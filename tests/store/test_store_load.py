import itertools
import os

import numpy as np
import pytest

from widthscan.measurement import Measurement
from widthscan.store import (
    IncompleteSweepWarning,
    RunStore,
    load,
    load_scalars,
    load_status,
    run_dir,
)

PARAMS = ("mup", "sp")
WIDTHS = (64, 128, 1024)
SCALAR_STEPS = range(10)
LOGIT_STEPS = (0, 5, 9)
KERNEL_STEPS = (0, 8)
LAYERS = ["l0", "l1"]
DIVERGED = {("sp", 1024): {7: 5}}
INCOMPLETE = ("mup", 1024)
LAST_STEP_INCOMPLETE = 4
EXTRA_SEED_RUN = ("sp", 128)
TOML = '[sweep]\nname = "fake"\nwidths = [64, 128, 1024]\n'


def seeds_of(param, width):
    return [3, 7, 9] if (param, width) == EXTRA_SEED_RUN else [3, 7]


def loss(param, width, seed, step):
    return PARAMS.index(param) * 1e4 + width + seed / 10 + step / 1000


def logits(param, width, seed, step):
    base = loss(param, width, seed, step)
    return base + np.arange(6, dtype=np.float64).reshape(3, 2)


def kernel(param, width, seed, step):
    return np.float32(loss(param, width, seed, step)) + np.arange(
        2 * 3 * 3, dtype=np.float32
    ).reshape(2, 3, 3)


def margin(param, width, seed, step):
    return -loss(param, width, seed, step) * np.ones(3)


def last_step(param, width):
    return LAST_STEP_INCOMPLETE if (param, width) == INCOMPLETE else max(SCALAR_STEPS)


def write_fake_sweep(root):
    (root / "sweep.toml").write_text(TOML)
    for param, width in itertools.product(PARAMS, WIDTHS):
        rs = RunStore(run_dir(root, param, width))
        seeds = seeds_of(param, width)
        end = last_step(param, width)
        rs.write_config({"param": param, "width": width, "seeds": seeds})
        for step in SCALAR_STEPS:
            if step <= end:
                rs.append_scalars(
                    [
                        {"step": step, "seed": s, "loss": loss(param, width, s, step), "lr": 0.5}
                        for s in seeds
                    ]
                )
        for step in LOGIT_STEPS:
            if step <= end:
                results = {
                    "logits": Measurement(
                        ("example", "output"),
                        np.stack([logits(param, width, s, step) for s in seeds]),
                    )
                }
                if param == "sp":
                    results["margin"] = Measurement(
                        ("example",), np.stack([margin(param, width, s, step) for s in seeds])
                    )
                rs.write_probe("logits", step, results)
        for step in KERNEL_STEPS:
            if step <= end:
                values = np.stack([kernel(param, width, s, step) for s in seeds])
                rs.write_probe(
                    "kernels",
                    step,
                    {
                        "kernel": Measurement(
                            ("layer", "example", "example2"), values, {"layer": np.array(LAYERS)}
                        )
                    },
                )
        diverged = DIVERGED.get((param, width), {})
        state = "running" if (param, width) == INCOMPLETE else "done"
        rs.write_status(
            {"state": state, "step": end, "steps": 10, "seeds": seeds, "diverged": diverged}
        )
    with open(run_dir(root, "mup", 64) / "scalars.jsonl", "ab") as f:
        f.write(b'{"step": 10, "seed": 3, "loss": 12')


def expected(var, param, width, seed, step):
    """What the dataset must hold at one point (NaN where nothing was written or diverged)."""
    if seed not in seeds_of(param, width) or step > last_step(param, width):
        return None
    if step >= DIVERGED.get((param, width), {}).get(seed, np.inf):
        return None
    if var == "margin" and param != "sp":
        return None
    fn = {"loss": loss, "logits": logits, "kernel": kernel, "margin": margin}[var]
    return fn(param, width, seed, step)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    write_fake_sweep(root)
    return root


@pytest.fixture(scope="module")
def ds(sweep):
    with pytest.warns(IncompleteSweepWarning, match="param=mup,width=1024"):
        return load(sweep)


def test_coordinates(ds):
    assert ds["param"].values.tolist() == ["mup", "sp"]
    assert ds["width"].values.tolist() == [64, 128, 1024]
    assert ds["width"].dtype.kind == "i"
    assert ds["seed"].values.tolist() == [3, 7, 9]
    assert ds["step"].values.tolist() == list(SCALAR_STEPS)
    assert ds["logits_step"].values.tolist() == list(LOGIT_STEPS)
    assert ds["kernels_step"].values.tolist() == list(KERNEL_STEPS)
    assert ds["kernel_layer"].values.tolist() == LAYERS


def test_variable_dims(ds):
    assert ds["loss"].dims == ("param", "width", "seed", "step")
    assert ds["lr"].dims == ("param", "width", "seed", "step")
    assert ds["logits"].dims == (
        "param", "width", "seed", "logits_step", "logits_example", "output")
    assert ds["margin"].dims == ("param", "width", "seed", "logits_step", "margin_example")
    assert ds["kernel"].dims == (
        "param",
        "width",
        "seed",
        "kernels_step",
        "kernel_layer",
        "kernel_example",
        "kernel_example2",
    )
    assert ds.sizes["logits_example"] == 3 and ds.sizes["output"] == 2
    assert ds.sizes["kernel_example2"] == 3
    assert ds["kernel"].attrs["dims_on_disk"] == ["layer", "example", "example2"]
    assert ds["kernel"].attrs["per"] == "example"


@pytest.mark.parametrize(
    ("var", "step_dim"),
    [
        ("loss", "step"),
        ("logits", "logits_step"),
        ("margin", "logits_step"),
        ("kernel", "kernels_step"),
    ],
)
def test_values_match_what_was_written(ds, var, step_dim):
    arr = ds[var]
    n_checked = 0
    for param, width, seed, step in itertools.product(
        PARAMS, WIDTHS, ds["seed"].values.tolist(), ds[step_dim].values.tolist()
    ):
        got = arr.sel({"param": param, "width": width, "seed": seed, step_dim: step}).values
        want = expected(var, param, width, seed, step)
        if want is None:
            assert np.isnan(got).all(), (param, width, seed, step)
        else:
            np.testing.assert_array_equal(got, want)
            n_checked += 1
    assert n_checked > 0


def test_divergence_masks_scalars_and_probes(ds):
    member = {"param": "sp", "width": 1024, "seed": 7}
    loss_curve = ds["loss"].sel(member).values
    assert np.isfinite(loss_curve[:5]).all() and np.isnan(loss_curve[5:]).all()
    assert np.isfinite(ds["logits"].sel(member).sel(logits_step=0).values).all()
    assert np.isnan(ds["logits"].sel(member).sel(logits_step=[5, 9]).values).all()
    assert np.isnan(ds["kernel"].sel(member).sel(kernels_step=8).values).all()
    assert np.isfinite(ds["loss"].sel(param="sp", width=1024, seed=3).values).all()
    assert ds.attrs["diverged"] == ["param=sp,width=1024,seed=7,step=5"]


def test_attrs(ds):
    from widthscan._version import __version__

    assert ds.attrs["incomplete"] == ["param=mup,width=1024"]
    assert ds.attrs["config"] == TOML
    assert ds.attrs["widthscan_version"] == __version__
    for value in ds.attrs.values():
        assert isinstance(value, (str, int, float)) or all(isinstance(v, str) for v in value)


def test_load_without_masking_keeps_diverged_values(sweep):
    with pytest.warns(IncompleteSweepWarning):
        raw = load(sweep, mask_diverged=False)
    want = [loss("sp", 1024, 7, s) for s in SCALAR_STEPS]
    np.testing.assert_array_equal(raw["loss"].sel(param="sp", width=1024, seed=7).values, want)


def test_load_scalars_long_table(sweep):
    df = load_scalars(sweep)
    assert list(df.columns) == ["param", "width", "seed", "step", "loss", "lr"]
    n_rows = sum(
        len(seeds_of(p, w)) * (last_step(p, w) + 1) for p, w in itertools.product(PARAMS, WIDTHS)
    )
    assert len(df) == n_rows
    assert df["width"].unique().tolist() == [64, 128, 1024]
    for row in df.itertuples(index=False):
        want = expected("loss", row.param, row.width, row.seed, row.step)
        if want is None:
            assert np.isnan(row.loss)
        else:
            assert row.loss == want


def test_load_status(sweep):
    st = load_status(sweep)
    assert list(zip(st["param"], st["width"])) == list(itertools.product(PARAMS, WIDTHS))
    states = dict(zip(zip(st["param"], st["width"]), st["state"]))
    assert states[INCOMPLETE] == "running"
    assert sum(s == "done" for s in states.values()) == 5
    row = st[(st["param"] == "sp") & (st["width"] == 1024)].iloc[0]
    assert row["diverged"] == {7: 5} and row["step"] == 9 and row["steps"] == 10


def test_pending_run_without_files_is_all_nan_and_incomplete(tmp_path):
    good = RunStore(run_dir(tmp_path, "ntp", 32))
    good.append_scalars([{"step": 0, "seed": 0, "loss": 1.0}])
    good.write_status({"state": "done", "step": 0, "steps": 1, "seeds": [0]})
    run_dir(tmp_path, "ntp", 256).mkdir(parents=True)
    with pytest.warns(IncompleteSweepWarning):
        ds = load(tmp_path)
    assert ds["width"].values.tolist() == [32, 256]
    assert ds.attrs["incomplete"] == ["param=ntp,width=256"]
    assert ds.attrs["config"] == ""
    assert ds["loss"].sel(width=32).values.tolist() == [[[1.0]]]
    assert np.isnan(ds["loss"].sel(width=256).values).all()
    assert load_status(tmp_path)["state"].tolist() == ["done", "pending"]


def test_missing_sweep_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope")


def test_clashing_dims_are_renamed_and_labels_are_unioned(tmp_path):
    from widthscan.store.tables import LoadWarning

    for width, layers in ((8, ["a", "b"]), (16, ["b", "c"])):
        rs = RunStore(run_dir(tmp_path, "mup", width))
        rs.write_probe("logits", 0, {"logits": Measurement(("output",), np.full((1, 3), width))})
        stats = np.array([[[width, 0.0], [width + 1, 1.0]]])
        rs.write_probe(
            "kernels",
            0,
            {
                "kernel": Measurement(("output", "example2"), np.ones((1, 4, 4))),
                "stats": Measurement(("layer", "stat"), stats, {"layer": layers}),
            },
        )
        rs.write_status({"state": "done", "step": 0, "steps": 1, "seeds": [0]})
    with pytest.warns(LoadWarning, match="logits_output"):
        ds = load(tmp_path)
    assert ds["kernel"].dims[-2:] == ("output", "kernel_example2") and ds.sizes["output"] == 4
    assert ds["logits"].dims[-1] == "logits_output" and ds.sizes["logits_output"] == 3
    assert (ds["logits"].sel(width=16).values == 16).all()
    assert ds["stats_layer"].values.tolist() == ["a", "b", "c"]
    got = ds["stats"].isel(param=0, seed=0, kernels_step=0, stat=0)
    np.testing.assert_array_equal(got.sel(width=8).values, [8, 9, np.nan])
    np.testing.assert_array_equal(got.sel(width=16).values, [np.nan, 16, 17])


class _ShardOpens:
    """Counts opens of probe shards (.npz) through builtins.open and zipfile."""

    def __init__(self, monkeypatch):
        import builtins
        import zipfile

        self.paths: list[str] = []
        real_open, real_zip = builtins.open, zipfile.ZipFile.__init__

        def counting_open(file, *args, **kwargs):
            if str(file).endswith(".npz"):
                self.paths.append(str(file))
            return real_open(file, *args, **kwargs)

        def counting_zip(zf, file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and str(file).endswith(".npz"):
                self.paths.append(str(file))
            return real_zip(zf, file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting_open)
        monkeypatch.setattr(zipfile.ZipFile, "__init__", counting_zip)


def test_load_opens_no_probe_shard_until_values_are_asked_for(sweep, monkeypatch):
    opens = _ShardOpens(monkeypatch)
    with pytest.warns(IncompleteSweepWarning):
        lazy = load(sweep)
    assert opens.paths == []
    assert lazy["loss"].chunks is None and lazy["kernel"].chunks is not None
    one = lazy["kernel"].sel(param="sp", width=128, kernels_step=8)
    assert opens.paths == []
    np.testing.assert_array_equal(one.sel(seed=9).values, kernel("sp", 128, 9, 8))
    assert [os.path.basename(p) for p in opens.paths] == ["000000008.npz"]
    assert "param=sp" in opens.paths[0] and "width=128" in opens.paths[0]
    opens.paths.clear()
    assert lazy["logits"].values.shape[0] == len(PARAMS)
    written = sum(step <= last_step(p, w) for p, w in itertools.product(PARAMS, WIDTHS)
                  for step in LOGIT_STEPS)
    assert len(opens.paths) == written


def test_store_without_shapes_in_dims_json_loads_the_same(tmp_path, sweep, ds):
    """Stores written before dims.json recorded shapes are laid out from shard headers."""
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(sweep, old)
    for path in old.rglob("dims.json"):
        specs = json.loads(path.read_text())
        path.write_text(json.dumps({v: {k: s[k] for k in ("dims", "coords")}
                                    for v, s in specs.items()}))
    with pytest.warns(IncompleteSweepWarning):
        got = load(old)
    for var in ("logits", "kernel", "margin"):
        np.testing.assert_array_equal(got[var].values, ds[var].values)


def test_final_loss_table_reads_no_probe_shard(sweep, monkeypatch):
    """The table ``widthscan run`` prints at the end (final_loss of ws.load) needs only
    the scalars."""
    from widthscan.analysis.summary import final_loss

    opens = _ShardOpens(monkeypatch)
    with pytest.warns(IncompleteSweepWarning):
        table = final_loss(load(sweep))
    assert opens.paths == []
    row = table[(table["param"] == "sp") & (table["width"] == 64)].iloc[0]
    assert row["loss"] == pytest.approx(np.mean([loss("sp", 64, s, 9) for s in (3, 7)]))


def test_without_dask_the_same_values_are_read_at_once(sweep, ds, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.warns(IncompleteSweepWarning):
        eager = load(sweep)
    assert eager["kernel"].chunks is None
    for var in ("logits", "kernel", "margin"):
        np.testing.assert_array_equal(eager[var].values, ds[var].values)
