"""Selecting boundary facets for a boundary condition, the same way in every backend.

A condition's ``where`` is ``"all"``, a tag (name or number) of the mesh, or a boolean expression
evaluated at facet midpoints. Backends pass the midpoints of *their* boundary facets and get a mask.
"""

from __future__ import annotations

import difflib

import numpy as np

from ...errors import CaseError, ExpressionError
from ...meshes.mesh import Mesh
from ...pde.expressions import Expression


def select_facets(mesh: Mesh, where: str | int, midpoints: np.ndarray, field: str = "boundary") -> np.ndarray:
    """Mask of the facets (given by their midpoints, shape ``(n, gdim)``) that ``where`` selects."""
    if isinstance(where, str) and where.strip() == "all":
        return np.ones(len(midpoints), dtype=bool)
    tag = _tag_of(mesh, where)
    if tag is not None:
        facets = mesh.facet_tags.get(tag, np.zeros((0, 1), dtype=int))
        if len(facets) == 0 or len(midpoints) == 0:
            return np.zeros(len(midpoints), dtype=bool)
        from scipy.spatial import cKDTree

        box = mesh.bounding_box()
        tol = 1e-9 * float(np.max(box[:, 1] - box[:, 0]))
        dist, _ = cKDTree(mesh.facet_midpoints(facets)).query(midpoints, distance_upper_bound=10 * tol)
        return dist <= tol
    try:
        expr = Expression.parse(str(where), field=f"{field}.where")
    except ExpressionError as exc:
        names = sorted(mesh.tag_names)
        close = difflib.get_close_matches(str(where), names + ["all"], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CaseError(f"{where!r} is neither a boundary name of the mesh nor a valid expression "
                        f"({exc.message})", field=f"{field}.where",
                        fix=f"{hint}use 'all', one of {names}, or a condition such as 'x < 1e-12'") from None
    if len(midpoints) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(expr.numpy(midpoints.T), dtype=float) != 0


def _tag_of(mesh: Mesh, where: str | int) -> int | None:
    if isinstance(where, (int, np.integer)) and not isinstance(where, bool):
        if int(where) not in mesh.facet_tags:
            raise CaseError(f"the mesh has no boundary tag {where}", field="boundary.where",
                            fix=f"use one of {sorted(mesh.facet_tags)} or a name in {sorted(mesh.tag_names)}")
        return int(where)
    name = str(where).strip()
    if name in mesh.tag_names:
        return mesh.tag_names[name]
    if name.isdigit() and int(name) in mesh.facet_tags:
        return int(name)
    return None
