"""Parts of ``widthscan.check`` against independent computations: slopes against closed-form
power laws, recorded activations against the layer recomputed by hand, structure findings on
hand-built modules, task matching."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthscan.check.coords import activations, readout_label
from widthscan.check.data import UsageError, match
from widthscan.check.roles import tied, vectors_as_matrices
from widthscan.check.verdict import Slope, expected_slopes, fit_slope

WIDTHS = np.repeat([64.0, 128.0, 256.0, 512.0], 3)


def test_fit_slope_recovers_a_power_law_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    exact = fit_slope(WIDTHS, 3.0 * WIDTHS**0.5, 0.0)
    assert exact.value == pytest.approx(0.5, abs=1e-12)
    assert exact.high - exact.low < 1e-9
    covered = 0
    for _ in range(200):
        noisy = 2.0 * WIDTHS**-0.3 * np.exp(0.1 * rng.standard_normal(WIDTHS.size))
        s = fit_slope(WIDTHS, noisy, 0.0)
        covered += s.low <= -0.3 <= s.high
    assert 0.90 <= covered / 200 <= 0.99  # a 95% interval


def test_slope_verdicts():
    assert Slope(0.6, 0.5, 0.7, 0.0).verdict(0.35) == "grows"
    assert Slope(0.6, -0.1, 1.3, 0.0).verdict(0.35) == "width-independent"  # interval has 0
    assert Slope(-0.6, -0.7, -0.5, 0.0).verdict(0.35) == "shrinks"
    assert Slope(-0.6, -0.7, -0.5, 0.0).verdict(0.35, one_sided=True) == "width-independent"
    assert Slope(0.0, -0.1, 0.1, -0.5).verdict(0.35) == "grows"  # flat where -1/2 predicted
    assert Slope(0.2, 0.1, 0.3, 0.0).verdict(0.35) == "width-independent"
    assert fit_slope(WIDTHS, np.full(WIDTHS.size, np.nan), 0.0).verdict(0.35) == "diverged"
    assert fit_slope(WIDTHS, np.zeros(WIDTHS.size), 0.0).verdict(0.35) == "zero"


def test_expected_slopes_follow_the_parameterization():
    assert expected_slopes("readout", True, "mup") == {"init": -0.5, "change": 0.0}
    assert expected_slopes("a:logits", False, "mf") == {"init": -0.5, "change": -0.5}
    assert expected_slopes("readout", True, "sp") == {"init": 0.0, "change": 0.0}
    assert expected_slopes("hidden", False, "mup") == {"init": 0.0, "change": 0.0}


def test_activations_match_the_layers_recomputed_by_hand():
    """Copies are taken before the in-place ReLU; the RMS is over every entry."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3))
    x = torch.randn(11, 5)
    acts, out = activations(net, net, x)
    z0 = x @ net[0].weight.T + net[0].bias
    z2 = torch.relu(z0) @ net[2].weight.T + net[2].bias
    assert list(acts) == ["0", "2"]
    assert acts["0"].rms == pytest.approx(z0.pow(2).mean().sqrt().item(), rel=1e-6)
    assert acts["2"].rms == pytest.approx(z2.pow(2).mean().sqrt().item(), rel=1e-6)
    assert acts["0"].features == 7 and acts["2"].features == 3
    assert readout_label(acts, out) == "2"
    assert readout_label(acts, torch.log_softmax(out, -1)) == "2"  # same shape, after it
    assert readout_label(acts, out.sum(-1, keepdim=True)) is None


def test_a_module_called_twice_is_recorded_per_call():
    torch.manual_seed(0)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    net = Twice()
    x = torch.randn(6, 4)
    acts, _ = activations(net, net, x)
    first = net.lin(x)
    assert list(acts) == ["lin", "lin#2"]
    assert acts["lin"].rms == pytest.approx(first.pow(2).mean().sqrt().item(), rel=1e-6)
    second = net.lin(torch.tanh(first))
    assert acts["lin#2"].rms == pytest.approx(second.pow(2).mean().sqrt().item(), rel=1e-6)


class SDPA(nn.Module):
    def __init__(self, d: int = 8):
        super().__init__()
        self.qk = nn.Linear(d, 2 * d)

    def forward(self, x):
        q, k = self.qk(x).chunk(2, -1)
        return F.scaled_dot_product_attention(q, k, k, is_causal=False)


def test_attention_logits_of_sdpa_and_softmax_are_recorded():
    torch.manual_seed(0)
    net = nn.Sequential(SDPA(), nn.Linear(8, 2))
    x = torch.randn(3, 5, 8)
    acts, _ = activations(net, net, x)
    q, k = net[0].qk(x).chunk(2, -1)
    logits = q @ k.transpose(-1, -2) / math.sqrt(8)
    assert acts["0:logits"].rms == pytest.approx(logits.pow(2).mean().sqrt().item(), rel=1e-5)


def test_structure_findings_on_hand_built_modules():
    class Tied(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.embed = nn.Embedding(20, w)
            self.readout = nn.Linear(w, 20)
            self.readout.weight = self.embed.weight

    assert tied(Tied(8)) == [("embed.weight", "readout.weight")]
    assert tied(nn.Linear(8, 8)) == []

    class Gains(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1, w))
            self.col = nn.Parameter(torch.ones(w, 1, 1))
            self.pos = nn.Parameter(torch.ones(16, w))
            self.head = nn.Linear(w, 1)

    found = dict(vectors_as_matrices(Gains(8), Gains(16)))
    assert set(found) == {"gain", "col"}  # the Linear(w, 1) head is a matrix
    assert found["gain"] == (1, 16)


def test_match_picks_a_task_for_the_input_and_rejects_bad_arguments():
    assert match(lambda w: nn.Sequential(nn.Linear(6, w), nn.Linear(w, 1)), 8).name == \
        "gegenbauer"
    assert match(lambda w: nn.Sequential(nn.Linear(6, w), nn.Linear(w, 4)), 8).name == "teacher"
    data = match(lambda w: nn.Sequential(nn.Linear(6, w), nn.Linear(w, 4)), 8, task=None,
                 input_shape=(6,))
    x, y = data.batch(0)
    assert x.shape[1:] == (6,) and data.loss == "ce" and int(y.max()) < 4
    with pytest.raises(UsageError, match="either task or input_shape"):
        match(lambda w: nn.Linear(6, w), 8, task="text", input_shape=(6,))
    with pytest.raises(UsageError, match="does not run on inputs of shape"):
        match(lambda w: nn.Sequential(nn.Linear(6, w), nn.Linear(w, 1)), 8, input_shape=(5,))
    with pytest.raises(UsageError, match="task="):
        match(lambda w: nn.Linear(6, w), 8, task="no_such_task")
