"""Converters between :class:`~neuralpde.meshes.Mesh` and scikit-fem / dolfinx meshes.

    >>> from neuralpde.meshes import rectangle
    >>> to_skfem(rectangle(cells=[2, 2])).t.shape
    (3, 8)
"""

from __future__ import annotations

import numpy as np

from .mesh import Mesh

_SKFEM_MESH = {"interval": "MeshLine1", "triangle": "MeshTri1", "quadrilateral": "MeshQuad1",
               "tetrahedron": "MeshTet1", "hexahedron": "MeshHex1"}
# local vertex i of a scikit-fem hexahedron sits where VTK has vertex _VTK_TO_SKFEM_HEX[i]
_VTK_TO_SKFEM_HEX = [0, 4, 3, 1, 7, 5, 2, 6]


def to_skfem(mesh: Mesh):
    """The scikit-fem mesh with the same points and cells (vertex numbering kept)."""
    import skfem

    cls = getattr(skfem, _SKFEM_MESH[mesh.cell_type])
    cells = mesh.cells
    if mesh.cell_type == "hexahedron":
        # scikit-fem orders hexahedron vertices differently from VTK
        cells = cells[:, _VTK_TO_SKFEM_HEX]
    # sort_t=False keeps the vertex order of each cell, so orientation survives
    return cls(np.ascontiguousarray(mesh.points.T), np.ascontiguousarray(cells.T), sort_t=False)


def from_skfem(m, source: str = "<scikit-fem mesh>") -> Mesh:
    """A :class:`Mesh` from a scikit-fem mesh (no facet tags)."""
    name = type(m).__name__
    cell_type = {v: k for k, v in _SKFEM_MESH.items()}.get(name)
    if cell_type is None:
        raise TypeError(f"unsupported scikit-fem mesh {name}")
    cells = m.t.T.copy()
    if cell_type == "hexahedron":
        cells = cells[:, np.argsort(_VTK_TO_SKFEM_HEX)]
    return Mesh(m.p.T.copy(), cells, cell_type, source=source)
