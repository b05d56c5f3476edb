"""Geometry and meshes: the :class:`Mesh` value, built-in meshes, file IO and converters."""

from .builtin import box, interval, rectangle
from .convert import from_skfem, to_skfem
from .io import read, write
from .lshape import lshape_msh
from .mesh import CELL_TYPES, Mesh

__all__ = ["CELL_TYPES", "Mesh", "box", "from_skfem", "interval", "lshape_msh", "read", "rectangle", "to_skfem",
           "write"]
