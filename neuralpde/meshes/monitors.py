"""Monitor functions M(x) >= 1 that say where a moved mesh should put its nodes.

Three monitors, written on derivative arrays so they serve 1D grids, 2D grids and FE fields alike:

* :func:`arclength` ``sqrt(1 + |grad u|^2)``;
* :func:`hessian_monitor` ``(1 + |H|_F / beta)^(2d/(d+4))``, the density that minimises the L2 error of P1
  interpolation (``beta="auto"`` is Huang's floor ``beta = (mean |H|^(2d/(d+4)))^((d+4)/(2d))``);
* :func:`dmm_monitor` ``1 + |grad u| / (mm_gamma * mean |grad u|)``, the DMM paper's gradient monitor
  (``mm_gamma = 0.01`` in its code).

A :class:`GridMonitor` holds monitor values on a fine tensor grid and interpolates them (bilinearly) at
moved node positions, in numpy for the classical mover and in torch for the neural one::

    >>> import numpy as np
    >>> ring = lambda p: np.tanh((np.hypot(p[:, 0] - 0.5, p[:, 1] - 0.5) - 0.25) / 0.05)
    >>> M = monitor_from_function(ring, [[0, 1], [0, 1]], kind="hessian", resolution=129)
    >>> values = M(np.array([[0.5, 0.5], [0.78, 0.5]]))      # centre (flat) and beside the ring (curved)
    >>> bool(values[1] > 4 * values[0] >= 4.0)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MeshError, SolverError

MONITORS = ("arclength", "hessian", "dmm")


def arclength(grad: np.ndarray) -> np.ndarray:
    """``sqrt(1 + |grad u|^2)``; ``grad`` has the derivative components in its last axis."""
    return np.sqrt(1.0 + np.sum(np.asarray(grad) ** 2, axis=-1))


def hessian_beta(hess_norm: np.ndarray, dim: int) -> float:
    """Huang's floor: ``(mean |H|^(2d/(d+4)))^((d+4)/(2d))`` (the 'average' Hessian size); 1 for a linear u."""
    p = 2 * dim / (dim + 4)
    beta = float(np.mean(np.asarray(hess_norm) ** p) ** (1 / p))
    return beta if beta > 0 else 1.0


def hessian_monitor(hess_norm: np.ndarray, dim: int, beta: float | str = "auto") -> np.ndarray:
    """``(1 + |H| / beta)^(2d/(d+4))``: the L2-optimal density for P1 interpolation in ``dim`` dimensions.

    Args:
        hess_norm: ``|u''|`` (1D) or the Frobenius norm of the Hessian at each point.
        dim: spatial dimension d.
        beta: the floor, or ``"auto"`` for :func:`hessian_beta` over the given points (meaningful when they
            are uniformly spread, e.g. a fine grid).
    """
    hess_norm = np.asarray(hess_norm, dtype=float)
    b = hessian_beta(hess_norm, dim) if beta == "auto" else float(beta)
    return (1.0 + hess_norm / b) ** (2 * dim / (dim + 4))


def dmm_monitor(grad: np.ndarray, mm_gamma: float = 0.01, alpha: float | None = None) -> np.ndarray:
    """The DMM gradient monitor ``1 + |grad u| / (mm_gamma * alpha)``, ``alpha = mean |grad u|``.

    With the paper's ``mm_gamma = 0.01`` about 100/101 of the monitor's mass goes to the steep region, which
    over-concentrates nodes (worse than uniform in 1D for N >= 65; see docs/mesh_movers.md).
    """
    gnorm = np.sqrt(np.sum(np.asarray(grad) ** 2, axis=-1))
    alpha = float(np.mean(gnorm)) if alpha is None else float(alpha)
    if alpha <= 0:
        return np.ones_like(gnorm)
    return 1.0 + gnorm / (mm_gamma * alpha)


def grid_derivatives(values: np.ndarray, spacing: tuple[float, ...] | float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ``(..., d)`` and Hessian ``(..., d, d)`` of samples on a tensor grid (``ij`` indexing).

    Second-order central differences inside, one-sided at the edges (``numpy.gradient``).
    """
    values = np.asarray(values, dtype=float)
    spacing = (spacing,) * values.ndim if np.isscalar(spacing) else tuple(spacing)
    grads = np.gradient(values, *spacing, edge_order=2) if values.ndim > 1 else [np.gradient(values, spacing[0],
                                                                                             edge_order=2)]
    hess = np.empty(values.shape + (values.ndim, values.ndim))
    for i, g in enumerate(grads):
        second = np.gradient(g, *spacing, edge_order=2) if values.ndim > 1 else [np.gradient(g, spacing[0],
                                                                                              edge_order=2)]
        for j, s in enumerate(second):
            hess[..., i, j] = s
    hess = 0.5 * (hess + np.swapaxes(hess, -1, -2))
    return np.stack(grads, axis=-1), hess


def monitor_values(grad: np.ndarray, hess: np.ndarray, kind: str, *, beta: float | str = "auto",
                   mm_gamma: float = 0.01) -> np.ndarray:
    """The monitor ``kind`` (one of :data:`MONITORS`) from gradient and Hessian arrays."""
    if kind == "arclength":
        return arclength(grad)
    if kind == "hessian":
        return hessian_monitor(np.sqrt(np.sum(hess ** 2, axis=(-1, -2))), grad.shape[-1], beta)
    if kind == "dmm":
        return dmm_monitor(grad, mm_gamma)
    raise MeshError(f"unknown monitor {kind!r}", field="method.monitor.type", fix=f"use one of {list(MONITORS)}")


@dataclass
class GridMonitor:
    """Monitor values on a tensor grid over ``bounds``, interpolated bilinearly anywhere inside.

    Attributes:
        values: ``(nx, ny)`` values at ``x_i, y_j`` (``ij`` indexing).
        bounds: ``[[x0, x1], [y0, y1]]``.
        kind: the monitor's name (for reports).
    """

    values: np.ndarray
    bounds: np.ndarray
    kind: str = "custom"

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=float)
        self.bounds = np.asarray(self.bounds, dtype=float)
        if not np.all(np.isfinite(self.values)):
            raise SolverError("the monitor has NaN or infinite values (is the solution finite?)",
                              fix="check the solution field for NaN before moving the mesh")
        if self.values.min() <= 0:
            raise SolverError("a monitor must be positive", fix="use a monitor of the form 1 + ...")

    def _index(self, points: np.ndarray) -> tuple[np.ndarray, ...]:
        n = np.array(self.values.shape) - 1
        s = (points - self.bounds[:, 0]) / (self.bounds[:, 1] - self.bounds[:, 0]) * n
        s = np.clip(s, 0, n)
        i = np.minimum(np.floor(s).astype(np.int64), n - 1)
        return i, s - i

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """M at ``points`` ``(k, 2)`` (clamped to the box)."""
        (i, j), (fx, fy) = (a.T for a in self._index(np.asarray(points, dtype=float)))
        v = self.values
        return ((1 - fx) * (1 - fy) * v[i, j] + fx * (1 - fy) * v[i + 1, j]
                + (1 - fx) * fy * v[i, j + 1] + fx * fy * v[i + 1, j + 1])

    def integral_mean(self) -> float:
        """Mean of M over the box (trapezoid rule on the grid): the Monge-Ampere constant theta."""
        w = [np.full(n, 1.0) for n in self.values.shape]
        for a in w:
            a[[0, -1]] = 0.5
        return float(np.einsum("i,j,ij->", *w, self.values) / (np.prod(np.array(self.values.shape) - 1)))

    def torch(self, points: Any) -> Any:
        """Differentiable bilinear interpolation for torch points ``(k, 2)``."""
        import torch

        v = torch.as_tensor(self.values, dtype=points.dtype, device=points.device)
        lo = torch.as_tensor(self.bounds[:, 0], dtype=points.dtype, device=points.device)
        span = torch.as_tensor(self.bounds[:, 1] - self.bounds[:, 0], dtype=points.dtype, device=points.device)
        n = torch.as_tensor(np.array(self.values.shape) - 1, dtype=points.dtype, device=points.device)
        s = torch.minimum(torch.clamp((points - lo) / span * n, min=0.0), n)
        i = torch.minimum(torch.floor(s.detach()), n - 1)
        f = s - i
        i = i.long()
        fx, fy, ix, iy = f[:, 0], f[:, 1], i[:, 0], i[:, 1]
        return ((1 - fx) * (1 - fy) * v[ix, iy] + fx * (1 - fy) * v[ix + 1, iy]
                + (1 - fx) * fy * v[ix, iy + 1] + fx * fy * v[ix + 1, iy + 1])


def monitor_from_grid(values: np.ndarray, bounds: Any, kind: str = "hessian", *, beta: float | str = "auto",
                      mm_gamma: float = 0.01) -> GridMonitor:
    """Monitor of a solution sampled on a tensor grid ``values[i, j] = u(x_i, y_j)`` over ``bounds``."""
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise SolverError("the solution has NaN or infinite values; no monitor can be built from it",
                          fix="check the solver that produced the field")
    bounds = np.asarray(bounds, dtype=float)
    spacing = tuple((bounds[:, 1] - bounds[:, 0]) / (np.array(values.shape) - 1))
    grad, hess = grid_derivatives(values, spacing)
    return GridMonitor(monitor_values(grad, hess, kind, beta=beta, mm_gamma=mm_gamma), bounds, kind)


def grid_points(bounds: Any, resolution: int) -> np.ndarray:
    """``(resolution, resolution, 2)`` points of the tensor grid over ``bounds`` (``ij`` indexing)."""
    bounds = np.asarray(bounds, dtype=float)
    xs = [np.linspace(b[0], b[1], resolution) for b in bounds]
    return np.stack(np.meshgrid(*xs, indexing="ij"), axis=-1)


def monitor_from_function(u: Callable[[np.ndarray], np.ndarray], bounds: Any, kind: str = "hessian", *,
                          resolution: int = 513, beta: float | str = "auto", mm_gamma: float = 0.01) -> GridMonitor:
    """Monitor of ``u(points (k, 2)) -> (k,)`` sampled on a ``resolution``-square grid."""
    pts = grid_points(bounds, resolution)
    return monitor_from_grid(u(pts.reshape(-1, 2)).reshape(pts.shape[:2]), bounds, kind, beta=beta,
                             mm_gamma=mm_gamma)


def recover_derivatives(field: Any) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ``(n, 2)`` and Hessian ``(n, 2, 2)`` at the vertices of a P1/P2 :class:`FEField` on triangles.

    The gradient is L2-projected (lumped mass) onto P1, and the Hessian is the L2-projected gradient of that
    recovered gradient: the usual recovery on unstructured meshes, where the P1 field's own Hessian is zero.
    """
    import skfem

    if not np.all(np.isfinite(field.values)):
        raise SolverError("the solution has NaN or infinite values; no monitor can be built from it",
                          fix="check the solver that produced the field")
    basis = field.basis(4)
    p1 = skfem.Basis(field.skfem_mesh, skfem.ElementTriP1() if field.mesh.cell_type == "triangle"
                     else skfem.ElementQuad1(), intorder=4)
    lumped = skfem.asm(skfem.LinearForm(lambda v, w: v), p1)

    def project_grad(b: Any, values: np.ndarray) -> np.ndarray:
        g = b.interpolate(values).grad
        return np.stack([skfem.asm(skfem.LinearForm(lambda v, w: w.gk * v), p1, gk=g[k]) / lumped
                         for k in range(g.shape[0])], axis=-1)

    grad = project_grad(basis, field.values)
    hess = np.stack([project_grad(p1, grad[:, k]) for k in range(grad.shape[1])], axis=-2)
    return grad, 0.5 * (hess + np.swapaxes(hess, -1, -2))


def monitor_from_field(field: Any, kind: str = "hessian", *, resolution: int = 257, beta: float | str = "auto",
                       mm_gamma: float = 0.01) -> GridMonitor:
    """Monitor of an FE solution on a triangle mesh of a rectangle, sampled onto a ``resolution``-square grid.

    Derivatives are recovered at the vertices (:func:`recover_derivatives`); ``beta="auto"`` averages over the
    vertices, which is the domain average when they are uniformly spread (a uniform reference mesh).
    """
    from scipy.interpolate import LinearNDInterpolator

    grad, hess = recover_derivatives(field)
    vertex_monitor = monitor_values(grad, hess, kind, beta=beta, mm_gamma=mm_gamma)
    bounds = field.mesh.bounding_box()
    pts = grid_points(bounds, resolution).reshape(-1, 2)
    # piecewise-linear on a Delaunay triangulation of the vertices (a rectangle is convex, so it covers the grid):
    # much faster than locating each grid point in the FE mesh
    values = LinearNDInterpolator(field.mesh.points, vertex_monitor)(pts)
    outside = np.isnan(values)        # grid points a rounding error outside the hull: nearest vertex
    if outside.any():
        from scipy.interpolate import NearestNDInterpolator

        values[outside] = NearestNDInterpolator(field.mesh.points, vertex_monitor)(pts[outside])
    return GridMonitor(values.reshape(resolution, resolution), bounds, kind)
