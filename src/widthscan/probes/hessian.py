"""Top Hessian eigenvalues of the training loss, all members at once.

The ensemble loss is the sum of the members' losses, each a function of its own raw
parameters only, so its Hessian is block-diagonal: one Hessian-vector product on a
stacked vector (K, n) gives every member's H_k v_k. K Lanczos recurrences with full
reorthogonalization run side by side on these products, each with its own
tridiagonal matrix and convergence test.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import grad, jvp

from widthscan.measurement import Measurement
from widthscan.probes.budget import MemoryBudgetError, chunk_for, gib, resolve_budget
from widthscan.probes.footprint import Footprint, footprint
from widthscan.probes.members import Members, members, public
from widthscan.probes.preconditioners import CODES, kind, preconditioner_root
from widthscan.stack.losses import IGNORE_INDEX, LOSSES, member_losses

HVP_MODES = ("auto", "closed", "rev-rev", "fwd-rev")
AUTOGRAD_MODES = ("rev-rev", "fwd-rev")
WARM_MIX = 0.01
WARM_EXTRA = 2
DGKS = 2**-0.5


class Flat:
    """Flattening of stacked parameter dicts name -> (K, ...) to (K, n) and back."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        self.names = list(params)
        self.shapes = [tuple(p.shape[1:]) for p in params.values()]
        self.sizes = [p[0].numel() for p in params.values()]
        self.n = sum(self.sizes)

    def flatten(self, tensors: Mapping[str, torch.Tensor] | list[torch.Tensor]) -> torch.Tensor:
        parts = tensors.values() if isinstance(tensors, Mapping) else tensors
        return torch.cat([t.reshape(t.shape[0], -1) for t in parts], 1)

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(v, self.sizes, dim=1)
        return {n: t.reshape(v.shape[0], *s) for n, t, s in zip(self.names, parts, self.shapes)}


def _targets(m: Members, y: torch.Tensor, loss: str) -> torch.Tensor:
    """``y`` on the members' device; float MSE targets in their dtype."""
    y = torch.as_tensor(y).to(m.device)
    return y.to(m.dtype) if loss == "mse" and y.is_floating_point() else y


def member_loss_fn(m: Members, x: torch.Tensor, y: torch.Tensor, loss: str
                   ) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """params (name -> (K, ...)) -> per-member mean loss (K,) on the batch (x, y)."""
    x, y = m.prepare(x), _targets(m, y, loss)

    def fn(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return member_losses(m.apply(params, x), y, loss)

    return fn


def make_hvp(m: Members, loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
             mode: str = "rev-rev") -> Callable[[torch.Tensor], torch.Tensor]:
    """A map (K, n) -> (K, n) of stacked vectors to the members' Hessian-vector products.

    ``rev-rev`` differentiates the gradient graph, built once, again for each vector
    (memory of one double-backward graph). ``fwd-rev`` takes the forward-mode derivative
    (``jvp``) of ``torch.func.grad`` per vector (it fails on scaled-dot-product attention).
    """
    if mode not in AUTOGRAD_MODES:
        raise ValueError(f"hvp={mode!r}; allowed here: {AUTOGRAD_MODES}")
    flat = Flat(m.params)
    if mode == "fwd-rev":
        params = {n: p.detach() for n, p in m.params.items()}
        g = grad(lambda ps: loss_fn(ps).sum())

        def fwd_rev(v: torch.Tensor) -> torch.Tensor:
            return flat.flatten(jvp(g, (params,), (flat.unflatten(v),))[1])

        return fwd_rev

    leaves = {n: p.detach().requires_grad_(True) for n, p in m.params.items()}
    with torch.enable_grad():
        total = loss_fn(leaves).sum()
        grads = torch.autograd.grad(total, list(leaves.values()), create_graph=True,
                                    allow_unused=True)
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    inputs = list(leaves.values())

    def rev_rev(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, flat.sizes, dim=1)
        vs = [parts[i].reshape(grads[i].shape) for i in live]
        with torch.enable_grad():
            hv = torch.autograd.grad([grads[i] for i in live], inputs, grad_outputs=vs,
                                     retain_graph=True, allow_unused=True)
        return flat.flatten([torch.zeros_like(p) if h is None else h
                             for h, p in zip(hv, inputs)])

    return rev_rev


def closed_form_problem(m: Members, loss: str) -> str | None:
    """Why the closed-form HVP (the backend's "hvp", ``mlp_hvp``) cannot serve ``m``, or None
    when it can."""
    if not m.provides("hvp") or m.dtype not in (torch.float32, torch.float64):
        return (f"hvp='closed' needs a linear chain (widthscan's MLP or an nn.Sequential of "
                f"Linear layers) in float32/float64; this model is {type(m.net).__name__} "
                f"in {m.dtype}")
    if m.precision == "bfloat16":
        return "hvp='closed' computes in the parameters' dtype; these members train in bfloat16"
    if loss not in LOSSES:
        return f"loss={loss!r}; allowed: {LOSSES}"
    return None


def chunked_hvp(m: Members, x: torch.Tensor, y: torch.Tensor, loss: str, chunk: int
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``rev-rev`` products summed over chunks of ``chunk`` examples, each chunk's graph
    built, used and freed per product (memory of one chunk's graph; time about twice a
    product on a kept graph). Chunk losses are weighted by their share of the batch's
    loss terms (targets not ignored, or output elements for MSE), so the sum is the
    Hessian of the batch's mean loss."""
    x, y = m.prepare(x), _targets(m, y, loss)
    flat = Flat(m.params)
    starts = list(range(0, x.shape[0], chunk))
    if loss == "ce":
        counts = [float((y[i:i + chunk] != IGNORE_INDEX).sum()) for i in starts]
    else:
        counts = [float(y[i:i + chunk].numel()) for i in starts]
    total = max(sum(counts), 1.0)

    def part(v: torch.Tensor, i: int, weight: float) -> torch.Tensor:
        """One chunk's product; its graph dies on return."""
        leaves = {n: p.detach().requires_grad_(True) for n, p in m.params.items()}
        inputs = list(leaves.values())
        with torch.enable_grad():
            value = (member_losses(m.apply(leaves, x[i:i + chunk]), y[i:i + chunk], loss)
                     * weight).sum()
            grads = torch.autograd.grad(value, inputs, create_graph=True, allow_unused=True)
            live = [j for j, g in enumerate(grads) if g is not None and g.requires_grad]
            parts = torch.split(v, flat.sizes, dim=1)
            hv = torch.autograd.grad([grads[j] for j in live], inputs,
                                     grad_outputs=[parts[j].reshape(grads[j].shape)
                                                   for j in live], allow_unused=True)
        return flat.flatten([torch.zeros_like(p) if h is None else h
                             for h, p in zip(hv, inputs)])

    def product(v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(v)
        for i, count in zip(starts, counts):
            if count:
                out += part(v, i, count / total)
        return out

    return product


def plan_sharpness(fp: Footprint, k: int, batch: int, max_iter: int, eigen: int,
                   budget_gib: float) -> int:
    """Examples per Hessian-vector-product chunk that fit ``budget_gib`` with the Lanczos
    vectors (``max_iter`` + ``eigen`` + 8 of K x n numbers: the basis, locked pairs and
    work vectors) and the Hessian graph's parameter-sized part; per example the graph and
    the double backward's transients (three times the forward's activations, measured on
    the width-1024 transformer: ``benchmarks/probes_scale.py``). ``MemoryBudgetError``
    naming the sizes when one example does not fit."""
    item, n = fp.itemsize, fp.n_params
    vectors = item * k * n * (min(max_iter, n) + eigen + 8)
    per_example = k * (fp.hessian + 3 * fp.activations)
    sizes = (f"K={k} members, n={n} parameters, {min(max_iter, n) + eigen + 8} vectors of "
             f"{gib(item * k * n)} for Lanczos (max_iter={max_iter}), batch of {batch} "
             f"examples, Hessian graph {gib(fp.hessian)} per example and member")
    return chunk_for(budget_gib, per_example, batch, "sharpness", sizes,
                     vectors + k * fp.hessian_fixed)


def sharpness_plan(fp: Footprint, k: int, batch: int, max_iter: int, eigen: int,
                   budget_gib: float | None) -> tuple[int, int | None]:
    """(members per Lanczos run, examples per Hessian-vector-product chunk): all K members
    at once when their vectors fit ``budget_gib``, else the largest group that does (each
    member's recurrence is independent of the others', so groups give the same pairs);
    ``MemoryBudgetError`` from :func:`plan_sharpness` when one member does not fit."""
    for group in range(k, 0, -1):
        try:
            return group, plan_sharpness(fp, group, batch, max_iter, eigen, budget_gib)
        except MemoryBudgetError:
            if group == 1:
                raise
    raise ValueError(f"k={k} members; allowed: at least one")


def hessian_product(m: Members, x: torch.Tensor, y: torch.Tensor, loss: str,
                    mode: str = "auto", chunk: int | None = None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A map (K, n) -> (K, n), each member's loss Hessian on (x, y) times its row.

    ``mode``: "closed" (Pearlmutter's R-operator written out for the MLP family, see
    ``mlp_hvp``: about two training steps per product, no autograd graph), "rev-rev" or
    "fwd-rev" (autograd, any model; see :func:`make_hvp`), or "auto": "closed" where it
    applies, else "rev-rev". ``chunk`` (rev-rev): examples per graph when fewer than the
    batch (:func:`chunked_hvp`).
    """
    if mode not in HVP_MODES:
        raise ValueError(f"hvp={mode!r}; allowed: {HVP_MODES}")
    problem = closed_form_problem(m, loss)
    if mode == "closed" and problem is not None:
        raise ValueError(problem + "; use hvp='auto' or 'rev-rev'")
    if mode in ("auto", "closed") and problem is None:
        return m.hvp(m.prepare(x), _targets(m, y, loss), loss)
    mode = "rev-rev" if mode == "auto" else mode
    if mode == "rev-rev" and chunk is not None and chunk < len(x):
        return chunked_hvp(m, x, y, loss, chunk)
    return make_hvp(m, member_loss_fn(m, x, y, loss), mode)


@dataclass
class Eigenpairs:
    """Top-k algebraic eigenpairs of each member's Hessian.

    values (K, k) float64, descending; vectors (K, k, n) unit Ritz vectors in the
    flattened raw-parameter space (``Flat`` order; in the coordinates P^-1/2 theta when
    preconditioned); residuals (K, k) float64 relative residual norms
    ||H v - theta v|| / |theta| (an eigenvalue lies within residual * |theta| of theta);
    hvps (K,) int64 Hessian-vector products each member needed; converged (K,) bool;
    warm (K, n) the next call's ``v0``: the unit sum of the top k + ``WARM_EXTRA`` Ritz
    vectors. Near-equal top eigenvalues (the edge of stability) swap eigenvectors between
    calls; a start along the old top vectors alone then converges to the new second
    eigenvalue with a small residual (2% low, once in 25 calls of an MSE EoS run), while
    the sum keeps a large component along the new top one.
    Non-finite Hessians give NaN values.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    hvps: torch.Tensor
    converged: torch.Tensor
    warm: torch.Tensor


def random_direction(n: int, seed: int, salt: int, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    """A unit vector (n,) drawn from its own generator: the same for every member and K,
    and independent of the global RNG (a fresh copy of a cached draw)."""
    return _direction(n, seed, salt, dtype, device).clone()


@functools.lru_cache(maxsize=8)
def _direction(n: int, seed: int, salt: int, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + salt)
    r = torch.randn(n, generator=gen, dtype=torch.float64)
    return (r / r.norm()).to(dtype=dtype, device=device)


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor | list[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """w (K, n) minus its projections on the orthonormal rows of basis (K, j, n) (or of a
    list of such blocks), and the result's row norms (K,) float64. One classical
    Gram-Schmidt pass per row, and a second where the first cancelled more than
    1 - 1/sqrt(2) of the row's norm (DGKS: twice is enough)."""
    blocks = [basis] if torch.is_tensor(basis) else basis
    w = w.clone()
    before = w.norm(dim=1)

    def project(i: int, v: torch.Tensor) -> None:
        coefs = [b[i].mv(v) for b in blocks]
        for b, c in zip(blocks, coefs):
            v.addmv_(b[i].T, c, alpha=-1.0)

    for i, v in enumerate(w):
        project(i, v)
    after = w.norm(dim=1)
    again = after < DGKS * before
    if bool(again.any()):
        for i in torch.nonzero(again).flatten().tolist():
            project(i, w[i])
        after = torch.where(again, w.norm(dim=1), after)
    return w, after.double()


class Basis:
    """Lanczos vectors (K, j, n) kept in blocks of ``BLOCK`` columns, so that growing it
    never copies (the peak is the vectors themselves)."""

    BLOCK = 16

    def __init__(self, k: int, n: int, steps: int, dtype: torch.dtype, device: torch.device):
        self.k, self.n, self.steps = k, n, steps
        self.dtype, self.device = dtype, device
        self.blocks: list[torch.Tensor] = []
        self.size = 0

    def append(self, q: torch.Tensor) -> None:
        if self.size == len(self.blocks) * self.BLOCK:
            cols = min(self.BLOCK, self.steps - self.size)
            self.blocks.append(torch.empty(self.k, cols, self.n, dtype=self.dtype,
                                           device=self.device))
        self.blocks[-1][:, self.size % self.BLOCK] = q
        self.size += 1

    def column(self, j: int) -> torch.Tensor:
        return self.blocks[j // self.BLOCK][:, j % self.BLOCK]

    def filled(self) -> list[torch.Tensor]:
        """The blocks, trimmed to the columns written."""
        out = []
        for b, block in enumerate(self.blocks):
            out.append(block[:, : min(self.BLOCK, self.size - b * self.BLOCK)])
        return out

    def combine(self, i: int, coords: torch.Tensor) -> torch.Tensor:
        """coords (j, r) -> the r vectors (r, n) of member i they combine."""
        out = None
        for b, block in enumerate(self.filled()):
            part = coords[b * self.BLOCK: b * self.BLOCK + block.shape[1]].T @ block[i]
            out = part if out is None else out + part
        return out


def _tridiagonal(alphas: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """(K, j, j) symmetric tridiagonal from alphas (K, j) and betas (K, j - 1)."""
    t = torch.diag_embed(alphas)
    if betas.shape[1]:
        t = t + torch.diag_embed(betas, 1) + torch.diag_embed(betas, -1)
    return t


def lanczos(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, k: int = 1,
            tol: float = 1e-3, max_iter: int = 100, seed: int = 0) -> Eigenpairs:
    """K Lanczos recurrences with full reorthogonalization on a batched symmetric map.

    hvp: (K, n) -> (K, n), row k depending only on row k. v0 (K, n): start vectors.
    A member stops when its top-k Ritz pairs all have residual norms
    ||H y - theta y|| <= tol * |theta| (or its Krylov space is exhausted); its results
    are frozen then while the others go on. At most ``max_iter`` products each per run. An
    invariant subspace found early (breakdown) continues from a fresh random direction
    orthogonal to the basis. Memory: the basis, max_iter * K * n numbers.

    One Krylov space holds a single vector of a repeated eigenvalue's eigenspace, so with
    k >= 2 its Ritz values skip the copies (with small residuals). Locking the k pairs
    found, Lanczos restarts from a random vector orthogonal to them (on the deflated map
    (I - V V^T) H (I - V V^T)) and locks the top pair it finds while that exceeds the k-th
    value by more than ``tol``: a missed copy of a repeated eigenvalue; the restart that
    finds nothing larger certifies the top k with multiplicity (``converged``). Up to k
    restarts, each at most ``max_iter`` products; none for k = 1 or a member whose first
    Krylov space filled the whole space. Residuals of restart pairs are those on the
    deflated map (equal to H's up to the locked vectors' residuals).
    """
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    first = _krylov(hvp, v0, k, tol, max_iter, seed)
    kk, n = v0.shape
    k = min(k, n)
    if k == 1:
        return first
    vals = first.values.clone()
    vecs = first.vectors.clone()
    res = first.residuals.clone()
    hvps = first.hvps.clone()
    converged = first.converged.clone()
    active = first.converged & (first.hvps < n)
    for restart in range(k):
        if not bool(active.any()) or vecs.shape[1] >= n:
            break
        start = random_direction(n, seed, 7919 + restart, v0.dtype, v0.device).expand(kk, n)
        run = _krylov(hvp, start, 1, tol, max_iter, seed + restart + 1, locked=vecs,
                      active=active)
        hvps += run.hvps
        theta, kth = run.values[:, 0], vals.nan_to_num(nan=-float("inf")).topk(k, 1)[0][:, -1]
        found = active & run.converged & (theta - kth > tol * torch.maximum(theta.abs(),
                                                                            kth.abs()))
        converged &= ~(active & ~run.converged)
        keep = found.unsqueeze(1)
        vals = torch.cat([vals, torch.where(found, theta, float("nan")).unsqueeze(1)], 1)
        res = torch.cat([res, torch.where(keep, run.residuals[:, :1], float("nan"))], 1)
        vecs = torch.cat([vecs, torch.where(keep.unsqueeze(2), run.vectors[:, :1],
                                            torch.zeros_like(run.vectors[:, :1]))], 1)
        active = found
    order = vals.nan_to_num(nan=-float("inf")).argsort(1, descending=True)[:, :k]
    return Eigenpairs(vals.gather(1, order), vecs.gather(1, order.unsqueeze(2).expand(
        -1, -1, n)), res.gather(1, order), hvps, converged, first.warm)


def _krylov(hvp: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, k: int,
            tol: float, max_iter: int, seed: int, locked: torch.Tensor | None = None,
            active: torch.Tensor | None = None) -> Eigenpairs:
    """One Lanczos run of :func:`lanczos` (no multiplicity restarts); its Krylov space kept
    orthogonal to the rows of ``locked`` (K, L, n); members not ``active`` (K,) skip."""
    kk, n = v0.shape
    dtype, device = v0.dtype, v0.device
    f64 = dict(dtype=torch.float64, device=device)
    eps = torch.finfo(dtype).eps
    n_free = n - (0 if locked is None else locked.shape[1])
    steps = max(1, min(int(max_iter), n_free))
    k = min(k, n)
    values = torch.full((kk, k), float("nan"), **f64)
    residuals = torch.full((kk, k), float("nan"), **f64)
    vectors = torch.zeros(kk, k, n, dtype=dtype, device=device)
    warm = torch.zeros(kk, n, dtype=dtype, device=device)
    hvps = torch.zeros(kk, dtype=torch.int64, device=device)
    done = torch.zeros(kk, dtype=torch.bool, device=device)
    if active is not None:
        done = ~active.to(device)
    converged = torch.zeros(kk, dtype=torch.bool, device=device)
    alphas = torch.zeros(kk, steps, **f64)
    betas = torch.zeros(kk, steps, **f64)

    tiny = torch.finfo(dtype).tiny
    v0_norm = v0.norm(dim=1, keepdim=True)
    q = v0 / v0_norm.clamp_min(tiny)
    bad = ~torch.isfinite(v0_norm[:, 0]) | (v0_norm[:, 0] == 0)
    if bad.any():
        q[bad] = random_direction(n, seed, -1, dtype, device)
    if locked is not None:
        q, q_norm = _orthogonalize(q, locked)
        q = q / q_norm.to(dtype).clamp_min(tiny).unsqueeze(1)
    basis = Basis(kk, n, steps, dtype, device)
    for j in range(steps):
        basis.append(q)
        w = hvp(q).clone()
        hvps += (~done).long()
        a = torch.linalg.vecdot(q, w)
        w.addcmul_(q, a.unsqueeze(1), value=-1.0)
        if j:
            w.addcmul_(basis.column(j - 1), betas[:, j - 1].to(dtype).unsqueeze(1), value=-1.0)
        if locked is not None:
            w, _ = _orthogonalize(w, locked)
        w, b = _orthogonalize(w, basis.filled())
        broken = ~(torch.isfinite(a) & torch.isfinite(b)) & ~done
        if broken.any():
            done |= broken
        if done.any():
            w = torch.where(done.unsqueeze(1), torch.zeros_like(w), w)
            a = torch.where(done, torch.zeros_like(a), a)
            b = torch.where(done, torch.zeros_like(b), b)
        alphas[:, j] = a.double()
        theta, s = torch.linalg.eigh(_tridiagonal(alphas[:, : j + 1], betas[:, :j]))
        top = min(k, j + 1)
        top_theta = theta[:, -top:].flip(-1)
        top_s = s[:, :, -top:].flip(-1)
        res = b.unsqueeze(1) * top_s[:, -1, :].abs()
        norm_est = theta.abs().amax(1, keepdim=True)
        scale = torch.maximum(top_theta.abs(), eps * norm_est)
        ok = (res <= tol * scale).all(1) & (j + 1 >= k)
        ok |= torch.full_like(ok, j + 1 == n_free)
        new = ~done & (ok | torch.full_like(ok, j + 1 == steps))
        if new.any():
            idx = torch.nonzero(new).flatten()
            spread = s[:, :, -min(k + WARM_EXTRA, j + 1):].sum(-1, keepdim=True)
            coords = torch.cat([top_s, spread], -1).to(dtype)
            ritz = torch.stack([basis.combine(i, coords[i]) for i in idx.tolist()])
            warm[idx] = ritz[:, top]
            values[idx, :top] = top_theta[idx]
            residuals[idx, :top] = (res[idx] / top_theta[idx].abs()).nan_to_num(
                nan=0.0, posinf=float("inf"))
            vectors[idx, :top] = ritz[:, :top]
            converged[idx] = ok[idx]
            done |= new
        if bool(done.all()):
            break
        breakdown = (b <= max(1e-10, 100 * eps) * norm_est[:, 0].clamp_min(eps)) & ~done
        q = w.div_(b.to(dtype).clamp_min(tiny).unsqueeze(1))
        if breakdown.any():
            r = random_direction(n, seed, j, dtype, device).expand(kk, n)
            if locked is not None:
                r, _ = _orthogonalize(r, locked)
            r, r_norm = _orthogonalize(r, basis.filled())
            r = r / r_norm.to(dtype).clamp_min(tiny).unsqueeze(1)
            q = torch.where(breakdown.unsqueeze(1), r, q)
            b = torch.where(breakdown, torch.zeros_like(b), b)
        betas[:, j] = b
    warm = warm / warm.norm(dim=1, keepdim=True).clamp_min(tiny)
    return Eigenpairs(values, vectors, residuals, hvps, converged, warm)


def start_vectors(m: Members, v0: torch.Tensor | None, seed: int = 0) -> torch.Tensor:
    """Lanczos start (K, n): the sum of given vectors v0 ((K, n), (K, j, n); K optional for
    a Parametrized; best the previous call's ``Eigenpairs.warm``) mixed with a small shared
    random direction, or that direction alone."""
    n = m.flat_size()
    r = random_direction(n, seed, -1, m.dtype, m.device).expand(m.k, n)
    if v0 is None:
        return r.clone()
    v = torch.as_tensor(v0).to(dtype=m.dtype, device=m.device)
    one_member = v.ndim <= 2 or (v.ndim == 3 and len(v) == 1)
    if not m.stacked and v.shape[-1:] == (n,) and one_member:
        v = v.reshape(-1, n).sum(0, keepdim=True)
    if v.ndim == 1:
        v = v.unsqueeze(0)
    if v.ndim == 3:
        v = v.sum(1)
    if v.shape != (m.k, n):
        raise ValueError(f"v0 of shape {tuple(v0.shape)} for {m.k} members of {n} parameters")
    norm = v.norm(dim=1, keepdim=True)
    ok = torch.isfinite(v).all(1, keepdim=True) & (norm > 0)
    u = torch.where(ok, v / norm.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(v))
    return u + WARM_MIX * r


def eigenpairs(model: Any, x: torch.Tensor, y: torch.Tensor, loss: str | None = None,
               k: int = 1, tol: float = 1e-3, max_iter: int = 100, hvp: str = "auto",
               v0: torch.Tensor | None = None, seed: int = 0,
               preconditioned: bool = False, memory_budget: float | None = None
               ) -> Eigenpairs:
    """Top-k algebraic eigenpairs of each member's training-loss Hessian H w.r.t. its raw
    parameters on the batch (x, y); see :func:`lanczos` and :func:`start_vectors`.
    With ``preconditioned`` those of D^1/2 H D^1/2, D the optimizer's preconditioner (SGD:
    the per-layer lr scales; Adam: from its second moments; see ``preconditioners``).
    ``memory_budget`` (GiB, default ``budget.default_budget``): autograd products run on
    chunks of the batch that fit it beside the Lanczos vectors (:func:`plan_sharpness`).

    Takes a Parametrized, an Ensemble or Members; the result keeps the member axis
    (K = 1 for a Parametrized). Pass its ``warm`` as the next call's ``v0``.
    """
    m = members(model)
    name = loss or m.loss
    if name is None:
        raise ValueError("pass loss='mse' or 'ce': a Parametrized does not know its loss")
    group, chunk = m.k, None
    if closed_form_problem(m, name) is not None or hvp not in ("auto", "closed"):
        xp = m.prepare(x)
        fp = footprint(m.net, xp[:1], m.dtype, name)
        group, chunk = sharpness_plan(fp, m.k, len(xp), max_iter, k,
                                      resolve_budget(memory_budget, m.device))
    root = preconditioner_root(m) if preconditioned else None
    with torch.no_grad():
        start = start_vectors(m, v0, seed)
    parts = []
    for lo in range(0, m.k, group):
        hi = min(lo + group, m.k)
        sub = m if hi - lo == m.k else m.select(lo, hi)
        own = root if root is None or root.ndim == 1 else root[lo:hi]
        product = _scaled(hessian_product(sub, x, y, name, hvp, chunk), own)
        with torch.no_grad():
            parts.append(lanczos(product, start[lo:hi], k, tol, max_iter, seed))
    if len(parts) == 1:
        return parts[0]
    return Eigenpairs(*(torch.cat([getattr(p, f.name) for p in parts])
                        for f in dataclasses.fields(Eigenpairs)))


def _scaled(product: Callable[[torch.Tensor], torch.Tensor], root: torch.Tensor | None
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> root * product(root * v) (D^1/2 H D^1/2), or ``product`` when root is None."""
    if root is None:
        return product
    return lambda v: root * product(root * v)


def sharpness_measurements(m: Members, pairs: Eigenpairs,
                           preconditioned: bool = False) -> dict[str, Measurement]:
    """``sharpness`` (K, k), ``sharpness_residual`` (K, k), ``sharpness_hvps`` (K,) and
    ``sharpness_preconditioned`` (K,): which matrix, as ``preconditioners.CODES`` (0 for H,
    1 for SGD's D^1/2 H D^1/2, 2 for Adam's)."""
    code = CODES[kind(m)] if preconditioned else CODES["none"]
    return {
        "sharpness": m.measurement(("eigen",), pairs.values),
        "sharpness_residual": m.measurement(("eigen",), pairs.residuals),
        "sharpness_hvps": m.measurement((), pairs.hvps),
        "sharpness_preconditioned": m.measurement(
            (), torch.full((m.k,), code, dtype=torch.float64)),
    }


def undefined_sharpness(m: Members, k: int) -> dict[str, Measurement]:
    """:func:`sharpness_measurements` of a matrix that is not defined yet (Adam's before its
    first update): NaN values and residuals, 0 HVPs, code 2."""
    nan = torch.full((m.k, k), float("nan"), dtype=torch.float64)
    pairs = Eigenpairs(nan, torch.empty(m.k, k, 0), nan, torch.zeros(m.k, dtype=torch.int64),
                       torch.zeros(m.k, dtype=torch.bool), torch.empty(m.k, 0))
    return sharpness_measurements(m, pairs, preconditioned=True)


def sharpness(model: Any, x: torch.Tensor, y: torch.Tensor, loss: str | None = None,
              k: int = 1, tol: float = 1e-3, max_iter: int = 100, hvp: str = "auto",
              v0: torch.Tensor | None = None,
              preconditioned: bool = False, memory_budget: float | None = None
              ) -> dict[str, Measurement]:
    """Top-k largest algebraic eigenvalues of the training-loss Hessian (raw parameters).

    ``preconditioned=True`` takes them of D^1/2 H D^1/2 instead, the matrix the optimizer's
    edge of stability acts on (``preconditioners``). SGD: D = the parameterization's
    per-parameter learning-rate scales, to compare with 2/lr (2(1 + momentum)/lr); raw and
    preconditioned agree under SP and at the base width, under muP at other widths only
    the preconditioned one meets 2/lr. Adam (an Ensemble, after its first step): D from
    its second moments, to compare with (2 + 2 beta_1) / ((1 - beta_1) lr) = 38/lr.

    Lanczos with full reorthogonalization on Hessian-vector products of the batch
    (x, y), all members at once; ``loss`` defaults to the ensemble's ("mse" | "ce"; a
    Parametrized needs it). ``tol`` bounds each Ritz pair's relative residual (so each
    eigenvalue is accurate to at least ``tol`` relative, usually far better);
    ``max_iter`` caps HVPs per member; ``v0`` warm-starts (e.g. previous eigenvectors,
    see :func:`eigenpairs`). ``hvp`` picks the Hessian-vector product (see
    :func:`hessian_product`): "auto" (default; closed form for the MLP family, else
    "rev-rev"), "closed", "rev-rev" or "fwd-rev". ``memory_budget`` (GiB; default
    ``budget.default_budget``): autograd products run on chunks of the batch that fit it
    beside the max_iter Lanczos vectors; ``MemoryBudgetError`` naming the sizes when the
    vectors and one example do not fit (then lower ``max_iter`` or raise the budget).

    Returns ``sharpness`` (K, k) in loss units per parameter^2 with dims ("eigen",)
    (0 = largest; times D when preconditioned), ``sharpness_residual`` (K, k) relative
    residuals, ``sharpness_hvps`` (K,) int64 and ``sharpness_preconditioned`` (K,) 0.0 (H),
    1.0 (SGD's D) or 2.0 (Adam's D), dims (); no K axis for a Parametrized.
    """
    m = members(model)
    pairs = eigenpairs(m, x, y, loss, k, tol, max_iter, hvp, v0, preconditioned=preconditioned,
                       memory_budget=memory_budget)
    return public(m, sharpness_measurements(m, pairs, preconditioned))
