"""The hand-written stacked-MLP backward against autograd (the vmap path), in float64."""

import pytest
import torch
import torch.nn.functional as F

import widthscan as ws
from widthscan.stack import mlp_backprop

SEEDS = [0, 1, 2]


def data(loss, d_in=5, d_out=4, n=6, steps=4):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
        y = (torch.randn(n, d_out, generator=g, dtype=torch.float64) if loss == "mse"
             else torch.randint(0, d_out, (n,), generator=g))
        out.append((x, y))
    return out


@pytest.mark.parametrize(("activation", "depth", "bias", "loss", "param", "optimizer"), [
    ("relu", 3, True, "mse", "mup", "sgd"),
    ("gelu", 4, True, "ce", "mup", "adam"),
    ("tanh", 2, False, "mse", "mf", "adam"),
    ("silu", 3, False, "ce", "ntp", "sgd"),
    ("linear", 3, True, "ce", "mf", "sgd"),
])
def test_training_matches_autograd(activation, depth, bias, loss, param, optimizer):
    def factory(width):
        return ws.models.mlp(width, depth=depth, d_in=5, d_out=4, activation=activation,
                             bias=bias)

    def make(stacking):
        return ws.Ensemble(factory, 24, 8, param, optimizer, SEEDS, 0.05, loss=loss,
                           momentum=0.9, weight_decay=1e-3, precision="float64",
                           stacking=stacking)

    manual, autograd = make("batched"), make("vmap")
    x0 = data(loss)[0][0]
    assert manual.stack.manual_backprop(x0) and not autograd.stack.manual_backprop(x0)
    assert any(m != 1.0 for m in manual.multipliers.values())
    for x, y in data(loss):
        torch.testing.assert_close(manual.step(x, y), autograd.step(x, y), rtol=1e-12, atol=0)
    for name, p in manual.params.items():
        torch.testing.assert_close(p, autograd.params[name], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_loss_gradient_is_the_autograd_gradient(loss):
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(7, 5, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, 5, (7,), generator=g)
        y[2] = -100
    losses, grad = mlp_backprop.loss_and_grad(out, y, loss)
    leaf = out.clone().requires_grad_(True)
    expected = ws.train.member_losses(leaf.transpose(1, 2), y, loss)
    expected.sum().backward()
    torch.testing.assert_close(losses, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-15)
    if loss == "ce":
        assert grad[:, :, 2].abs().max() == 0
        ref = F.cross_entropy(out[1].t(), y, ignore_index=-100)
        torch.testing.assert_close(losses[1], ref)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "silu", "linear"])
def test_gradients_with_every_multiplier_set(activation):
    net = ws.models.mlp(6, depth=4, d_in=3, d_out=2, activation=activation)
    g = torch.Generator().manual_seed(2)
    params = {n: torch.randn(3, *p.shape, generator=g, dtype=torch.float64)
              for n, p in net.named_parameters()}
    mult = {n: 0.5 + i / 7 for i, n in enumerate(params)}
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 2, generator=g, dtype=torch.float64)

    out, saved = mlp_backprop.forward(net, params, mult, x)
    _, g_out = mlp_backprop.loss_and_grad(out, y, "mse")
    grads = {n: torch.full_like(p, float("nan")) for n, p in params.items()}
    mlp_backprop.backward(net, params, mult, saved, g_out, grads)

    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    ref_out = net.forward_stacked(ws.parametrization.scale_params(leaves, mult), x)
    torch.testing.assert_close(out.transpose(1, 2), ref_out.detach(), rtol=1e-13, atol=0)
    ws.train.member_losses(ref_out, y, "mse").sum().backward()
    for n, leaf in leaves.items():
        torch.testing.assert_close(grads[n], leaf.grad, rtol=1e-12, atol=1e-15, msg=n)
