"""eNTK against closed forms, dense Jacobians, and between its two algorithms."""

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, dense_fn, flat_params, gen, mlp
from torch import nn
from torch.func import jacrev

import widthscan as ws
import widthscan.probes as probes


def linear(width: int) -> nn.Module:
    return nn.Linear(width, 3, bias=False)


def dense_entk(p, x) -> torch.Tensor:
    """(P, P, C, C) from the dense raw-parameter Jacobian."""
    flat, _, _ = flat_params(p)
    jac = jacrev(dense_fn(p, x))(flat)
    return torch.einsum("acn,bdn->abcd", jac, jac)


@pytest.mark.parametrize("method", ["structured", "jacobian"])
@pytest.mark.parametrize("param", ["sp", "mup"])
def test_linear_model_is_gram_times_identity(method, param):
    x = torch.randn(7, 12, generator=gen(1), dtype=torch.float64)
    p = ws.parametrize(linear, 12, 6, param, "sgd", seed=0, dtype=torch.float64)
    m2 = p.multipliers["weight"] ** 2
    assert m2 == (1.0 if param == "sp" else 0.25)
    gram = m2 * x @ x.T
    full = torch.as_tensor(probes.entk(p, x, trace=False, method=method)["entk"].values)
    torch.testing.assert_close(full, torch.einsum("ab,cd->abcd", gram, torch.eye(3,
                               dtype=torch.float64)), rtol=1e-12, atol=1e-12)
    traced = probes.entk(p, x, method=method)["entk"]
    assert traced.dims == ("example", "example2")
    torch.testing.assert_close(torch.as_tensor(traced.values), gram, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("param", ["mup", "sp", "ntp"])
def test_mlp_matches_dense_jacobian(param):
    x = torch.randn(6, 4, generator=gen(1), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 16, 4, param, "sgd", SEEDS, precision="float64")
    assert any(v != 1.0 for v in ens.multipliers.values()) or param == "sp"
    got = {meth: {tr: torch.as_tensor(probes.entk(ens, x, trace=tr, method=meth)["entk"].values)
                  for tr in (True, False)} for meth in ("structured", "jacobian")}
    for k, seed in enumerate(SEEDS):
        p = ws.parametrize(mlp, 16, 4, param, "sgd", seed=seed, dtype=torch.float64)
        ref = dense_entk(p, x)
        ref_trace = torch.einsum("abcc->ab", ref) / ref.shape[-1]
        scale = ref.abs().max()
        for meth in got:
            torch.testing.assert_close(got[meth][False][k], ref, rtol=1e-6, atol=1e-9 * scale)
            torch.testing.assert_close(got[meth][True][k], ref_trace, rtol=1e-6,
                                       atol=1e-9 * scale)


@pytest.mark.parametrize("trace", [True, False])
def test_chunked_equals_unchunked(trace):
    x = torch.randn(7, 4, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", SEEDS, precision="float64")
    whole = probes.entk(ens, x, trace=trace, method="jacobian")["entk"].values
    for chunk in (1, 3):
        parts = probes.entk(ens, x, trace=trace, method="jacobian", chunk=chunk)["entk"].values
        np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-14)
    assert whole.shape == ((2, 7, 7) if trace else (2, 7, 7, 2, 2))


def test_ensemble_average_is_mean_of_members_and_skips_nan():
    x = torch.randn(5, 4, generator=gen(3), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", [1, 2, 3], precision="float64")
    per = probes.entk(ens, x)["entk"].values
    avg = probes.entk(ens, x, average=True)["entk"]
    assert avg.values.shape == (5, 5)
    np.testing.assert_allclose(avg.values, per.mean(0), rtol=1e-13)
    with torch.no_grad():
        ens.params["input.weight"][2] = float("nan")
    avg = probes.entk(ens, x, average=True)["entk"].values
    np.testing.assert_allclose(avg, per[:2].mean(0), rtol=1e-13)


class SharedLinear(nn.Module):
    """Linear-only, but one layer runs twice: the structured form does not apply."""

    def __init__(self, width: int):
        super().__init__()
        self.input = nn.Linear(4, width)
        self.hidden = nn.Linear(width, width)
        self.readout = nn.Linear(width, 2)

    def forward(self, x):
        h = torch.tanh(self.input(x))
        h = torch.tanh(self.hidden(h))
        return self.readout(torch.tanh(self.hidden(h)))


def test_falls_back_to_jacobian_when_a_layer_is_reused():
    x = torch.randn(5, 4, generator=gen(4), dtype=torch.float64)
    p = ws.parametrize(SharedLinear, 16, 8, "mup", "sgd", seed=0, dtype=torch.float64)
    ref = dense_entk(p, x)
    got = torch.as_tensor(probes.entk(p, x, trace=False)["entk"].values)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="structured"):
        probes.entk(p, x, method="structured")


def test_structured_rejects_non_linear_parameters():
    x = torch.randint(0, 5, (3, 4), generator=gen(5))
    p = ws.parametrize(lambda w: ws.models.transformer(w, vocab_size=5, seq_len=4, n_layers=1,
                                                       n_heads=2),
                       8, 4, "mup", "sgd", seed=0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        probes.entk(p, x, method="structured")
