"""The :class:`Mesh` value: points, cells, one cell type and named boundary facets.

    >>> from neuralpde.meshes import rectangle
    >>> m = rectangle([[0, 1], [0, 1]], cells=[2, 2])
    >>> m.cell_type, m.points.shape, m.cells.shape, sorted(m.boundary_names)
    ('triangle', (9, 2), (8, 3), ['bottom', 'left', 'right', 'top'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MeshError

#: topological dimension and vertices per cell of each supported cell type
CELL_TYPES: dict[str, tuple[int, int]] = {
    "interval": (1, 2),
    "triangle": (2, 3),
    "quadrilateral": (2, 4),
    "tetrahedron": (3, 4),
    "hexahedron": (3, 8),
}

#: facet cell type of each cell type
FACET_TYPES = {"interval": "vertex", "triangle": "interval", "quadrilateral": "interval",
               "tetrahedron": "triangle", "hexahedron": "quadrilateral"}


@dataclass
class Mesh:
    """An unstructured mesh of a single cell type.

    Args:
        points: vertex coordinates, shape ``(n_points, gdim)``.
        cells: vertex indices of each cell, shape ``(n_cells, vertices_per_cell)``. Quadrilaterals
            are ordered counter-clockwise (VTK/meshio order), hexahedra in VTK order.
        cell_type: one of :data:`CELL_TYPES`.
        facet_tags: boundary facets by integer tag: ``{tag: facets}`` with ``facets`` of shape
            ``(n, vertices_per_facet)`` (vertex indices).
        tag_names: names of the tags (``{"left": 1}``), e.g. gmsh physical names.
        source: where the mesh came from (a file path or a description), used in error messages.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    facet_tags: dict[int, np.ndarray] = field(default_factory=dict)
    tag_names: dict[str, int] = field(default_factory=dict)
    source: str = "<mesh>"

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float64)
        if self.points.ndim == 1:
            self.points = self.points[:, None]
        self.cells = np.ascontiguousarray(self.cells, dtype=np.int64)
        if self.cell_type not in CELL_TYPES:
            raise MeshError(f"unsupported cell type {self.cell_type!r}", file=self.source,
                            fix=f"use one of {sorted(CELL_TYPES)}")
        self.facet_tags = {int(k): _facet_array(v, self.cell_type) for k, v in self.facet_tags.items()}

    @property
    def gdim(self) -> int:
        """Geometric dimension (columns of ``points``)."""
        return self.points.shape[1]

    @property
    def tdim(self) -> int:
        """Topological dimension of the cells."""
        return CELL_TYPES[self.cell_type][0]

    @property
    def num_points(self) -> int:
        return self.points.shape[0]

    @property
    def num_cells(self) -> int:
        return self.cells.shape[0]

    @property
    def boundary_names(self) -> dict[str, int]:
        """Named boundary tags (an alias of ``tag_names``)."""
        return self.tag_names

    def bounding_box(self) -> np.ndarray:
        """``[[min_x, max_x], [min_y, max_y], ...]``."""
        return np.stack([self.points.min(axis=0), self.points.max(axis=0)], axis=1)

    def cell_volumes(self) -> np.ndarray:
        """Signed measure of each cell (length, area or volume); negative means clockwise/inverted."""
        p = self.points
        c = self.cells
        if self.cell_type == "interval":
            return p[c[:, 1], 0] - p[c[:, 0], 0]
        if self.cell_type in ("triangle", "quadrilateral"):
            # shoelace formula over the cell's polygon (triangles and quads alike)
            x, y = p[c, 0], p[c, 1]
            return 0.5 * np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1)
        if self.cell_type == "tetrahedron":
            a, b, cc, d = (p[c[:, i]] for i in range(4))
            return np.einsum("ij,ij->i", b - a, np.cross(cc - a, d - a)) / 6.0
        # hexahedron: split into 6 tetrahedra around the 0-6 diagonal
        tets = [(0, 1, 2, 6), (0, 2, 3, 6), (0, 3, 7, 6), (0, 7, 4, 6), (0, 4, 5, 6), (0, 5, 1, 6)]
        vol = np.zeros(len(c))
        for i, j, k, m in tets:
            a, b, cc, d = p[c[:, i]], p[c[:, j]], p[c[:, k]], p[c[:, m]]
            vol += np.einsum("ij,ij->i", b - a, np.cross(cc - a, d - a)) / 6.0
        return vol

    def check(self) -> Mesh:
        """Validate the mesh and return it (oriented counter-clockwise where that was uniform).

        Raises:
            MeshError: empty mesh, indices out of range, NaN coordinates, degenerate cells, or
                inverted cells (orientations that disagree, i.e. a tangled mesh).
        """
        nv = CELL_TYPES[self.cell_type][1]
        if self.num_cells == 0 or self.num_points == 0:
            raise MeshError("the mesh has no cells", file=self.source, fix="check the file's cell block")
        if self.cells.shape[1] != nv:
            raise MeshError(f"{self.cell_type} cells need {nv} vertices, got {self.cells.shape[1]}",
                            file=self.source, fix="write first-order cells only")
        if not np.all(np.isfinite(self.points)):
            raise MeshError("the mesh has non-finite coordinates", file=self.source,
                            fix="regenerate the mesh")
        if self.cells.min() < 0 or self.cells.max() >= self.num_points:
            raise MeshError("cells refer to vertices that do not exist", file=self.source,
                            fix="regenerate the mesh")
        if self.gdim != self.tdim:
            return self  # manifolds: orientation is not defined by a sign
        vol = self.cell_volumes()
        scale = np.abs(vol).max()
        tiny = np.abs(vol) <= 1e-12 * scale
        if tiny.any():
            bad = np.flatnonzero(tiny)
            raise MeshError(f"{tiny.sum()} degenerate (zero-measure) cells, first: cell {bad[0]}",
                            file=self.source, fix="remove collapsed cells or regenerate the mesh")
        neg = vol < 0
        if neg.all():
            self.cells = _flip(self.cells, self.cell_type)
        elif neg.any():
            bad = np.flatnonzero(neg if neg.sum() <= (~neg).sum() else ~neg)
            raise MeshError(f"{len(bad)} inverted cells (orientation opposite to the rest), first: "
                            f"cell {bad[0]}", file=self.source,
                            fix="untangle or regenerate the mesh; a file with consistently oriented "
                                "cells is needed")
        return self

    def boundary_facets(self) -> np.ndarray:
        """Vertex indices of the facets on the boundary, shape ``(n, vertices_per_facet)``."""
        local = _FACETS_OF[self.cell_type]
        facets = np.concatenate([self.cells[:, f] for f in local], axis=0)
        key = np.sort(facets, axis=1)
        _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        return facets[counts[inverse.ravel()] == 1]

    def facet_midpoints(self, facets: np.ndarray) -> np.ndarray:
        """Midpoints of the given facets, shape ``(n, gdim)``."""
        return self.points[facets].mean(axis=1)

    def refined(self, times: int = 1) -> Mesh:
        """Uniformly refined copy (through scikit-fem); facet tags are carried over geometrically."""
        if times <= 0:
            return self
        from .convert import from_skfem, to_skfem

        m = to_skfem(self).refined(times)
        out = from_skfem(m, source=f"{self.source} (refined {times}x)")
        out.tag_names = dict(self.tag_names)
        out.facet_tags = _transfer_tags(self, out)
        return out


_FACETS_OF = {
    "interval": [[0], [1]],
    "triangle": [[0, 1], [1, 2], [2, 0]],
    "quadrilateral": [[0, 1], [1, 2], [2, 3], [3, 0]],
    "tetrahedron": [[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]],
    "hexahedron": [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]],
}


def _facet_array(facets, cell_type: str) -> np.ndarray:
    """``facets`` as an int array of shape ``(n, vertices_per_facet)``, also when empty."""
    a = np.asarray(facets, dtype=np.int64)
    if a.size == 0:
        # reshape(0, -1) cannot infer the width of an empty array
        return np.zeros((0, len(_FACETS_OF[cell_type][0])), dtype=np.int64)
    return a.reshape(len(a), -1)


def _flip(cells: np.ndarray, cell_type: str) -> np.ndarray:
    flipped = cells.copy()
    if cell_type in ("interval", "triangle", "tetrahedron"):
        flipped[:, [0, 1]] = flipped[:, [1, 0]]
    elif cell_type == "quadrilateral":
        flipped = flipped[:, [0, 3, 2, 1]]
    else:
        flipped = flipped[:, [0, 3, 2, 1, 4, 7, 6, 5]]
    return flipped


def _transfer_tags(coarse: Mesh, fine: Mesh) -> dict[int, np.ndarray]:
    """Tag each boundary facet of ``fine`` with the tag of the coarse facet that contains it."""
    if not coarse.facet_tags:
        return {}
    from scipy.spatial import cKDTree

    fine_facets = fine.boundary_facets()
    fine_mid = fine.facet_midpoints(fine_facets)
    tags = np.concatenate([np.full(len(f), t) for t, f in coarse.facet_tags.items()])
    coarse_facets = np.concatenate(list(coarse.facet_tags.values()), axis=0)
    k = min(8, len(coarse_facets))
    _, near = cKDTree(coarse.facet_midpoints(coarse_facets)).query(fine_mid, k=k)
    near = near.reshape(len(fine_mid), k)
    fine_tag = np.zeros(len(fine_mid), dtype=np.int64)   # 0: on no tagged coarse facet
    for j in range(k):   # the nearest coarse facet midpoint need not be the containing facet
        todo = fine_tag == 0
        cand = near[todo, j]
        inside = _point_in_facets(fine_mid[todo], coarse.points[coarse_facets[cand]])
        fine_tag[np.flatnonzero(todo)[inside]] = tags[cand[inside]]
    return {int(t): fine_facets[fine_tag == t] for t in coarse.facet_tags}


def _point_in_facets(points: np.ndarray, facet_vertices: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Whether each point lies on its (flat) facet: barycentric test on the facet's first simplex."""
    origin = facet_vertices[:, 0]
    edges = facet_vertices[:, 1:] - origin[:, None, :]            # (n, m, gdim)
    if facet_vertices.shape[1] == 4:                              # quadrilateral facet: 2 spanning edges
        edges = edges[:, [0, 2]]
    rel = points - origin
    if edges.shape[1] == 0:                                       # point facets (1D meshes)
        return np.linalg.norm(rel, axis=1) <= tol
    gram = np.einsum("nid,njd->nij", edges, edges)
    coef = np.linalg.solve(gram, np.einsum("nid,nd->ni", edges, rel)[..., None])[..., 0]
    on_plane = np.linalg.norm(np.einsum("nm,nmd->nd", coef, edges) - rel, axis=1) <= tol * (
        1 + np.linalg.norm(edges, axis=(1, 2)))
    if facet_vertices.shape[1] == 4:
        within = np.all((coef >= -tol) & (coef <= 1 + tol), axis=1)
    else:
        within = np.all(coef >= -tol, axis=1) & (coef.sum(axis=1) <= 1 + tol)
    return on_plane & within
