"""Verdicts of the paper's claims (``widthscan.analysis.claims``) on planted Datasets: a
claim must PASS where the planted data has the claimed width dependence, FAIL where it has
the opposite, and be INCONCLUSIVE where the data cannot decide."""

from __future__ import annotations

import numpy as np
import pytest

from claims_data import WIDTHS, kernels, logits, losses, power_curves
from widthscan.analysis.claims import (
    CLAIM_SETS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    Claim,
    Estimate,
    decide,
    evaluate_claim,
    stats,
)
from widthscan.analysis.dims import sample_dims


@pytest.fixture(autouse=True)
def few_bootstrap_draws(monkeypatch):
    monkeypatch.setattr(stats, "N_BOOT", 12)


def claim(experiment: str, claim_id: str) -> Claim:
    found = [c for c in CLAIM_SETS[experiment].claims if c.id == claim_id]
    assert found, f"{experiment} has no claim {claim_id}"
    return found[0]


def verdict(experiment: str, claim_id: str, ds) -> str:
    return evaluate_claim(claim(experiment, claim_id), ds).verdict


def _stub(op: str, threshold: float) -> Claim:
    return Claim("x", "x", "Fig. 0", "p", "s", op, threshold, lambda ds: Estimate(0.0))


@pytest.mark.parametrize(("op", "samples", "expected"), [
    ("<", [-0.5, -0.4, -0.3], PASS), ("<", [0.1, 0.0, -0.1], FAIL),
    ("<", [-0.5, -0.1, 0.2], INCONCLUSIVE), (">", [2.0, 3.0], PASS), (">", [0.2, 0.9], FAIL),
])
def test_decide_compares_the_whole_interval_with_the_threshold(op, samples, expected):
    threshold = -0.2 if op == "<" else 1.0
    est = Estimate(float(np.median(samples)), np.array(samples))
    assert decide(_stub(op, threshold), est, ci=1.0).verdict == expected


def test_decide_a_reason_or_nan_is_inconclusive():
    assert decide(_stub("<", 0), Estimate(-5.0, reason="too few widths")).verdict == INCONCLUSIVE
    assert decide(_stub("<", 0), Estimate(np.nan)).verdict == INCONCLUSIVE


@pytest.mark.parametrize("claim_id", ["resnet-distance", "resnet-successive",
                                      "resnet-one-point"])
def test_logit_claims_pass_when_deviations_shrink_and_fail_when_they_do_not(claim_id):
    assert verdict("logits", claim_id, logits(decay=0.5)) == PASS
    assert verdict("logits", claim_id, logits(decay=0.0)) == FAIL


def test_logit_distance_slope_matches_the_planted_exponent():
    # independent noise of size w^-1/2 at every width: distance to the widest W is
    # sqrt(1/w + 1/W) * rms(noise), whose log-log slope over w < W is computed here directly
    w = np.array(WIDTHS[:-1], float)
    expected = np.polyfit(np.log(w), np.log(np.sqrt(1 / w + 1 / WIDTHS[-1])), 1)[0]
    est = stats.distance_slope("logits", scaled=False)(logits(decay=0.5, n_ex=200))
    assert est.value == pytest.approx(expected, abs=0.05)


def test_logit_claims_are_inconclusive_with_three_widths_or_a_diverged_width():
    few = logits(decay=0.5, widths=WIDTHS[:3])
    result = evaluate_claim(claim("logits", "resnet-distance"), few)
    assert result.verdict == INCONCLUSIVE and "4 widths" in result.detail
    diverged = logits(decay=0.5)
    diverged["logits"][0, 1, 2, -1] = np.nan
    result = evaluate_claim(claim("logits", "resnet-distance"), diverged)
    assert result.verdict == INCONCLUSIVE and "64" in result.detail


def test_parameterization_ratio_pass_and_fail():
    ok = logits(decay={"mup": 1.0, "ntp": 0.2}, params=("mup", "ntp"))
    assert verdict("parameterizations", "ntp-farther", ok) == PASS
    swapped = logits(decay={"mup": 0.2, "ntp": 1.0}, params=("mup", "ntp"))
    assert verdict("parameterizations", "ntp-farther", swapped) == FAIL
    missing = logits(decay=1.0, params=("mup",))
    assert verdict("parameterizations", "ntp-farther", missing) == INCONCLUSIVE


def test_loss_curve_claims():
    curves = power_curves()
    good = losses({"mup": curves}, seed_noise=1e-3)
    for cid in ("mlp-wider-better", "mlp-curves-converge", "mlp-early-agreement"):
        assert verdict("loss-curves", cid, good) == PASS, cid
    worse = losses({"mup": power_curves(a=-5.0)}, seed_noise=1e-3)
    assert verdict("loss-curves", "mlp-wider-better", worse) == FAIL
    flat = losses({"mup": curves + 0.5 * np.random.default_rng(1).random((len(WIDTHS), 1))},
                  seed_noise=1e-3)
    assert verdict("loss-curves", "mlp-curves-converge", flat) == FAIL


def test_sp_divergence_counts_as_inconsistent_but_mup_divergence_is_undecided():
    mup = power_curves(wiggle=0.3)
    sp = power_curves(wiggle=0.3)
    sp[-1, 5:] = np.nan
    ds = losses({"mup": mup, "sp": sp}, var="loss", seed_noise=1e-3)
    assert verdict("sharpness", "mlp-sp-inconsistent", ds) == PASS
    ds = losses({"mup": sp, "sp": mup}, var="loss", seed_noise=1e-3)
    assert verdict("sharpness", "mlp-sp-inconsistent", ds) == INCONCLUSIVE
    same = losses({"mup": mup, "sp": mup}, var="loss", seed_noise=1e-3)
    assert verdict("sharpness", "mlp-sp-inconsistent", same) != PASS


def _bias_logits(bias_scale: float, noise_scale: float, noise_shrinks: bool = True):
    """Logits = 3 x one-hot target + a bias shrinking like 32/width + member noise
    (shrinking like 32/width, or the same at every width)."""
    ds = logits(decay=0.0, n_ex=64, n_out=3)
    rng = np.random.default_rng(5)
    y = ds["targets"].values[0, 0, 0, 0].astype(int)
    onehot = 3.0 * np.eye(3)[y]
    offset = rng.normal(size=onehot.shape)
    vals = np.empty_like(ds["logits"].values)
    for j, w in enumerate(WIDTHS):
        shrink = 32 / w if noise_shrinks else 1.0
        member = rng.normal(size=(len(ds.seed), *onehot.shape)) * noise_scale * shrink
        vals[0, j] = (onehot + bias_scale * 32 / w * offset + member)[:, None]
    ds["logits"].values[:] = vals
    return ds


def test_bias_variance_claims():
    biased = _bias_logits(bias_scale=3.0, noise_scale=0.2)
    assert verdict("bias-variance", "bias-over-variance", biased) == PASS
    assert verdict("bias-variance", "wide-beats-ensemble", biased) == PASS
    noisy = _bias_logits(bias_scale=0.0, noise_scale=1.0, noise_shrinks=False)
    assert verdict("bias-variance", "bias-over-variance", noisy) == FAIL
    assert verdict("bias-variance", "wide-beats-ensemble", noisy) == FAIL


def test_remaining_ensemble_gain_matches_the_closed_form():
    # MSE of k-member ensembles of iid members: L(k) - L(M) = s^2 (1/k - 1/M) in expectation,
    # so the share of the gain left after 4 of M = 6 members is (1/4 - 1/6) / (1 - 1/6) = 0.1
    ds = logits(decay=0.0, seeds=tuple(range(6)), n_ex=400, n_out=1)
    ds["targets"] = ds["targets"].expand_dims(output=1, axis=-1)
    est = stats.ensemble_size_stat("remaining_gain", "mse", n_boot=0)(ds)
    assert est.value == pytest.approx(0.1, abs=0.04)


def test_remaining_ensemble_gain_pools_the_widths():
    # one width whose members agree (no ensembling gain) does not make the statistic
    # undecidable, and the pooled share stays the closed form of the others
    ds = logits(decay=0.0, seeds=tuple(range(6)), n_ex=400, n_out=1)
    ds["targets"] = ds["targets"].expand_dims(output=1, axis=-1)
    first = ds["logits"].isel(width=0)
    ds["logits"][dict(width=0)] = first.isel(seed=0).broadcast_like(first)
    est = stats.ensemble_size_stat("remaining_gain", "mse", n_boot=0)(ds)
    assert est.value == pytest.approx(0.1, abs=0.04)


def test_power_law_claims():
    final = 0.3 + 4.0 * np.asarray(WIDTHS, float) ** -0.8
    ds = losses({"mup": np.repeat(final[:, None], 3, 1)}, seed_noise=1e-4)
    assert verdict("power-law", "r2", ds) == PASS
    est = stats.power_law_stat("alpha")(ds)
    assert est.value == pytest.approx(0.8, abs=0.05)
    assert verdict("power-law", "alpha", ds) == PASS
    few = losses({"mup": np.repeat(final[:3, None], 3, 1)}, widths=WIDTHS[:3])
    assert verdict("power-law", "r2", few) == INCONCLUSIVE


def test_spectral_claims():
    aligned_when_wide = kernels(np.array([0.9, 0.6, 0.3, 0.1, 0.0]))
    for cid in ("spectrum", "alignment", "flow"):
        assert verdict("spectral", cid, aligned_when_wide) == PASS, cid
    aligned_when_narrow = kernels(np.array([0.0, 0.1, 0.3, 0.6, 0.9]))
    assert verdict("spectral", "alignment", aligned_when_narrow) == FAIL
    assert verdict("spectral", "flow", aligned_when_narrow) == FAIL
    est = stats.spectral_stat("spectrum_deviation", param="ntp", n_boot=0)(aligned_when_wide)
    assert est.value == pytest.approx(0.0, abs=1e-9)  # rotations keep the spectrum


def test_alignment_counts_task_power_beyond_the_top_ten_modes():
    # the target lies in eigenvector 12 of 16 at the widest width and is rotated toward the
    # slowest mode at narrower ones: the top 10 modes hold none of it at any width, yet the
    # narrower kernels put it in slower modes (the cumulative power C(k) rises later)
    deep = kernels(np.array([0.9, 0.6, 0.3, 0.1, 0.0]), mode=12)
    assert verdict("spectral", "alignment", deep) == PASS
    est = stats.spectral_stat("alignment_gap", param="ntp", n_boot=0, top=None)(deep)
    c_narrow = np.r_[np.zeros(12), np.full(3, np.cos(0.9) ** 2), 1.0]
    c_wide = np.r_[np.zeros(12), np.ones(4)]
    assert est.value == pytest.approx(np.mean(c_wide - c_narrow), abs=1e-9)
    top10 = stats.spectral_stat("alignment_gap", param="ntp", n_boot=0, top=10)(deep)
    assert top10.value == pytest.approx(0.0, abs=1e-9)


def test_sharpness_claims():
    steps = np.arange(10)
    rising = 1.0 + 3.0 * (1 - np.exp(-steps / 2.0))
    curves = np.repeat(rising[None], len(WIDTHS), 0)
    ds = losses({"mup": curves}, var="loss").rename(
        {"loss": "sharpness", "step": "sharpness_step"})
    assert verdict("sharpness", "sharpness-grows", ds) == PASS
    assert verdict("sharpness", "sharpness-agrees", ds) == PASS
    flat = ds.copy(deep=True)
    flat["sharpness"][:] = 2.0
    assert verdict("sharpness", "sharpness-grows", flat) == FAIL


def test_offline_claims():
    t = np.linspace(0, 1, 30)
    rise = 1.0 + (t - 0.4) ** 2
    ds = losses({"mup": np.repeat(rise[None], len(WIDTHS), 0)}, seed_noise=1e-4)
    assert verdict("offline", "noisy-overfits", ds) == PASS
    falling = losses({"mup": np.repeat(np.exp(-t)[None], len(WIDTHS), 0)})
    assert verdict("offline", "noisy-overfits", falling) == FAIL
    w = np.asarray(WIDTHS, float)[:, None]
    apart = losses({"mup": np.repeat(10.0 / w, 30, 1)}, var="loss")
    assert verdict("offline", "train-loss-not-converged", apart) == PASS
    together = losses({"mup": np.repeat(1.0 + 0.01 / w, 30, 1)}, var="loss")
    assert verdict("offline", "train-loss-not-converged", together) == FAIL


def test_claims_read_dims_under_the_loaders_per_variable_names():
    # ws.load may name a probe's sample dim after its variable (logits_example, ...)
    ds = logits(decay=0.5).rename({"example": "logits_example"})
    ds["targets"] = ds["targets"].rename({"logits_example": "targets_example"})
    for cid in ("resnet-distance", "resnet-successive", "resnet-one-point"):
        assert verdict("logits", cid, ds) == PASS, cid
    assert sample_dims(ds["logits"]) == ["logits_example"]
