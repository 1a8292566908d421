"""``parametrize``: a module at one width, initialized and scaled by the rule table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from widthscan.parametrization.roles import ParamShape, build_meta, infer_shapes
from widthscan.parametrization.rules import Scales, attention_scale, scales

ZERO_INIT = ("readout", "query")


def scale_params(
    params: Mapping[str, torch.Tensor], multipliers: Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """Effective parameters ``multiplier * raw`` (raw tensors may carry a leading K axis)."""
    return {n: p if multipliers[n] == 1.0 else p * multipliers[n] for n, p in params.items()}


def scaled_call(
    net: nn.Module,
    params: Mapping[str, torch.Tensor],
    multipliers: Mapping[str, float],
    args: tuple,
    kwargs: Mapping | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
):
    """Run ``net`` functionally with effective parameters ``multiplier * params``."""
    tensors = scale_params(params, multipliers)
    if buffers:
        tensors = {**buffers, **tensors}
    return functional_call(net, tensors, args, dict(kwargs or {}), strict=False)


class ScaledModule(nn.Module):
    """Wraps a network so that its forward uses ``multiplier * raw`` for every parameter.

    The raw parameters are those of ``self.net`` (train them); the multipliers are
    plain floats in a table, so deepcopy, ``torch.func`` and ``state_dict`` see
    ordinary tensors.
    """

    def __init__(self, net: nn.Module, multipliers: Mapping[str, float]):
        super().__init__()
        self.net = net
        self.multipliers = dict(multipliers)

    def forward(self, *args, **kwargs):
        return scaled_call(self.net, dict(self.net.named_parameters()), self.multipliers,
                           args, kwargs)


def set_attention_scales(net: nn.Module, base: nn.Module, param: str) -> None:
    """Set ``qk_scale`` on every submodule that has ``head_dim`` and ``qk_scale``."""
    base_modules = dict(base.named_modules())
    for name, mod in net.named_modules():
        if hasattr(mod, "head_dim") and hasattr(mod, "qk_scale"):
            mod.qk_scale = attention_scale(param, mod.head_dim, base_modules[name].head_dim)


@torch.no_grad()
def initialize(
    net: nn.Module,
    table: Mapping[str, Scales],
    shapes: Mapping[str, ParamShape],
    generator: torch.Generator,
    zero_init: Iterable[str] = (),
) -> None:
    """Draw every >=2-d parameter from N(0, init_std^2); zero biases; keep 1-d gains.

    ``zero_init`` may hold "readout" (output-role weights start at zero) and
    "query" (weights of modules named ``query`` start at zero).
    """
    zero_init = set(zero_init)
    for name, p in net.named_parameters():
        s = table[name]
        zero = ("readout" in zero_init and shapes[name].role == "output") or (
            "query" in zero_init and name.endswith("query.weight")
        )
        if zero or (p.ndim < 2 and name.rsplit(".", 1)[-1] == "bias"):
            p.zero_()
        elif s.init_std is not None:
            sample = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.copy_(sample * s.init_std)


def build_initialized(factory: Callable[[int], nn.Module], width: int, seed: int) -> nn.Module:
    """``factory(width)`` on CPU without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(width)


@dataclass
class Parametrized:
    """A network at one width under one parameterization.

    ``module`` applies the multipliers in its forward; ``net`` holds the raw
    parameters. Dicts are keyed by the names of ``net.named_parameters()``.
    """

    module: ScaledModule
    param: str
    optimizer: str
    width: int
    base_width: int
    shapes: dict[str, ParamShape]
    table: dict[str, Scales] = field(repr=False)

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @property
    def roles(self) -> dict[str, str]:
        return {n: s.role for n, s in self.shapes.items()}

    @property
    def multipliers(self) -> dict[str, float]:
        return {n: s.multiplier for n, s in self.table.items()}

    @property
    def lr_scale(self) -> dict[str, float]:
        return {n: s.lr_scale for n, s in self.table.items()}

    @property
    def init_std(self) -> dict[str, float | None]:
        return {n: s.init_std for n, s in self.table.items()}

    def param_groups(
        self,
        lr: float,
        weight_decay: float = 0.0,
        eps: float | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
    ) -> list[dict]:
        """Optimizer groups, one per distinct (lr, wd, eps) scale, for torch.optim.SGD/Adam(W).

        ``params`` replaces the module's own tensors (e.g. stacked ensemble leaves).
        """
        return param_groups(self.table, params or dict(self.net.named_parameters()),
                            lr, weight_decay, eps)


def param_groups(
    table: Mapping[str, Scales],
    params: Mapping[str, torch.Tensor],
    lr: float,
    weight_decay: float = 0.0,
    eps: float | None = None,
) -> list[dict]:
    """Group parameters by their scales; each group carries its own lr/weight_decay(/eps)."""
    groups: dict[tuple, dict] = {}
    for name, p in params.items():
        s = table[name]
        key = (s.lr_scale, s.wd_scale, s.eps_scale)
        if key not in groups:
            g = {"params": [], "names": [], "lr": lr * s.lr_scale,
                 "weight_decay": weight_decay * s.wd_scale}
            if eps is not None:
                g["eps"] = eps * s.eps_scale
            groups[key] = g
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def rule_table(
    factory: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    param: str,
    optimizer: str,
    init_gain: float = 1.0,
    roles: Mapping[str, str] | None = None,
) -> tuple[dict[str, ParamShape], dict[str, Scales]]:
    """Shapes and table rows of every parameter of ``factory(width)``."""
    shapes = infer_shapes(factory, width, base_width, overrides=roles)
    return shapes, {n: scales(param, optimizer, s, init_gain) for n, s in shapes.items()}


def parametrize(
    factory: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    param: str = "mup",
    optimizer: str = "sgd",
    seed: int = 0,
    init_gain: float = 1.0,
    zero_init: Iterable[str] = (),
    roles: Mapping[str, str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Parametrized:
    """Build ``factory(width)`` initialized by the rules of ``param`` and ``optimizer``.

    The init is drawn on CPU in float64 from ``torch.Generator().manual_seed(seed)``
    and cast, so it is the same on every device. ``roles`` overrides inferred roles.
    """
    bad = set(zero_init) - set(ZERO_INIT)
    if bad:
        raise ValueError(f"zero_init={sorted(bad)} not understood; allowed: {ZERO_INIT}")
    shapes, table = rule_table(factory, width, base_width, param, optimizer, init_gain, roles)
    net = build_initialized(factory, width, seed).to(dtype=dtype)
    set_attention_scales(net, build_meta(factory, base_width), param)
    initialize(net, table, shapes, torch.Generator().manual_seed(seed), zero_init)
    net = net.to(device=device)
    module = ScaledModule(net, {n: s.multiplier for n, s in table.items()})
    return Parametrized(module, param, optimizer, width, base_width, shapes, table)
