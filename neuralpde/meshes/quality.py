"""Quality of moved meshes: validity (signed areas, boundary, corners), equidistribution and P1 interpolation error.

    >>> import numpy as np
    >>> from neuralpde.meshes import rectangle
    >>> m = rectangle(cells=[4, 4])
    >>> moved = m.points + 0.02 * np.sin(np.pi * m.points[:, ::-1]) * np.sin(np.pi * m.points)
    >>> mesh_report(m, moved)["valid"]
    True
    >>> u = lambda p: np.sin(np.pi * p[:, 0])
    >>> bool(p1_interpolation_error(m.points, m.cells, u) < 0.1)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import MeshError
from .mesh import Mesh


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed area of each triangle (positive: counter-clockwise), shape ``(n_cells,)``."""
    a, b, c = (points[triangles[:, i]] for i in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))


def rectangle_bounds(mesh: Mesh) -> np.ndarray:
    """``[[x0, x1], [y0, y1]]`` of a mesh that fills an axis-aligned rectangle.

    Raises:
        MeshError: the mesh is not 2D triangles, or its area differs from its bounding box's
            (an L-shape, a disc: a mover that slides nodes along straight sides needs a rectangle).
    """
    if mesh.cell_type != "triangle" or mesh.gdim != 2:
        raise MeshError(f"the mesh mover needs a 2D triangle mesh, got {mesh.cell_type} in {mesh.gdim}D",
                        file=mesh.source, fix="use a rectangle domain with cell_type: triangle")
    box = mesh.bounding_box()
    area = np.abs(mesh.cell_volumes()).sum()
    box_area = float(np.prod(box[:, 1] - box[:, 0]))
    if abs(area - box_area) > 1e-9 * box_area:
        raise MeshError(f"the mesh covers {area:.6g} of its bounding box's {box_area:.6g}: the domain is not a "
                        "rectangle", file=mesh.source,
                        fix="the Monge-Ampere movers need an axis-aligned rectangle (domain: {type: rectangle})")
    return box


def boundary_masks(points: np.ndarray, bounds: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Which points lie on each side of the box: bool array ``(n, 4)`` for x0, x1, y0, y1."""
    scale = float(np.max(bounds[:, 1] - bounds[:, 0]))
    return np.abs(points[:, [0, 0, 1, 1]] - bounds.ravel()[None, :]) <= tol * scale


def mesh_report(reference: Mesh, moved_points: np.ndarray, tol: float = 1e-9) -> dict:
    """Validity of ``moved_points`` as new coordinates of ``reference`` (a rectangle mesh).

    Returns:
        ``min_area`` (smallest signed cell area), ``inverted`` (cells with area <= 0), ``boundary_drift``
        (largest distance of a boundary node from its side), ``corner_drift``, ``outside`` (largest distance
        outside the box) and ``valid`` (all of: no inverted cell, drifts and outside below ``tol`` times the
        box size).
    """
    bounds = reference.bounding_box()
    scale = float(np.max(bounds[:, 1] - bounds[:, 0]))
    on_side = boundary_masks(reference.points, bounds)
    coords = moved_points[:, [0, 0, 1, 1]] - bounds.ravel()[None, :]
    drift = float(np.max(np.abs(coords[on_side]), initial=0.0))
    corners = on_side[:, :2].any(axis=1) & on_side[:, 2:].any(axis=1)
    corner_drift = float(np.max(np.abs(moved_points[corners] - reference.points[corners]), initial=0.0))
    outside = float(max(np.max(bounds[:, 0] - moved_points, initial=0.0), np.max(moved_points - bounds[:, 1],
                                                                                  initial=0.0), 0.0))
    areas = signed_areas(moved_points, reference.cells)
    inverted = int(np.sum(areas <= 0))
    valid = bool(inverted == 0 and np.all(np.isfinite(moved_points)) and drift <= tol * scale
                 and corner_drift <= tol * scale and outside <= tol * scale)
    return {"valid": valid, "min_area": float(areas.min()), "inverted": inverted, "boundary_drift": drift,
            "corner_drift": corner_drift, "outside": outside}


def equidistribution_cv(points: np.ndarray, triangles: np.ndarray,
                        monitor: Callable[[np.ndarray], np.ndarray]) -> float:
    """Coefficient of variation (std / mean) over cells of ``M(centroid) * area``; 0 is perfect equidistribution."""
    areas = signed_areas(points, triangles)
    mass = monitor(points[triangles].mean(axis=1)) * areas
    return float(mass.std() / mass.mean())


def _sub_triangle_rule(n: int) -> np.ndarray:
    """Barycentric centroids of the ``n*n`` congruent sub-triangles of the reference triangle, shape ``(n*n, 3)``."""
    pts = []
    for i in range(n):
        for j in range(n - i):
            pts.append(((i + 1 / 3) / n, (j + 1 / 3) / n))          # upright sub-triangle
            if i + j < n - 1:
                pts.append(((i + 2 / 3) / n, (j + 2 / 3) / n))      # inverted sub-triangle
    lam = np.array(pts)
    return np.column_stack([1 - lam.sum(axis=1), lam])


def p1_interpolation_error(points: np.ndarray, triangles: np.ndarray, u: Callable[[np.ndarray], np.ndarray],
                           subdivisions: int = 8, relative: bool = True) -> float:
    """L2 error of the P1 (nodal) interpolant of ``u`` on a triangle mesh.

    Each triangle is split into ``subdivisions**2`` equal sub-triangles with a midpoint (centroid) rule, as in
    the acceptance figures of ``shared/papers/mmpde.md``.

    Args:
        points: node coordinates ``(n, 2)``.
        triangles: ``(m, 3)`` node indices.
        u: the function, ``u(points (k, 2)) -> (k,)``.
        subdivisions: sub-triangles per edge.
        relative: divide by ``||u||`` on the same quadrature.
    """
    lam = _sub_triangle_rule(subdivisions)                               # (q, 3)
    corners = points[triangles]                                          # (m, 3, 2)
    qpts = np.einsum("qk,mkd->mqd", lam, corners)                        # (m, q, 2)
    exact = u(qpts.reshape(-1, 2)).reshape(len(triangles), -1)
    interp = np.einsum("qk,mk->mq", lam, u(points)[triangles])
    weights = np.abs(signed_areas(points, triangles))[:, None] / len(lam)
    err = float(np.sqrt(np.sum(weights * (exact - interp) ** 2)))
    if not relative:
        return err
    return err / float(np.sqrt(np.sum(weights * exact ** 2)))


def p1_interpolation_error_1d(nodes: np.ndarray, u: Callable[[np.ndarray], np.ndarray], gauss_points: int = 40,
                              relative: bool = True) -> float:
    """L2 error of the piecewise-linear interpolant of ``u`` on the 1D ``nodes`` (Gauss rule per cell)."""
    g, w = np.polynomial.legendre.leggauss(gauss_points)
    left, h = nodes[:-1, None], np.diff(nodes)[:, None]
    s = (g[None, :] + 1) / 2
    x = left + h * s
    ul, ur = u(nodes[:-1])[:, None], u(nodes[1:])[:, None]
    exact = u(x.ravel()).reshape(x.shape)
    weights = h * w[None, :] / 2
    err = float(np.sqrt(np.sum(weights * (exact - (ul + s * (ur - ul))) ** 2)))
    return err / float(np.sqrt(np.sum(weights * exact ** 2))) if relative else err
