"""mf (1/N readout, 1/sqrt(N) layers, LR scaled up) has the same function-space dynamics as mup."""

import pytest
import torch
import torch.nn.functional as F

import widthscan as ws


def factory(width):
    return ws.models.mlp(width, depth=4, d_in=6, d_out=2)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mf_outputs_equal_mup_outputs_along_training(optimizer):
    width, base = 128, 16
    models = {}
    for param in ("mup", "mf"):
        p = ws.parametrize(factory, width, base, param, optimizer, seed=4, dtype=torch.float64)
        if optimizer == "sgd":
            opt = torch.optim.SGD(p.param_groups(0.05, 1e-3), lr=0.05, momentum=0.9)
        else:
            opt = torch.optim.Adam(p.param_groups(1e-3, 0.0, eps=1e-8), lr=1e-3)
        models[param] = (p, opt)
    mf_hidden = models["mf"][0].multipliers["hidden.0.weight"]
    assert mf_hidden == pytest.approx((width / base) ** -0.5)
    g = torch.Generator().manual_seed(1)
    x_probe = torch.randn(16, 6, generator=g, dtype=torch.float64)
    for _ in range(30):
        x = torch.randn(32, 6, generator=g, dtype=torch.float64)
        y = torch.sin(x[:, :2])
        for p, opt in models.values():
            opt.zero_grad()
            F.mse_loss(p.module(x), y).backward()
            opt.step()
        with torch.no_grad():
            out_mup = models["mup"][0].module(x_probe)
            out_mf = models["mf"][0].module(x_probe)
        torch.testing.assert_close(out_mf, out_mup, rtol=1e-8, atol=1e-10)
    start = ws.parametrize(factory, width, base, "mup", optimizer, seed=4, dtype=torch.float64)
    assert (start.module(x_probe) - out_mup).abs().max() > 1e-2
