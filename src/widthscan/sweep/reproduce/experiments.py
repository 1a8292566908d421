"""The paper's ten experiments as sweeps: each experiment's claims
(``widthscan.analysis.claims.paper``) with its sweep configs (parts) at every scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from widthscan.analysis.claims import paper
from widthscan.sweep.reproduce import configs
from widthscan.sweep.reproduce.spec import Experiment

LOSS = {"loss": {}}
LOGITS = {"loss": {}, "logits": {}}


def _parts(builders: dict[str, Callable[[str], dict[str, Any]]]):
    def sweeps(scale: str) -> dict[str, dict[str, Any]]:
        if scale == "smoke":
            return {p: configs.shrink(b("cpu")) for p, b in builders.items()}
        return {p: b(scale) for p, b in builders.items()}

    return sweeps


LOSS_CURVES = Experiment(
    paper.LOSS_CURVES,
    sweeps=_parts({
        "mlp": lambda s: configs.mlp_gegenbauer(s, LOSS),
        "resnet": lambda s: configs.resnet_vision(s, LOSS),
        "transformer": lambda s: configs.transformer_text(s, LOSS),
    }),
)


LOGITS_EXPERIMENT = Experiment(
    paper.LOGITS_EXPERIMENT,
    sweeps=_parts({
        "resnet": lambda s: configs.resnet_vision(s, LOGITS),
        "transformer": lambda s: configs.transformer_text(s, LOGITS),
    }),
)


_KERNEL_PROBES = {"loss": {}, "kernels": {"n_log": 3, "n_linear": 2},
                  "preactivations": {"n_log": 3, "n_linear": 2}}


REPRESENTATIONS = Experiment(
    paper.REPRESENTATIONS,
    sweeps=_parts({
        "resnet": lambda s: configs.resnet_vision(s, _KERNEL_PROBES),
        "transformer": lambda s: configs.transformer_text(
            s, {"loss": {}, "attention": {"n_log": 3, "n_linear": 2}},
            cpu_widths=[32, 64, 128, 256]),
    }),
    notes="On CPU the transformer spans d_model 32-256 (16-128 in the other experiments): "
          "at 16-128 the trained attention maps' distance to the widest did not fall "
          "(slope -0.03). The paper needs widths near 4000 for transformers on Wikitext-103.",
)


_SHARP = {"loss": {}, "sharpness": {"n_log": 6, "n_linear": 6,
                                    "options": {"k": 1, "batch_size": 256, "max_iter": 40}}}


_EOS = {"loss": {}, "sharpness": {"n_log": 6, "n_linear": 6,
                                  "options": {"k": 1, "batch_size": 512, "max_iter": 30}}}


SHARPNESS = Experiment(
    paper.SHARPNESS,
    sweeps=_parts({
        "eos": lambda s: configs.mlp_eos(s, _EOS),
        "mlp": lambda s: configs.mlp_polynomial(s, _SHARP),
        "resnet": lambda s: configs.resnet_vision(
            s, LOSS, params=("mup", "sp"), lr_scale=2 if s == "cpu" else 6, batch=32,
            steps=None if s != "paper" else 2000),
    }),
    notes="The sharpness claims use a large-batch MLP (part eos; Fig. 6a: EoS needs a large "
          "batch); at batch 8 (part mlp, App. E.1) the sharpness fell during training. The "
          "ResNet's large lr is the paper's 6x its base lr (0.3 vs 0.05) at gpu/paper; on "
          "CPU it is 2x (0.04), the largest at which muP networks still learned in 200 "
          "steps (at 0.06 and 0.12 every width stayed at the chance loss), as App. A.1 "
          "picks Fig. 15's lr 'nearly as high as possible'.",
)


_TEACHER_NOTE = ("On CPU the vision part is an MLP student of a random ReLU network (task "
                 "teacher), a nonlinear target; on synthetic_vision's linear teacher a "
                 "width-16 MLP was already at the widest's loss (width bias / variance 0.67).")

BIAS_VARIANCE = Experiment(
    paper.BIAS_VARIANCE,
    sweeps=_parts({"vision": lambda s: configs.mlp_teacher(s, LOGITS)}),
    notes=_TEACHER_NOTE,
)


def _offline(scale: str, n_train: int, noise: float = 0.0) -> dict[str, Any]:
    """Offline task options: ``n_train`` repeated examples (the paper's CIFAR-200k clean and
    CIFAR-50k with 50% noisy labels at ``gpu``/``paper``). On CPU the set is sized so that
    the 1500 steps of batch 64 make as many passes as the paper's 20,000 steps of batch 250:
    25 over CIFAR-200k (4096 examples: 23) and 100 over CIFAR-50k (1024: 94). With 512
    examples (187 passes) every width memorized the clean set to the same 1e-5 train loss."""
    small = scale in ("cpu", "smoke")
    cpu_n = 1024 if noise else 4096
    out: dict[str, Any] = {"mode": "offline", "n_train": cpu_n if small else n_train}
    if noise:
        out["label_noise"] = noise
    return out


OFFLINE = Experiment(
    paper.OFFLINE,
    notes="On CPU the repeated sets make as many passes as the paper's (4096 clean examples: "
          "23, CIFAR-200k: 25; 1024 noisy ones: 94, CIFAR-50k: 100).",
    sweeps=_parts({
        "clean": lambda s: configs.mlp_vision(s, LOGITS, seeds=4, steps=1500,
                                              mode=_offline(s, 200_000)),
        "noisy": lambda s: configs.mlp_vision(s, LOGITS, seeds=4, steps=1500,
                                              mode=_offline(s, 50_000, 0.5)),
    }),
)


POWER_LAW = Experiment(
    paper.POWER_LAW,
    sweeps=_parts({"main": lambda s: configs.mlp_gegenbauer(
        s, {"loss": {}}, steps=3000 if s == "cpu" else None,
        cpu_widths=[16, 32, 64, 128, 256, 512, 1024])}),
    notes="On CPU 5 widths (32-512) left alpha's interval at [0.001, 0.91]; 7 widths "
          "(16-1024) pin it better.",
)


# Fig. 10a-c is an MLP in the lazy regime (App. A.1), where the eNTK is static, so the claims
# are judged on the ensembled eNTK at initialization; NTP is widthscan's lazy
# parameterization. (A rich muP MLP's after-kernel, tried first, and NTP's after-kernel both
# move with training, and NTP anchored at the narrowest width learns features there: the
# narrowest after-kernel was the best aligned, which is feature learning, not the claim.)
_ENTK = {"loss": {}, "entk": {"n_log": 0, "n_linear": 1, "options": {"n_examples": 128}}}


SPECTRAL = Experiment(
    paper.SPECTRAL,
    sweeps=_parts({"mlp": lambda s: configs.mlp_gegenbauer(
        s, _ENTK, params=("ntp",), seeds=16 if s == "cpu" else None,
        cpu_widths=[8, 16, 32, 64, 128, 256, 512])}),
    notes="On CPU the claims need a wide spread of widths and many seeds: finite-width "
          "corrections to the ensembled kernel are O(1/N), and an ensemble of few seeds adds "
          "its own noise. With widths 32-512 and 4 seeds the alignment gap was -0.006 "
          "(FAIL), with 8-512 and 8 seeds 0.046 [-0.01, 0.09]; 16 seeds pin it.",
)


PARAMETERIZATIONS = Experiment(
    paper.PARAMETERIZATIONS,
    sweeps=_parts({"mlp": lambda s: configs.mlp_gegenbauer(s, LOGITS,
                                                           params=("mup", "ntp", "sp"))}),
)


ENSEMBLE_SIZE = Experiment(
    paper.ENSEMBLE_SIZE,
    sweeps=_parts({"vision": lambda s: configs.mlp_teacher(s, LOGITS)}),
    notes=_TEACHER_NOTE,
)


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    LOSS_CURVES, LOGITS_EXPERIMENT, REPRESENTATIONS, SHARPNESS, BIAS_VARIANCE, OFFLINE,
    POWER_LAW, SPECTRAL, PARAMETERIZATIONS, ENSEMBLE_SIZE)}
