"""Sharpness (top Hessian eigenvalues by batched Lanczos) against closed forms and references."""

import pytest
import torch
import torch.nn.functional as F
from probes_testlib import SEEDS, dense_fn, flat_params, gen, mlp, tanh_mlp, transformer
from torch import nn

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes.hessian import make_hvp, member_loss_fn
from widthscan.probes.members import members

JIT_WARNING = "ignore:.*torch.jit.script.* is deprecated:DeprecationWarning"  # torch's jvp decomps


def linear(width: int) -> nn.Module:
    return nn.Linear(width, 1, bias=False)


def dense_hessian(p, x, y):
    flat, _, _ = flat_params(p)
    f = dense_fn(p, x)
    return torch.autograd.functional.hessian(lambda w: F.mse_loss(f(w), y), flat)


@pytest.mark.parametrize("model", ["parametrized", "ensemble"])
def test_linear_regression_closed_form(model):
    # f(x) = m x.w, L = mean_i (f(x_i) - y_i)^2  =>  H = 2 m^2 X^T X / n
    n, width = 40, 16
    x = torch.randn(n, width, generator=gen(1), dtype=torch.float64)
    y = torch.randn(n, 1, generator=gen(2), dtype=torch.float64)
    if model == "ensemble":
        net = ws.Ensemble(linear, width, 8, "mup", "sgd", [0, 1, 2], precision="float64")
        mult = net.multipliers["weight"]
    else:
        net = ws.parametrize(linear, width, 8, "mup", "sgd", seed=0, dtype=torch.float64)
        mult = net.multipliers["weight"]
    assert mult == 0.5
    exact = torch.linalg.eigvalsh(2 * mult**2 * x.T @ x / n).flip(0)[:3]
    out = probes.sharpness(net, x, y, loss="mse", k=3, tol=1e-8)
    vals = torch.as_tensor(out["sharpness"].values)
    assert out["sharpness"].dims == ("eigen",)
    expected = exact if model == "parametrized" else exact.expand(3, 3)
    torch.testing.assert_close(vals, expected, rtol=1e-6, atol=0)
    assert (out["sharpness_hvps"].values <= width).all()


def three_outputs(width: int) -> nn.Module:
    return nn.Linear(width, 3, bias=False)


@pytest.mark.parametrize("model", ["parametrized", "ensemble"])
def test_repeated_top_eigenvalues_are_found_with_their_multiplicity(model):
    # f(x) = m W x with 3 outputs, L = mean over n examples and 3 outputs of (f - y)^2
    # => H = I_3 (x) 2 m^2 X^T X / (3 n): every eigenvalue 3 times. One Krylov space
    # holds one copy of each: single-vector Lanczos gave (l1, l2, l3, ...) with residuals
    # <= 1e-8 (the 2nd value 3% low, the 3rd 9%)
    n, width = 200, 64
    x = torch.randn(n, width, generator=gen(1), dtype=torch.float64)
    y = torch.randn(n, 3, generator=gen(2), dtype=torch.float64)
    if model == "ensemble":
        net = ws.Ensemble(three_outputs, width, 8, "mup", "sgd", [0, 1], precision="float64")
    else:
        net = ws.parametrize(three_outputs, width, 8, "mup", "sgd", seed=0,
                             dtype=torch.float64)
    m = net.multipliers["weight"]
    design = m * x
    block = torch.linalg.eigvalsh(2 * design.T @ design / (3 * n)).flip(0)
    exact = block.repeat_interleave(3)[:5]
    dense = torch.linalg.eigvalsh(torch.kron(torch.eye(3, dtype=torch.float64),
                                             2 * design.T @ design / (3 * n))).flip(0)[:5]
    torch.testing.assert_close(dense, exact, rtol=1e-12, atol=0)
    pairs = probes.eigenpairs(net, x, y, loss="mse", k=5, tol=1e-8)
    vals = pairs.values if model == "ensemble" else pairs.values[0]
    torch.testing.assert_close(vals, exact.expand_as(vals), rtol=1e-6, atol=0)
    assert pairs.converged.all()
    v = pairs.vectors
    gram = v @ v.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(5, dtype=torch.float64).expand_as(gram),
                               rtol=0, atol=1e-6)


def test_small_mlp_matches_dense_hessian():
    x = torch.randn(12, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(12, 2, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", [3, 5], loss="mse", precision="float64")
    out = probes.sharpness(ens, x, y, k=3, tol=1e-10)
    for i, seed in enumerate([3, 5]):
        p = ws.parametrize(mlp, 8, 4, "mup", "sgd", seed=seed, dtype=torch.float64)
        exact = torch.linalg.eigvalsh(dense_hessian(p, x, y)).flip(0)[:3]
        torch.testing.assert_close(torch.as_tensor(out["sharpness"].values[i]), exact,
                                   rtol=1e-5, atol=0)


def test_largest_algebraic_not_largest_magnitude():
    p = ws.parametrize(tanh_mlp, 6, 3, "mup", "sgd", seed=0, dtype=torch.float64)
    x = torch.randn(10, 3, generator=gen(1), dtype=torch.float64)
    y = -10 * torch.randn(10, 2, generator=gen(2), dtype=torch.float64)
    eig = torch.linalg.eigvalsh(dense_hessian(p, x, y))
    assert -eig[0] > eig[-1] > 0, "setup: the most negative eigenvalue must dominate"
    out = probes.sharpness(p, x, y, loss="mse", k=2, tol=1e-10)
    torch.testing.assert_close(torch.as_tensor(out["sharpness"].values), eig.flip(0)[:2],
                               rtol=1e-5, atol=0)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_matches_pyhessian():
    pyhessian = pytest.importorskip("pyhessian")
    p = ws.parametrize(mlp, 16, 8, "mup", "sgd", seed=1, dtype=torch.float64)
    x = torch.randn(32, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(32, 2, generator=gen(2), dtype=torch.float64)
    ours = probes.sharpness(p, x, y, loss="mse", tol=1e-6)["sharpness"].values[0]
    default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.set_default_dtype(torch.float64)
        try:
            h = pyhessian.hessian(p.module, F.mse_loss, data=(x, y), cuda=False)
            (theirs,), _ = h.eigenvalues(maxIter=1000, tol=1e-7, top_n=1)
        finally:
            torch.set_default_dtype(default)
    assert abs(ours - theirs) <= 1e-3 * abs(theirs)


def test_warm_start_needs_fewer_hvps_and_agrees():
    ens = ws.Ensemble(mlp, 32, 8, "mup", "sgd", [3, 5], lr=0.1, loss="mse",
                      precision="float64")
    x = torch.randn(64, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(64, 2, generator=gen(2), dtype=torch.float64)
    first = probes.eigenpairs(ens, x, y, tol=1e-6)
    for _ in range(3):
        ens.step(x, y)
    cold = probes.eigenpairs(ens, x, y, tol=1e-6)
    warm = probes.eigenpairs(ens, x, y, tol=1e-6, v0=first.vectors)
    assert cold.converged.all() and warm.converged.all()
    torch.testing.assert_close(warm.values, cold.values, rtol=1e-5, atol=0)
    assert (warm.hvps < cold.hvps).all(), (warm.hvps, cold.hvps)
    m = members(ens)
    hv = make_hvp(m, member_loss_fn(m, x, y, "mse"))(warm.vectors[:, 0])
    rayleigh = (warm.vectors[:, 0] * hv).sum(1)
    torch.testing.assert_close(rayleigh, warm.values[:, 0], rtol=1e-6, atol=0)


def swapped_top_designs(d: int = 200):
    """Two designs X (d, d) whose Hessians 2 m^2 X^T X / d share eigenvectors, with the
    top two eigenvalues (1, 0.99) exchanged between them: the edge of stability's
    near-equal top eigenvalues whose eigenvectors trade places between probes."""
    rot = torch.linalg.qr(torch.randn(d, d, generator=gen(1), dtype=torch.float64))[0]
    u = torch.linalg.qr(torch.randn(d, d, generator=gen(2), dtype=torch.float64))[0]
    bulk = 0.05 * torch.rand(d - 3, generator=gen(3), dtype=torch.float64)
    designs = []
    for top in ([1.0, 0.99, 0.98], [0.99, 1.0, 0.98]):
        spectrum = torch.cat([torch.tensor(top, dtype=torch.float64), bulk])
        designs.append(d**0.5 * u @ torch.diag(spectrum.sqrt()) @ rot.T)
    return designs


def test_warm_start_finds_a_top_eigenvector_that_changed_places():
    d = 200
    x1, x2 = swapped_top_designs(d)
    y = torch.zeros(d, 1, dtype=torch.float64)
    p = ws.parametrize(linear, d, d, "sp", "sgd", seed=0, dtype=torch.float64)
    m = p.multipliers["weight"]
    exact = torch.linalg.eigvalsh(2 * m**2 * x2.T @ x2 / d)[-1].item()
    first = probes.eigenpairs(p, x1, y, loss="mse", tol=1e-10, max_iter=d)
    along_top = probes.eigenpairs(p, x2, y, loss="mse", v0=first.vectors)
    warm = probes.eigenpairs(p, x2, y, loss="mse", v0=first.warm)
    # the old top vector is an eigenvector of the new Hessian, at the second eigenvalue:
    # Lanczos from it certifies that one
    assert abs(along_top.values[0, 0].item() - exact) > 5e-3 * exact
    assert warm.converged.all()
    assert abs(warm.values[0, 0].item() - exact) <= 1e-3 * exact


@pytest.mark.filterwarnings(JIT_WARNING)
def test_hvp_modes_agree_on_mlp():
    x = torch.randn(16, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "sgd", [3, 5], loss="mse", precision="float64")
    rr = probes.sharpness(ens, x, y, k=2, tol=1e-9, hvp="rev-rev")
    fr = probes.sharpness(ens, x, y, k=2, tol=1e-9, hvp="fwd-rev")
    torch.testing.assert_close(torch.as_tensor(fr["sharpness"].values),
                               torch.as_tensor(rr["sharpness"].values), rtol=1e-7, atol=0)
    with pytest.raises(ValueError, match="rev-rev"):
        probes.sharpness(ens, x, y, hvp="fwd-fwd")


@pytest.mark.filterwarnings(JIT_WARNING)
def test_hvp_modes_agree_on_transformer():
    x = torch.randint(0, 11, (3, 6), generator=gen(1))
    y = torch.randint(0, 11, (3, 6), generator=gen(2))
    ens = ws.Ensemble(transformer, 8, 4, "mup", "sgd", [3, 5], loss="ce", precision="float64")
    m = members(ens)
    fn = member_loss_fn(m, x, y, "ce")
    v = torch.randn(2, m.flat_size(), generator=gen(3), dtype=torch.float64)
    torch.testing.assert_close(make_hvp(m, fn, "fwd-rev")(v), make_hvp(m, fn, "rev-rev")(v),
                               rtol=1e-9, atol=1e-12)


def test_max_iter_caps_hvps_and_reports_unconverged():
    ens = ws.Ensemble(mlp, 32, 8, "mup", "sgd", [3, 5], loss="mse", precision="float64")
    x = torch.randn(64, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(64, 2, generator=gen(2), dtype=torch.float64)
    pairs = probes.eigenpairs(ens, x, y, k=2, tol=1e-12, max_iter=3)
    assert pairs.hvps.tolist() == [3, 3]
    assert not pairs.converged.any()
    assert (pairs.residuals > 1e-12).any()
    assert torch.isfinite(pairs.values).all()


def test_members_converge_independently():
    # the same Hessian twice, but one member starts in an eigenvector: it stops first
    width = 12
    x = torch.randn(30, width, generator=gen(1), dtype=torch.float64)
    y = torch.randn(30, 1, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(linear, width, width, "sp", "sgd", [0, 1], precision="float64")
    h = 2 * x.T @ x / 30
    top = torch.linalg.eigh(h).eigenvectors[:, -1]
    v0 = torch.stack([top, torch.ones(width, dtype=torch.float64)])
    pairs = probes.eigenpairs(ens, x, y, tol=1e-8, v0=v0)
    assert pairs.hvps[0] < pairs.hvps[1]
    torch.testing.assert_close(pairs.values[0], pairs.values[1], rtol=1e-8, atol=0)


def test_diverged_member_gives_nan_without_spoiling_others():
    ens = ws.Ensemble(mlp, 16, 8, "mup", "sgd", [3, 5], loss="mse", precision="float64")
    x = torch.randn(16, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen(2), dtype=torch.float64)
    clean = probes.sharpness(ens, x, y, tol=1e-8)["sharpness"].values
    with torch.no_grad():
        ens.params["hidden.0.weight"][1] = float("nan")
    out = probes.sharpness(ens, x, y, tol=1e-8)["sharpness"].values
    assert torch.isnan(torch.as_tensor(out[1])).all()
    torch.testing.assert_close(torch.as_tensor(out[0]), torch.as_tensor(clean[0]),
                               rtol=1e-10, atol=0)


def test_lanczos_restarts_after_an_invariant_subspace():
    d = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, -7.0], dtype=torch.float64)
    hvp = lambda v: v * d  # noqa: E731
    for start in (0, 2):
        v0 = torch.zeros(1, 6, dtype=torch.float64)
        v0[0, start] = 1.0
        pairs = probes.lanczos(hvp, v0, k=3, tol=1e-12, max_iter=6)
        torch.testing.assert_close(pairs.values[0], d[:3], rtol=1e-12, atol=0)
        assert pairs.converged.all()


def _lr_root(p) -> torch.Tensor:
    """sqrt of each raw parameter's SGD learning rate at lr = 1, from the optimizer groups."""
    lr = {n: g["lr"] for g in p.param_groups(1.0) for n in g["names"]}
    return torch.cat([torch.full((t.numel(),), lr[n] ** 0.5, dtype=torch.float64)
                      for n, t in p.net.named_parameters()])


def test_preconditioned_sharpness_matches_dense_lr_scaled_hessian():
    """muP away from the base width gives layers different SGD learning rates; the
    preconditioned eigenvalues are those of P^1/2 H P^1/2 with P from the optimizer groups."""
    x = torch.randn(12, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(12, 2, generator=gen(2), dtype=torch.float64)
    p = ws.parametrize(mlp, 16, 4, "mup", "sgd", seed=3, dtype=torch.float64)
    root = _lr_root(p)
    assert root.min() < root.max()
    h = dense_hessian(p, x, y)
    exact = torch.linalg.eigvalsh(root[:, None] * h * root[None, :]).flip(0)[:3]
    out = probes.sharpness(p, x, y, loss="mse", k=3, tol=1e-10, preconditioned=True)
    torch.testing.assert_close(torch.as_tensor(out["sharpness"].values), exact, rtol=1e-6,
                               atol=0)
    assert float(out["sharpness_preconditioned"].values) == 1.0
    raw = torch.linalg.eigvalsh(h)[-1]
    assert abs(raw - exact[0]) > 0.05 * exact[0]


def test_preconditioned_sharpness_is_the_same_for_mup_and_mf():
    """mf and muP train identical effective weights with different raw parameters and
    learning rates: the SGD stability matrix has the same spectrum, the raw Hessian not."""
    x = torch.randn(16, 4, generator=gen(4), dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen(5), dtype=torch.float64)
    out = {}
    for param in ("mup", "mf"):
        ens = ws.Ensemble(mlp, 32, 8, param, "sgd", [0, 1], lr=0.1, loss="mse",
                          precision="float64")
        for step in range(3):
            ens.step(torch.randn(16, 4, generator=gen(10 + step), dtype=torch.float64),
                     torch.randn(16, 2, generator=gen(20 + step), dtype=torch.float64))
        out[param] = {pre: torch.as_tensor(probes.sharpness(
            ens, x, y, k=2, tol=1e-10, preconditioned=pre)["sharpness"].values)
            for pre in (True, False)}
    torch.testing.assert_close(out["mf"][True], out["mup"][True], rtol=1e-7, atol=0)
    assert ((out["mf"][False] - out["mup"][False]).abs() > 0.05 * out["mup"][False]).any()


def test_adam_preconditioner_needs_the_ensembles_state():
    x, y = torch.randn(4, 4), torch.randn(4, 2)
    p = ws.parametrize(mlp, 8, 4, "mup", "adam", seed=0)
    with pytest.raises(ValueError, match=r"pass the ws\.Ensemble"):
        probes.sharpness(p, x, y, loss="mse", preconditioned=True)
    ens = ws.Ensemble(mlp, 8, 4, "mup", "adam", [0], lr=1e-3, loss="mse")
    with pytest.raises(ValueError, match="before its first update"):
        probes.sharpness(ens, x, y, preconditioned=True)
    decayed = ws.Ensemble(mlp, 8, 4, "mup", "adamw", [0], lr=1e-3, weight_decay=0.1,
                          loss="mse")
    decayed.step(x, y)
    with pytest.raises(ValueError, match="decoupled weight decay"):
        probes.sharpness(decayed, x, y, preconditioned=True)


def _adam_root(ens, k: int) -> torch.Tensor:
    """Adam's D^1/2 for member k, rebuilt from torch's Adam state: the next update is
    lr_g * m / (1 - beta1^(t+1)) / (sqrt(v / (1 - beta2^t)) + eps_g), D = that / (m * lr)."""
    opt, parts = ens.optimizer, {}
    for g in opt.param_groups:
        b1, b2 = g["betas"]
        for name, leaf in zip(g["names"], g["params"]):
            st = opt.state[leaf]
            t = st["step"].item()
            v = st["exp_avg_sq"][k].double()
            d = (g["lr"] / ens.lr) / (1 - b1 ** (t + 1)) / ((v / (1 - b2**t)).sqrt() + g["eps"])
            parts[name] = d.sqrt().reshape(-1)
    return torch.cat([parts[n] for n in ens.params])


def test_adam_preconditioned_sharpness_matches_dense():
    x = torch.randn(12, 4, generator=gen(1), dtype=torch.float64)
    y = torch.randn(12, 2, generator=gen(2), dtype=torch.float64)
    ens = ws.Ensemble(mlp, 16, 4, "mup", "adam", SEEDS, lr=0.01, loss="mse",
                      precision="float64")
    for step in range(4):
        ens.step(torch.randn(12, 4, generator=gen(30 + step), dtype=torch.float64),
                 torch.randn(12, 2, generator=gen(40 + step), dtype=torch.float64))
    out = probes.sharpness(ens, x, y, k=2, tol=1e-10, preconditioned=True)
    assert (out["sharpness_preconditioned"].values == 2.0).all()
    for k, seed in enumerate(SEEDS):
        p = ws.parametrize(mlp, 16, 4, "mup", "adam", seed=seed, dtype=torch.float64)
        with torch.no_grad():
            for name, t in p.net.named_parameters():
                t.copy_(ens.params[name][k])
        root = _adam_root(ens, k)
        h = dense_hessian(p, x, y)
        exact = torch.linalg.eigvalsh(root[:, None] * h * root[None, :]).flip(0)[:2]
        torch.testing.assert_close(torch.as_tensor(out["sharpness"].values[k]), exact,
                                   rtol=1e-6, atol=0)


@pytest.mark.parametrize("margin,stable", [(0.9, True), (1.1, False)])
def test_adam_is_stable_below_its_preconditioned_threshold(margin, stable):
    """Full-batch Adam on a quadratic with eps far above sqrt(v), so that its preconditioner
    barely moves: after 300 slow steps the learning rate jumps to margin x (2 + 2 beta1) /
    (1 - beta1) / lambda_max(D^1/2 H D^1/2). torch's Adam then converges below the
    threshold, and above it the loss grows by many orders of magnitude (until the second
    moments catch up)."""
    d, n = 8, 64
    x = torch.randn(n, d, generator=gen(1), dtype=torch.float64)
    y = x @ torch.randn(d, 1, generator=gen(2), dtype=torch.float64)
    jump = {}
    ens = ws.Ensemble(linear, d, d, "sp", "adam", [0], lr=1e-3, loss="mse",
                      precision="float64", eps=1e8,
                      schedule=lambda t: 1.0 if t < 300 else jump["factor"])
    for _ in range(300):
        ens.step(x, y)
    s = probes.sharpness(ens, x, y, tol=1e-10, preconditioned=True)["sharpness"].values
    jump["factor"] = margin * (2 + 2 * 0.9) / (1 - 0.9) / (float(s[0, 0]) * 1e-3)
    losses = torch.cat([ens.step(x, y) for _ in range(2000)])
    growth = (losses.max() / losses[0]).item()
    if stable:
        assert growth < 1e4 and losses[-1] < 1e-6 * losses[0]
    else:
        assert growth > 1e8
