"""Domains: geometry that makes meshes at a requested resolution.

    >>> Rectangle([[0, 2], [0, 1]]).mesh(cells=[4, 2]).num_cells
    16
    >>> Rectangle([[0, 2], [0, 1]]).dim
    2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MeshError
from . import builtin
from .mesh import Mesh


@dataclass
class Domain:
    """Base class: ``mesh(cells=…, refine=…)`` returns a checked :class:`Mesh`."""

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError


@dataclass
class Interval(Domain):
    bounds: Any = ((0.0, 1.0),)

    @property
    def dim(self) -> int:
        return 1

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        cells = [16] if cells is None else ([cells] if isinstance(cells, int) else cells)
        return builtin.interval(self.bounds, cells).refined(refine)


@dataclass
class Rectangle(Domain):
    bounds: Any = ((0.0, 1.0), (0.0, 1.0))
    cell_type: str = "triangle"
    diagonal: str = "right"

    @property
    def dim(self) -> int:
        return 2

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        cells = [16, 16] if cells is None else ([cells] * 2 if isinstance(cells, int) else cells)
        return builtin.rectangle(self.bounds, cells, self.cell_type, self.diagonal).refined(refine)


@dataclass
class Box(Domain):
    bounds: Any = ((0.0, 1.0),) * 3
    cell_type: str = "tetrahedron"

    @property
    def dim(self) -> int:
        return 3

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        cells = [8, 8, 8] if cells is None else ([cells] * 3 if isinstance(cells, int) else cells)
        return builtin.box(self.bounds, cells, self.cell_type).refined(refine)


@dataclass
class MeshFile(Domain):
    """A mesh read from a file (gmsh .msh, .vtu, .xdmf); resolution is changed by uniform refinement."""

    path: Path = field(default_factory=Path)
    _cache: Mesh | None = field(default=None, repr=False, compare=False)

    def _read(self) -> Mesh:
        if self._cache is None:
            from .io import read

            self._cache = read(self.path)
        return self._cache

    @property
    def dim(self) -> int:
        return self._read().gdim

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        if cells is not None:
            raise MeshError("a mesh file's resolution cannot be set by `cells`", file=str(self.path),
                            field="cells", fix="use `refine: N` (uniform refinements) instead")
        return self._read().refined(refine)


@dataclass
class Hypercube(Domain):
    """A box in any dimension ``d`` (PINNs in 10D); it has no finite-element mesh.

        >>> Hypercube([[-1, 1]] * 10).dim
        10
    """

    bounds: Any = ((0.0, 1.0), (0.0, 1.0))

    def __post_init__(self) -> None:
        b = [list(map(float, r)) for r in self.bounds]
        if not b or any(len(r) != 2 or not r[0] < r[1] for r in b):
            raise MeshError(f"hypercube bounds must be [[lo, hi], ...] with lo < hi, got {self.bounds!r}",
                            field="domain.bounds", fix="e.g. bounds: [[-1, 1]] with dim: 10")
        self.bounds = b

    @property
    def dim(self) -> int:
        return len(self.bounds)

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        raise MeshError(f"a {self.dim}D hypercube has no finite-element mesh, so it has no FEM reference",
                        field="reference", fix="set `reference: none` and give `exact:` (or a PDE with an exact "
                        "solution); the method then reports its own errors")


@dataclass
class Polygon(Domain):
    """A simple polygon (counter-clockwise or clockwise vertices); meshed with gmsh when it is installed.

    ``cells`` is the number of mesh cells along the longer side of the bounding box (default 32). Edge ``i``
    (from vertex ``i`` to ``i+1``) is the boundary named ``edge<i>`` (tag ``i + 1``).

        >>> Polygon([[0, 0], [1, 0], [0, 1]]).dim
        2
    """

    vertices: Any = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))

    def __post_init__(self) -> None:
        import numpy as np

        v = np.asarray(self.vertices, dtype=float)
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise MeshError(f"a polygon needs at least 3 vertices [x, y], got {self.vertices!r}",
                            field="domain.vertices", fix="list the corners, e.g. [[0, 0], [1, 0], [0, 1]]")
        area = 0.5 * np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
        if abs(area) < 1e-14 * max(1.0, float(np.ptp(v)) ** 2):
            raise MeshError("the polygon has zero area", field="domain.vertices", fix="check the vertices")
        self.vertices = v.tolist()

    @property
    def dim(self) -> int:
        return 2

    def contains(self, x: Any) -> Any:
        """Boolean mask of the points ``x`` (shape ``(n, 2)``) strictly inside the polygon."""
        from matplotlib.path import Path as MplPath

        return MplPath(self.vertices).contains_points(x)

    def mesh(self, cells: Any = None, refine: int = 0) -> Mesh:
        import numpy as np

        try:
            import gmsh
        except ImportError as exc:
            from ..errors import BackendUnavailable

            raise BackendUnavailable("meshing a polygon needs gmsh", field="domain",
                                     fix="install gmsh, or use `reference: none` with a PINN") from exc
        v = np.asarray(self.vertices)
        n = 32 if cells is None else int(cells if isinstance(cells, int) else max(cells))
        h = float(np.ptp(v, axis=0).max()) / max(n, 1)
        owner = not gmsh.isInitialized()
        if owner:
            gmsh.initialize(readConfigFiles=False, interruptible=False)
        try:
            gmsh.option.setNumber("General.Terminal", 0)
            gmsh.option.setNumber("General.NumThreads", 1)
            gmsh.model.add("polygon")
            geo = gmsh.model.geo
            pts = [geo.addPoint(x, y, 0, h) for x, y in v]
            lines = [geo.addLine(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
            geo.addPlaneSurface([geo.addCurveLoop(lines)])
            geo.synchronize()
            for i, line in enumerate(lines):
                gmsh.model.addPhysicalGroup(1, [line], i + 1, name=f"edge{i}")
            gmsh.model.mesh.generate(2)
            tags, coords, _ = gmsh.model.mesh.getNodes()
            index = {int(t): k for k, t in enumerate(tags)}
            _, nodes = gmsh.model.mesh.getElementsByType(2)
            cells_ = np.vectorize(index.get)(np.asarray(nodes, dtype=np.int64).reshape(-1, 3))
            facet_tags = {}
            for i, line in enumerate(lines):
                _, _, enodes = gmsh.model.mesh.getElements(1, line)
                facet_tags[i + 1] = np.vectorize(index.get)(np.asarray(enodes[0], dtype=np.int64).reshape(-1, 2))
        except Exception as exc:
            raise MeshError(f"gmsh could not mesh the polygon ({exc})", field="domain.vertices",
                            fix="give a simple (non-self-intersecting) polygon, or use `reference: none`") from exc
        finally:
            if owner:
                gmsh.finalize()
            else:
                gmsh.model.remove()
        points = np.asarray(coords).reshape(-1, 3)[:, :2]
        used = np.unique(cells_)          # gmsh keeps geometry-only nodes; drop any unused ones
        remap = -np.ones(len(points), dtype=np.int64)
        remap[used] = np.arange(len(used))
        mesh = Mesh(points[used], remap[cells_], "triangle", {k: remap[f] for k, f in facet_tags.items()},
                    {f"edge{i}": i + 1 for i in range(len(v))}, source="polygon")
        return mesh.check().refined(refine)
