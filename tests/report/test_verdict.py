"""The verdict: its sentence per parameterization, caveat cells and final probe loss, on
planted Datasets whose answers are known in closed form."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import xarray as xr

from widthscan.analysis import fit_power_law
from widthscan.report import verdict
from widthscan.report.context import Context

WIDTHS = np.array([64, 128, 256, 512, 1024])
N_EX, N_SEED = 16, 3


def planted(rng: np.random.Generator) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """mup: logits f_inf + B (64/N), probe loss 0.2 + 0.5 (64/N)^0.8 (consistent);
    sp: logits f_inf + B sin(log2 N), probe loss rising with width (not consistent)."""
    n = WIDTHS.astype(float)
    f_inf = rng.normal(size=(N_EX, 2))
    b = rng.normal(size=(N_EX, 2))
    shape = {"mup": 64 / n, "sp": np.sin(1.3 * np.log2(n))}
    loss = {"mup": 0.2 + 0.5 * (64 / n) ** 0.8, "sp": 0.3 + 0.01 * n**0.5}
    logits = np.stack([f_inf + shape[p][:, None, None] * b for p in ("mup", "sp")])
    logits = np.broadcast_to(logits[:, :, None, None], (2, n.size, N_SEED, 2, N_EX, 2)).copy()
    logits += 1e-6 * rng.normal(size=logits.shape)
    probe = np.stack([loss[p] for p in ("mup", "sp")])[:, :, None, None]
    probe = probe * (1 + 0.01 * rng.normal(size=(2, n.size, N_SEED, 30)))
    probe[..., :-1] *= 2.0  # earlier steps are higher: only the last step is "final"
    return f_inf, b, xr.Dataset(
        {"logits": (("param", "width", "seed", "logits_step", "example", "output"), logits),
         "probe_loss": (("param", "width", "seed", "loss_step"), probe)},
        coords={"param": ["mup", "sp"], "width": WIDTHS, "seed": np.arange(N_SEED),
                "logits_step": [0, 100], "loss_step": 10 * np.arange(30)})


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    f_inf, b, ds = planted(np.random.default_rng(0))
    ctx = Context(ds, tmp_path_factory.mktemp("verdict"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ctx, verdict.conclusions(ctx), verdict.build(ctx), (f_inf, b)


def test_consistent_parameterization_sentence_states_its_rate(sentences):
    _, lines, _, (f_inf, b) = sentences
    mup = next(line for line in lines if line.startswith("μP"))
    assert mup.startswith("μP (mup): consistent: ")
    # closed form: the scaled distance is |B| (64/N - 64/1024) / RMS(f_widest)
    n = WIDTHS[:-1].astype(float)
    x, y = np.log(n), np.log(1 / n - 1 / WIDTHS[-1])
    expected = np.polyfit(x, y, 1)[0]
    got = float(re.search(r"∝ N\^(-?[0-9.]+)", mup.replace("−", "-")).group(1))
    assert got == pytest.approx(expected, abs=0.006)
    assert "∝ N^−" not in mup
    # scaled distance (64/N - 1/16) RMS(B) / RMS(f_inf + B/16); consistent from the first
    # width where it and every wider one are <= 0.1
    rms = np.sqrt((b**2).mean()) / np.sqrt(((f_inf + b / 16) ** 2).mean())
    ok = (64 / n - 1 / 16) * rms <= 0.1
    assert f"within 0.1 of the widest from width {int(n[ok][0])} on" in mup
    alpha = float(re.search(r"converges as N\^−([0-9.]+)", mup).group(1))
    assert alpha == pytest.approx(0.8, abs=0.1)
    assert "probe loss converges" in mup and "caveat" not in mup


def test_inconsistent_parameterization_sentence(sentences):
    _, lines, _, _ = sentences
    sp = next(line for line in lines if line.startswith("SP"))
    assert sp.startswith("SP (sp): not consistent: ")
    assert "do not approach the widest width's steadily" in sp
    assert "probe loss: no power law" in sp


def test_table_shows_no_power_law_and_last_step_probe_loss(sentences):
    ctx, _, out, _ = sentences
    table = out.tables[0]
    col = table.headers.index("final probe loss")
    alpha_col = table.headers.index("power law α [90% CI]")
    last = ctx.ds["probe_loss"].isel(loss_step=-1)
    for row, attrs in zip(table.rows, table.row_attrs):
        cells = [c if isinstance(c, str) else c.text for c in row]
        offset = 0 if len(row) == len(table.headers) else -1
        p, w = attrs["data-param"], int(attrs["data-width"])
        mean = float(last.sel(param=p, width=w).mean())
        assert cells[col + offset].startswith(verdict.fmt(mean))
        if offset == 0 and p == "sp":
            assert cells[alpha_col].startswith("no power law")
            assert row[alpha_col].cls == "bad"
    assert any("last logged step" in f for f in out.footnotes)


def test_parameter_at_its_bound_is_a_caveat_not_a_green_cell():
    rng = np.random.default_rng(1)
    n = WIDTHS.astype(float)

    def fit(law):
        vals = law[:, None] * (1 + 1e-3 * rng.normal(size=(n.size, 4)))
        da = xr.DataArray(vals[None], dims=("param", "width", "seed"),
                          coords={"param": ["sp"], "width": WIDTHS})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_power_law(da).sel(param="sp")

    steep = fit(1.0 + (64 / n) ** 6)
    clean = fit(1.0 + (64 / n) ** 0.7)
    alpha, r2, _ = verdict.fit_cells(steep, 1)
    assert float(steep["r2"]) > 0.97 and "caveat" in alpha.text and r2.cls != "good"
    assert "upper bound 4" in verdict.loss_clause(steep, "loss")
    alpha, r2, _ = verdict.fit_cells(clean, 1)
    assert "caveat" not in alpha.text and r2.cls == "good"


def test_logits_clause_needs_three_widths_and_a_negative_slope():
    def sl(slope, lo, hi, n, falls):
        return xr.Dataset({"slope": slope, "slope_lo": lo, "slope_hi": hi, "n": n,
                           "falls": falls})

    assert verdict.logits_clause(sl(-1.0, -1.5, -0.5, 3, True), 256.0, [64, 512])[0] == \
        "consistent"
    # the interval reaches 0: the fall is not significant
    assert verdict.logits_clause(sl(-1.0, -2.5, 0.2, 3, True), 256.0, [64, 512])[0] == \
        "not consistent"
    assert verdict.logits_clause(sl(-1.0, np.nan, np.nan, 2, True), np.nan, [64, 256])[0] == \
        "consistency not established"
    assert verdict.logits_clause(None, np.nan, [64])[0] == "consistency not assessed"


def test_interval_reaching_the_alpha_bound_is_a_caveat():
    """alpha inside its range but its interval cut at the search bound (a steep law seen
    through 15% seed noise): the upper end is the bound, not the data, so no green cell."""
    n = WIDTHS.astype(float)
    rng = np.random.default_rng(3)
    vals = (0.03 + 0.1 * (64 / n) ** 3.0)[:, None] * (1 + 0.15 * rng.normal(size=(n.size, 4)))
    da = xr.DataArray(vals[None], dims=("param", "width", "seed"),
                      coords={"param": ["sp"], "width": WIDTHS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit_power_law(da).sel(param="sp")
    assert not bool(f["alpha_at_bound"]) and float(f["alpha_hi"]) >= 4 * 0.99
    alpha, r2, _ = verdict.fit_cells(f, 1)
    assert "caveat" in alpha.text and r2.cls != "good"
    assert any("reaches the search bound 4" in c for c in verdict.loss_caveats(f))
