"""eNTK against closed forms, dense Jacobians, and between its two algorithms."""

import numpy as np
import pytest
import torch
from probes_testlib import SEEDS, dense_entk, gen, mlp
from torch import nn

import widthscan as ws
import widthscan.probes as probes


def linear_bias(width: int) -> nn.Module:
    return nn.Linear(width, 3)


@pytest.mark.parametrize("method", ["structured", "jacobian"])
@pytest.mark.parametrize("param, weight", [("sp", 1.0), ("mup", 0.5), ("mf", 0.5)])
def test_linear_model_is_scaled_gram_times_identity(method, param, weight):
    """f = W x + b at width 12, base 6: SGD moves W by lr * s_W and the forward uses m_W W,
    so Theta = s_W m_W^2 X X^T + s_b m_b^2 = (base / width) X X^T + 1 under muP and mf
    (readout: m = 1/2, s = 2; bias: fixed), X X^T + 1 under SP; raw: m_W^2 X X^T + 1."""
    x = torch.randn(7, 12, generator=gen(1), dtype=torch.float64)
    p = ws.parametrize(linear_bias, 12, 6, param, "sgd", seed=0, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    raw_weight = 1.0 if param == "sp" else 0.25
    for weighting, w in (("lr", weight), ("raw", raw_weight)):
        gram = w * x @ x.T + 1.0
        out = probes.entk(p, x, trace=False, method=method, weighting=weighting)
        assert float(out["entk_weighting"].values) == (1.0 if weighting == "lr" else 0.0)
        torch.testing.assert_close(torch.as_tensor(out["entk"].values),
                                   torch.einsum("ab,cd->abcd", gram, eye), rtol=1e-12,
                                   atol=1e-12)
        traced = probes.entk(p, x, method=method, weighting=weighting)["entk"]
        assert traced.dims == ("example", "example2")
        torch.testing.assert_close(torch.as_tensor(traced.values), gram, rtol=1e-12,
                                   atol=1e-12)


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
        raw = probes.entk(ens, x, trace=False, weighting="raw")["entk"].values[k]
        torch.testing.assert_close(torch.as_tensor(raw), dense_entk(p, x, "raw"), rtol=1e-6,
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


def test_a_reused_layer_enters_through_its_jacobian():
    """``hidden`` runs twice: its parameters leave the layerwise form, the kernel does not
    change."""
    x = torch.randn(5, 4, generator=gen(4), dtype=torch.float64)
    p = ws.parametrize(SharedLinear, 16, 8, "mup", "sgd", seed=0, dtype=torch.float64)
    for weighting in ("lr", "raw"):
        ref = dense_entk(p, x, weighting)
        for method in ("structured", "jacobian"):
            got = torch.as_tensor(probes.entk(p, x, trace=False, weighting=weighting,
                                              method=method)["entk"].values)
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_structured_needs_a_layer_it_can_take():
    p = ws.parametrize(lambda w: nn.Sequential(nn.Conv1d(1, w, 3), nn.Flatten()), 4, 4, "sp",
                       "sgd", seed=0, dtype=torch.float64)
    x = torch.randn(3, 1, 5, generator=gen(5), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Linear or Embedding"):
        probes.entk(p, x, method="structured")
    torch.testing.assert_close(torch.as_tensor(probes.entk(p, x, trace=False)["entk"].values),
                               dense_entk(p, x), rtol=1e-9, atol=1e-12)


def relu_moments(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[relu(u) relu(v)] and E[step(u) step(v)] for (u, v) ~ N(0, cov) (arc-cosine kernels
    of degree 1 and 0, Cho & Saul 2009), for every pair of a (P, P) covariance."""
    norm = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    cos = np.clip(cov / norm, -1.0, 1.0)
    theta = np.arccos(cos)
    return (norm / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * cos),
            (np.pi - theta) / (2 * np.pi))


def mup_relu_ntk(x: np.ndarray, base: int) -> np.ndarray:
    """Infinite-width lr-weighted NTK of the depth-3 ReLU MLP under muP + SGD at base width B.

    Layer by layer (s = lr scale, m = multiplier; widths N -> inf): readout weight
    s m^2 ||h2||^2 -> (N/B)(B/N)^2 N Sigma2 = B Sigma2; hidden weight B Sigma1 dSigma2;
    input weight (x.x') dSigma1 dSigma2; input / hidden biases (s = N/B) dSigma1 dSigma2
    and dSigma2; readout bias 1. Sigma1 = E relu relu and dSigma1 = E step step under the
    input covariance x.x'/d (weights N(0, 1/d)), Sigma2 and dSigma2 under Sigma1.
    """
    s1, d1 = relu_moments(x @ x.T / x.shape[1])
    s2, d2 = relu_moments(s1)
    return base * s2 + base * s1 * d2 + (x @ x.T + 1.0) * d1 * d2 + d2 + 1.0


def test_weighted_kernel_of_a_wide_mup_relu_mlp_is_the_arc_cosine_ntk():
    d, base, width = 3, 64, 4096
    x = torch.randn(5, d, generator=gen(7), dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * d**0.5
    ref = mup_relu_ntk(x.numpy(), base)
    got = {"lr": 0.0, "raw": 0.0}
    for seed in range(3):
        p = ws.parametrize(lambda w: ws.models.mlp(w, depth=3, d_in=d, d_out=1), width, base,
                           "mup", "sgd", seed=seed, dtype=torch.float64)
        for weighting in got:
            got[weighting] += probes.entk(p, x, weighting=weighting)["entk"].values / 3

    def error(k: np.ndarray) -> float:
        return float(np.linalg.norm(k - ref) / np.linalg.norm(ref))

    assert error(got["lr"]) < 0.06
    assert error(got["raw"]) > 0.3


@pytest.mark.parametrize("param", ["mup", "ntp"])
def test_one_sgd_step_moves_outputs_by_minus_lr_theta_grad(param):
    """f(theta - lr D dL/dtheta) - f(theta) = -lr Theta dL/df + O(lr^2), with D the lr scales
    torch.optim.SGD applies through ``param_groups`` and L = mean over P examples and C
    outputs of (f - y)^2, so dL/df = 2 (f - y) / (P C). Probe points differ from the
    training batch: the cross block of the kernel moves them."""
    train_x = torch.randn(8, 4, generator=gen(8), dtype=torch.float64)
    train_y = torch.randn(8, 2, generator=gen(9), dtype=torch.float64)
    probe_x = torch.randn(5, 4, generator=gen(10), dtype=torch.float64)
    p = ws.parametrize(mlp, 64, 16, param, "sgd", seed=1, dtype=torch.float64)
    both = torch.cat([probe_x, train_x])
    kernels = {w: torch.as_tensor(probes.entk(p, both, trace=False, weighting=w)["entk"].values)
               for w in ("lr", "raw")}
    lr = 1e-6
    with torch.no_grad():
        before = p.module(probe_x)
        grad_f = 2 * (p.module(train_x) - train_y) / train_y.numel()
    opt = torch.optim.SGD(p.param_groups(lr), lr=lr)
    loss = ((p.module(train_x) - train_y) ** 2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        moved = p.module(probe_x) - before

    def error(theta: torch.Tensor) -> float:
        predicted = -lr * torch.einsum("abcd,bd->ac", theta[:5, 5:], grad_f)
        return float((predicted - moved).norm() / moved.norm())

    assert error(kernels["lr"]) < 1e-4
    if param == "mup":
        assert error(kernels["raw"]) > 0.1


def test_adam_refuses_the_lr_weighted_kernel_and_the_suite_stores_raw():
    x = torch.randn(5, 4, generator=gen(11), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 16, 4, "mup", "adam", SEEDS, precision="float64")
    with pytest.raises(ValueError, match="weighting='raw'"):
        probes.entk(ens, x)
    raw = probes.entk(ens, x, weighting="raw")["entk"].values
    suite = probes.ProbeSuite({"entk": {}}, total_steps=1)
    out = suite.measure(["entk"], ens, 0, x)["entk"]
    np.testing.assert_array_equal(out["entk_weighting"].values, [0.0, 0.0])
    np.testing.assert_allclose(out["entk"].values, raw, rtol=1e-12)
    sgd = ws.Ensemble(mlp, 16, 4, "mup", "sgd", SEEDS, precision="float64")
    out = suite.measure(["entk"], sgd, 0, x)["entk"]
    np.testing.assert_array_equal(out["entk_weighting"].values, [1.0, 1.0])
    np.testing.assert_allclose(out["entk"].values, probes.entk(sgd, x)["entk"].values,
                               rtol=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        probes.ProbeSuite({"entk": {"weighting": "adam"}}, total_steps=1)
