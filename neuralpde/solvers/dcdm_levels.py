"""Multilevel DCDM directions: one trained network applied on a hierarchy of coarser lattices.

Not in the paper. The DCDM network is fully convolutional with one pooling level, so what it sees is
local: applied unchanged to a finer grid than it was trained on, it reduces the high and middle
frequencies well but leaves the smooth error to the Krylov loop, and the iteration count grows with
the grid much as CG's does (DCDM 64^2 -> 256^2: 4.4x here). :class:`MultilevelDirection` restricts
the residual to lattices with about half, a quarter, ... of the points per axis (down to
``coarsest``), applies the *same* network on each (unit residual in, as in training), prolongs the
outputs back by multilinear interpolation and combines the ``L`` candidates ``Q = [q_0, P_1 q_1,
...]`` with the coefficients that minimise the A-norm of the error over their span (a Galerkin
solve ``(Q^T A Q) a = Q^T r`` of size ``L``). The result is one direction for the unchanged
:func:`~neuralpde.solvers.dcdm.dcdm` loop, which still A-orthogonalises it against the last ``k``
directions and line-searches exactly. With ``levels=1`` it is the paper's direction::

    >>> import numpy as np
    >>> from neuralpde.operators.dcdm_net import GridMap
    >>> fine, coarse = GridMap.interior((9, 9)), coarsened(GridMap.interior((9, 9)))
    >>> coarse.shape
    (5, 5)
    >>> P = prolongation(coarse, fine)
    >>> xc = np.linspace(0, 1, 5)[None, :] + 0 * np.linspace(0, 1, 5)[:, None]      # u = x on the coarse lattice
    >>> bool(np.allclose(P @ xc.ravel(), (np.linspace(0, 1, 9)[None, :] + 0 * np.linspace(0, 1, 9)[:, None]).ravel()))
    True

Cost per iteration: one network evaluation per level (the coarse ones are ``2^d``, ``4^d``, ...
times smaller) and ``L`` extra sparse products.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ..errors import SolverError
from ..operators.dcdm_net import GridMap

#: the coarsest lattice ``auto`` goes down to (points per axis, boundary included)
COARSEST = 10


def coarsened(grid: GridMap) -> GridMap:
    """The lattice with ``ceil(cells / 2)`` cells per axis over the same box.

    A coarse point is free when the fine lattice point nearest to it is free, so Dirichlet sides stay
    Dirichlet (and an all-free lattice stays all-free).
    """
    cells = [s - 1 for s in grid.shape]
    shape = tuple(-(-c // 2) + 1 for c in cells)
    free = np.zeros(int(np.prod(grid.shape)), bool)
    free[grid.index] = True
    axes = [np.rint(np.arange(S) * (c / (S - 1))).astype(np.int64) for S, c in zip(shape, cells, strict=True)]
    nearest = np.ravel_multi_index(np.meshgrid(*reversed(axes), indexing="ij"), tuple(reversed(grid.shape)))
    return GridMap(shape, np.flatnonzero(free[nearest.ravel()]))


def prolongation(coarse: GridMap, fine: GridMap) -> sp.csr_matrix:
    """``(n_fine_free, n_coarse_free)`` multilinear interpolation between two lattices of the same box.

    Values at coarse points that are not free (Dirichlet) are zero, as they are in the system.
    """
    if coarse.dim != fine.dim:
        raise SolverError(f"a {coarse.dim}D lattice cannot be prolonged to a {fine.dim}D one", field="method.solve")
    weights_1d = []
    for S, s in zip(coarse.shape, fine.shape, strict=True):      # per axis: fine point -> (coarse index, weight) x 2
        t = np.arange(s) * ((S - 1) / (s - 1))
        j = np.minimum(np.floor(t).astype(np.int64), S - 2)
        w = t - j
        weights_1d.append(((j, 1 - w), (j + 1, w)))
    col_of = np.full(int(np.prod(coarse.shape)), -1, np.int64)
    col_of[coarse.index] = np.arange(len(coarse.index))
    fine_ijk = np.unravel_index(fine.index, tuple(reversed(fine.shape)))[::-1]     # x first
    rows, cols, vals = [], [], []
    for corner in itertools.product((0, 1), repeat=fine.dim):
        idx = [weights_1d[a][c][0][fine_ijk[a]] for a, c in enumerate(corner)]
        w = np.prod([weights_1d[a][c][1][fine_ijk[a]] for a, c in enumerate(corner)], axis=0)
        col = col_of[np.ravel_multi_index(tuple(reversed(idx)), tuple(reversed(coarse.shape)))]
        keep = (col >= 0) & (w > 0)
        rows.append(np.flatnonzero(keep))
        cols.append(col[keep])
        vals.append(w[keep])
    P = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(fine.index), len(coarse.index)))
    P.sum_duplicates()
    return P


def hierarchy(grid: GridMap, levels: int | Literal["auto"] = "auto",
              coarsest: int = COARSEST) -> list[tuple[GridMap, sp.csr_matrix | None]]:
    """``[(grid, None), (coarse_1, P_1), ...]`` with each ``P_l`` mapping level ``l`` to ``grid`` directly.

    ``auto`` coarsens while every axis keeps at least ``coarsest`` points; an integer is an upper bound.
    """
    if levels != "auto" and (not isinstance(levels, int) or levels < 1):
        raise SolverError(f"levels must be a positive integer or 'auto', got {levels!r}",
                          field="method.solve.levels", fix="use 1 (the paper's DCDM) or auto")
    out: list[tuple[GridMap, sp.csr_matrix | None]] = [(grid, None)]
    current, P = grid, None
    while levels == "auto" or len(out) < levels:
        nxt = coarsened(current)
        if min(nxt.shape) < coarsest or nxt.shape == current.shape or len(nxt.index) == 0:
            break
        step = prolongation(nxt, current)
        P = step if P is None else (P @ step).tocsr()
        out.append((nxt, P))
        current = nxt
    return out


class MultilevelDirection:
    """The direction ``r -> Q a``: the network on ``grid`` and its coarsenings, combined by a Galerkin solve.

    Args:
        net: a trained :class:`~neuralpde.operators.dcdm_net.DCDMNet`.
        grid: the lattice of the system's free dofs; A: the system (scipy sparse).
        levels: ``1`` (the paper's single network call), an integer, or ``auto`` (down to ``coarsest``).
        device: torch device of the network.
    """

    def __init__(self, net: Any, grid: GridMap, A: Any, levels: int | Literal["auto"] = "auto",
                 coarsest: int = COARSEST, device: str = "cpu"):
        from .dcdm_train import NetworkDirection

        self.A = A
        self.levels = [(NetworkDirection(net, g, device), P) for g, P in hierarchy(grid, levels, coarsest)]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [d.grid.shape for d, _ in self.levels]

    def __call__(self, r: np.ndarray) -> np.ndarray:
        if len(self.levels) == 1:
            return self.levels[0][0](r)
        Q = np.empty((len(r), len(self.levels)))
        for j, (direction, P) in enumerate(self.levels):
            if P is None:
                Q[:, j] = direction(r)
            else:
                rc = P.T @ r
                norm = np.linalg.norm(rc)
                Q[:, j] = P @ direction(rc / norm) if norm > 0 else 0.0
        if not np.all(np.isfinite(Q)):     # dcdm() names the iteration; it must see the NaN, not a mix
            return Q[:, 0] * np.nan
        AQ = self.A @ Q
        a = np.linalg.lstsq(Q.T @ AQ, Q.T @ r, rcond=1e-12)[0]
        return Q @ a
