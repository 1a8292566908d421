"""Side by side with microsoft/mup: same effective init, same batches, same losses."""

import mup
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import widthscan as ws

BASE, D_IN, D_OUT, STEPS = 16, 8, 3, 50


class MupMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.input = nn.Linear(D_IN, width)
        self.hidden = nn.ModuleList([nn.Linear(width, width)])
        self.readout = mup.MuReadout(width, D_OUT)

    def forward(self, x):
        h = F.relu(self.input(x))
        h = F.relu(self.hidden[0](h))
        return self.readout(h)


def ours(width):
    return ws.models.mlp(width, depth=3, d_in=D_IN, d_out=D_OUT)


def mup_model(width):
    torch.manual_seed(width)
    model = MupMLP(width).double()
    mup.set_base_shapes(model, MupMLP(BASE), delta=MupMLP(2 * BASE))
    return model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("width", [BASE, 4 * BASE])
def test_losses_match_microsoft_mup(optimizer, width):
    ref = mup_model(width)
    p = ws.parametrize(ours, width, BASE, "mup", optimizer, dtype=torch.float64)
    with torch.no_grad():
        for name, q in p.net.named_parameters():
            q.copy_(dict(ref.named_parameters())[name])
    lr, wd = (0.05, 1e-3) if optimizer == "sgd" else (3e-3, 1e-3)
    if optimizer == "sgd":
        ref_opt = mup.MuSGD(ref.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        our_opt = torch.optim.SGD(p.param_groups(lr, wd), lr=lr, momentum=0.9)
    else:
        ref_opt = mup.MuAdam(ref.parameters(), lr=lr, weight_decay=wd)
        our_opt = torch.optim.Adam(p.param_groups(lr, wd), lr=lr)
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(D_IN, D_OUT, generator=gen, dtype=torch.float64)
    ref_losses, our_losses = [], []
    for _ in range(STEPS):
        x = torch.randn(32, D_IN, generator=gen, dtype=torch.float64)
        y = torch.tanh(x @ teacher)
        for model, opt, out in ((ref, ref_opt, ref_losses), (p.module, our_opt, our_losses)):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            out.append(loss.item())
    ref_t, our_t = torch.tensor(ref_losses), torch.tensor(our_losses)
    assert ref_t[-1] < ref_t[0]
    torch.testing.assert_close(our_t, ref_t, rtol=1e-5, atol=0)


def test_readout_multiplier_and_lr_scales_follow_mup_convention():
    p = ws.parametrize(ours, 4 * BASE, BASE, "mup", "sgd")
    assert p.multipliers["readout.weight"] == pytest.approx(1 / 4)
    assert p.multipliers["hidden.0.weight"] == 1.0
    assert p.lr_scale["input.weight"] == pytest.approx(4)
    assert p.lr_scale["hidden.0.weight"] == pytest.approx(1)
    assert p.lr_scale["readout.bias"] == pytest.approx(1)
    q = ws.parametrize(ours, 4 * BASE, BASE, "mup", "adam")
    assert q.lr_scale["hidden.0.weight"] == pytest.approx(1 / 4)
    assert q.lr_scale["input.weight"] == pytest.approx(1)
