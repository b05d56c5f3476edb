"""The DCDM network (Kaneda et al. 2023) in 2D and 3D, and the map from free dofs to its grid.

A fully convolutional net: 16 filters, 3x3(x3) kernels, residual blocks, one average-pool level with
a skip connection and a per-voxel linear head. The first convolution is linear, the others use ReLU.
Its input is a (unit) residual on the grid, its output a search direction of any scale::

    >>> import torch
    >>> net = DCDMNet(dim=2)
    >>> net(torch.ones(3, 1, 9, 9)).shape           # odd sizes are padded for the pooling and cropped back
    torch.Size([3, 1, 9, 9])
    >>> net.num_parameters() == sum(p.numel() for p in net.parameters())
    True

:class:`GridMap` places the free dofs of a P1 system on a uniform lattice (a grid-structured mesh
only; Dirichlet lattice points stay zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import MeshError, SolverError


class _Block(nn.Module):
    """``lb = relu(conv(la)); la = relu(conv(lb)) + la`` (the official code's residual block)."""

    def __init__(self, conv: type[nn.Module], filters: int):
        super().__init__()
        self.a = conv(filters, filters, 3, padding=1)
        self.b = conv(filters, filters, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(F.relu(self.a(x)))) + x


class DCDMNet(nn.Module):
    """The DCDM CNN.

    Args:
        dim: 2 or 3.
        filters: channels of every hidden layer (16 in the paper).
        blocks: residual blocks ``(before pooling, at half resolution, after upsampling)``; the default
            ``(2, 3, 2)`` gives the paper's 4 + 6 + 4 convolutions of its 64^3 model (about 97k
            parameters in 3D, 33k in 2D).
    """

    def __init__(self, dim: int = 2, filters: int = 16, blocks: tuple[int, int, int] = (2, 3, 2)):
        super().__init__()
        if dim not in (2, 3):
            raise SolverError(f"the DCDM network is 2D or 3D, not {dim}D", field="method.network.dim",
                              fix="use a rectangle or box domain")
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        self.dim, self.filters, self.blocks = dim, filters, tuple(int(b) for b in blocks)
        self.inp = conv(1, filters, 3, padding=1)
        self.pre = nn.Sequential(*[_Block(conv, filters) for _ in range(self.blocks[0])])
        self.mid = nn.Sequential(*[_Block(conv, filters) for _ in range(self.blocks[1])])
        self.post = nn.Sequential(*[_Block(conv, filters) for _ in range(self.blocks[2])])
        self.head = conv(filters, 1, 1)

    def config(self) -> dict[str, Any]:
        """The init arguments (stored in checkpoints so the net rebuilds without the case file)."""
        return {"dim": self.dim, "filters": self.filters, "blocks": list(self.blocks)}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, 1, *grid)`` -> ``(batch, 1, *grid)``."""
        size = x.shape[2:]
        pad = [0, 0] * self.dim
        for axis, n in enumerate(reversed(size)):    # F.pad lists the last axis first
            pad[2 * axis + 1] = n % 2
        if any(pad):
            x = F.pad(x, pad)
        pool = F.avg_pool2d if self.dim == 2 else F.avg_pool3d
        fine = self.pre(self.inp(x))                  # the first convolution is linear
        coarse = self.mid(pool(fine, 2))
        h = self.post(F.interpolate(coarse, scale_factor=2, mode="nearest") + fine)
        out = self.head(h)
        return out[(...,) + tuple(slice(0, n) for n in size)]


@dataclass
class GridMap:
    """Free dofs of a P1 system on a uniform lattice.

    Attributes:
        shape: lattice points per axis (``cells + 1``), x first.
        index: flat lattice index (C order over ``shape`` reversed, i.e. x fastest) of each free dof.
    """

    shape: tuple[int, ...]
    index: np.ndarray

    @classmethod
    def from_mesh(cls, mesh: Any, free: np.ndarray, degree: int = 1) -> GridMap:
        """The lattice of a grid-structured P1 mesh.

        Raises:
            MeshError: a degree other than 1, or points that do not form a uniform lattice
                (an unstructured or graded mesh): the CNN needs a grid.
        """
        fix = "use a built-in rectangle/box domain with uniform cells and reference.degree: 1"
        if degree != 1:
            raise MeshError(f"DCDM's CNN needs P1 dofs on a grid, got degree {degree}", fix=fix)
        pts = np.asarray(mesh.points, dtype=float)
        shape, ijk = [], []
        for axis in range(pts.shape[1]):
            coords = np.unique(np.round(pts[:, axis], 12))
            steps = np.diff(coords)
            if len(coords) < 2 or np.ptp(steps) > 1e-8 * steps.mean():
                raise MeshError("the mesh is not grid-structured (its points do not form a uniform lattice)",
                                file=getattr(mesh, "source", None), fix=fix)
            shape.append(len(coords))
            ijk.append(np.rint((pts[:, axis] - coords[0]) / steps.mean()).astype(np.int64))
        flat = np.ravel_multi_index(tuple(reversed(ijk)), tuple(reversed(shape)))
        if int(np.prod(shape)) != len(pts) or len(np.unique(flat)) != len(pts):
            raise MeshError("the mesh is not grid-structured (points are not exactly the lattice points)",
                            file=getattr(mesh, "source", None), fix=fix)
        return cls(tuple(shape), flat[np.asarray(free)])

    @classmethod
    def interior(cls, shape: tuple[int, ...]) -> GridMap:
        """All points of a lattice are free (a finite-difference system on ``shape``)."""
        return cls(tuple(shape), np.arange(int(np.prod(shape))))

    @property
    def dim(self) -> int:
        return len(self.shape)

    def to_grid(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(batch, n_free)`` -> ``(batch, 1, *reversed(shape))`` with zeros off the free dofs."""
        grid = vectors.new_zeros(vectors.shape[0], int(np.prod(self.shape)))
        grid[:, torch.as_tensor(self.index, device=vectors.device)] = vectors
        return grid.reshape(vectors.shape[0], 1, *reversed(self.shape))

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_grid` on the free dofs."""
        return grid.reshape(grid.shape[0], -1)[:, torch.as_tensor(self.index, device=grid.device)]
