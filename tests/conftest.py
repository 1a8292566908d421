"""Fixtures shared by tests of several packages."""

import pytest

TINY_SWEEP = """\
widths = [16, 32, 64]
base_width = 16
params = ["mup", "sp"]
seeds = 2
[task]
name = "gegenbauer"
probe_examples = 16
options = { dim = 6, degree = 2 }
[train]
steps = 8
batch_size = 16
[probes.loss]
[probes.logits]
"""


@pytest.fixture
def tiny_sweep() -> str:
    """A sweep TOML of seconds: muP and SP at widths 16-64, 2 seeds, 8 steps on Gegenbauer,
    loss and logits probes."""
    return TINY_SWEEP
