"""The discrete-residual face: cell-centred grids, finite-volume stencils, Crank-Nicolson in time.

A :class:`Grid` holds cell centres (and time levels ``t_0 .. t_steps``) plus the boundary data of
each side. A residual asks a :class:`StencilView` for the unknowns at shifted cells; the same
residual code then serves both the loss (differentiable gathers) and the sparse Jacobian (one
autodiff leaf per stencil shift, see :mod:`neuralpde.solvers.odil`)::

    >>> import torch
    >>> from neuralpde.pde import Poisson
    >>> grid = Grid(bounds=[[0, 1]], cells=[8])                 # zero Dirichlet on both sides
    >>> u = torch.zeros(8, dtype=torch.float64)
    >>> res = Poisson(source=1, dim=1).discrete_residual(grid, StencilView({"u": u}))
    >>> float(res["pde"][0])                                      # -u'' - f with u = 0
    -1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CaseError
from .expressions import Expression

SIDE_NAMES = {1: ["left", "right"], 2: ["left", "right", "bottom", "top"],
              3: ["left", "right", "front", "back", "bottom", "top"]}


@dataclass
class SideData:
    """Boundary data on one side of the box: ``dirichlet`` mask per face, and values per (level, face).

    ``value`` holds ``g`` of ``u = g`` where the mask is set and the outward flux ``k du/dn = g`` elsewhere.
    """

    dirichlet: np.ndarray
    value: np.ndarray     # shape (levels, *face_shape)


@dataclass
class Grid:
    """A cell-centred box grid, optionally with ``steps`` uniform time steps on ``[t_start, t_start + t_end]``.

    Field arrays have shape ``(steps + 1, *cells)`` when transient (time first), else ``cells``.
    ``sides[(axis, end)]`` holds the boundary data (default: homogeneous Dirichlet everywhere).

    Args:
        bounds: ``[[lo, hi], ...]`` per spatial axis.
        cells: cells per axis.
        t_end: length of the time interval (``None``: stationary).
        steps: time steps (``steps + 1`` levels, level 0 is the initial condition).
        t_start: time of level 0.
        initial_values: overrides the PDE's initial condition (shape ``cells``), e.g. when marching.
    """

    bounds: Any
    cells: Any
    t_end: float | None = None
    steps: int = 0
    t_start: float = 0.0
    initial_values: np.ndarray | None = None
    sides: dict[tuple[int, int], SideData] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bounds = np.asarray(self.bounds, dtype=float).reshape(-1, 2)
        self.cells = tuple(int(c) for c in np.atleast_1d(self.cells))
        if len(self.cells) != len(self.bounds) or not 1 <= len(self.cells) <= 3 or min(self.cells) < 2:
            raise CaseError(f"grid cells {list(self.cells)} do not fit bounds of dimension {len(self.bounds)}",
                            field="method.grid.cells", fix="give at least 2 cells per axis, one entry per axis")
        if self.transient and self.steps < 1:
            raise CaseError("a transient grid needs steps >= 1", field="method.grid.steps", fix="e.g. steps: 64")
        for axis in range(self.dim):
            for end in (0, 1):
                if (axis, end) not in self.sides:
                    shape = self.face_shape(axis)
                    self.sides[(axis, end)] = SideData(np.ones(shape, bool), np.zeros((self.levels, *shape)))

    @property
    def dim(self) -> int:
        return len(self.cells)

    @property
    def transient(self) -> bool:
        return self.t_end is not None

    @property
    def levels(self) -> int:
        return self.steps + 1 if self.transient else 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of a field array on this grid."""
        return ((self.levels,) if self.transient else ()) + self.cells

    @property
    def h(self) -> np.ndarray:
        return (self.bounds[:, 1] - self.bounds[:, 0]) / np.asarray(self.cells)

    @property
    def dt(self) -> float:
        return float(self.t_end) / self.steps if self.transient else 0.0

    @property
    def times(self) -> np.ndarray:
        return self.t_start + self.dt * np.arange(self.levels)

    def centres(self, axis: int) -> np.ndarray:
        return self.bounds[axis, 0] + self.h[axis] * (np.arange(self.cells[axis]) + 0.5)

    def points(self) -> np.ndarray:
        """Cell centres, shape ``(dim, *cells)``."""
        return np.stack(np.meshgrid(*[self.centres(a) for a in range(self.dim)], indexing="ij"))

    def face_points(self, axis: int) -> np.ndarray:
        """Midpoints of all faces normal to ``axis``, shape ``(dim, *cells with cells[axis] + 1)``."""
        axes = [self.centres(a) for a in range(self.dim)]
        axes[axis] = self.bounds[axis, 0] + self.h[axis] * np.arange(self.cells[axis] + 1)
        return np.stack(np.meshgrid(*axes, indexing="ij"))

    def face_shape(self, axis: int) -> tuple[int, ...]:
        return tuple(c for a, c in enumerate(self.cells) if a != axis)

    def side_points(self, axis: int, end: int) -> np.ndarray:
        """Midpoints of the boundary faces of one side, shape ``(dim, *face_shape)``."""
        pts = self.face_points(axis)
        return np.take(pts, -1 if end else 0, axis=axis + 1)

    def evaluate(self, expr: Any, params: dict | None = None, t: float = 0.0) -> np.ndarray:
        """An expression at the cell centres."""
        return np.asarray(expr.numpy(self.points(), t=t, params=params), dtype=float)

    def rows(self, time: slice | None = None) -> tuple[np.ndarray, ...]:
        """Index arrays of a residual's rows: all cells, at the time levels ``time`` when transient."""
        ranges = [np.arange(c) for c in self.cells]
        if self.transient:
            ranges.insert(0, np.arange(self.levels)[time if time is not None else slice(None)])
        return tuple(np.meshgrid(*ranges, indexing="ij"))


def set_boundary(grid: Grid, bcs: list, params: dict | None = None) -> Grid:
    """Fill ``grid.sides`` from :class:`~neuralpde.pde.BoundaryCondition` objects (later ones win).

    ``where`` is ``all``, a side name (``left``, ``right``, ``bottom``, ``top``, ``front``, ``back``) or a
    condition evaluated at the boundary face midpoints. Sides no condition selects keep zero flux.

    Raises:
        CaseError: a Robin condition (not supported by the grid stencils) or a ``where`` that selects nothing.
    """
    from ..solvers.fem.boundary import select_facets

    names = SIDE_NAMES[grid.dim]
    for side in grid.sides.values():
        side.dirichlet[...] = False
        side.value[...] = 0.0
    for i, bc in enumerate(bcs):
        if bc.kind == "robin":
            raise CaseError("grid stencils support dirichlet and neumann conditions only, not robin",
                            field=f"boundary[{i}]",
                            fix="use a dirichlet or neumann condition with the odil method")
        hit = False
        value = bc.value if isinstance(bc.value, Expression) else Expression.parse(bc.value, params,
                                                                                   field=f"boundary[{i}].{bc.kind}")
        for (axis, end), side in grid.sides.items():
            pts = grid.side_points(axis, end)
            where = bc.where
            if isinstance(where, str) and where.strip() in names:
                mask = np.full(pts.shape[1:], where.strip() == names[2 * axis + end])
            else:
                mask = select_facets(_NoTags(), where, pts.reshape(grid.dim, -1).T,
                                     field=f"boundary[{i}]").reshape(pts.shape[1:])
            if not mask.any():
                continue
            hit = True
            for n, t in enumerate(grid.times):
                values = np.broadcast_to(value.numpy(pts, t=t, params=params), mask.shape)
                side.value[n] = np.where(mask, values, side.value[n])
            side.dirichlet[...] = np.where(mask, bc.kind == "dirichlet", side.dirichlet)
        if not hit:
            raise CaseError(f"where: {bc.where!r} selects no boundary face of the grid", field=f"boundary[{i}].where",
                            fix=f"use 'all', one of {names} or a condition such as 'x < 1e-12'")
    return grid


class _NoTags:
    """Stands in for a mesh in :func:`select_facets`: a grid has side names but no numbered tags."""

    facet_tags: dict = {}
    tag_names: dict = {}


class StencilView:
    """Hands shifted copies of the unknowns to a residual.

    Args:
        fields: unknown arrays by name (torch, each of its grid's shape).
        params: scalar unknowns by name (0-d tensors); a residual uses them through :meth:`param`.
        linearize: when True every :meth:`get` returns a fresh leaf (and :meth:`param` a full leaf of the
            row shape) and records where its entries live, so that ``d residual_i / d leaf_i`` gives one
            Jacobian entry per row and stencil shift.
    """

    def __init__(self, fields: dict[str, torch.Tensor], params: dict[str, torch.Tensor] | None = None,
                 linearize: bool = False):
        self.fields, self.params, self.linearize = fields, dict(params or {}), linearize
        self.leaves: list[tuple[torch.Tensor, str, np.ndarray | None]] = []   # (leaf, unknown, flat index)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.fields.values())).dtype

    def tensor(self, values: Any) -> torch.Tensor:
        """A constant (numpy or float) as a tensor of the fields' dtype and device."""
        ref = next(iter(self.fields.values()))
        return torch.as_tensor(np.asarray(values), dtype=ref.dtype, device=ref.device)

    def get(self, name: str, rows: tuple[np.ndarray, ...], offset: tuple[int, ...] | None = None) -> torch.Tensor:
        """Values of ``name`` at ``rows + offset``; indices outside the grid are clamped to the nearest cell
        (a residual replaces those entries with its boundary rule).
        """
        u = self.fields[name]
        offset = offset or (0,) * len(rows)
        idx = tuple(np.clip(r + o, 0, n - 1) for r, o, n in zip(rows, offset, u.shape, strict=True))
        flat = np.ravel_multi_index(idx, u.shape)
        if not self.linearize:
            return u.reshape(-1)[torch.as_tensor(flat, device=u.device)]
        leaf = u.detach().reshape(-1)[torch.as_tensor(flat, device=u.device)].clone().requires_grad_(True)
        self.leaves.append((leaf, name, flat))
        return leaf

    def has_param(self, name: str) -> bool:
        return name in self.params

    def param(self, name: str, rows: tuple[np.ndarray, ...]) -> torch.Tensor:
        """The scalar unknown ``name``, shaped to broadcast against ``rows`` (a row-shaped leaf when linearizing)."""
        p = self.params[name]
        if not self.linearize:
            return p
        leaf = p.detach().expand(rows[0].shape).clone().requires_grad_(True)
        self.leaves.append((leaf, name, None))
        return leaf


def diffusion(view: StencilView, name: str, rows: tuple[np.ndarray, ...], grid: Grid, kface,
              time_offset: int = 0) -> torch.Tensor:
    """``div(k grad u)`` by two-point fluxes at the cells ``rows`` (at level ``rows[0] + time_offset``).

    Args:
        kface: ``kface(axis, face_index) -> k`` on the faces normal to ``axis`` given by the (row-shaped)
            spatial index arrays ``face_index``; a tensor that may carry unknown parameters.
    """
    t_axes = 1 if grid.transient else 0
    base = [0] * len(rows)
    if t_axes:
        base[0] = time_offset
    level = (rows[0] + time_offset) if t_axes else np.zeros(rows[0].shape, dtype=int)
    u_c = view.get(name, rows, tuple(base))
    out = torch.zeros_like(u_c)
    space = rows[t_axes:]
    for axis in range(grid.dim):
        n, h = grid.cells[axis], float(grid.h[axis])
        i = space[axis]
        others = tuple(r for k, r in enumerate(space) if k != axis)
        for end, step in ((0, -1), (1, 1)):
            off = list(base)
            off[axis + t_axes] += step
            u_n = view.get(name, rows, tuple(off))
            face = list(space)
            face[axis] = i + end
            k = kface(axis, tuple(face))
            at_side = i == (n - 1 if end else 0)
            side = grid.sides[(axis, end)]
            dirichlet = view.tensor(side.dirichlet[others] & at_side) > 0
            g = view.tensor(side.value[(level, *others)])
            wall = torch.where(dirichlet, k * (g - u_c) / (h / 2), g)         # outward flux k du/dn
            out = out + torch.where(view.tensor(at_side) > 0, wall, k * (u_n - u_c) / h) / h
    return out


def coefficient(view: StencilView, faces: list[np.ndarray]):
    """``kface`` for :func:`diffusion` from fixed face values (see :func:`face_values`)."""
    tensors = [view.tensor(f) for f in faces]
    return lambda axis, index: tensors[axis][tuple(torch.as_tensor(i) for i in index)]


def face_values(grid: Grid, expr: Any, params: dict | None = None) -> list[np.ndarray]:
    """A (time-independent) coefficient at the face midpoints of every axis."""
    return [np.asarray(expr.numpy(grid.face_points(a), params=params), dtype=float) for a in range(grid.dim)]


def _beside_faces(cell_values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The cells on either side of each face along ``axis``; a boundary face sees its one cell twice."""
    padded = np.concatenate([np.take(cell_values, [0], axis=axis), cell_values,
                             np.take(cell_values, [-1], axis=axis)], axis=axis)
    n = padded.shape[axis]
    return np.take(padded, np.arange(n - 1), axis=axis), np.take(padded, np.arange(1, n), axis=axis)


def face_mean(grid: Grid, cell_values: np.ndarray) -> list[np.ndarray]:
    """Arithmetic mean of the two cells beside each face (the boundary faces take their one cell)."""
    return [0.5 * (lo + hi) for lo, hi in (_beside_faces(cell_values, a) for a in range(grid.dim))]


def face_min(grid: Grid, cell_values: np.ndarray) -> list[np.ndarray]:
    """Minimum of the two cells beside each face."""
    return [np.minimum(lo, hi) for lo, hi in (_beside_faces(cell_values, a) for a in range(grid.dim))]


def initial_values(grid: Grid, expr: Any, params: dict | None = None) -> np.ndarray:
    """The initial condition on the cells (``grid.initial_values`` when set)."""
    if grid.initial_values is not None:
        values = np.asarray(grid.initial_values, dtype=float)
        if values.shape != grid.cells:
            raise CaseError(f"initial values of shape {values.shape} do not match the grid {grid.cells}",
                            field="method.grid", fix="give one value per cell")
        return values
    return grid.evaluate(expr, params, t=grid.t_start)


def crank_nicolson(view: StencilView, grid: Grid, name: str, space_term, initial: np.ndarray) -> dict:
    """Residual groups ``ic`` (level 0) and ``pde`` (levels 1..steps) of ``u_t = S(u)`` by Crank-Nicolson.

    Args:
        space_term: ``space_term(rows, time_offset) -> S(u)`` at the cells ``rows`` and level ``rows[0] + offset``.
        initial: the initial values on the cells.
    """
    rows0 = grid.rows(slice(0, 1))
    ic = view.get(name, rows0) - view.tensor(initial[None])
    rows = grid.rows(slice(1, None))
    u_new = view.get(name, rows)
    u_old = view.get(name, rows, (-1,) + (0,) * grid.dim)
    pde = (u_new - u_old) / grid.dt - 0.5 * (space_term(rows, 0) + space_term(rows, -1))
    return {"ic": ic, "pde": pde}


def evaluate_at(view: StencilView, grid: Grid, expr: Any, params: dict, rows: tuple[np.ndarray, ...],
                face_axis: int | None = None, time_offset: int = 0) -> torch.Tensor:
    """An expression at the cells ``rows`` (or at their faces normal to ``face_axis``, given by the index in
    ``rows``), at level ``rows[0] + time_offset``. Parameters the view holds as unknowns stay differentiable.
    """
    t_axes = 1 if grid.transient else 0
    space = rows[t_axes:]
    coords = []
    for a, idx in enumerate(space):
        lo, h = grid.bounds[a, 0], grid.h[a]
        coords.append(lo + h * (idx if a == face_axis else idx + 0.5))
    pts = view.tensor(np.stack([c.reshape(-1) for c in coords], axis=1))
    values: dict[str, Any] = dict(params)
    for name in expr.params:
        if view.has_param(name):
            values[name] = view.param(name, rows).reshape(-1)
    t = None
    if expr.depends_on_time:
        t = view.tensor(grid.times[(rows[0] + time_offset).reshape(-1)] if t_axes else
                        np.full(pts.shape[0], grid.t_start))
    return expr.torch(pts, t=t, params=values).reshape(rows[0].shape)


def expression_kface(view: StencilView, grid: Grid, expr: Any, params: dict, rows: tuple[np.ndarray, ...]):
    """``kface`` for :func:`diffusion`: the expression at the face midpoints (unknown parameters included)."""
    t_axes = 1 if grid.transient else 0

    def kface(axis: int, face: tuple[np.ndarray, ...]) -> torch.Tensor:
        return evaluate_at(view, grid, expr, params, tuple(rows[:t_axes]) + tuple(face), face_axis=axis)

    return kface


def poisson_residual(pde: Any, grid: Grid, view: StencilView) -> dict[str, torch.Tensor]:
    """``-div(k grad u) + c u - f`` on every cell (group ``pde``)."""
    rows = grid.rows()
    u = view.get("u", rows)
    lap = diffusion(view, "u", rows, grid, expression_kface(view, grid, pde.k, pde.params, rows))
    c = evaluate_at(view, grid, pde.c, pde.params, rows)
    f = evaluate_at(view, grid, pde.f, pde.params, rows)
    return {"pde": -lap + c * u - f}


def heat_residual(pde: Any, grid: Grid, view: StencilView) -> dict[str, torch.Tensor]:
    """``u_t = div(k grad u) - c u + f`` by Crank-Nicolson (groups ``ic`` and ``pde``)."""
    if not grid.transient:
        raise CaseError("the heat equation needs a space-time grid", field="method.grid.steps", fix="set steps")

    def space_term(rows, off):
        u = view.get("u", rows, (off,) + (0,) * grid.dim)
        kface = expression_kface(view, grid, pde.k, pde.params, rows)
        return (diffusion(view, "u", rows, grid, kface, off) - evaluate_at(view, grid, pde.c, pde.params, rows) * u
                + evaluate_at(view, grid, pde.f, pde.params, rows, time_offset=off))

    return crank_nicolson(view, grid, "u", space_term, initial_values(grid, pde.initial, pde.params))


def tissue_faces(grid: Grid, wm: np.ndarray, gm: np.ndarray, threshold: float) -> tuple[list, list]:
    """White- and grey-matter fractions on the faces (mean of the two cells), zero where either cell is CSF."""
    brain = [(m >= threshold).astype(float) for m in face_min(grid, wm + gm)]
    return ([b * f for b, f in zip(brain, face_mean(grid, wm), strict=True)],
            [b * f for b, f in zip(brain, face_mean(grid, gm), strict=True)])


def fisher_residual(pde: Any, grid: Grid, view: StencilView) -> dict[str, torch.Tensor]:
    """Fisher-KPP by Crank-Nicolson (groups ``ic`` and ``pde``); ``D``, ``rho``, ``ratio`` may be unknowns."""
    from .fisher import CSF_THRESHOLD

    if not grid.transient:
        raise CaseError("Fisher-KPP needs a space-time grid", field="method.grid.steps", fix="set steps")
    tissue = pde.tissue_cells
    if tissue is None and pde.wm is not None:
        tissue = (grid.evaluate(pde.wm, pde.params), grid.evaluate(pde.gm, pde.params))
    if tissue is not None:
        if tuple(np.shape(tissue[0])) != grid.cells or tuple(np.shape(tissue[1])) != grid.cells:
            raise CaseError(f"tissue maps of shape {np.shape(tissue[0])} do not match the grid {grid.cells}",
                            field="method.grid.cells", fix="resample the tissue maps to the grid")
        wm_f, gm_f = tissue_faces(grid, np.asarray(tissue[0], float), np.asarray(tissue[1], float), CSF_THRESHOLD)
        wm_t, gm_t = [view.tensor(f) for f in wm_f], [view.tensor(f) for f in gm_f]

    def kface_for(rows):
        if view.has_param("D"):
            D = view.param("D", rows)
        else:
            D = None
            d_face = expression_kface(view, grid, pde.D, pde.params, rows)
        ratio = view.param("ratio", rows) if view.has_param("ratio") else pde.ratio

        def kface(axis, face):
            k = D if D is not None else d_face(axis, face)
            if tissue is None:
                return k * torch.ones(face[0].shape, dtype=view.dtype) if D is not None else k
            idx = tuple(torch.as_tensor(i) for i in face)
            return k * (wm_t[axis][idx] + gm_t[axis][idx] / ratio)

        return kface

    def space_term(rows, off):
        u = view.get("u", rows, (off,) + (0,) * grid.dim)
        rho = view.param("rho", rows) if view.has_param("rho") else pde.rho_value()
        return diffusion(view, "u", rows, grid, kface_for(rows), off) + rho * u * (1 - u)

    return crank_nicolson(view, grid, "u", space_term, initial_values(grid, pde.initial, pde.params))
