"""A commented example sweep (``widthscan config --example``)."""

EXAMPLE = """\
# widthscan sweep: one run per (parameterization, width); each run trains all seeds at once.
name = "example"
widths = [64, 128, 256, 512, 1024]   # hidden width / channels / d_model
base_width = 64                      # every parameterization equals SP here
params = ["mup", "sp"]               # any of mup, sp, ntp, mf
seeds = 4                            # a count, or a list of init seeds like [0, 1, 2, 3]

[task]
name = "gegenbauer"                  # widthscan.tasks.names() lists them
seed = 0                             # data seed: the batch at step t depends on (seed, t) only
probe_examples = 256                 # fixed held-out examples every width is evaluated on
options = { dim = 10, degree = 3 }   # task options (mode = "offline", n_train, label_noise, ...)

[model]
family = "mlp"                       # mlp, resnet18, transformer, or "package.module:function"
                                     # (user code: only with --allow-import package.module)
options = { depth = 3 }              # input/output sizes are filled in from the task

[optimizer]
name = "sgd"                         # sgd, adam, adamw
lr = 0.1                             # base-width learning rate; the rules scale it per layer
momentum = 0.0
weight_decay = 0.0

[schedule]
kind = "constant"                    # constant or cosine
warmup_steps = 0

[train]
steps = 1000
batch_size = 128
loss = "auto"                        # auto takes the task's loss (mse or ce)
precision = "float32"                # float32, float64, bfloat16 (autocast)
device = "cpu"                       # cpu, cuda, cuda:N, auto
checkpoint_every = 500
check_memory = true                  # refuse when the memory estimate exceeds the machine's

# Probes run on log-spaced steps (dense early) plus a linear grid, the same for every width.
[probes.loss]
[probes.logits]
[probes.kernels]
n_log = 6
n_linear = 2
# [probes.attention]                 # transformers: attention maps of one probe sequence
[probes.sharpness]
n_log = 4
n_linear = 2
options = { k = 1, batch_size = 256 }

[executor]
kind = "local"                       # local, dask (workers, scheduler), submitit (SLURM)
workers = 2

[tracker]
kind = "none"                        # none, tensorboard, wandb (offline)

[store]
keep_checkpoints = "none"            # after a run finishes: none, last (to train further), all
keep_scalar_log = false              # true: keep scalars.jsonl beside scalars.parquet
"""
