"""The embedded default sweep that ``widthscan demo`` runs."""

DEMO_TOML = """\
name = "demo"
widths = [64, 128, 256, 512, 1024]
base_width = 64
params = ["mup", "sp"]
seeds = 4

[task]
name = "gegenbauer"
seed = 0
probe_examples = 64
options = { dim = 10, degree = 3 }

[model]
family = "mlp"
options = { depth = 3 }

[optimizer]
name = "sgd"
lr = 0.05

[train]
steps = 400
batch_size = 64
checkpoint_every = 200

[probes.loss]
[probes.logits]
[probes.kernels]
n_log = 4
n_linear = 2
options = { n_examples = 64 }
[probes.preactivations]
options = { n_examples = 64 }
n_log = 2
n_linear = 1
[probes.sharpness]
n_log = 3
n_linear = 2
options = { k = 1, batch_size = 128, max_iter = 20 }
[probes.entk]
n_log = 0
n_linear = 1
options = { n_examples = 64 }
"""
