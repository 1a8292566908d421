"""Probes on K stacked members equal probes on the K separately built models."""

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, gen, mlp, resnet, transformer

import widthscan as ws
import widthscan.probes as probes

CASES = {
    "mlp": (mlp, 16, 8, "mse", lambda: torch.randn(6, 4, generator=gen(1), dtype=torch.float64),
            lambda: torch.randn(6, 2, generator=gen(2), dtype=torch.float64)),
    "resnet18": (resnet, 2, 1, "ce",
                 lambda: torch.randn(3, 1, 8, 8, generator=gen(1), dtype=torch.float64),
                 lambda: torch.randint(0, 3, (3,), generator=gen(2))),
    "transformer": (transformer, 8, 4, "ce", lambda: torch.randint(0, 11, (3, 6), generator=gen(1)),
                    lambda: torch.randint(0, 11, (3, 6), generator=gen(2))),
}


def run_all(model, family, x, y, loss, edges):
    out = {}
    out.update(probes.loss(model, x, y, loss=loss))
    out.update(probes.logits(model, x, y))
    out.update(probes.kernels(model, x))
    out.update(probes.preactivations(model, x, edges=edges))
    if family == "transformer":
        out.update(probes.attention(model, x[0]))
    out.update(probes.sharpness(model, x, y, loss=loss, k=2, tol=1e-6, max_iter=12))
    out.update(probes.entk(model, x[:2], trace=family != "resnet18"))
    return out


@pytest.mark.parametrize("family", list(CASES))
def test_stacked_members_equal_separate_models(family):
    factory, width, base, loss, make_x, make_y = CASES[family]
    x, y = make_x(), make_y()
    ens = ws.Ensemble(factory, width, base, "mup", "sgd", SEEDS, loss=loss, precision="float64")
    edges = probes.preactivations(ens, x)["preact_edges"].values[0]
    stacked = run_all(ens, family, x, y, loss, edges)
    for k, seed in enumerate(SEEDS):
        p = ws.parametrize(factory, width, base, "mup", "sgd", seed=seed, dtype=torch.float64)
        single = run_all(p, family, x, y, loss, edges)
        assert set(single) == set(stacked)
        for var, meas in stacked.items():
            assert single[var].dims == meas.dims, var
            assert single[var].values.shape == meas.values.shape[1:], var
            if var in ("sharpness_residual",):
                continue
            if var == "sharpness_hvps":
                assert single[var].values == meas.values[k]
                continue
            np.testing.assert_allclose(single[var].values, meas.values[k], rtol=1e-8,
                                       atol=1e-12, err_msg=f"{family} {var} member {k}")
