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
