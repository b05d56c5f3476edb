"""Coefficients given as data on a mesh (not as formulas): values per cell (P0) and per vertex (P1 nodes).

Both quack like an :class:`~neuralpde.pde.expressions.Expression` where the reference backends need one
(``numpy(coords)``, ``is_constant``, ``depends_on_time``). A :class:`CellCoefficient` is constant on each cell:
scikit-fem assembles it cell by cell (its ``cellwise`` flag), dolfinx as a DG0 function (:meth:`ufl_function`).
A :class:`NodalCoefficient` takes the value of the nearest vertex, so its P1 interpolant is the nodal array::

    >>> import numpy as np
    >>> from neuralpde.meshes import rectangle
    >>> mesh = rectangle(cells=[2, 2])
    >>> k = CellCoefficient(mesh, np.arange(8.0))
    >>> float(k.numpy(mesh.points[mesh.cells[5]].mean(axis=0)[:, None])[0])
    5.0
    >>> u0 = NodalCoefficient(mesh, mesh.points[:, 0])
    >>> bool(np.allclose(u0.numpy(mesh.points.T), mesh.points[:, 0]))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import CaseError
from ...meshes.mesh import Mesh


class _Lookup:
    """Values attached to points (cell centroids or vertices), read at the nearest point."""

    is_constant = False
    depends_on_time = False
    params: dict[str, float] = {}

    def __init__(self, points: np.ndarray, values: Any, what: str):
        from scipy.spatial import cKDTree

        self.values = np.asarray(values, dtype=float).ravel()
        if len(self.values) != len(points):
            raise CaseError(f"{len(self.values)} values for {len(points)} {what}", field="pde",
                            fix=f"give one value per mesh {what[:-1]}")
        self._tree = cKDTree(points)

    def numpy(self, coords: Any, t: float = 0.0, params: dict[str, float] | None = None) -> np.ndarray:
        """Values at the points ``coords`` of shape ``(dim, N)`` (the value of the nearest cell or vertex)."""
        coords = np.asarray(coords, dtype=float)
        return self.values[self._tree.query(coords[: self._tree.m].T)[1]]

    def ufl(self, x: Any, t: Any = None, params: dict[str, Any] | None = None) -> Any:
        raise CaseError(f"a {type(self).__name__} has no UFL formula", field="pde",
                        fix="the dolfinx backend interpolates it through numpy() or ufl_function()")


class CellCoefficient(_Lookup):
    """One value per cell of ``mesh`` (a P0 field); read at the nearest cell centroid."""

    cellwise = True

    def __init__(self, mesh: Mesh, values: Any):
        super().__init__(mesh.points[mesh.cells].mean(axis=1), values, "cells")

    def ufl_function(self, space: Any) -> Any:
        """The DG0 function on ``space``'s mesh (dolfinx): DG0 interpolation reads each cell's centroid."""
        from dolfinx import fem

        from .compat import function_space

        msh = space.mesh
        f = fem.Function(function_space(msh, ("DG", 0)))
        gdim = msh.geometry.dim
        f.interpolate(lambda X: self.numpy(X[:gdim]))
        return f


class NodalCoefficient(_Lookup):
    """One value per vertex of ``mesh`` (nodal P1 values); read at the nearest vertex."""

    def __init__(self, mesh: Mesh, values: Any):
        super().__init__(mesh.points, values, "vertices")


__all__ = ["CellCoefficient", "NodalCoefficient"]
