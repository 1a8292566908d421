"""Everything a sweep can be checked for before it writes a byte: the device, the task, the
model at every width (on the meta device) and a memory estimate against the machine's."""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from widthscan.config import ConfigError, SweepConfig
from widthscan.config.load import config_error, imports
from widthscan.probes.budget import ram_bytes

GiB = 1 << 30
ENTK_MANY_PASSES = 100_000
"""eNTK backward passes per seed and measurement above which preflight warns about its time."""
NEEDS = {("executor.kind", "dask"): ("dask.distributed", "widthscan[dask]"),
         ("executor.kind", "submitit"): ("submitit", "widthscan[submitit]"),
         ("tracker.kind", "tensorboard"): ("tensorboard", "tensorboard"),
         ("tracker.kind", "wandb"): ("wandb", "wandb")}


def size(n: float) -> str:
    """Bytes as MiB below 1 GiB, else GiB."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.1f} MiB"
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}


@dataclass
class MemoryEstimate:
    """A lower bound on the bytes one run holds at once, by part (see ``estimate_memory``)."""

    width: int
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = ", ".join(f"{k}: {size(v)}" for k, v in self.parts.items() if v)
        return f"{size(self.total)} ({shown})"


@dataclass
class Preflight:
    """What ``check_sweep`` found: modules it imported, parameters per member at each width,
    the largest run's memory estimate and the memory of the device (bytes; None: unknown)."""

    imports: list[str] = field(default_factory=list)
    n_params: dict[int, int] = field(default_factory=dict)
    memory: MemoryEstimate | None = None
    available: int | None = None
    device: str = "cpu"
    entk_passes: tuple[int, int] | None = None

    def lines(self) -> list[str]:
        out = [f"imports: {', '.join(self.imports) if self.imports else 'nothing'}"]
        out += [f"width {w}: {n:,} parameters per seed" for w, n in self.n_params.items()]
        if self.memory is not None:
            have = "unknown" if self.available is None else size(self.available)
            out.append(f"memory: the largest run (width {self.memory.width}) needs at least "
                       f"{self.memory.describe()}; {self.device} has {have}")
        if self.entk_passes:
            out.append(entk_cost_line(self.entk_passes))
        return out


def device_problem(name: str) -> str | None:
    """Why ``train.device`` cannot be used on this machine, or None."""
    if name in ("auto", "cpu"):
        return None
    if name == "mps":
        if not torch.backends.mps.is_available():
            return "train.device: 'mps' but this machine has no MPS device; allowed here: " \
                   "'cpu' or 'auto'"
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        return f"train.device: {name!r} is not a device; allowed: 'cpu', 'cuda', 'cuda:N', 'auto'"
    if not torch.cuda.is_available():
        return (f"train.device: {name!r} but this machine has no CUDA device "
                f"(torch.cuda.is_available() is False); allowed here: 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return (f"train.device: {name!r} but this machine has {count} CUDA device(s); "
                f"allowed: cuda:0..cuda:{count - 1}")
    return None


def device_memory(name: str) -> int | None:
    """Total memory of the device the sweep trains on (bytes), or None if unknown."""
    from widthscan.sweep.plan import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return ram_bytes() if device.type == "cpu" else None


def missing_packages(cfg: SweepConfig) -> list[str]:
    """The executor's and tracker's packages that are not installed (found, not imported)."""
    problems = []
    for path, kind in (("executor.kind", cfg.executor.kind), ("tracker.kind", cfg.tracker.kind)):
        need = NEEDS.get((path, kind))
        if need is None:
            continue
        try:
            found = importlib.util.find_spec(need[0]) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"{path}: {kind!r} needs the package {need[0]!r}, which is not "
                            f"installed (pip install {need[1]})")
    return problems


def activation_elements(model: nn.Module, x: torch.Tensor) -> int | None:
    """Elements of every leaf module's output for input ``x`` (a forward pass on the meta
    device, nothing allocated); None when the model cannot run on the meta device."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        outputs = output if isinstance(output, tuple | list) else (output,)
        total += sum(o.numel() for o in outputs if torch.is_tensor(o))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(x.to("meta"))
    except NotImplementedError:
        return None
    finally:
        for h in hooks:
            h.remove()
    return total


def estimate_memory(cfg: SweepConfig, width: int, n_params: int,
                    activations: int | None) -> MemoryEstimate:
    """A lower bound for one run: parameters, gradients and optimizer state of K members,
    activations kept for the backward pass at ``batch_size``, and the probe set's forward
    pass (sharpness: Hessian-vector products on its batch, eNTK: its P x P x outputs)."""
    k = len(cfg.seed_list)
    weight = 8 if cfg.train.precision == "float64" else 4
    act = {"float64": 8, "float32": 4, "bfloat16": 2}[cfg.train.precision]
    opt = cfg.optimizer
    states = OPTIMIZER_STATES[opt.name] if (opt.name != "sgd" or opt.momentum > 0) else 0
    per_example = activations or 0
    parts = {
        "parameters": n_params * k * weight,
        "gradients": n_params * k * weight,
        "optimizer state": states * n_params * k * weight,
        f"activations at batch_size {cfg.train.batch_size}":
            per_example * cfg.train.batch_size * k * act,
    }
    probes = 0
    if cfg.probes:
        probes += per_example * cfg.task.probe_examples * k * act
    if "sharpness" in cfg.probes:
        batch = cfg.probes["sharpness"].options.get("batch_size") or cfg.train.batch_size
        probes += 2 * per_example * int(batch) * k * act + 4 * n_params * k * weight
    parts["probes"] = probes
    return MemoryEstimate(width, parts)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _sample_input(task) -> torch.Tensor:
    x, _ = task.batch(0, 1, device=torch.device("cpu"), dtype=torch.float32)
    return x


def _local_machine(cfg: SweepConfig) -> bool:
    """Whether runs train on this machine (not on a cluster's nodes)."""
    ex = cfg.executor
    return not ((ex.kind == "dask" and ex.scheduler)
                or (ex.kind == "submitit" and ex.cluster in ("slurm", "auto")))


def check_sweep(cfg: SweepConfig, allow_import: Iterable[str] = ()) -> Preflight:
    """Raise ConfigError (one line per problem) for anything that would fail after files
    are written; return what was checked. Imports only the modules in ``allow_import``."""
    from widthscan.parametrization.parametrized import rule_table
    from widthscan.parametrization.roles import build_meta
    from widthscan.sweep.plan import make_factory, make_task

    report = Preflight(imports=imports(cfg), device=cfg.train.device)
    local = _local_machine(cfg)
    problems = missing_packages(cfg)
    problem = device_problem(cfg.train.device) if local else None
    if problems or problem:
        raise config_error(problems + ([problem] if problem else []))
    try:
        task = make_task(cfg)
    except Exception as err:
        if not local:
            warnings.warn(f"task {cfg.task.name!r} cannot be built on this machine ({err}); "
                          "the model checks are skipped", stacklevel=2)
            return report
        raise config_error([f"task.options: task {cfg.task.name!r} cannot be built with "
                            f"options {cfg.task.options}: {err}"]) from None
    factory = make_factory(cfg, task.spec, tuple(allow_import))
    x = _sample_input(task)
    family = cfg.model.family
    failed: dict[int, str] = {}
    acts: dict[int, int | None] = {}
    widest = None
    for width in sorted(set(cfg.widths) | {cfg.base_width}):
        try:
            model = build_meta(factory, width)
            if width == max(cfg.widths):
                widest = model
            rule_table(factory, width, cfg.base_width, cfg.params[0], cfg.optimizer.name,
                       cfg.train.init_gain)
        except Exception as err:
            failed[width] = f"cannot be built at width {width}: {_one_line(err)}"
            continue
        report.n_params[width] = sum(p.numel() for p in model.parameters())
        try:
            acts[width] = activation_elements(model, x)
        except Exception as err:
            failed[width] = (f"fails at width {width} on the task's inputs of shape "
                             f"{tuple(x.shape[1:])}: {_one_line(err)}")
    if failed:
        first, *more = failed
        also = f" (fails at widths {[first, *more]})" if more else ""
        raise config_error([f"model.options: model {family!r} with options "
                            f"{cfg.model.options} {failed[first]}{also}"])
    estimates = [estimate_memory(cfg, w, report.n_params[w], acts.get(w))
                 for w in cfg.widths]
    report.memory = max(estimates, key=lambda e: e.total)
    report.available = device_memory(cfg.train.device) if local else None
    if cfg.executor.kind == "dask" and local:
        report.memory.parts = {k: v * min(cfg.executor.workers, len(cfg.params) * len(
            cfg.widths)) for k, v in report.memory.parts.items()}
    if (cfg.train.check_memory and report.available is not None
            and report.memory.total > report.available):
        k = len(cfg.seed_list)
        raise config_error([
            f"widths: width {report.memory.width} with {k} seeds needs at least "
            f"{report.memory.describe()} but {cfg.train.device} has "
            f"{size(report.available)}; allowed: narrower widths, fewer seeds or a "
            f"smaller train.batch_size (train.check_memory = false skips this check)"])
    problems = probe_budget_problems(cfg, widest, task.spec, x, local)
    if problems:
        raise config_error(problems)
    report.entk_passes = entk_cost(cfg, widest, x)
    if report.entk_passes and math.prod(report.entk_passes) > ENTK_MANY_PASSES:
        warnings.warn(entk_cost_line(report.entk_passes) + "; on a sequence model "
                      "probes.entk.options.position = -1 measures the last position's "
                      "outputs only", stacklevel=2)
    return report


def entk_cost_line(passes: tuple[int, int]) -> str:
    p, c = passes
    return (f"probes.entk: about {p * c:,} backward passes per seed at each measurement "
            f"({p} examples x {c} output units)")


def _probe_dtype(cfg: SweepConfig) -> torch.dtype:
    return torch.float64 if cfg.train.precision == "float64" else torch.float32


def entk_cost(cfg: SweepConfig, widest: nn.Module, x: torch.Tensor
              ) -> tuple[int, int] | None:
    """(examples, output units) of the sweep's eNTK probe on ``widest`` (the widest
    width's network on the meta device), or None when it has none or it cannot be
    planned on the meta device."""
    from widthscan.probes.plans import entk_passes

    if "entk" not in cfg.probes:
        return None
    try:
        return entk_passes(cfg.probes["entk"].options, widest, x, _probe_dtype(cfg),
                           cfg.task.probe_examples)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError):
        return None


def probe_budget_problems(cfg: SweepConfig, widest: nn.Module, spec, x: torch.Tensor,
                          local: bool = True) -> list[str]:
    """The budgeted probes (kernels, preactivations, attention, sharpness, eNTK) planned on
    ``widest`` (the widest width's network on the meta device, ``widthscan.probes.plans``):
    one line per probe whose smallest chunk exceeds its ``memory_budget``."""
    from widthscan.probes.plans import budget_problems
    from widthscan.probes.suite import BUDGETED
    from widthscan.sweep.plan import loss_name, resolve_device

    probes = {n: p.options for n, p in cfg.probes.items() if n in BUDGETED}
    if not probes:
        return []
    if local:
        device = resolve_device(cfg.train.device)
    else:
        device = torch.device("cpu" if cfg.train.device == "cpu" else "cuda")
    return budget_problems(probes, widest, x, len(cfg.seed_list), _probe_dtype(cfg),
                           loss_name(cfg, spec), device, cfg.task.probe_examples,
                           cfg.train.batch_size, cfg.train.precision == "bfloat16")


__all__ = ["ConfigError", "MemoryEstimate", "Preflight", "check_sweep", "device_problem",
           "estimate_memory", "probe_budget_problems"]
