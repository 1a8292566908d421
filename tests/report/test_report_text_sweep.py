"""A transformer text sweep end to end: every probe keeps its own positions, the report's
consistency panels and per-token bias/variance are computed from finite data, and the
report's work is bounded (each variable read from disk at most once)."""

import numpy as np
import pytest
import xarray as xr
from scipy.special import log_softmax

import widthscan as ws
import widthscan.report
from widthscan.report import figures

CONFIG = """
name = "tiny-text"
widths = [8, 16, 32]
base_width = 8
params = ["mup"]
seeds = 2
[task]
name = "text"
probe_examples = 8
options = { seq_len = 8 }
[model]
family = "transformer"
options = { n_layers = 1, n_heads = 2 }
[optimizer]
name = "adam"
lr = 0.01
[train]
steps = 6
batch_size = 4
checkpoint_every = 3
[probes.loss]
[probes.logits]
[probes.kernels]
[probes.attention]
"""
PLOTTERS = ("width_curves", "successive_vs_width", "steps_vs_width", "matrix_grid",
            "bias_variance_vs_width")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "sweep"
    assert ws.Sweep.from_string(CONFIG).run(out, progress=False).ok
    return out


@pytest.fixture(scope="module")
def plotted(sweep_dir):
    """What each figure of the report was drawn from: (plotter, title, first array)."""
    calls = []
    mp = pytest.MonkeyPatch()
    for name in PLOTTERS:
        real = getattr(figures, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs.get("title", ""), args[0], kwargs))
            return _real(*args, **kwargs)

        mp.setattr(figures, name, spy)
    try:
        ws.report(ws.load(sweep_dir), sweep_dir / "report.html", progress=False)
    finally:
        mp.undo()
    return calls


def _one(plotted, plotter, words):
    found = [c for c in plotted if c[0] == plotter and words in c[1]]
    assert len(found) == 1, [(c[0], c[1]) for c in plotted]
    return found[0]


def test_every_probe_keeps_its_own_positions(sweep_dir):
    ds = ws.load(sweep_dir)
    assert ds["logits"].attrs["per"] == "token" and ds["kernel"].attrs["per"] == "sequence"
    assert ds["attention"].attrs["per"] == "member"
    assert ds["logits"].dims[-2:] == ("logits_position", "output")
    assert ds["target_logit"].dims[-1] == "target_logit_position"
    assert ds["kernel"].dims[-3:] == ("kernel_layer", "kernel_example", "kernel_example2")
    # full logits at the first 32 of the 64 predicted positions, target logits at all
    assert ds.sizes["logits_position"] == 32 and ds.sizes["target_logit_position"] == 64
    assert ds.sizes["targets_position"] == 64 and ds.sizes["kernel_example"] == 8
    for var in ("logits", "target_logit", "kernel", "attention", "targets"):
        assert np.isfinite(ds[var].values).all(), var
    # target_logit is the logit of the stored target token at the same position
    f = ds["logits"].isel(logits_step=-1)
    t = ds["targets"].isel(param=0, width=0, seed=0, targets_step=0).sel(
        targets_position=f["logits_position"].values)
    picked = f.isel(output=xr.DataArray(t.values.astype(int), dims="logits_position"))
    want = ds["target_logit"].isel(logits_step=-1).sel(
        target_logit_position=f["logits_position"].values)
    np.testing.assert_allclose(picked.values, want.values, rtol=1e-6)


@pytest.mark.parametrize(("plotter", "words"), [
    ("width_curves", "Probe logits: scaled RMS distance"),
    ("successive_vs_width", "successive widths"),
    ("width_curves", "Feature kernel distance"),
    ("width_curves", "Attention maps: scaled RMS distance"),
    ("steps_vs_width", "Attention maps: distance to the widest against width"),
])
def test_consistency_panels_are_drawn_from_finite_data(plotted, plotter, words):
    _, _, data, kwargs = _one(plotted, plotter, words)
    for da in (data, kwargs.get("single")):
        if da is None:
            continue
        sd = next(d for d in da.dims if str(d).endswith("step"))
        last = da.isel({sd: -1})
        assert np.isfinite(last.values).all(), words
        narrower = last.sel(width=[w for w in last["width"].values if w < 32])
        assert (narrower.values > 0).all(), words


def test_matrices_are_drawn_per_width_at_full_size(plotted):
    _, _, att, _ = _one(plotted, "matrix_grid", "Attention maps at step")
    assert att.sizes["query"] == att.sizes["key"] == 8 and att.sizes["width"] == 3
    np.testing.assert_allclose(att.sum("key").values, 1.0, rtol=1e-5)
    _, _, gram, _ = _one(plotted, "matrix_grid", "Feature kernels at step")
    assert gram.shape[-2:] == (8, 8) and np.isfinite(gram.values).all()


def test_per_token_cross_entropy_bias_variance_matches_a_direct_computation(sweep_dir, plotted):
    _, _, bv, _ = _one(plotted, "bias_variance_vs_width", "Bias and variance")
    ds = ws.load(sweep_dir)
    f = ds["logits"].isel(param=0, logits_step=-1).values.astype(np.float64)  # (W, S, E, V)
    pos = ds["logits_position"].values
    y = ds["targets"].isel(param=0, width=0, seed=0, targets_step=0).sel(
        targets_position=pos).values.astype(int)
    tokens = np.arange(pos.size)

    def ce(logits):  # mean over tokens of -log softmax(logits)[target]
        return -log_softmax(logits, -1)[..., tokens, y].mean(-1)

    single = ce(f).mean(1)
    ensemble = ce(f.mean(1))
    bv = bv.squeeze(drop=True) if "param" in bv.dims else bv
    np.testing.assert_allclose(bv["single_loss"].values, single, rtol=1e-6)
    np.testing.assert_allclose(bv["ensemble_loss"].values, ensemble, rtol=1e-6)
    np.testing.assert_allclose(bv["variance"].values, single - ensemble, rtol=1e-6)
    assert (single - ensemble >= -1e-12).all()  # Jensen: the logit ensemble is no worse


def test_report_reads_each_variable_at_most_once(sweep_dir, monkeypatch, capsys):
    """Bounded by construction: the report pulls every probe variable from disk once,
    whatever the number of sections that use it; it prints one line per section."""
    from widthscan.store import probes

    reads: dict[str, int] = {}
    real = probes.read_var

    def counting(path, var):
        reads[var] = reads.get(var, 0) + 1
        return real(path, var)

    monkeypatch.setattr(probes, "read_var", counting)
    ds = ws.load(sweep_dir)
    shards = {v: int(np.prod([ds.sizes[d] for d in ds[v].dims[:2]])) * ds.sizes[
        ds[v].dims[3]] for v in ds.data_vars if ds[v].chunks is not None}
    html = widthscan.report.report(ds, sweep_dir / "bounded.html").read_text()
    lines = capsys.readouterr().err.splitlines()
    built = [line for line in lines if line.startswith("report: section ")]
    assert len(built) == html.count("<section") and built[-1].startswith(
        f"report: section {len(built)}/{len(built)} ")
    assert reads, "the report read nothing"
    for var, n in reads.items():
        assert n <= shards[var], (var, n, shards[var])


def test_variables_too_big_to_hold_are_read_lazily_per_section(sweep_dir, monkeypatch):
    """Past report.build.HOLD_BYTES a variable is not held in memory; every section still
    builds from the lazy Dataset (each reads the part it shows)."""
    import warnings

    from widthscan.report import build

    monkeypatch.setattr(build, "HOLD_BYTES", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", build.ReportWarning)
        html = widthscan.report.report(ws.load(sweep_dir), sweep_dir / "lazy.html",
                                       progress=False).read_text()
    for sid in ("logits", "successive", "kernel", "attention", "bias-variance"):
        assert f'id="{sid}"' in html
