"""Plug-and-play ADMM and proximal gradient descent with any proximal operator.

Solve ``min_x scale/2 ||A x - y||^2 + R(x)`` where ``R`` enters only through its proximal operator:
a learned proximal network (:class:`LPNProx`; then ``R`` is the LPN's exact prior), or the baselines
:class:`SoftThreshold` (``lam |x|_1``), :class:`Tikhonov` (``lam/2 ||x||^2`` or ``lam/2 ||grad x||^2``) and
:class:`TotalVariation` (isotropic TV). ``A`` is a :class:`LinearOperator` made from a matrix or from the
pair of callables ``(A, A^T)``; :func:`check_adjoint` catches an ``A^T`` that is not the adjoint.
Entries of ``x`` that are known (e.g. Dirichlet values of a PDE's initial condition) stay fixed: pass the mask
``free`` of the unknown ones (and their ``fixed`` values, default 0); the x-step then solves for the free entries only.

    >>> import numpy as np
    >>> A = LinearOperator.from_matrix(np.eye(4)[:3])          # observe 3 of 4 entries
    >>> _ = check_adjoint(A)
    >>> y = torch.tensor([1.0, -2.0, 0.2], dtype=torch.float64)
    >>> out = pnp_admm(A, y, SoftThreshold(0.5), rho=1.0, iters=200)
    >>> [round(v, 3) for v in out.x.tolist()]                   # soft threshold of y at 0.5, and 0
    [0.5, -1.5, 0.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import SolverError

__all__ = ["LPNProx", "LinearOperator", "PnPResult", "SoftThreshold", "Tikhonov", "TotalVariation",
           "as_operator", "cg", "check_adjoint", "pnp_admm", "pnp_pgd", "psnr", "rel_l2"]

DTYPE = torch.float64
Vector = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------- operators
@dataclass
class LinearOperator:
    """``A: R^n -> R^m`` acting on flat float64 tensors, with its adjoint ``A^T: R^m -> R^n``."""

    forward: Vector
    adjoint: Vector
    shape: tuple[int, int]

    @classmethod
    def from_matrix(cls, matrix: Any) -> LinearOperator:
        """From a dense array, a scipy sparse matrix or a torch tensor."""
        if isinstance(matrix, torch.Tensor):
            mat = matrix.to(DTYPE)
            return cls(lambda x: mat @ x, lambda y: mat.T @ y, tuple(mat.shape))
        if not hasattr(matrix, "shape") or len(matrix.shape) != 2:
            raise SolverError(f"a forward operator matrix must be 2-D, got {type(matrix).__name__}",
                              field="operator", fix="pass a 2-D array/sparse matrix, or a pair (A, A^T) of callables")
        mat = matrix.tocsr() if hasattr(matrix, "tocsr") else np.asarray(matrix, dtype=float)
        mat_t = mat.T.tocsr() if hasattr(mat, "tocsr") else mat.T

        def apply(m):
            return lambda x: torch.from_numpy(np.asarray(m @ x.detach().cpu().numpy(), dtype=float))

        return cls(apply(mat), apply(mat_t), tuple(int(s) for s in mat.shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def T(self) -> Vector:  # noqa: N802 (reads like the maths)
        return self.adjoint


def as_operator(op: Any, n: int | None = None) -> LinearOperator:
    """A :class:`LinearOperator` from an operator, a matrix, or ``(A, A^T)`` callables (then ``n``, the
    size of ``x``, is required; ``m`` is found by applying ``A`` once)."""
    if isinstance(op, LinearOperator):
        return op
    if isinstance(op, tuple) and len(op) == 2 and all(callable(f) for f in op):
        if n is None:
            raise SolverError("a pair (A, A^T) of callables needs the size n of x", field="operator",
                              fix="pass n=..., or a LinearOperator with its shape")
        m = int(op[0](torch.zeros(n, dtype=DTYPE)).numel())
        return LinearOperator(op[0], op[1], (m, n))
    return LinearOperator.from_matrix(op)


def check_adjoint(op: LinearOperator, trials: int = 3, rtol: float = 1e-6, seed: int = 0) -> float:
    """The dot-product test ``<A x, y> = <x, A^T y>`` on random vectors.

    Returns:
        The worst relative mismatch ``|<Ax,y> - <x,A^T y>| / (||Ax|| ||y||)``.

    Raises:
        SolverError: when the mismatch exceeds ``rtol`` or the shapes are inconsistent.
    """
    gen = torch.Generator().manual_seed(seed)
    m, n = op.shape
    worst = 0.0
    for _ in range(trials):
        x = torch.randn(n, generator=gen, dtype=DTYPE)
        y = torch.randn(m, generator=gen, dtype=DTYPE)
        ax, aty = op.forward(x).reshape(-1), op.adjoint(y).reshape(-1)
        if ax.numel() != m or aty.numel() != n:
            raise SolverError(f"the operator maps R^{n} -> R^{ax.numel()} and its adjoint R^{m} -> R^{aty.numel()}, "
                              f"but its shape says {m} x {n}", field="operator",
                              fix="make A and A^T consistent with the declared shape")
        lhs, rhs = float(ax @ y), float(x @ aty)
        denom = max(float(ax.norm() * y.norm()), float(x.norm() * aty.norm()), 1e-300)
        worst = max(worst, abs(lhs - rhs) / denom)
    if not worst <= rtol:
        raise SolverError(f"A^T is not the adjoint of A: the dot-product test <Ax, y> = <x, A^T y> fails with "
                          f"relative mismatch {worst:.2e} > {rtol:.0e}", field="operator",
                          fix="pass the transpose of the forward map as A^T (for a time stepper: the steps' "
                              "transposes in reverse order)")
    return worst


def cg(apply: Vector, b: torch.Tensor, x0: torch.Tensor | None = None, tol: float = 1e-5,
       max_iter: int = 30) -> tuple[torch.Tensor, int]:
    """Conjugate gradients for an SPD ``apply``; stops at ``||r|| <= tol ||b||``. Returns ``(x, iterations)``."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x)
    p, rr = r.clone(), float(r @ r)
    target = (tol * float(b.norm())) ** 2
    it = 0
    while it < max_iter and rr > target:
        ap = apply(p)
        step = rr / float(p @ ap)
        x += step * p
        r -= step * ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr, it = rr_new, it + 1
    return x, it


# ---------------------------------------------------------------------------------------- proximal maps
class SoftThreshold:
    """Prox of ``lam ||x||_1``: ``sign(v) max(|v| - lam t, 0)``."""

    def __init__(self, lam: float):
        self.lam = lam

    def __call__(self, v: torch.Tensor, t: float) -> torch.Tensor:
        return torch.sign(v) * torch.clamp(v.abs() - self.lam * t, min=0.0)


class Tikhonov:
    """Prox of ``lam/2 ||x||^2`` (``shape=None``) or of ``lam/2 ||grad x||^2`` on a grid ``shape`` (Neumann
    differences; solved by CG)."""

    def __init__(self, lam: float, shape: tuple[int, int] | None = None):
        self.lam, self.shape = lam, shape

    def __call__(self, v: torch.Tensor, t: float) -> torch.Tensor:
        if self.shape is None:
            return v / (1.0 + self.lam * t)
        w = self.lam * t
        x, _ = cg(lambda z: z + w * _laplacian(z.reshape(self.shape)).reshape(-1), v, x0=v, tol=1e-8,
                  max_iter=500)
        return x


def _grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gy = torch.zeros_like(u), torch.zeros_like(u)
    gx[:-1] = u[1:] - u[:-1]
    gy[:, :-1] = u[:, 1:] - u[:, :-1]
    return gx, gy


def _div(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Minus the adjoint of :func:`_grad`."""
    d = torch.zeros_like(px)
    d[0] += px[0]
    d[1:-1] += px[1:-1] - px[:-2]
    d[-1] -= px[-2]
    d[:, 0] += py[:, 0]
    d[:, 1:-1] += py[:, 1:-1] - py[:, :-2]
    d[:, -1] -= py[:, -2]
    return d


def _laplacian(u: torch.Tensor) -> torch.Tensor:
    """``grad^T grad u`` (positive semi-definite)."""
    return -_div(*_grad(u))


def tikhonov_direct(op: Any, ys: list[torch.Tensor], lam: float, shape: tuple[int, int],
                    free: Any = None) -> list[torch.Tensor]:
    """The minimisers of ``1/2 ||A x - y||^2 + lam/2 ||grad x||^2`` (the gradient of :class:`Tikhonov` on a grid
    ``shape``) for each ``y``, by a dense solve of ``(A^T A + lam grad^T grad) x = A^T y``: small grids only, as
    the check that an iterative solve reached the minimiser. With a mask ``free`` the other entries are 0 and the
    normal equations are solved for the free entries only."""
    op = as_operator(op, shape[0] * shape[1])
    eye = torch.eye(shape[0] * shape[1], dtype=ys[0].dtype)
    ata = torch.stack([op.adjoint(op(e)) for e in eye], dim=1)
    lap = torch.stack([_laplacian(e.reshape(shape)).reshape(-1) for e in eye], dim=1)
    keep = torch.ones(len(eye), dtype=torch.bool) if free is None else torch.as_tensor(free).reshape(-1).bool()
    out = []
    for y in ys:
        x = torch.zeros(len(eye), dtype=ys[0].dtype)
        x[keep] = torch.linalg.solve((ata + lam * lap)[keep][:, keep], op.adjoint(y)[keep])
        out.append(x)
    return out


class TotalVariation:
    """Prox of ``lam TV(x)`` (isotropic) on a grid ``shape``, by Chambolle's dual projection (2004)."""

    def __init__(self, lam: float, shape: tuple[int, int], iters: int = 100):
        self.lam, self.shape, self.iters = lam, shape, iters

    def __call__(self, v: torch.Tensor, t: float) -> torch.Tensor:
        w = self.lam * t
        if w <= 0:
            return v.clone()
        f = v.reshape(self.shape)
        px, py = torch.zeros_like(f), torch.zeros_like(f)
        tau = 0.248        # < 1/4: the step that makes the projection iteration converge
        for _ in range(self.iters):
            gx, gy = _grad(_div(px, py) - f / w)
            norm = 1.0 + tau * torch.sqrt(gx**2 + gy**2)
            px, py = (px + tau * gx) / norm, (py + tau * gy) / norm
        return (f - w * _div(px, py)).reshape(-1)


class LPNProx:
    """A learned proximal network as the prox (the step ``t`` is ignored, as in the paper).

    Args:
        net: the network.
        shape: the field's shape as the network takes one sample, e.g. ``(1, 32, 32)`` or ``(1,)``.
    """

    def __init__(self, net: torch.nn.Module, shape: tuple[int, ...]):
        self.net, self.shape = net, tuple(shape)
        self.dtype = next(net.parameters()).dtype

    def __call__(self, v: torch.Tensor, t: float) -> torch.Tensor:
        with torch.no_grad():
            out = self.net(v.to(self.dtype).reshape(1, *self.shape))
        return out.reshape(-1).to(v.dtype)


# ------------------------------------------------------------------------------------------ algorithms
@dataclass
class PnPResult:
    """The estimate ``x`` and per-iteration history (``change``, and ``rel_l2``/``psnr`` when truth is given;
    ADMM also ``primal`` = ``||x - z||``)."""

    x: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    cg_iterations: int = 0


def psnr(x: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (``data_range`` defaults to the truth's max - min)."""
    x, truth = np.asarray(x, dtype=float).ravel(), np.asarray(truth, dtype=float).ravel()
    peak = float(truth.max() - truth.min()) if data_range is None else data_range
    mse = float(np.mean((x - truth) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def rel_l2(x: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> float:
    """``||x - truth|| / ||truth||``."""
    x, truth = np.asarray(x, dtype=float).ravel(), np.asarray(truth, dtype=float).ravel()
    return float(np.linalg.norm(x - truth) / max(np.linalg.norm(truth), 1e-300))


def _prepare(op: Any, y: Any, x0: Any, n: int | None) -> tuple[LinearOperator, torch.Tensor, torch.Tensor]:
    op = as_operator(op, n)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(DTYPE).reshape(-1)
    if y.numel() != op.shape[0]:
        raise SolverError(f"the observation has {y.numel()} values but the operator produces {op.shape[0]}",
                          field="observation", fix=f"pass an observation of {op.shape[0]} values (the operator's rows)")
    x = op.adjoint(y) if x0 is None else torch.as_tensor(x0).to(DTYPE).reshape(-1).clone()
    if x.numel() != op.shape[1]:
        raise SolverError(f"the starting point has {x.numel()} values, the operator takes {op.shape[1]}",
                          field="x0", fix="start from A^T y (the default) or pass a vector of the right size")
    return op, y, x


def _constraint(free: Any, fixed: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, c)``: the mask of free entries (float 0/1) and ``c``, the fixed values with 0 at the free entries;
    without ``free`` every entry is free (mask 1, c 0: the projections below are then exact identities)."""
    if free is None:
        return torch.ones_like(x), torch.zeros_like(x)
    mask = torch.as_tensor(free).reshape(-1)
    if mask.numel() != x.numel():
        raise SolverError(f"the free-entry mask has {mask.numel()} values, x has {x.numel()}", field="free",
                          fix="pass a boolean mask with one value per entry of x (True = unknown)")
    mask = mask.to(torch.bool)
    c = torch.broadcast_to(torch.as_tensor(fixed, dtype=DTYPE).reshape(-1), x.shape).clone()
    c[mask] = 0.0
    return mask.to(DTYPE), c


def _project(x: torch.Tensor, constraint: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``x`` with its fixed entries set to their values."""
    return constraint[0] * x + constraint[1]


def _record(history: dict[str, list[float]], x: torch.Tensor, prev: torch.Tensor, truth: Any) -> None:
    history.setdefault("change", []).append(float((x - prev).norm() / max(float(x.norm()), 1e-300)))
    if truth is not None:
        history.setdefault("rel_l2", []).append(rel_l2(x, truth))
        history.setdefault("psnr", []).append(psnr(x, truth))


def pnp_admm(op: Any, y: Any, prox: Callable[[torch.Tensor, float], torch.Tensor], *, rho: float,
             scale: float = 1.0, iters: int = 20, x0: Any = None, n: int | None = None, cg_tol: float = 1e-5,
             cg_iter: int = 30, truth: Any = None, free: Any = None, fixed: Any = 0.0) -> PnPResult:
    """PnP-ADMM for ``scale/2 ||A x - y||^2 + R(x)`` with the split ``x = z``.

    x-step: ``(scale A^T A + rho I) x = scale A^T y + rho (z - u)`` by CG (warm-started); z-step:
    ``z = prox(x + u, 1/rho)``; u-step: ``u += x - z``. Starts from ``x0`` (default ``A^T y``).

    With a mask ``free`` the problem is ``min scale/2 ||A x - y||^2 + R(x)`` over the ``x`` whose other entries
    equal ``fixed``: the indicator of that set joins the data term, so the x-step solves the normal equations for the
    free entries only (``P (scale A^T A + rho I) P^T``, ``P`` the restriction) and keeps the fixed ones; the prox
    still sees the whole image. The returned ``z`` has its fixed entries set to their values (at a fixed point
    ``x = z``, so this only removes what is left of the split).

    Args:
        op: the forward operator (see :func:`as_operator`).
        y: the observation (``m`` values).
        prox: ``prox(v, t)`` for ``t R``.
        rho: the penalty parameter.
        scale: weight of the data term.
        iters: ADMM iterations.
        x0: starting point.
        n: size of ``x`` when ``op`` is a pair of callables.
        cg_tol: relative tolerance of the x-step's CG.
        cg_iter: CG iterations at most per x-step.
        truth: the true ``x``, to record ``rel_l2`` and ``psnr`` per iteration.
        free: boolean mask of the unknown entries of ``x`` (default: all).
        fixed: the values of the other entries (a number or a vector; its free entries are ignored).

    Returns:
        A :class:`PnPResult` with ``x = z`` (the prox output) of the last iteration.
    """
    if rho <= 0 or scale <= 0:
        raise SolverError(f"rho and scale must be positive, got {rho}, {scale}", field="method.pnp",
                          fix="e.g. rho: 0.1, scale: 1")
    op, y, x = _prepare(op, y, x0, n)
    constraint = _constraint(free, fixed, x)
    x = _project(x, constraint)
    z, u = x.clone(), torch.zeros_like(x)
    history: dict[str, list[float]] = {}
    cg_total = 0
    mask, c = constraint
    aty = mask * (scale * op.adjoint(y - op.forward(c)))      # the fixed entries' part of Ax moves to the right

    def normal(v: torch.Tensor) -> torch.Tensor:
        return mask * (scale * op.adjoint(op.forward(mask * v)) + rho * v)

    for _ in range(iters):
        free_part, it = cg(normal, aty + rho * mask * (z - u), x0=mask * x, tol=cg_tol, max_iter=cg_iter)
        x = mask * free_part + c
        cg_total += it
        z_prev = z
        z = prox(x + u, 1.0 / rho)
        u = u + x - z
        _record(history, z, z_prev, truth)
        history.setdefault("primal", []).append(float((x - z).norm()))
    return PnPResult(_project(z, constraint), history, cg_total)


def pnp_pgd(op: Any, y: Any, prox: Callable[[torch.Tensor, float], torch.Tensor], *, step: float,
            scale: float = 1.0, iters: int = 20, x0: Any = None, n: int | None = None, truth: Any = None,
            free: Any = None, fixed: Any = 0.0) -> PnPResult:
    """PnP proximal gradient: ``x <- prox(x - step scale A^T (A x - y), step)``, from ``x0`` (default ``A^T y``).

    Converges for a convex ``R`` when ``step * scale * ||A||^2 < 2``. With a mask ``free`` (see :func:`pnp_admm`)
    each iterate's fixed entries are set to ``fixed`` after the prox (projected PGD).
    """
    if step <= 0 or scale <= 0:
        raise SolverError(f"step and scale must be positive, got {step}, {scale}", field="method.pnp",
                          fix="e.g. step: 1, scale: 1")
    op, y, x = _prepare(op, y, x0, n)
    constraint = _constraint(free, fixed, x)
    x = _project(x, constraint)
    history: dict[str, list[float]] = {}
    for _ in range(iters):
        prev = x
        x = _project(prox(x - step * scale * op.adjoint(op.forward(x) - y), step), constraint)
        _record(history, x, prev, truth)
    return PnPResult(x, history)
