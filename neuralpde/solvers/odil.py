"""ODIL: solve a PDE (and infer its parameters) by minimising the discrete residual over all grid values.

Unknowns are fields on a space(-time) grid plus scalar parameters. The loss is
``sum over residual groups of weight * mean(residual**2)``; it is minimised by Gauss-Newton /
Levenberg-Marquardt with a sparse Jacobian assembled from one autodiff leaf per stencil shift, or by
L-BFGS / Adam on the multigrid decomposition of the fields (Karnakov et al., PNAS Nexus 2024)::

    >>> from neuralpde.pde import Poisson
    >>> from neuralpde.pde.stencils import Grid
    >>> grid = Grid(bounds=[[0, 1]], cells=[16])
    >>> pb = DiscreteProblem({"u": np.zeros(16)}, {}, lambda v: Poisson(source=1, dim=1).discrete_residual(grid, v))
    >>> x, history = newton(pb, pb.initial())
    >>> bool(history[-1]["loss"] < 1e-20)                  # linear: one Gauss-Newton step solves it
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from pydantic import Field

from ..errors import CaseError, SolverError
from ..pde.stencils import StencilView
from ..progress import SILENT
from .method import Method, MethodConfig, MethodResult, RunContext, Strict, register

Residual = Callable[[StencilView], dict[str, torch.Tensor]]


class DiscreteProblem:
    """Unknown fields and scalars, a residual function, and per-group weights.

    Args:
        fields: initial value of each unknown field (numpy, any shape).
        params: initial value of each scalar unknown.
        residual: ``residual(view) -> {group: residual tensor}``, written with :class:`StencilView` gathers.
        weights: per-group weight (default 1).
        dtype: torch dtype of the computation (float64 by default: the normal equations square the
            condition number).
    """

    def __init__(self, fields: dict[str, np.ndarray], params: dict[str, float], residual: Residual,
                 weights: dict[str, float] | None = None, dtype: torch.dtype = torch.float64, device: str = "cpu"):
        self.shapes = {k: tuple(np.shape(v)) for k, v in fields.items()}
        self.init_fields = {k: np.asarray(v, dtype=float) for k, v in fields.items()}
        self.init_params = {k: float(v) for k, v in params.items()}
        self.residual, self.weights = residual, dict(weights or {})
        self.dtype, self.device = dtype, device
        self.offsets: dict[str, int] = {}
        n = 0
        for name, shape in self.shapes.items():
            self.offsets[name] = n
            n += int(np.prod(shape))
        for name in self.init_params:
            self.offsets[name] = n
            n += 1
        self.size = n

    def initial(self) -> np.ndarray:
        """The initial unknown vector."""
        return np.concatenate([v.ravel() for v in self.init_fields.values()]
                              + [np.array(list(self.init_params.values()), dtype=float)])

    def unpack(self, x: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        fields = {k: x[self.offsets[k]: self.offsets[k] + int(np.prod(s))].reshape(s) for k, s in self.shapes.items()}
        params = {k: x[self.offsets[k]] for k in self.init_params}
        return fields, params

    def weight(self, group: str) -> float:
        return float(self.weights.get(group, 1.0))

    def terms(self, fields: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``weight * mean(residual**2)`` of each group (differentiable)."""
        groups = self.residual(StencilView(fields, params))
        return {g: self.weight(g) * torch.mean(r ** 2) for g, r in groups.items()}

    def loss(self, x: np.ndarray) -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            terms = self.terms(*self.unpack(x))
        values = {g: float(v) for g, v in terms.items()}
        return sum(values.values()), values

    def linearize(self, x: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
        """Scaled residual ``r`` (``loss = r.r``) and its sparse Jacobian at ``x``.

        Each residual entry depends only on the same entry of every stencil leaf, so one backward pass
        per group gives all Jacobian entries of that group at once.
        """
        fields, params = self.unpack(x)
        view = StencilView(fields, params, linearize=True)
        groups = self.residual(view)
        leaves = [leaf for leaf, _, _ in view.leaves]
        rows, cols, vals, res = [], [], [], []
        start = 0
        for group, r in groups.items():
            scale = math.sqrt(self.weight(group) / r.numel())
            grads = torch.autograd.grad(r.sum(), leaves, allow_unused=True, retain_graph=True)
            row_ids = start + np.arange(r.numel()).reshape(r.shape)
            for (_leaf, name, flat), grad in zip(view.leaves, grads, strict=True):
                if grad is None:
                    continue
                if grad.shape != r.shape:
                    raise SolverError(f"residual group {group!r} mixes gathers of another shape ({tuple(grad.shape)} "
                                      f"vs {tuple(r.shape)})", field="method",
                                      fix="gather every unknown of a group with that group's rows")
                g = grad.detach().cpu().numpy()
                keep = g != 0
                rows.append(row_ids[keep])
                cols.append(self.offsets[name] + (flat.reshape(r.shape)[keep] if flat is not None else 0 * g[keep]))
                vals.append(scale * g[keep])
            res.append(scale * r.detach().cpu().numpy().ravel())
            start += r.numel()
        J = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols).astype(np.int64))),
                          shape=(start, self.size))
        return np.concatenate(res), J


def _step(J: sp.csr_matrix, r: np.ndarray, damping: float, kind: str, n_scalars: int = 0) -> np.ndarray:
    """The (damped) Gauss-Newton step ``-(J^T J + damping * s I)^-1 J^T r`` (``s``: mean diagonal).

    The last ``n_scalars`` unknowns (scalar parameters) have dense Jacobian columns; they are eliminated
    through a small Schur complement so that the sparse factorisation only sees the stencil block.
    """
    if kind == "directsq" and damping == 0.0 and n_scalars == 0:
        if J.shape[0] != J.shape[1]:
            raise CaseError(f"linear_solver directsq needs as many residuals as unknowns ({J.shape[0]} vs "
                            f"{J.shape[1]})", field="method.optimizer.linear_solver", fix="use direct")
        return -spla.spsolve(J.tocsc(), r)
    A = (J.T @ J).tocsr()
    g = J.T @ r
    if damping > 0:
        A = A + damping * max(float(A.diagonal().mean()), 1e-300) * sp.identity(A.shape[0], format="csr")
    n = A.shape[0] - n_scalars
    B = A[:n][:, :n]
    solve = _sparse_solver(B, kind)
    if n_scalars == 0:
        return -solve(g)
    C = A[:n][:, n:].toarray()
    E = A[n:][:, n:].toarray()
    Y = np.column_stack([solve(C[:, j]) for j in range(n_scalars)])
    z = solve(g[:n])
    d_p = np.linalg.solve(E - C.T @ Y, g[n:] - C.T @ z)
    return -np.concatenate([z - Y @ d_p, d_p])


def _sparse_solver(B: sp.csr_matrix, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    if kind in ("direct", "directsq"):
        lu = spla.splu(B.tocsc())
        return lu.solve
    import pyamg

    M = pyamg.smoothed_aggregation_solver(B).aspreconditioner(cycle="V")

    def cg(b: np.ndarray) -> np.ndarray:
        x, _ = spla.cg(B, b, rtol=1e-12, atol=0.0, maxiter=2000, M=M)
        return x

    return cg


def newton(problem: DiscreteProblem, x0: np.ndarray, *, iterations: int = 50, linear_solver: str = "direct",
           damping: float = 0.0, max_failures: int = 10, tol: float = 1e-30, step_tol: float = 1e-12,
           progress=SILENT, callback: Callable[[int, np.ndarray, float], bool] | None = None
           ) -> tuple[np.ndarray, list[dict]]:
    """Gauss-Newton / Levenberg-Marquardt on the discrete loss.

    A step that does not reduce the loss is rejected and the damping raised tenfold; an accepted
    step lowers it tenfold (to zero below ``1e-12``, i.e. back to plain Gauss-Newton).

    Args:
        linear_solver: ``direct`` (normal equations, sparse LU), ``directsq`` (the square system ``J d = -r``
            itself, when undamped) or ``cg`` (CG on the normal equations with an AMG preconditioner).
        damping: initial Levenberg-Marquardt damping, relative to the mean diagonal of ``J^T J``.
        max_failures: consecutive rejected steps before giving up.
        tol: stop when the loss falls below it; ``step_tol``: stop when a step is below it (relative).
        callback: ``callback(iteration, x, loss)``; returning True stops.

    Returns:
        The unknowns and the history (``iteration``, ``loss``, ``terms``, ``damping``, ``time_s`` per entry).

    Raises:
        SolverError: ``max_failures`` steps in a row did not reduce the loss (the message holds the history).
    """
    if linear_solver not in ("direct", "directsq", "cg"):
        raise CaseError(f"unknown linear solver {linear_solver!r}", field="method.optimizer.linear_solver",
                        fix="use direct, directsq or cg")
    x = np.array(x0, dtype=float)
    loss, terms = problem.loss(x)
    t0 = time.perf_counter()
    history = [{"iteration": 0, "loss": loss, "terms": terms, "damping": damping, "time_s": 0.0}]
    lam, failures = damping, 0
    with progress.task("ODIL Gauss-Newton", total=iterations) as advance:
        for it in range(1, iterations + 1):
            if loss <= tol:
                break
            r, J = problem.linearize(x)
            while True:
                delta = _step(J, r, lam, linear_solver, len(problem.init_params))
                x_new = x + delta
                new_loss, new_terms = problem.loss(x_new)
                small = np.max(np.abs(delta), initial=0.0) <= step_tol * (1 + np.max(np.abs(x), initial=0.0))
                if np.isfinite(new_loss) and new_loss < loss:
                    break
                if small:       # converged to round-off: the loss cannot decrease further
                    return x, history
                failures += 1
                if failures >= max_failures:
                    losses = ", ".join(f"{h['loss']:.3e}" for h in history[-10:])
                    raise SolverError(f"Gauss-Newton: {failures} steps in a row did not reduce the loss "
                                      f"{loss:.3e} (damping reached {lam:.1e}); loss history: {losses}",
                                      field="method.optimizer",
                                      fix="start closer to the solution, raise damping, or use lbfgs/adam")
                lam = max(lam * 10.0, 1e-8)
            failures = 0
            x, loss, terms = x_new, new_loss, new_terms
            lam = lam / 10.0 if lam / 10.0 >= 1e-12 else 0.0
            history.append({"iteration": it, "loss": loss, "terms": terms, "damping": lam,
                            "time_s": time.perf_counter() - t0})
            advance(loss=loss, **terms)
            if callback is not None and callback(it, x, loss):
                break
            if small:
                break
    return x, history


# ---------------------------------------------------------------- multigrid decomposition (gradient methods)

def _refine_axis(c: torch.Tensor, axis: int, kind: str) -> torch.Tensor:
    """Interpolate one axis to the next finer level: cells with weights [1, 3, 3, 1]/4, nodes [1, 2, 1]/2."""
    c = c.movedim(axis, 0)
    if kind == "cell":
        left = torch.cat([c[:1], c[:-1]])
        right = torch.cat([c[1:], c[-1:]])
        fine = torch.stack([0.75 * c + 0.25 * left, 0.75 * c + 0.25 * right], dim=1)
        fine = fine.reshape(2 * c.shape[0], *c.shape[1:])
    else:
        mid = 0.5 * (c[:-1] + c[1:])
        fine = torch.stack([c[:-1], mid], dim=1).reshape(2 * (c.shape[0] - 1), *c.shape[1:])
        fine = torch.cat([fine, c[-1:]])
    return fine.movedim(0, axis)


class Multigrid:
    """``u = sum_l P^l(u_l)``: a field as a sum of levels coarsened by 2 along every axis that allows it.

    An axis of even size is treated as cells, one of odd size ``2m + 1`` as nodes. ``levels=0`` means
    as many as fit (coarsest axis >= 4 entries).
    """

    def __init__(self, shape: tuple[int, ...], levels: int = 0):
        self.shapes = [tuple(shape)]
        self.kinds: list[list[str | None]] = []
        while levels == 0 or len(self.shapes) < levels:
            cur = self.shapes[-1]
            kinds = [("cell" if n % 2 == 0 else "node") if n >= 8 else None for n in cur]
            if all(k is None for k in kinds):
                break
            self.kinds.append(kinds)
            self.shapes.append(tuple(n // 2 if k == "cell" else (n - 1) // 2 + 1 if k == "node" else n
                                     for n, k in zip(cur, kinds, strict=True)))

    @property
    def levels(self) -> int:
        return len(self.shapes)

    def split(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Level tensors whose sum is ``u`` (the finest holds ``u``, the others zeros)."""
        return [u.clone()] + [torch.zeros(s, dtype=u.dtype, device=u.device) for s in self.shapes[1:]]

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        u = parts[-1]
        for lvl in range(len(parts) - 2, -1, -1):
            for axis, kind in enumerate(self.kinds[lvl]):
                if kind is not None:
                    u = _refine_axis(u, axis, kind)
            u = u + parts[lvl]
        return u


def gradient_descent(problem: DiscreteProblem, x0: np.ndarray, *, optimizer: str = "adam", iterations: int = 1000,
                     lr: float = 1e-3, multigrid: bool = True, levels: int = 0, progress=SILENT,
                     callback: Callable[[int, np.ndarray, float], bool] | None = None,
                     every: int = 1, scalar_lr: dict[str, float] | None = None,
                     log_fields: tuple[str, ...] = (), floor: float = 1e-30, warmup: int = 0,
                     decay: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """Adam or L-BFGS on the multigrid decomposition of the fields (scalars are optimised directly).

    Args:
        optimizer: ``adam`` or ``lbfgs`` (torch L-BFGS, strong Wolfe line search, history 50).
        iterations: optimizer steps; ``lr``: Adam's learning rate (L-BFGS uses 1 with the line search).
        multigrid: reparametrise each field as a sum of coarser levels.
        callback: ``callback(iteration, x, loss)`` every ``every`` steps; returning True stops.
        scalar_lr: Adam learning rates of individual scalars (their natural scales differ: mm, days, ratios).
        log_fields: fields optimised through their logarithm, ``u = exp(v)`` (positive fields that span many
            decades, such as a tumour density: a step then changes ``u`` relatively, so a coarse level cannot
            write an absolute haze over the far field); their start is clipped to ``floor`` first.
        warmup, decay: Adam's learning rates rise linearly over the first ``warmup`` steps, then fall by a cosine
            to ``decay`` times their value at the last step (``decay=1``: constant). Adam's first steps move every
            unknown by about ``lr`` whatever its gradient, which from a start that satisfies the PDE (a forward
            run) costs more than the data gain; the decay lets the last iterate settle instead of hovering at
            Adam's noise floor.

    Returns:
        The unknowns and the loss history.
    """
    fields0, params0 = problem.unpack(x0)
    unknown = [k for k in log_fields if k not in fields0]
    if unknown:
        raise CaseError(f"log_fields names unknown fields {unknown}", field="method.optimizer.log_fields",
                        fix=f"use some of {sorted(fields0)}")
    fields0 = {k: torch.log(torch.clamp(v, min=floor)) if k in log_fields else v for k, v in fields0.items()}
    grids = {k: Multigrid(v.shape, levels if multigrid else 1) for k, v in fields0.items()}
    parts = {k: [p.requires_grad_(True) for p in grids[k].split(v)] for k, v in fields0.items()}
    scalars = {k: v.clone().requires_grad_(True) for k, v in params0.items()}
    variables = [p for ps in parts.values() for p in ps] + list(scalars.values())

    def current() -> tuple[dict, dict]:
        fields = {k: grids[k].join(ps) for k, ps in parts.items()}
        return {k: torch.exp(v) if k in log_fields else v for k, v in fields.items()}, scalars

    def pack() -> np.ndarray:
        with torch.no_grad():
            f, s = current()
            return np.concatenate([f[k].cpu().numpy().ravel() for k in problem.shapes]
                                  + [np.array([float(s[k]) for k in problem.init_params])])

    if optimizer == "adam":
        scalar_lr = scalar_lr or {}
        groups = [{"params": [p for ps in parts.values() for p in ps]}]
        groups += [{"params": [v], "lr": scalar_lr.get(k, lr)} for k, v in scalars.items()]
        opt = torch.optim.Adam(groups, lr=lr)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            frac = (step - warmup) / max(iterations - 1 - warmup, 1)
            return decay + (1 - decay) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

        schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)      # warmup 0, decay 1: factor 1 throughout
    elif optimizer == "lbfgs":
        schedule = None
        opt = torch.optim.LBFGS(variables, lr=1.0, max_iter=1, max_eval=25, history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    else:
        raise CaseError(f"unknown optimizer {optimizer!r}", field="method.optimizer.type",
                        fix="use newton, lbfgs or adam")
    t0 = time.perf_counter()
    history: list[dict] = []
    state: dict[str, Any] = {}

    def closure() -> torch.Tensor:
        opt.zero_grad()
        terms = problem.terms(*current())
        total = sum(terms.values())
        total.backward()
        state["terms"] = {g: float(v.detach()) for g, v in terms.items()}
        return total

    with progress.task(f"ODIL {optimizer}", total=iterations) as advance:
        for it in range(1, iterations + 1):
            total = opt.step(closure)
            if schedule is not None:
                schedule.step()
            loss = float(total.detach())
            if not math.isfinite(loss):
                raise SolverError(f"the loss became {loss} at step {it}", field="method.optimizer.lr",
                                  fix="lower the learning rate")
            history.append({"iteration": it, "loss": loss, "terms": state["terms"], "time_s": time.perf_counter() - t0})
            advance(loss=loss, **state["terms"])
            if callback is not None and it % every == 0 and callback(it, pack(), loss):
                break
    return pack(), history


def march(pde: Any, grid: Any, *, progress=SILENT, tol: float = 1e-26) -> np.ndarray:
    """Classical time stepping of the same Crank-Nicolson stencil: one small Newton solve per step.

    The yardstick for ODIL on the whole space-time grid (both solve the same discrete equations).

    Returns:
        The field on all levels, shape ``grid.shape``.
    """
    from dataclasses import replace

    out = np.zeros(grid.shape)
    from ..pde.stencils import initial_values

    out[0] = initial_values(grid, pde.initial, getattr(pde, "params", {}))
    with progress.task("Crank-Nicolson steps", total=grid.steps) as advance:
        for n in range(1, grid.levels):
            sides = {k: replace(s, value=s.value[n - 1: n + 1]) for k, s in grid.sides.items()}
            step = replace(grid, t_end=grid.dt, steps=1, t_start=float(grid.times[n - 1]), initial_values=out[n - 1],
                           sides=sides)
            pb = DiscreteProblem({"u": np.stack([out[n - 1], out[n - 1]])}, {},
                                 lambda v, step=step: pde.discrete_residual(step, v))
            x, _ = newton(pb, pb.initial(), linear_solver="directsq", tol=tol, iterations=30)
            out[n] = x.reshape(step.shape)[1]
            advance()
    return out


# ---------------------------------------------------------------- the `odil` method of a case file

class GridConfig(Strict):
    """The ODIL grid: cells per axis (one int: the same on every axis) and time steps (transient PDEs)."""

    cells: int | list[int] = 64
    steps: int = Field(0, ge=0)


class OptimizerConfig(Strict):
    """``newton`` (Gauss-Newton / Levenberg-Marquardt), ``lbfgs`` or ``adam`` (on the multigrid decomposition)."""

    type: Literal["newton", "lbfgs", "adam"] = "newton"
    iterations: int = Field(30, ge=1)
    linear_solver: Literal["direct", "directsq", "cg"] = "direct"
    damping: float = Field(0.0, ge=0)
    max_failures: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    multigrid: bool = True
    levels: int = Field(0, ge=0)


class ParamConfig(Strict):
    """A scalar to infer: its starting value."""

    init: float


class DataConfig(Strict):
    """Synthetic data: the reference at ``times``, sampled at the cell centres, plus Gaussian noise ``noise``."""

    times: list[float]
    noise: float = Field(0.0, ge=0)


class OdilConfig(MethodConfig):
    type: Literal["odil"] = "odil"
    grid: GridConfig = GridConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    weights: dict[str, float] = {}
    infer: dict[str, ParamConfig] = {}
    data: DataConfig | None = None


def problem_grid(problem: Any, cells: int | list[int], steps: int = 0) -> Any:
    """The cell-centred grid of a problem's box domain, with its boundary data."""
    from ..meshes.domains import Box, Interval, Rectangle
    from ..pde.stencils import Grid, set_boundary

    bounds = problem.domain.bounds if isinstance(problem.domain, (Interval, Rectangle, Box)) else None
    if bounds is None:
        raise CaseError("odil needs an interval, rectangle or box domain", field="domain.type",
                        fix="use type: interval, rectangle or box")
    dim = len(bounds)
    cells = [cells] * dim if isinstance(cells, int) else list(cells)
    pde = problem.pde
    transient = bool(getattr(pde, "time_dependent", False))
    if transient and steps < 1:
        raise CaseError("a transient PDE needs time steps on the grid", field="method.grid.steps", fix="e.g. steps: 64")
    grid = Grid(bounds, cells, t_end=pde.t_end if transient else None, steps=steps if transient else 0)
    return set_boundary(grid, problem.bcs, getattr(pde, "params", {}))


def grid_to_points(grid: Any, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Multilinear interpolation of cell values (shape ``grid.cells``) at ``points`` (n, dim).

    Values on the boundary come from linear extrapolation of the two cells next to it (second order).
    """
    from scipy.interpolate import RegularGridInterpolator

    axes, v = [], np.asarray(values, dtype=float)
    for a in range(grid.dim):
        lo, hi = grid.bounds[a]
        axes.append(np.concatenate([[lo], grid.centres(a), [hi]]))
        first = 1.5 * np.take(v, [0], axis=a) - 0.5 * np.take(v, [1], axis=a)
        last = 1.5 * np.take(v, [-1], axis=a) - 0.5 * np.take(v, [-2], axis=a)
        v = np.concatenate([first, v, last], axis=a)
    interp = RegularGridInterpolator(axes, v, bounds_error=False, fill_value=None)
    return interp(np.asarray(points)[:, : grid.dim])


@register
class OdilMethod(Method):
    """ODIL on the case's box domain; the field at the final time goes onto the reference mesh."""

    name = "odil"
    config_model = OdilConfig
    faces = ("discrete_residual",)

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        cfg = self.config
        pde = problem.pde
        grid = problem_grid(problem, cfg.grid.cells, cfg.grid.steps)
        inferable = set(getattr(pde, "params", {})) | set(getattr(pde, "inferable", ()))
        for name in cfg.infer:
            if name not in inferable:
                raise CaseError(f"cannot infer {name!r}: it is not a parameter of the PDE",
                                field=f"method.infer.{name}", fix=f"use one of {sorted(inferable)}")
        data = self._data(grid, reference, ctx) if cfg.data is not None else None

        def residual(view: StencilView) -> dict[str, torch.Tensor]:
            groups = pde.discrete_residual(grid, view)
            if data is not None:
                levels, values = data
                rows = tuple(np.stack([r[lvl] for lvl in levels]) for r in grid.rows())
                groups["data"] = view.get("u", rows) - view.tensor(values)
            return groups

        if grid.transient:
            from ..pde.stencils import initial_values

            start = np.repeat(initial_values(grid, pde.initial, pde.params)[None], grid.levels, axis=0)
        else:
            start = np.zeros(grid.shape)
        discrete = DiscreteProblem({"u": start}, {k: v.init for k, v in cfg.infer.items()}, residual, cfg.weights,
                                   device=ctx.device)
        o = cfg.optimizer
        t0 = time.perf_counter()
        if o.type == "newton":
            x, history = newton(discrete, discrete.initial(), iterations=o.iterations, linear_solver=o.linear_solver,
                                damping=o.damping, max_failures=o.max_failures, progress=ctx.progress)
        else:
            x, history = gradient_descent(discrete, discrete.initial(), optimizer=o.type, iterations=o.iterations,
                                          lr=o.lr, multigrid=o.multigrid, levels=o.levels, progress=ctx.progress)
        elapsed = time.perf_counter() - t0
        fields, params = discrete.unpack(x)
        u = fields["u"].cpu().numpy()
        final = u[-1] if grid.transient else u
        metrics: dict[str, Any] = {"optimizer": o.type, "iterations": history[-1]["iteration"],
                                   "loss": history[-1]["loss"], "loss_terms": history[-1]["terms"],
                                   "unknowns": discrete.size, "time_s": elapsed}
        if cfg.infer:
            metrics["inferred"] = {}
            for name in cfg.infer:
                value = float(params[name])
                truth = self._true_value(pde, name)
                entry = {"value": value, "init": cfg.infer[name].init}
                if truth is not None:
                    entry.update(true=truth, rel_error=abs(value - truth) / abs(truth) if truth else abs(value))
                metrics["inferred"][name] = entry
        field = None
        if reference is not None and reference.field is not None:
            ref = reference.field
            field = ref.with_values(grid_to_points(grid, final, ref.doflocs), name="u")
        return MethodResult(field=field, metrics=metrics)

    @staticmethod
    def _true_value(pde: Any, name: str) -> float | None:
        if name in getattr(pde, "params", {}):
            return float(pde.params[name])
        expr = getattr(pde, name, None)
        if isinstance(expr, (int, float)):
            return float(expr)
        if expr is not None and getattr(expr, "is_constant", False):
            return float(np.asarray(expr.numpy(np.zeros((1, 1)), params=pde.params)).ravel()[0])
        return None

    def _data(self, grid: Any, reference: Any, ctx: RunContext) -> tuple[list[int], np.ndarray]:
        cfg = self.config.data
        if reference is None or not reference.snapshots:
            raise CaseError("data from the reference needs a transient reference with snapshots",
                            field="method.data", fix="keep `reference:` and set reference.time.save_every")
        levels, values = [], []
        rng = np.random.default_rng(ctx.seed)
        pts = grid.points().reshape(grid.dim, -1).T
        for i, t in enumerate(cfg.times):
            t_ref, snap = min(reference.snapshots, key=lambda s: abs(s[0] - t))
            level = int(round((t - grid.t_start) / grid.dt))
            if abs(t_ref - t) > 1e-9 * max(1.0, abs(t)) or abs(grid.times[level] - t) > 1e-9 * max(1.0, abs(t)):
                raise CaseError(f"no reference snapshot or grid level at t = {t} (nearest snapshot {t_ref})",
                                field=f"method.data.times.{i}",
                                fix="choose times on both the reference's save_every steps and the grid's levels")
            sampled = reference.field.with_values(snap).probe(pts).reshape(grid.cells)
            levels.append(level)
            values.append(sampled + cfg.noise * rng.standard_normal(grid.cells))
        return levels, np.stack(values)
