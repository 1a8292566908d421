"""Synthetic online streams: Gegenbauer single-index regression, a random polynomial teacher
and a random network teacher. Inputs and targets are computed on the CPU in float64 and cast
at the end, so every device and dtype sees the same examples."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from .base import Latent, Task
from .errors import TaskConfigError, check_choice, check_int
from .registry import register
from .seeding import generator
from .transfer import to_device

F64 = torch.float64


def gegenbauer(k: int, alpha: float, z: torch.Tensor) -> torch.Tensor:
    """Gegenbauer polynomial C_k^(alpha)(z) elementwise, by the three-term recurrence."""
    prev = torch.ones_like(z)
    if k == 0:
        return prev
    cur = 2.0 * alpha * z
    for n in range(2, k + 1):
        prev, cur = cur, (2.0 * (n + alpha - 1.0) * z * cur - (n + 2.0 * alpha - 2.0) * prev) / n
    return cur


def gegenbauer_second_moment(k: int, alpha: float) -> float:
    """E[C_k^(alpha)(z)^2] for z with density proportional to (1 - z^2)^(alpha - 1/2) on [-1, 1].

    This is the law of beta.x / sqrt(D) for x uniform on the sphere of radius sqrt(D) and a unit
    beta, with alpha = (D - 2) / 2; the value is the orthogonality norm divided by the weight's
    total mass, both in closed form.
    """
    log_norm = (
        math.log(math.pi)
        + (1.0 - 2.0 * alpha) * math.log(2.0)
        + math.lgamma(k + 2.0 * alpha)
        - math.lgamma(k + 1.0)
        - math.log(k + alpha)
        - 2.0 * math.lgamma(alpha)
    )
    log_mass = 0.5 * math.log(math.pi) + math.lgamma(alpha + 0.5) - math.lgamma(alpha + 1.0)
    return math.exp(log_norm - log_mass)


def hermite(p: int, u: torch.Tensor) -> torch.Tensor:
    """Probabilists' Hermite polynomial He_p(u) elementwise (E[He_p(g)^2] = p! for g ~ N(0,1))."""
    prev = torch.ones_like(u)
    if p == 0:
        return prev
    cur = u
    for n in range(1, p):
        prev, cur = cur, u * cur - n * prev
    return cur


def _normal(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal draws as float64 (drawn in float32: several times faster on the CPU)."""
    return torch.randn(*shape, generator=gen).to(F64)


def _unit_rows(gen: torch.Generator, rows: int, dim: int) -> torch.Tensor:
    w = _normal(gen, rows, dim)
    return w / w.norm(dim=1, keepdim=True)


class _FloatStream(Task):
    """A stream whose latent is the float64 input itself."""

    def _render(
        self, latent: Latent, device: torch.device, dtype: torch.dtype, augment: Any
    ) -> torch.Tensor:
        return to_device(latent, device, dtype)


@register
class Gegenbauer(_FloatStream):
    """y = C_k^((D-2)/2)(beta.x / sqrt(D)) / sd, x uniform on the sphere of radius sqrt(D).

    The single-index regression of App. A.1.

    Options: dim D >= 3 (default 10), degree k >= 1 (default 3). beta is a unit vector fixed by
    the seed (`self.beta`, float64 (D,)); sd makes the target unit-variance (closed form).
    x: (batch, D); y: (batch, 1); loss "mse".
    """

    name = "gegenbauer"

    def __init__(self, seed: int = 0, *, dim: int = 10, degree: int = 3, **common: Any) -> None:
        super().__init__(seed, **common)
        self.dim = check_int("dim", dim, 3, 1 << 20)
        self.degree = check_int("degree", degree, 1, 1000)
        self.alpha = (self.dim - 2) / 2
        self.beta = _unit_rows(generator(self.seed, "teacher"), 1, self.dim)[0]
        self.scale = 1.0 / math.sqrt(gegenbauer_second_moment(self.degree, self.alpha))
        self._finish(input_shape=(self.dim,), n_classes=0)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Targets (n, 1) float64 for inputs x (n, D) on the sphere of radius sqrt(D)."""
        z = (x.to(F64) @ self.beta.to(x.device)) / math.sqrt(self.dim)
        return (gegenbauer(self.degree, self.alpha, z) * self.scale).unsqueeze(1)

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Latent, torch.Tensor]:
        g = _normal(gen, n, self.dim)
        x = g * (math.sqrt(self.dim) / g.norm(dim=1, keepdim=True))
        return x, self.target(x)


@register
class Polynomial(_FloatStream):
    """Random degree-p polynomial teacher on Gaussian inputs (App. E.1 uses p = 2).

    y = sum_i a_i He_p(w_i.x) with unit w_i (rank of them) and x ~ N(0, I_D); for p = 2 this is
    the general centred quadratic x'Ax - tr A with A = sum_i a_i w_i w_i'. The a_i are rescaled
    so Var y = 1 exactly (E[He_p(u.x) He_p(v.x)] = p! (u.v)^p). Options: dim (10), degree p
    (2), rank (default dim). Attributes `weights` (rank, D) and `coef` (rank,), float64.
    x: (batch, D); y: (batch, 1); loss "mse".
    """

    name = "polynomial"

    def __init__(
        self,
        seed: int = 0,
        *,
        dim: int = 10,
        degree: int = 2,
        rank: int | None = None,
        **common: Any,
    ) -> None:
        super().__init__(seed, **common)
        self.dim = check_int("dim", dim, 1, 1 << 20)
        self.degree = check_int("degree", degree, 1, 50)
        self.rank = self.dim if rank is None else check_int("rank", rank, 1, 1 << 16)
        gen = generator(self.seed, "teacher")
        self.weights = _unit_rows(gen, self.rank, self.dim)
        coef = torch.randn(self.rank, generator=gen, dtype=F64)
        gram = (self.weights @ self.weights.T) ** self.degree
        var = math.factorial(self.degree) * float(coef @ gram @ coef)
        self.coef = coef / math.sqrt(var)
        self._finish(input_shape=(self.dim,), n_classes=0)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Targets (n, 1) float64 for inputs x (n, D)."""
        u = x.to(F64) @ self.weights.T.to(x.device)
        return (hermite(self.degree, u) @ self.coef.to(x.device)).unsqueeze(1)

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Latent, torch.Tensor]:
        x = _normal(gen, n, self.dim)
        return x, self.target(x)


@register
class Teacher(_FloatStream):
    """Labels from a fixed random network on Gaussian inputs: an unbounded online stream.

    The teacher is an MLP dim -> hidden (x depth, `activation`) -> outputs with float32
    weights N(0, 1/fan_in) fixed by the seed (`self.layers`, each (fan_in, fan_out)).
    n_classes >= 2: y = argmax of the teacher's logits, centred by their mean over a fixed
    sample so classes are roughly balanced (loss "ce", y int64 (batch,)).
    n_classes = 0: regression on the teacher's scalar output, standardized on a fixed sample
    (loss "mse", y (batch, 1)). x: (batch, dim). Options: dim (16), hidden (64), depth (2
    hidden layers), n_classes (10), activation ("relu" or "tanh").
    """

    name = "teacher"
    _NORM_SAMPLES = 1 << 14

    def __init__(
        self,
        seed: int = 0,
        *,
        dim: int = 16,
        hidden: int = 64,
        depth: int = 2,
        n_classes: int = 10,
        activation: str = "relu",
        **common: Any,
    ) -> None:
        super().__init__(seed, **common)
        self.dim = check_int("dim", dim, 1, 1 << 20)
        hidden = check_int("hidden", hidden, 1, 1 << 16)
        depth = check_int("depth", depth, 0, 64)
        n_classes = check_int("n_classes", n_classes, 0, 1 << 16)
        if n_classes == 1:
            raise TaskConfigError("n_classes must be 0 (regression) or an integer >= 2, got 1")
        self.activation = check_choice("activation", activation, ("relu", "tanh"))
        gen = generator(self.seed, "teacher")
        sizes = [self.dim] + [hidden] * depth + [max(n_classes, 1)]
        self.layers = [
            torch.randn(fan_in, fan_out, generator=gen) / math.sqrt(fan_in)
            for fan_in, fan_out in itertools.pairwise(sizes)
        ]
        self.n_classes = n_classes
        self._shift = torch.zeros(max(n_classes, 1))
        self._scale = 1.0
        sample = torch.randn(self._NORM_SAMPLES, self.dim, generator=generator(self.seed, "norm"))
        out = self.logits(sample)
        self._shift = -out.to(torch.float32).mean(0)
        if n_classes == 0:
            self._scale = float(out.std())
        self._finish(input_shape=(self.dim,), n_classes=n_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Centred teacher outputs (n, max(n_classes, 1)): float32 logits, or float64 targets
        with unit sd for regression. Inputs are float32 normals, so float32 is exact for x."""
        h = x if x.dtype == torch.float32 else x.to(torch.float32)
        for w in self.layers[:-1]:
            h = torch.mm(h, w)
            h = h.tanh_() if self.activation == "tanh" else h.relu_()
        out = torch.addmm(self._shift, h, self.layers[-1])
        return out.to(F64) / self._scale if self.n_classes == 0 else out

    def _draw(self, gen: torch.Generator, n: int) -> tuple[Latent, torch.Tensor]:
        x = torch.randn(n, self.dim, generator=gen)
        out = self.logits(x)
        return x, (out.argmax(1) if self.n_classes else out)
