"""The closed-form MLP Hessian-vector product against dense autograd Hessians."""

import pytest
import torch
import torch.nn.functional as F
from probes_testlib import dense_fn, flat_params, gen, transformer

import widthscan as ws
import widthscan.probes as probes
from widthscan.probes.hessian import closed_form_problem, hessian_product
from widthscan.probes.members import members

SEEDS = [3, 5]


def factory(activation: str, bias: bool = True, depth: int = 3, d_out: int = 3):
    def build(width: int):
        return ws.models.mlp(width, depth=depth, d_in=3, d_out=d_out, activation=activation,
                             bias=bias)
    return build


def data(loss: str, d_out: int = 3):
    x = torch.randn(9, 3, generator=gen(1), dtype=torch.float64)
    if loss == "mse":
        return x, torch.randn(9, d_out, generator=gen(2), dtype=torch.float64)
    y = torch.randint(0, d_out, (9,), generator=gen(2))
    y[4] = -100
    return x, y


def dense_hessian(p, x, y, loss):
    flat, _, _ = flat_params(p)
    f = dense_fn(p, x)
    if loss == "mse":
        return torch.autograd.functional.hessian(lambda w: F.mse_loss(f(w), y), flat)
    return torch.autograd.functional.hessian(lambda w: F.cross_entropy(f(w), y), flat)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu", "linear"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("shape", [dict(), dict(bias=False), dict(depth=2), dict(depth=4)])
def test_closed_form_equals_dense_hessian(activation, loss, shape):
    build = factory(activation, **shape)
    x, y = data(loss)
    ens = ws.Ensemble(build, 6, 2, "mup", "sgd", SEEDS, loss=loss, precision="float64")
    m = members(ens)
    assert closed_form_problem(m, loss) is None
    assert any(v != 1.0 for v in m.multipliers.values())
    v = torch.randn(len(SEEDS), m.flat_size(), generator=gen(7), dtype=torch.float64)
    hv = hessian_product(m, x, y, loss, "closed")(v)
    for k, seed in enumerate(SEEDS):
        p = ws.parametrize(build, 6, 2, "mup", "sgd", seed=seed, dtype=torch.float64)
        h = dense_hessian(p, x, y, loss)
        torch.testing.assert_close(hv[k], h @ v[k], rtol=1e-10, atol=1e-12)


def test_auto_is_the_closed_form_for_mlps_and_autograd_elsewhere():
    x, y = data("ce")
    ens = ws.Ensemble(factory("gelu"), 6, 2, "mup", "sgd", SEEDS, loss="ce",
                      precision="float64")
    m = members(ens)
    v = torch.randn(2, m.flat_size(), generator=gen(7), dtype=torch.float64)
    closed = hessian_product(m, x, y, "ce", "closed")(v)
    torch.testing.assert_close(hessian_product(m, x, y, "ce", "auto")(v), closed,
                               rtol=0, atol=0)
    torch.testing.assert_close(hessian_product(m, x, y, "ce", "rev-rev")(v), closed,
                               rtol=1e-10, atol=1e-13)
    a = probes.sharpness(ens, x, y, k=2, tol=1e-10)
    b = probes.sharpness(ens, x, y, k=2, tol=1e-10, hvp="rev-rev")
    torch.testing.assert_close(torch.as_tensor(a["sharpness"].values),
                               torch.as_tensor(b["sharpness"].values), rtol=1e-9, atol=0)

    lm = members(ws.Ensemble(transformer, 8, 4, "mup", "sgd", SEEDS, loss="ce"))
    assert "Transformer" in closed_form_problem(lm, "ce")
    tokens = torch.randint(0, 11, (3, 6), generator=gen(1))
    with pytest.raises(ValueError, match="'auto' or 'rev-rev'"):
        hessian_product(lm, tokens, tokens, "ce", "closed")


def test_closed_form_refuses_bfloat16_training():
    ens = ws.Ensemble(factory("relu"), 6, 2, "mup", "sgd", SEEDS, loss="mse",
                      precision="bfloat16")
    assert "bfloat16" in closed_form_problem(members(ens), "mse")


def test_float32_closed_form_is_float32_accurate():
    x, y = data("mse")
    ens = ws.Ensemble(factory("tanh"), 64, 8, "mup", "sgd", SEEDS, loss="mse")
    m = members(ens)
    v = torch.randn(2, m.flat_size(), generator=gen(7))
    closed = hessian_product(m, x.float(), y.float(), "mse", "closed")(v)
    ref = hessian_product(m, x.float(), y.float(), "mse", "rev-rev")(v)
    assert closed.dtype == torch.float32
    assert ((closed - ref).norm(dim=1) <= 1e-5 * ref.norm(dim=1)).all()
