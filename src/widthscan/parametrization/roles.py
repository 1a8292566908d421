"""Width roles of parameters, inferred from shapes at two widths.

A role says which dimensions of a parameter grow with width:

- ``input``: only fan-out grows (first layer, embeddings)
- ``hidden``: fan-in and fan-out grow
- ``output``: only fan-in grows (readout)
- ``vector``: a 1-d parameter along a width dimension (bias, norm gain)
- ``fixed``: nothing grows
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

ROLES = ("input", "hidden", "output", "vector", "fixed")

_TRANSPOSED = (nn.Embedding, nn.EmbeddingBag, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)
_ONE_HOT = (nn.Embedding, nn.EmbeddingBag)


class WidthError(ValueError):
    """A factory or parameter does not fit the width rules."""


@dataclass(frozen=True)
class ParamShape:
    """How one parameter's shape depends on width.

    fan_in / fan_out: sizes at the width of interest (fan_in counts receptive-field
    elements for conv kernels; 1 for one-hot embedding inputs).
    fan_in_mult / fan_out_mult: fan at this width divided by fan at the base width.
    """

    role: str
    fan_in: int
    fan_out: int
    fan_in_base: int
    fan_out_base: int
    ndim: int = 2

    @property
    def fan_in_mult(self) -> float:
        return self.fan_in / self.fan_in_base

    @property
    def fan_out_mult(self) -> float:
        return self.fan_out / self.fan_out_base

    @property
    def width_mult(self) -> float:
        """microsoft/mup's width_mult: the fan-in ratio if fan-in grows, else the fan-out ratio."""
        return self.fan_in_mult if self.fan_in_mult != 1 else self.fan_out_mult


def build_meta(factory: Callable[[int], nn.Module], width: int) -> nn.Module:
    """Instantiate ``factory(width)`` on the meta device (no memory, no RNG use)."""
    with torch.device("meta"):
        return factory(width)


def _owners(module: nn.Module) -> dict[str, nn.Module]:
    owners = {}
    for mod_name, mod in module.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owners[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    return owners


def _fans(shape: torch.Size, owner: nn.Module | None) -> tuple[int, int, int, int]:
    """(fan_in, fan_out, in_dim, out_dim) of a >=2-d parameter."""
    if isinstance(owner, _TRANSPOSED):
        in_dim, out_dim = 0, 1
    else:
        in_dim, out_dim = 1, 0
    receptive = 1
    for s in shape[2:]:
        receptive *= s
    fan_in = 1 if isinstance(owner, _ONE_HOT) else shape[in_dim] * receptive
    return fan_in, shape[out_dim] * receptive, in_dim, out_dim


def infer_shapes(
    factory: Callable[[int], nn.Module],
    width: int,
    base_width: int,
    probe_width: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, ParamShape]:
    """Roles and fans of every parameter of ``factory(width)``.

    Roles come from comparing shapes at ``base_width`` and ``probe_width``
    (default ``2 * base_width``), both built on the meta device. ``overrides``
    maps parameter names to roles for parameters whose layout the rules cannot
    see (e.g. a bare ``nn.Parameter`` stored as ``[in, out]``).
    """
    if width <= 0 or base_width <= 0:
        raise WidthError(f"width and base_width must be positive, got {width} and {base_width}")
    probe_width = probe_width or (2 * base_width if base_width != width else 2 * width)
    base = build_meta(factory, base_width)
    probe = build_meta(factory, probe_width)
    target = build_meta(factory, width)
    base_p = dict(base.named_parameters())
    probe_p = dict(probe.named_parameters())
    target_p = dict(target.named_parameters())
    if base_p.keys() != probe_p.keys() or base_p.keys() != target_p.keys():
        raise WidthError(
            "the factory builds different parameter names at different widths: "
            f"{sorted(set(base_p) ^ set(probe_p) ^ set(target_p))[:5]}"
        )
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(base_p)
    if unknown:
        raise WidthError(f"role overrides name unknown parameters {sorted(unknown)}")
    bad = {n: r for n, r in overrides.items() if r not in ROLES}
    if bad:
        raise WidthError(f"role overrides {bad}: roles must be one of {ROLES}")
    owners = _owners(target)
    shapes: dict[str, ParamShape] = {}
    any_growth = False
    for name, p_base in base_p.items():
        b, q, t = p_base.shape, probe_p[name].shape, target_p[name].shape
        if len(b) != len(q):
            raise WidthError(f"parameter {name!r} changes its number of dims with width: "
                             f"{b} vs {q}")
        grows = [i for i in range(len(b)) if b[i] != q[i]]
        any_growth |= bool(grows)
        if len(grows) > 2:
            raise WidthError(
                f"parameter {name!r} has {len(grows)} dimensions that grow with width "
                f"(shape {tuple(b)} at width {base_width}, {tuple(q)} at width {probe_width}); "
                "at most 2 (fan-in and fan-out) are allowed"
            )
        owner = owners.get(name)
        if len(b) <= 1:
            role = "vector" if grows else "fixed"
            fi = fo = int(t[0]) if len(t) else 1
            fib = fob = int(b[0]) if len(b) else 1
        else:
            fi, fo, in_dim, out_dim = _fans(t, owner)
            fib, fob, _, _ = _fans(b, owner)
            grows_in, grows_out = in_dim in grows, out_dim in grows
            other = [i for i in grows if i not in (in_dim, out_dim)]
            if other:
                raise WidthError(
                    f"parameter {name!r} grows along dim {other[0]} (shape {tuple(b)} -> "
                    f"{tuple(q)}), which is neither its fan-in nor fan-out dim; "
                    "pass a role override for it"
                )
            role = {(True, True): "hidden", (False, True): "input",
                    (True, False): "output", (False, False): "fixed"}[(grows_in, grows_out)]
        role = overrides.get(name, role)
        shapes[name] = ParamShape(role, fi, fo, fib, fob, len(t))
    if not any_growth:
        raise WidthError(
            f"no parameter of the factory changes shape between width {base_width} and "
            f"{probe_width}: the factory must use its width argument"
        )
    return shapes


def infer_roles(
    factory: Callable[[int], nn.Module], base_width: int, probe_width: int | None = None
) -> dict[str, str]:
    """Parameter name -> role, from shapes at ``base_width`` and ``probe_width``."""
    shapes = infer_shapes(factory, base_width, base_width, probe_width)
    return {n: s.role for n, s in shapes.items()}
