"""Top Hessian eigenvalues of the training loss, all members at once.

The ensemble loss is the sum of the members' losses, each a function of its own raw
parameters only, so its Hessian is block-diagonal: one Hessian-vector product on a
stacked vector (K, n) gives every member's H_k v_k. K Lanczos recurrences with full
reorthogonalization run side by side on these products, each with its own
tridiagonal matrix and convergence test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import grad, jvp

from widthscan.measurement import Measurement
from widthscan.probes.members import Members, members, public
from widthscan.probes.preconditioners import CODES, kind, preconditioner_root
from widthscan.stack.losses import LOSSES, member_losses

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


def hessian_product(m: Members, x: torch.Tensor, y: torch.Tensor, loss: str,
                    mode: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """A map (K, n) -> (K, n), each member's loss Hessian on (x, y) times its row.

    ``mode``: "closed" (Pearlmutter's R-operator written out for the MLP family, see
    ``mlp_hvp``: about two training steps per product, no autograd graph), "rev-rev" or
    "fwd-rev" (autograd, any model; see :func:`make_hvp`), or "auto": "closed" where it
    applies, else "rev-rev".
    """
    if mode not in HVP_MODES:
        raise ValueError(f"hvp={mode!r}; allowed: {HVP_MODES}")
    problem = closed_form_problem(m, loss)
    if mode == "closed" and problem is not None:
        raise ValueError(problem + "; use hvp='auto' or 'rev-rev'")
    if mode in ("auto", "closed") and problem is None:
        return m.hvp(m.prepare(x), _targets(m, y, loss), loss)
    return make_hvp(m, member_loss_fn(m, x, y, loss), "rev-rev" if mode == "auto" else mode)


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


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (K, n) minus its projections on the orthonormal rows of basis (K, j, n), and the
    result's row norms (K,) float64. One classical Gram-Schmidt pass per row, and a second
    where the first cancelled more than 1 - 1/sqrt(2) of the row's norm (DGKS: twice is
    enough)."""
    w = w.clone()
    before = w.norm(dim=1)
    for b, v in zip(basis, w):
        v.addmv_(b.T, b.mv(v), alpha=-1.0)
    after = w.norm(dim=1)
    again = after < DGKS * before
    if bool(again.any()):
        for i in torch.nonzero(again).flatten().tolist():
            w[i].addmv_(basis[i].T, basis[i].mv(w[i]), alpha=-1.0)
        after = torch.where(again, w.norm(dim=1), after)
    return w, after.double()


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
    basis = torch.empty(kk, min(steps, 16), n, dtype=dtype, device=device)
    for j in range(steps):
        if j == basis.shape[1]:
            grown = torch.empty(kk, min(steps, 2 * j), n, dtype=dtype, device=device)
            grown[:, :j] = basis
            basis = grown
        basis[:, j] = q
        w = hvp(q).clone()
        hvps += (~done).long()
        a = torch.linalg.vecdot(q, w)
        w.addcmul_(q, a.unsqueeze(1), value=-1.0)
        if j:
            w.addcmul_(basis[:, j - 1], betas[:, j - 1].to(dtype).unsqueeze(1), value=-1.0)
        if locked is not None:
            w, _ = _orthogonalize(w, locked)
        w, b = _orthogonalize(w, basis[:, : j + 1])
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
            ritz = torch.stack([coords[i].T @ basis[i, : j + 1] for i in idx.tolist()])
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
            r, r_norm = _orthogonalize(r, basis[:, : j + 1])
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
               preconditioned: bool = False) -> Eigenpairs:
    """Top-k algebraic eigenpairs of each member's training-loss Hessian H w.r.t. its raw
    parameters on the batch (x, y); see :func:`lanczos` and :func:`start_vectors`.
    With ``preconditioned`` those of D^1/2 H D^1/2, D the optimizer's preconditioner (SGD:
    the per-layer lr scales; Adam: from its second moments; see ``preconditioners``).

    Takes a Parametrized, an Ensemble or Members; the result keeps the member axis
    (K = 1 for a Parametrized). Pass its ``warm`` as the next call's ``v0``.
    """
    m = members(model)
    name = loss or m.loss
    if name is None:
        raise ValueError("pass loss='mse' or 'ce': a Parametrized does not know its loss")
    product = hessian_product(m, x, y, name, hvp)
    if preconditioned:
        root, plain = preconditioner_root(m), product

        def product(v: torch.Tensor) -> torch.Tensor:
            return root * plain(root * v)

    with torch.no_grad():
        return lanczos(product, start_vectors(m, v0, seed), k, tol, max_iter, seed)


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
              preconditioned: bool = False) -> dict[str, Measurement]:
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
    "rev-rev"), "closed", "rev-rev" or "fwd-rev".

    Returns ``sharpness`` (K, k) in loss units per parameter^2 with dims ("eigen",)
    (0 = largest; times D when preconditioned), ``sharpness_residual`` (K, k) relative
    residuals, ``sharpness_hvps`` (K,) int64 and ``sharpness_preconditioned`` (K,) 0.0 (H),
    1.0 (SGD's D) or 2.0 (Adam's D), dims (); no K axis for a Parametrized.
    """
    m = members(model)
    pairs = eigenpairs(m, x, y, loss, k, tol, max_iter, hvp, v0, preconditioned=preconditioned)
    return public(m, sharpness_measurements(m, pairs, preconditioned))
