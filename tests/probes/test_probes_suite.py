"""Schedules, the ProbeSuite's contract, side-effect freedom and exact resume."""

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, gen, mlp, transformer

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes import ProbeSuite, schedule_steps

ALL = {name: {"every": 1} for name in probes.names() if name != "attention"}


def data(step: int):
    g = gen(100 + step)
    return torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)


PROBE_X, PROBE_Y = torch.randn(10, 4, generator=gen(1)), torch.randn(10, 2, generator=gen(2))
BATCH_X, BATCH_Y = data(-1)


def ensemble():
    return ws.Ensemble(mlp, 16, 8, "mup", "sgd", SEEDS, lr=0.2, momentum=0.9, loss="mse")


def test_schedule_is_log_plus_linear_with_first_and_last():
    steps = schedule_steps(1000, n_log=20, n_linear=11)
    assert steps == sorted(set(steps)) and all(isinstance(s, int) for s in steps)
    assert steps[0] == 0 and steps[-1] == 1000
    assert {0, 100, 500, 900, 1000} <= set(steps)
    assert {1, 2, 3} <= set(steps)
    early = [s for s in steps if s <= 100]
    assert len(early) >= 12, "log spacing is dense early"
    assert schedule_steps(1000, n_log=20, n_linear=11) == steps
    assert schedule_steps(10, n_log=0, n_linear=0) == [0, 10]
    assert schedule_steps(10, n_log=0, n_linear=0, every=4) == [0, 4, 8, 10]
    assert schedule_steps(110, n_log=0, n_linear=0, first=10, steps=[3, 50]) == [10, 50, 110]
    with pytest.raises(ValueError):
        schedule_steps(5, first=10)


def test_suite_due_names_and_errors():
    suite = ProbeSuite({"loss": {"every": 10}, "sharpness": {"n_log": 0, "n_linear": 2}}, 100)
    assert suite.names == ["loss", "sharpness"]
    assert suite.due(0) == ["loss", "sharpness"]
    assert suite.due(10) == ["loss"]
    assert suite.due(7) == []
    assert suite.due(100) == ["loss", "sharpness"]
    assert probes.names() == ["loss", "logits", "kernels", "preactivations", "attention",
                              "sharpness", "entk"]
    with pytest.raises(ValueError, match=r"allowed: .*'entk'"):
        ProbeSuite({"hessian": {}}, 10)
    with pytest.raises(ValueError, match="no option 'bins'"):
        ProbeSuite({"loss": {"bins": 3}}, 10)
    with pytest.raises(ValueError, match="not in this suite"):
        suite.measure(["entk"], ensemble(), 0, PROBE_X, PROBE_Y)
    default = ProbeSuite(None, 50)
    assert default.names == list(probes.DEFAULT_PROBES)


def train(suite, steps, ens=None, start=0, record=None):
    ens = ens or ensemble()
    for step in range(start, steps):
        if suite is not None:
            due = suite.due(step)
            if due:
                out = suite.measure(due, ens, step, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)
                if record is not None:
                    record[step] = out
        ens.step(*data(step))
    return ens


def test_probes_leave_training_bit_identical_and_rng_untouched():
    suite = ProbeSuite(ALL, 12)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    record = {}
    probed = train(suite, 12, record=record)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(record) == 12 and set(record[5]) == set(ALL)
    plain = train(None, 12)
    for name, p in plain.params.items():
        assert torch.equal(p, probed.params[name]), name
    for mod in probed.net.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
    for name, meas in record[3].items():
        for var, m in meas.items():
            assert m.values.shape[0] == len(SEEDS), (name, var)


def test_state_dict_resume_reproduces_measurements():
    opts = {"preactivations": {"every": 2}, "sharpness": {"every": 2, "k": 2, "tol": 1e-4},
            "kernels": {"every": 4}}
    full_suite = ProbeSuite(opts, 12)
    full = {}
    train(full_suite, 12, record=full)

    first = ProbeSuite(opts, 12)
    ens = train(first, 6)
    ens_state = ens.state_dict()
    suite_state = first.state_dict()
    assert set(suite_state) == {"sharpness.vectors"}
    resumed = ensemble()
    resumed.load_state_dict(ens_state)
    second = ProbeSuite(opts, 12)
    second.load_state_dict(suite_state)
    after = {}
    train(second, 12, ens=resumed, start=6, record=after)
    assert set(after) == {s for s in full if s >= 6}
    for step, out in after.items():
        for name, meas in out.items():
            for var, m in meas.items():
                np.testing.assert_array_equal(m.values, full[step][name][var].values,
                                              err_msg=f"{step} {name} {var}")
    fresh = ProbeSuite(opts, 12)
    cold = fresh.measure(["sharpness"], resumed, 12, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)
    warm = second.measure(["sharpness"], resumed, 12, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)
    assert (warm["sharpness"]["sharpness_hvps"].values
            <= cold["sharpness"]["sharpness_hvps"].values).all()


def test_preactivation_bins_cover_every_measurement():
    """Features that widen during training (SP) stay inside the bins: each measurement bins
    its own values, so every value is counted, at init and after the weights grew 10x."""
    suite = ProbeSuite({"preactivations": {"every": 1, "bins": 7}}, 10)
    ens = ensemble()
    first = suite.measure(["preactivations"], ens, 0, PROBE_X)["preactivations"]
    with torch.no_grad():
        for name, w in ens.params.items():
            if name.startswith("input"):
                w.mul_(10.0)
    later = suite.measure(["preactivations"], ens, 10, PROBE_X)["preactivations"]
    n_values = first["preact_hist"].values.sum(-1)
    assert n_values.min() > 0
    np.testing.assert_array_equal(later["preact_hist"].values.sum(-1), n_values)
    assert later["preact_hist"].values.shape == (2, 2, 7)
    lo, hi = first["preact_edges"].values[..., 0], first["preact_edges"].values[..., -1]
    lo2, hi2 = later["preact_edges"].values[..., 0], later["preact_edges"].values[..., -1]
    assert ((hi2 - lo2) > 5 * (hi - lo)).all()


def test_loss_and_logits_probes():
    ens = ensemble()
    out = ProbeSuite(["loss", "logits"], 5).measure(["loss", "logits"], ens, 0, PROBE_X, PROBE_Y)
    expected = ((ens.forward(PROBE_X) - PROBE_Y) ** 2).mean((1, 2)).detach().numpy()
    np.testing.assert_allclose(out["loss"]["probe_loss"].values, expected, rtol=1e-6)
    assert np.isnan(out["loss"]["probe_accuracy"].values).all()
    logits = out["logits"]["logits"]
    assert logits.dims == ("example", "output") and logits.values.shape == (2, 10, 2)
    np.testing.assert_array_equal(logits.coords["example"], np.arange(10))


def test_sequence_model_logits_at_predicted_positions():
    ens = ws.Ensemble(transformer, 8, 4, "mup", "sgd", SEEDS, loss="ce", precision="float64")
    x = torch.randint(0, 11, (3, 6), generator=gen(3))
    y = torch.full((3, 6), -100)
    y[0, 2], y[1, 5], y[2, 0] = 4, 7, 1
    out = probes.logits(ens, x, y, n_full=2)
    full = ens.forward(x).detach().numpy()
    target = out["target_logit"]
    assert target.dims == ("position",) and out["logits"].dims == ("position", "output")
    np.testing.assert_array_equal(target.coords["position"], [2, 11, 12])
    np.testing.assert_array_equal(out["logits"].coords["position"], [2, 11])
    np.testing.assert_allclose(target.values, full[:, [0, 1, 2], [2, 5, 0], [4, 7, 1]])
    assert out["logits"].values.shape == (2, 2, 11)
    np.testing.assert_allclose(out["logits"].values, full[:, [0, 1], [2, 5]])
    acc = probes.loss(ens, x, y)["probe_accuracy"].values
    hits = full[:, [0, 1, 2], [2, 5, 0]].argmax(-1) == np.array([4, 7, 1])
    np.testing.assert_allclose(acc, hits.mean(1))


def test_bfloat16_ensembles_are_probed_in_float32():
    ens = ws.Ensemble(mlp, 16, 8, "mup", "sgd", SEEDS, loss="mse", precision="bfloat16")
    suite = ProbeSuite({name: {} for name in ALL}, 5)
    out = suite.measure(list(ALL), ens, 0, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)
    for name, meas in out.items():
        for var, m in meas.items():
            assert m.values.dtype != np.dtype("O"), (name, var)
            if m.values.dtype.kind == "f" and var != "probe_accuracy":
                assert np.isfinite(m.values).all(), (name, var)
    assert out["logits"]["logits"].values.dtype == np.float32


def test_sharpness_probe_preconditions_under_sgd_by_default():
    """The suite's sharpness under SGD is that of P^1/2 H P^1/2 (comparable with 2/lr);
    preconditioned=False gives the raw Hessian's; both match the direct probe."""
    ens = ensemble()
    direct = {pre: probes.sharpness(ens, BATCH_X, BATCH_Y, tol=1e-4, preconditioned=pre)
              for pre in (True, False)}
    for option, pre in (({}, True), ({"preconditioned": False}, False)):
        suite = ProbeSuite({"sharpness": {"every": 1, "tol": 1e-4, **option}}, 2)
        out = suite.measure(["sharpness"], ens, 0, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)
        got = out["sharpness"]
        np.testing.assert_allclose(got["sharpness"].values, direct[pre]["sharpness"].values,
                                   rtol=1e-3)
        assert (got["sharpness_preconditioned"].values == float(pre)).all()
    top = {pre: direct[pre]["sharpness"].values[:, 0] for pre in (True, False)}
    assert (np.abs(top[True] - top[False]) > 0.05 * top[True]).all()


def test_sharpness_probe_under_adam_is_undefined_at_init_then_preconditioned():
    """Adam's stability matrix needs its second moments: the suite's "auto" records NaN at
    step 0 (code 2, no HVPs) and Adam's D^1/2 H D^1/2 afterwards, as the direct probe."""
    ens = ws.Ensemble(mlp, 16, 8, "mup", "adam", SEEDS, lr=1e-2, loss="mse")
    suite = ProbeSuite({"sharpness": {"every": 1, "tol": 1e-4}}, 3)
    first = suite.measure(["sharpness"], ens, 0, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)["sharpness"]
    assert np.isnan(first["sharpness"].values).all()
    assert (first["sharpness_hvps"].values == 0).all()
    assert (first["sharpness_preconditioned"].values == 2.0).all()
    ens.step(*data(0))
    got = suite.measure(["sharpness"], ens, 1, PROBE_X, PROBE_Y, BATCH_X, BATCH_Y)["sharpness"]
    direct = probes.sharpness(ens, BATCH_X, BATCH_Y, tol=1e-4, preconditioned=True)
    np.testing.assert_allclose(got["sharpness"].values, direct["sharpness"].values, rtol=1e-3)
    assert (got["sharpness_preconditioned"].values == 2.0).all()
    raw = probes.sharpness(ens, BATCH_X, BATCH_Y, tol=1e-4)["sharpness"].values
    assert (np.abs(raw - direct["sharpness"].values) > 0.05 * raw).all()
