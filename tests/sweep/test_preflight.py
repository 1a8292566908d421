"""The pre-run check: parameter counts and activation sizes against independent counts,
the memory estimate's parts against their closed forms, the device check."""

import pytest
import torch

import widthscan as ws
from widthscan.config import ConfigError, loads_config
from widthscan.sweep.preflight import (
    activation_elements,
    check_sweep,
    device_problem,
    estimate_memory,
)

CONFIG = """\
widths = [16, 48]
base_width = 16
seeds = 3
[task]
name = "gegenbauer"
probe_examples = 32
options = { dim = 5, degree = 2 }
[model]
options = { depth = 3 }
[train]
steps = 10
batch_size = 64
"""


def mlp_params(d_in: int, width: int, d_out: int, depth: int) -> int:
    """Weights and biases of a ``depth``-layer MLP (closed form)."""
    return (d_in + 1) * width + (depth - 2) * (width + 1) * width + (width + 1) * d_out


def test_parameter_counts_match_the_closed_form():
    report = check_sweep(loads_config(CONFIG))
    assert report.n_params == {w: mlp_params(5, w, 1, 3) for w in (16, 48)}
    assert report.imports == []


def test_activation_count_on_meta_equals_a_real_forward():
    net = ws.models.mlp(24, depth=3, d_in=5, d_out=2)
    x = torch.randn(1, 5)
    real = []
    hooks = [m.register_forward_hook(lambda m, i, o: real.append(o.numel()))
             for m in net.modules() if not list(m.children())]
    net(x)
    for h in hooks:
        h.remove()
    with torch.device("meta"):
        meta_net = ws.models.mlp(24, depth=3, d_in=5, d_out=2)
    assert activation_elements(meta_net, x) == sum(real) > 0


@pytest.mark.parametrize("optimizer,momentum,states", [("sgd", 0.0, 0), ("sgd", 0.9, 1),
                                                       ("adam", 0.0, 2)])
def test_memory_parts_are_their_closed_forms(optimizer, momentum, states):
    cfg = loads_config(CONFIG + f'[optimizer]\nname = "{optimizer}"\nmomentum = {momentum}\n')
    n, acts = 1000, 70
    est = estimate_memory(cfg, 48, n, acts)
    k, b = 3, 4
    assert est.parts["parameters"] == est.parts["gradients"] == n * k * b
    assert est.parts["optimizer state"] == states * n * k * b
    assert est.parts["activations at batch_size 64"] == acts * 64 * k * b
    assert est.parts["probes"] == 0
    assert est.total == sum(est.parts.values())


def test_estimate_above_the_machine_is_refused_with_the_numbers(monkeypatch):
    from widthscan.sweep import preflight

    need = check_sweep(loads_config(CONFIG)).memory.total
    monkeypatch.setattr(preflight, "device_memory", lambda name: need - 1)
    with pytest.raises(ConfigError, match=r"widths: width 48 with 3 seeds needs at least .*"
                                          r"parameters: .* but cpu has"):
        check_sweep(loads_config(CONFIG))
    check_sweep(loads_config(CONFIG.replace("batch_size = 64", "batch_size = 64\n"
                                                                "check_memory = false")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    assert "no CUDA device" in device_problem("cuda")
    assert device_problem("cpu") is None and device_problem("auto") is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_past_the_devices_is_refused_and_memory_is_the_gpus():
    from widthscan.sweep.preflight import device_memory

    count = torch.cuda.device_count()
    assert device_problem("cuda:0") is None
    assert f"has {count} CUDA device" in device_problem(f"cuda:{count}")
    assert device_memory("cuda") == torch.cuda.get_device_properties(0).total_memory


def test_a_tracker_whose_package_is_missing_is_refused(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracker.kind: 'wandb' needs the package 'wandb'"):
        check_sweep(loads_config(CONFIG + '[tracker]\nkind = "wandb"\n'))


@pytest.mark.parametrize("probe, options, message", [
    ("entk", "memory_budget = 1e-9",
     r"eNTK needs .*K=3 members, P=32 examples, C=1 outputs, n=2689 parameters"),
    ("sharpness", 'hvp = "rev-rev", memory_budget = 1e-5',
     r"sharpness needs .*K=1 members, n=2689 parameters"),
    ("kernels", "memory_budget = 1e-9", r"feature capture needs .*K=3 members x P=32"),
])
def test_a_probe_over_its_memory_budget_fails_before_training(probe, options, message):
    """Planned at the widest width (48: 2689 parameters) on the meta device."""
    assert mlp_params(5, 48, 1, 3) == 2689
    cfg = loads_config(CONFIG + f"[probes.{probe}]\noptions = {{ {options} }}\n")
    with pytest.raises(ConfigError, match=rf"probes\.{probe}\.options\.memory_budget: "
                                          rf"{message}"):
        check_sweep(cfg)
    roomy = options.replace("1e-9", "1.0").replace("1e-5", "1.0")
    check_sweep(loads_config(CONFIG + f"[probes.{probe}]\noptions = {{ {roomy} }}\n"))


def test_a_budget_that_is_not_a_positive_number_is_refused():
    cfg = CONFIG + "[probes.entk]\noptions = { memory_budget = -2 }\n"
    with pytest.raises(ConfigError, match=r"probes\.entk\.options\.memory_budget: -2 is not "
                                          r"allowed; allowed: a number > 0"):
        check_sweep(loads_config(cfg))


TEXT = """\
widths = [16, 32]
base_width = 16
seeds = 2
[task]
name = "text"
probe_examples = 64
options = { seq_len = 32 }
[model]
family = "transformer"
options = { n_layers = 1, n_heads = 2 }
[train]
steps = 4
batch_size = 4
[probes.entk]
"""


def test_an_entk_over_every_token_and_vocabulary_unit_warns_with_its_count():
    """A transformer's default eNTK runs one backward pass per example, position and
    vocabulary unit; ``position = -1`` keeps one position's units."""
    from widthscan.tasks import make

    vocab = make("text", seed=0, seq_len=32).spec.output_dim
    with pytest.warns(UserWarning, match=rf"about {64 * 32 * vocab:,} backward passes per seed "
                                         rf".*\(64 examples x {32 * vocab} output units\).*"
                                         r"position = -1"):
        report = check_sweep(loads_config(TEXT))
    assert report.entk_passes == (64, 32 * vocab)
    assert any(f"{64 * 32 * vocab:,} backward passes" in line for line in report.lines())
    last = check_sweep(loads_config(TEXT.replace("[probes.entk]",
                                                 "[probes.entk]\noptions = { position = -1 }")))
    assert last.entk_passes == (64, vocab)
