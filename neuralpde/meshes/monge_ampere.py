"""Classical mesh movers: exact equidistribution in 1D, the Monge-Ampere equation in 2D.

In 2D the moved nodes are ``x = xi + grad phi(xi)`` where the potential solves
``M(x) det(I + H(phi)) = theta`` (``theta``: the mean of ``M`` over the domain) with ``d phi/dn = 0``,
so nodes slide along the straight sides of the rectangle and the corners stay fixed. ``phi`` lives on the
nodes of a structured rectangle mesh; derivatives are central differences with mirror ghosts (the Neumann
condition), and each relaxation step solves ``-Lap(psi) = M det(I + H) / theta - 1`` by a cosine transform
(McRae, Cotter & Budd 2018, as in Firedrake's ``movement``)::

    >>> import numpy as np
    >>> from neuralpde.meshes import rectangle
    >>> from neuralpde.meshes.monitors import monitor_from_function
    >>> front = lambda p: np.tanh((p[:, 0] - 0.5) / 0.05)
    >>> M = monitor_from_function(front, [[0, 1], [0, 1]], kind="arclength", resolution=129)
    >>> res = move_mesh(rectangle(cells=[16, 16]), M, rtol=1e-6)
    >>> res.status, res.quality["valid"]
    ('converged', True)
    >>> bool(res.quality["cv"] < 0.5 * res.quality["cv_uniform"])
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.fft import dctn, idctn

from ..errors import CaseError, MeshError, SolverError
from .mesh import Mesh
from .quality import equidistribution_cv, mesh_report, rectangle_bounds, signed_areas

METHODS = ("relaxation", "quasi_newton")


def equidistribute_1d(x: np.ndarray, monitor: np.ndarray, nodes: int) -> np.ndarray:
    """Nodes that equidistribute ``monitor`` exactly: inverse of its cumulative integral at equal steps.

    Args:
        x: a fine increasing grid covering the interval.
        monitor: ``M(x)`` (> 0) on that grid.
        nodes: number of nodes wanted (cells + 1).

    Returns:
        ``(nodes,)`` increasing coordinates, ending on ``x[0]`` and ``x[-1]``.
    """
    x, monitor = np.asarray(x, dtype=float), np.asarray(monitor, dtype=float)
    if not np.all(np.isfinite(monitor)) or monitor.min() <= 0:
        raise SolverError("the 1D monitor must be finite and positive", fix="check the solution for NaN")
    if nodes < 2:
        raise CaseError(f"need at least 2 nodes, got {nodes}", field="cells", fix="use cells >= 1")
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (monitor[1:] + monitor[:-1]) * np.diff(x))])
    out = np.interp(np.linspace(0.0, cumulative[-1], nodes), cumulative, x)
    out[[0, -1]] = x[[0, -1]]
    return out


@dataclass
class MoveResult:
    """A moved mesh and how it was obtained.

    Attributes:
        mesh: the moved mesh (same cells and facet tags); the last valid one when ``status == "inverted"``.
        status: ``converged``, ``maxiter``, ``inverted`` (a step tangled the mesh; see ``inverted_at``) or
            ``diverged`` (the residual grew by more than ``dtol``) or ``stalled`` (a quasi-Newton step found no
            descent).
        iterations: steps taken.
        residual: final RMS of ``M det(I + H) / theta - 1`` at the nodes.
        inverted_at: the step whose mesh had a cell with non-positive area, if any.
        quality: :func:`~neuralpde.meshes.quality.mesh_report` plus ``cv`` (of M·area) and ``cv_uniform``.
        time_s: wall time of the solve.
        history: residual per step.
        cpu_s: CPU time of this process over the same span as ``time_s`` (comparable on a shared machine).
    """

    mesh: Mesh
    status: str
    iterations: int
    residual: float
    inverted_at: int | None = None
    quality: dict = field(default_factory=dict)
    time_s: float = 0.0
    history: list[float] = field(default_factory=list)
    cpu_s: float = float("nan")

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    def report(self) -> dict:
        """JSON-able summary (for metrics.json)."""
        return {"status": self.status, "iterations": self.iterations, "residual": self.residual,
                "inverted_at": self.inverted_at, "time_s": self.time_s, "cpu_s": self.cpu_s, **self.quality}


@dataclass
class StructuredGrid:
    """Node ``k`` of a rectangle mesh sits at grid position ``(ix[k], iy[k])`` of an ``(nx+1, ny+1)`` grid."""

    bounds: np.ndarray
    shape: tuple[int, int]
    ix: np.ndarray
    iy: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return (self.bounds[:, 1] - self.bounds[:, 0]) / (np.array(self.shape) - 1)

    @classmethod
    def of(cls, mesh: Mesh) -> StructuredGrid:
        """Recognise the tensor grid under ``mesh``.

        Raises:
            MeshError: the domain is not a rectangle, or the nodes are not a tensor grid.
        """
        bounds = rectangle_bounds(mesh)
        xs, ix = np.unique(np.round(mesh.points[:, 0], 12), return_inverse=True)
        ys, iy = np.unique(np.round(mesh.points[:, 1], 12), return_inverse=True)
        if len(xs) * len(ys) != mesh.num_points or len(xs) < 3 or len(ys) < 3:
            raise MeshError("the Monge-Ampere mover needs the structured mesh of a rectangle (nodes on a tensor "
                            "grid)", file=mesh.source, fix="use domain: {type: rectangle} with `cells: [nx, ny]`")
        return cls(bounds, (len(xs), len(ys)), ix.ravel(), iy.ravel())


class _NeumannGrid:
    """Finite differences with mirror ghosts (d/dn = 0) and the inverse Neumann Laplacian on the node grid."""

    def __init__(self, shape: tuple[int, int], spacing: np.ndarray):
        self.h = spacing
        kx = 2 - 2 * np.cos(np.pi * np.arange(shape[0]) / (shape[0] - 1))
        ky = 2 - 2 * np.cos(np.pi * np.arange(shape[1]) / (shape[1] - 1))
        self.eig = kx[:, None] / spacing[0] ** 2 + ky[None, :] / spacing[1] ** 2
        self.eig[0, 0] = 1.0     # the constant mode is left out (theta makes the right side mean-free)
        w = [np.ones(n) for n in shape]
        for a in w:
            a[[0, -1]] = 0.5
        self.weights = np.outer(*w) / np.outer(*w).sum()

    def derivatives(self, phi: np.ndarray) -> tuple[np.ndarray, ...]:
        """``phi_x, phi_y, phi_xx, phi_yy, phi_xy`` (zero normal derivative at the sides by construction)."""
        p = np.pad(phi, 1, mode="reflect")
        hx, hy = self.h
        c = p[1:-1, 1:-1]
        px = (p[2:, 1:-1] - p[:-2, 1:-1]) / (2 * hx)
        py = (p[1:-1, 2:] - p[1:-1, :-2]) / (2 * hy)
        pxx = (p[2:, 1:-1] - 2 * c + p[:-2, 1:-1]) / hx ** 2
        pyy = (p[1:-1, 2:] - 2 * c + p[1:-1, :-2]) / hy ** 2
        pxy = (p[2:, 2:] - p[2:, :-2] - p[:-2, 2:] + p[:-2, :-2]) / (4 * hx * hy)
        return px, py, pxx, pyy, pxy

    def solve_poisson(self, rhs: np.ndarray) -> np.ndarray:
        """``psi`` with ``-Lap(psi) = rhs - mean(rhs)``, ``d psi/dn = 0`` and zero (DCT) mean."""
        coef = dctn(rhs, type=1) / self.eig
        coef[0, 0] = 0.0
        return idctn(coef, type=1)


def move_mesh(mesh: Mesh, monitor: Callable[[np.ndarray], np.ndarray], *, method: str = "relaxation",
              dtau: float = 0.1, maxiter: int = 1000, rtol: float = 1e-8, dtol: float = 2.0,
              advance: Callable[..., None] | None = None) -> MoveResult:
    """Move the nodes of a structured rectangle mesh to equidistribute ``monitor`` (Monge-Ampere).

    Args:
        mesh: a structured triangle mesh of a rectangle (``rectangle(...)``); it is the computational mesh.
        monitor: ``M(points (k, 2)) -> (k,)``, e.g. a :class:`~neuralpde.meshes.monitors.GridMonitor`.
        method: ``relaxation`` (pseudo-time stepping of ``-Lap(phi_t) = M det / theta - 1``) or ``quasi_newton``
            (Newton on the Monge-Ampere residual with the monitor frozen per step, damped to keep the mesh
            valid).
        dtau: pseudo time step of the relaxation (the residual is normalised by theta, so it is scale-free).
        maxiter: step limit.
        rtol: stop when the residual falls below ``rtol`` times the first one.
        dtol: stop (``diverged``) when the residual exceeds ``dtol`` times the first one.
        advance: optional progress callback ``advance(n=1, **postfix)`` (from ``ctx.progress.task``).

    Returns:
        A :class:`MoveResult`. A step that inverts a cell stops the solve (``status="inverted"``) and the last
        valid mesh is returned.

    Raises:
        MeshError: a non-rectangular domain or an unstructured mesh.
        CaseError: an unknown ``method`` or bad step settings.
    """
    if method not in METHODS:
        raise CaseError(f"unknown Monge-Ampere method {method!r}", field="method.mover.method",
                        fix=f"use one of {list(METHODS)}")
    if not 0 < dtau <= 1:
        raise CaseError(f"dtau must be in (0, 1], got {dtau}", field="method.mover.dtau", fix="e.g. dtau: 0.1")
    grid = StructuredGrid.of(mesh)
    ops = _NeumannGrid(grid.shape, grid.spacing)
    xi = np.stack(np.meshgrid(*[np.linspace(b[0], b[1], n) for b, n in zip(grid.bounds, grid.shape, strict=True)],
                              indexing="ij"), axis=-1)
    start, cpu = time.perf_counter(), time.process_time()

    def evaluate(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
        px, py, pxx, pyy, pxy = ops.derivatives(phi)
        x = xi + np.stack([px, py], axis=-1)
        m = np.asarray(monitor(x.reshape(-1, 2))).reshape(grid.shape)
        det = (1 + pxx) * (1 + pyy) - pxy ** 2
        theta = float(np.sum(ops.weights * m * det))
        return x, m * det / theta - 1.0, (m, pxx, pyy, pxy)

    def valid(x: np.ndarray) -> bool:
        pts = x[grid.ix, grid.iy]
        return bool(np.all(np.isfinite(pts)) and signed_areas(pts, mesh.cells).min() > 0)

    phi = np.zeros(grid.shape)
    x, res, parts = evaluate(phi)
    if not np.all(np.isfinite(res)):
        raise SolverError("the monitor is not finite on the mesh", fix="check the solution for NaN")
    history = [float(np.sqrt(np.sum(ops.weights * res ** 2)))]
    first = max(history[0], 1e-300)
    status, inverted_at, step = "maxiter", None, 0
    for step in range(1, maxiter + 1):
        if history[-1] <= rtol * first or history[-1] < 1e-13:
            status = "converged"
            step -= 1
            break
        if method == "relaxation":
            trial = phi + dtau * ops.solve_poisson(res)
        else:
            trial = _newton_step(phi, res, parts, ops, evaluate, valid)
            if trial is None:
                status = "stalled"
                break
        x_new, res_new, parts_new = evaluate(trial)
        if not valid(x_new):
            status, inverted_at = "inverted", step
            break
        phi, x, res, parts = trial, x_new, res_new, parts_new
        history.append(float(np.sqrt(np.sum(ops.weights * res ** 2))))
        if advance is not None:
            advance(1, residual=f"{history[-1]:.2e}")
        if not np.isfinite(history[-1]) or history[-1] > dtol * first:
            status = "diverged"
            break
    else:
        step = maxiter
        if history[-1] <= rtol * first:
            status = "converged"
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    moved = moved_mesh(mesh, x[grid.ix, grid.iy], f"{mesh.source} moved by Monge-Ampere ({method})")
    quality = mesh_report(mesh, moved.points)
    quality["cv"] = equidistribution_cv(moved.points, mesh.cells, monitor)
    quality["cv_uniform"] = equidistribution_cv(mesh.points, mesh.cells, monitor)
    return MoveResult(moved, status, step, history[-1], inverted_at, quality, elapsed, history, cpu)


def _newton_step(phi: np.ndarray, res: np.ndarray, parts: tuple, ops: _NeumannGrid,
                 evaluate: Callable, valid: Callable) -> np.ndarray | None:
    """One damped quasi-Newton step (the linearised Monge-Ampere operator with M and theta frozen), halved until
    the mesh stays valid and the residual drops; ``None`` when 20 halvings do not get there."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    m, pxx, pyy, pxy = parts
    theta_scale = m.mean()
    nx, ny = phi.shape
    hx, hy = ops.h
    # derivative matrices with mirror ghosts, acting on phi.ravel() (ij order)
    dxx = _second_diff(nx, hx)
    dyy = _second_diff(ny, hy)
    dx = _first_diff(nx, hx)
    dy = _first_diff(ny, hy)
    ex, ey = sp.identity(nx), sp.identity(ny)
    lxx, lyy, lxy = sp.kron(dxx, ey), sp.kron(ex, dyy), sp.kron(dx, dy)
    weight = (m / theta_scale).ravel()
    # d det(I + H) = (1 + phi_yy) d phi_xx + (1 + phi_xx) d phi_yy - 2 phi_xy d phi_xy (cofactor form)
    jac = (sp.diags(weight * (1 + pyy).ravel()) @ lxx + sp.diags(weight * (1 + pxx).ravel()) @ lyy
           - sp.diags(2 * weight * pxy.ravel()) @ lxy).tocsr()
    # the constant mode is free: pin the mean by a bordered system
    n = nx * ny
    border = sp.csr_matrix(ops.weights.ravel()[None, :])
    system = sp.bmat([[jac, border.T], [border, None]]).tocsc()
    delta = spla.spsolve(system, np.concatenate([-res.ravel(), [0.0]]))[:n].reshape(nx, ny)
    step = 1.0
    for _ in range(20):
        trial = phi + step * delta
        x, r, _ = evaluate(trial)
        if valid(x) and np.all(np.isfinite(r)) and np.sum(ops.weights * r ** 2) < np.sum(ops.weights * res ** 2):
            return trial
        step *= 0.5
    return None


def _second_diff(n: int, h: float):
    import scipy.sparse as sp

    d = sp.diags([np.ones(n - 1), -2 * np.ones(n), np.ones(n - 1)], [-1, 0, 1]).tolil()
    d[0, 1] = 2.0            # mirror ghost: phi_{-1} = phi_1
    d[n - 1, n - 2] = 2.0
    return d.tocsr() / h ** 2


def _first_diff(n: int, h: float):
    import scipy.sparse as sp

    d = sp.diags([-np.ones(n - 1), np.ones(n - 1)], [-1, 1]).tolil()
    d[0, 1] = 0.0            # the mirror ghost cancels the central difference at the sides
    d[n - 1, n - 2] = 0.0
    return d.tocsr() / (2 * h)


def moved_mesh(mesh: Mesh, points: np.ndarray, source: str = "moved mesh") -> Mesh:
    """``mesh`` (of a rectangle) with new node coordinates: cells and facet tags kept, boundary nodes snapped
    exactly onto their side (they are on it up to rounding)."""
    bounds = mesh.bounding_box()
    on_side = np.abs(mesh.points[:, [0, 0, 1, 1]] - bounds.ravel()[None, :]) <= 1e-10 * np.ptp(bounds)
    pts = np.array(points, dtype=float)
    for k, (axis, end) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        pts[on_side[:, k], axis] = bounds[axis, end]    # exactly on their side, not 1e-17 off
    return Mesh(pts, mesh.cells, mesh.cell_type, dict(mesh.facet_tags), dict(mesh.tag_names), source)

