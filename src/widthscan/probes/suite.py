"""``ProbeSuite``: which probes run at which steps, with the state they carry across steps.

The trainer asks ``due(step)`` and, when the list is not empty, calls ``measure`` with
the ensemble, the fixed probe set and the fixed sharpness batch. The suite keeps the
Lanczos warm start of the last sharpness measurement (``Eigenpairs.warm``);
``state_dict`` / ``load_state_dict`` carry it through a checkpoint so that a resumed run
measures the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from widthscan.measurement import Measurement
from widthscan.probes.budget import resolve_budget
from widthscan.probes.features import (
    measure_attention,
    measure_kernels,
    measure_preactivations,
)
from widthscan.probes.hessian import (
    HVP_MODES,
    eigenpairs,
    sharpness_measurements,
    undefined_sharpness,
)
from widthscan.probes.members import members
from widthscan.probes.ntk import WEIGHTINGS, measure_entk, weighting_problem
from widthscan.probes.outputs import forward, measure_logits, measure_loss
from widthscan.probes.preconditioners import awaiting_first_step, precondition_problem
from widthscan.probes.schedule import schedule_steps

SCHEDULE_KEYS = ("n_log", "n_linear", "first", "every", "steps")

DEFAULTS: dict[str, dict[str, Any]] = {
    "loss": {"n_log": 30, "n_linear": 11, "chunk": None},
    "logits": {"n_log": 30, "n_linear": 11, "n_examples": None, "n_full": 32, "chunk": None},
    "kernels": {"n_log": 8, "n_linear": 5, "layers": None, "n_examples": 128, "pool": "mean",
                "memory_budget": None},
    "preactivations": {"n_log": 8, "n_linear": 5, "layers": None, "n_examples": 128,
                       "bins": 50, "range_std": 5.0, "memory_budget": None},
    "attention": {"n_log": 8, "n_linear": 5, "example": 0, "memory_budget": None},
    "sharpness": {"n_log": 5, "n_linear": 3, "k": 1, "tol": 1e-3, "max_iter": 100,
                  "hvp": "auto", "batch_size": None, "preconditioned": "auto",
                  "memory_budget": None},
    "entk": {"n_log": 4, "n_linear": 3, "n_examples": 64, "trace": True, "chunk": None,
             "method": "auto", "weighting": "auto", "memory_budget": None, "position": None},
}
BUDGETED = ("kernels", "preactivations", "attention", "sharpness", "entk")
DEFAULT_PROBES = ("loss", "logits", "kernels", "preactivations", "sharpness", "entk")


def names() -> list[str]:
    """Probe names a suite accepts, in the order it runs them."""
    return list(DEFAULTS)


def _check_name(name: str) -> None:
    if name not in DEFAULTS:
        raise ValueError(f"unknown probe {name!r}; allowed: {names()}")


def _options(name: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    _check_name(name)
    opts = {"first": 0, "every": None, "steps": None, **DEFAULTS[name]}
    given = dict(given or {})
    for key, value in given.items():
        if key not in opts:
            raise ValueError(f"probe {name!r} has no option {key!r}; allowed: {sorted(opts)}")
        opts[key] = value
    if given.get("every") or given.get("steps") is not None:
        for key in ("n_log", "n_linear"):
            opts[key] = given.get(key, 0)
    if name == "sharpness" and opts["preconditioned"] not in (True, False, "auto"):
        raise ValueError(f"probe 'sharpness' option preconditioned={opts['preconditioned']!r}; "
                         "allowed: true, false, 'auto'")
    if name == "entk" and opts["weighting"] not in ("auto", *WEIGHTINGS):
        raise ValueError(f"probe 'entk' option weighting={opts['weighting']!r}; allowed: "
                         f"{('auto', *WEIGHTINGS)}")
    if "memory_budget" in opts:
        try:
            resolve_budget(opts["memory_budget"], "cpu")
        except ValueError as err:
            raise ValueError(f"probe {name!r} option {err}") from None
    if name == "entk" and opts["position"] is not None and (
            isinstance(opts["position"], bool) or not isinstance(opts["position"], int)):
        raise ValueError(f"probe 'entk' option position={opts['position']!r}; allowed: an "
                         "integer (a sequence position, -1 the last) or unset (all positions)")
    if name == "sharpness" and opts["hvp"] not in HVP_MODES:
        raise ValueError(f"probe 'sharpness' option hvp={opts['hvp']!r}; allowed: {HVP_MODES}")
    return opts


def _head(x: torch.Tensor | None, n: int | None) -> torch.Tensor | None:
    return x if x is None or n is None else x[:n]


def preconditioned_for(m, option: bool | str) -> bool | None:
    """The sharpness probe's ``preconditioned`` option resolved for ``m``: "auto" is True
    where the optimizer's stability matrix can be formed (``preconditioners``), None for
    Adam before its first update (its matrix is not defined yet), else False."""
    if option != "auto":
        return bool(option)
    if awaiting_first_step(m):
        return None
    return precondition_problem(m) is None


def weighting_for(m, option: str) -> str:
    """The eNTK probe's ``weighting`` option resolved for ``m``: "auto" is "lr" (the kernel
    SGD follows) where it can be formed (SGD and known lr scales), else "raw" (Adam)."""
    if option != "auto":
        return option
    return "lr" if weighting_problem(m, "lr") is None else "raw"


class ProbeSuite:
    """Probes with options and schedules for one run of ``total_steps`` updates.

    probes: name -> options (or a list of names for the defaults; None for
    ``DEFAULT_PROBES``). Every probe takes the schedule options n_log, n_linear, first,
    every, steps (see :func:`schedule_steps`; giving ``every`` or ``steps`` turns the
    default log and linear grids off unless n_log / n_linear are given too); the rest
    are in ``DEFAULTS``:
    ``n_examples`` (use the first n probe examples), ``layers``, ``bins``,
    ``range_std``, ``pool``, ``k``, ``tol``, ``max_iter``, ``hvp``, ``batch_size``
    (first examples of the sharpness batch), ``trace``, ``chunk``, ``method``,
    ``example`` (which probe sequence the attention probe reads), ``n_full``,
    ``weighting`` (eNTK: "auto" = "lr" under SGD, "raw" under Adam; see ``ntk``),
    ``memory_budget`` (GiB, the most working memory kernels, preactivations, attention,
    sharpness and eNTK may take; unset: ``budget.default_budget``, 16 GiB on a GPU and
    half the RAM on the CPU), ``position`` (eNTK of a sequence model: the outputs at
    this position only, e.g. -1; unset: every position).
    """

    def __init__(self, probes: Mapping[str, Mapping[str, Any] | None] | Iterable[str] | None
                 = None, total_steps: int = 0):
        if probes is None:
            probes = DEFAULT_PROBES
        if not isinstance(probes, Mapping):
            probes = {name: None for name in probes}
        self.total_steps = int(total_steps)
        self.options = {name: _options(name, opts) for name, opts in probes.items()}
        self.options = {n: self.options[n] for n in names() if n in self.options}
        self.steps: dict[str, list[int]] = {
            name: schedule_steps(self.total_steps,
                                 **{k: opts[k] for k in SCHEDULE_KEYS})
            for name, opts in self.options.items()
        }
        self._due = {name: set(s) for name, s in self.steps.items()}
        self._warm: torch.Tensor | None = None

    @property
    def names(self) -> list[str]:
        """The probes of this suite."""
        return list(self.options)

    def due(self, step: int) -> list[str]:
        """Probes scheduled at ``step``."""
        return [name for name in self.options if int(step) in self._due[name]]

    def measure(self, names: Sequence[str], ens: Any, step: int, probe_x: torch.Tensor,
                probe_y: torch.Tensor | None = None, batch_x: torch.Tensor | None = None,
                batch_y: torch.Tensor | None = None) -> dict[str, dict[str, Measurement]]:
        """Run ``names`` on ``ens`` (Ensemble, or Parametrized as K = 1): probe name ->
        variable -> Measurement with the member axis. ``step`` is the training step being
        measured; the results do not depend on it (the caller records it)."""
        for name in names:
            _check_name(name)
            if name not in self.options:
                raise ValueError(f"probe {name!r} is not in this suite: {self.names}")
        m = members(ens)
        out: dict[str, dict[str, Measurement]] = {}
        outputs = None
        if "loss" in names and "logits" in names and self.options["logits"]["n_examples"] is None:
            outputs = forward(m, probe_x, self.options["loss"]["chunk"])
        for name in (n for n in self.names if n in names):
            o = self.options[name]
            if name == "loss":
                if probe_y is None:
                    raise ValueError("the loss probe needs probe_y")
                out[name] = measure_loss(m, probe_x, probe_y, chunk=o["chunk"], out=outputs)
            elif name == "logits":
                n = o["n_examples"]
                out[name] = measure_logits(m, _head(probe_x, n), _head(probe_y, n),
                                           o["n_full"], o["chunk"], out=outputs)
            elif name == "kernels":
                out[name] = measure_kernels(m, _head(probe_x, o["n_examples"]), o["layers"],
                                            o["pool"], o["memory_budget"])
            elif name == "preactivations":
                out[name] = self._preactivations(m, _head(probe_x, o["n_examples"]), o)
            elif name == "attention":
                out[name] = measure_attention(m, probe_x[o["example"]], o["memory_budget"])
            elif name == "sharpness":
                out[name] = self._sharpness(m, batch_x, batch_y, o)
            elif name == "entk":
                out[name] = measure_entk(m, _head(probe_x, o["n_examples"]), o["trace"],
                                         o["chunk"], o["method"],
                                         weighting_for(m, o["weighting"]), o["memory_budget"],
                                         o["position"])
        return out

    def _preactivations(self, m, x: torch.Tensor, o: Mapping[str, Any]
                        ) -> dict[str, Measurement]:
        """Each measurement bins its own values (mean +- range_std std): edges fixed at
        the first call lose what outgrows them (SP's features widen as they train)."""
        return measure_preactivations(m, x, o["layers"], o["bins"], None, o["range_std"],
                                      o["memory_budget"])

    def _sharpness(self, m, x: torch.Tensor | None, y: torch.Tensor | None,
                   o: Mapping[str, Any]) -> dict[str, Measurement]:
        if x is None or y is None:
            raise ValueError("the sharpness probe needs batch_x and batch_y")
        n = o["batch_size"]
        v0 = self._warm
        if v0 is not None and (v0.shape[0] != m.k or v0.shape[2] != m.flat_size()):
            v0 = None
        pre = preconditioned_for(m, o["preconditioned"])
        if pre is None:
            return undefined_sharpness(m, o["k"])
        pairs = eigenpairs(m, _head(x, n), _head(y, n), None, o["k"], o["tol"],
                           o["max_iter"], o["hvp"], v0, preconditioned=pre,
                           memory_budget=o["memory_budget"])
        self._warm = pairs.warm.detach().cpu().unsqueeze(1)
        return sharpness_measurements(m, pairs, pre)

    def state_dict(self) -> dict[str, torch.Tensor | list]:
        """Tensors and string lists (safetensors / JSON friendly) to resume exactly."""
        state: dict[str, torch.Tensor | list] = {}
        if self._warm is not None:
            state["sharpness.vectors"] = self._warm.clone()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned (missing entries reset that state; the
        preactivation edges older checkpoints carry are no longer used)."""
        vectors = state.get("sharpness.vectors")
        self._warm = None if vectors is None else torch.as_tensor(vectors).clone()
