"""The DeepXDE side of :mod:`neuralpde.solvers.pinn`: geometry, boundary points, data, callbacks, training.

    region = region_for(problem.domain)                 # where collocation points may lie
    data, sampler = build_data(problem, config, seed)   # dde.data.PDE with our own anchors
    result = train_pinn(problem, reference, config, ctx)
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CaseError, NeuralPDEError, SolverError
from ..meshes.domains import Box, Hypercube, Interval, MeshFile, Polygon, Rectangle
from .method import MethodResult, RunContext
from .pinn import NetworkConfig, PINNConfig, deepxde
from .sampling import Region, Sampler, make_sampler

log = logging.getLogger("neuralpde")

_BOXES = (Interval, Rectangle, Box, Hypercube)


# ---------------------------------------------------------------------------------------------- geometry
def region_for(domain: Any) -> Region:
    """The sampling region of a domain: its box, with an inside test for polygons and meshes."""
    if isinstance(domain, _BOXES):
        return Region.box(domain.bounds)
    if isinstance(domain, Polygon):
        v = np.asarray(domain.vertices)
        return Region(np.stack([v.min(0), v.max(0)], axis=1), domain.contains)
    if isinstance(domain, MeshFile):
        mesh = domain.mesh()
        if mesh.gdim != 2 or mesh.cell_type != "triangle":
            raise CaseError(f"a PINN samples a mesh file as a 2D triangle point cloud; this mesh is "
                            f"{mesh.gdim}D {mesh.cell_type}", field="domain.path",
                            fix="use a 2D triangle mesh, or a built-in domain (box, hypercube, polygon)")
        import matplotlib.tri as mtri

        finder = mtri.Triangulation(mesh.points[:, 0], mesh.points[:, 1], mesh.cells).get_trifinder()
        return Region(mesh.bounding_box(), lambda x: finder(x[:, 0], x[:, 1]) >= 0)
    raise CaseError(f"DeepXDE cannot sample the domain {type(domain).__name__}", field="domain.type",
                    fix="use interval, rectangle, box, hypercube, polygon or a 2D triangle mesh file")


def geometry_for(domain: Any) -> Any:
    """The DeepXDE geometry of a domain (a mesh file becomes a ``PointCloud`` of its vertices)."""
    dde = deepxde()
    try:
        if isinstance(domain, Interval):
            return dde.geometry.Interval(*domain.bounds[0])
        if isinstance(domain, Rectangle):
            b = np.asarray(domain.bounds, dtype=float)
            return dde.geometry.Rectangle(b[:, 0], b[:, 1])
        if isinstance(domain, (Box, Hypercube)):
            b = np.asarray(domain.bounds, dtype=float)
            return dde.geometry.Hypercube(b[:, 0], b[:, 1])
        if isinstance(domain, Polygon):
            return dde.geometry.Polygon(np.asarray(domain.vertices, dtype=float))
        if isinstance(domain, MeshFile):
            region_for(domain)                                   # the 2D triangle check, with its message
            mesh = domain.mesh()
            on_bnd = np.zeros(mesh.num_points, dtype=bool)
            on_bnd[np.unique(mesh.boundary_facets())] = True
            return dde.geometry.PointCloud(mesh.points[~on_bnd], boundary_points=mesh.points[on_bnd])
    except NeuralPDEError:
        raise
    except Exception as exc:   # DeepXDE raises ValueError/AssertionError for geometry it cannot handle
        raise CaseError(f"DeepXDE cannot build this geometry ({type(exc).__name__}: {exc})", field="domain",
                        fix="check the bounds (lo < hi) or vertices (a simple polygon, at least 3 corners)") from None
    raise CaseError(f"DeepXDE cannot sample the domain {type(domain).__name__}", field="domain.type",
                    fix="use interval, rectangle, box, hypercube, polygon or a 2D triangle mesh file")


def _boundary_mesh(domain: Any) -> Any:
    if isinstance(domain, MeshFile):
        return domain.mesh()
    if isinstance(domain, Polygon):
        return domain.mesh(cells=64)
    return domain.mesh(cells=[1] * domain.dim)       # a box's faces are flat: one cell per side is exact


def boundary_samples(problem: Any, n: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points on the boundary, uniform by facet size: ``(x, owner, normal)``.

    ``owner[i]`` is the index in ``problem.bcs`` of the condition that holds at ``x[i]`` (the last one
    that selects its facet, a Dirichlet one before any flux one, as in the FEM reference; -1: none, a
    natural zero-flux boundary) and ``normal[i]`` the outward unit normal.
    """
    from .fem.boundary import select_facets

    if isinstance(problem.domain, Hypercube):
        x, normal = _hypercube_boundary(np.asarray(problem.domain.bounds), n, rng)
        for i, bc in enumerate(problem.bcs):
            if not (isinstance(bc.where, str) and bc.where.strip() == "all"):
                raise CaseError("on a hypercube a boundary condition must use `where: all`",
                                field=f"boundary[{i}].where", fix="use where: all")
        return x, np.zeros(n, dtype=int) if problem.bcs else np.full(n, -1), normal
    mesh = _boundary_mesh(problem.domain)
    facets, owner_cell = _boundary_facets_with_cells(mesh)
    x, facet_of = _sample_facets(mesh.points, facets, n, rng)
    normals = _facet_normals(mesh, facets, owner_cell)
    mids = mesh.facet_midpoints(facets)
    owner = np.full(n, -1)
    for i, bc in enumerate(problem.bcs):
        # as in the FEM reference: a later condition wins where two overlap, but a (strong) Dirichlet one
        # is never replaced by a flux condition
        take = select_facets(mesh, bc.where, mids, field=f"boundary[{i}]")[facet_of]
        if bc.kind != "dirichlet":
            take &= ~np.isin(owner, [j for j, c in enumerate(problem.bcs) if c.kind == "dirichlet"])
        owner[take] = i
    return x, owner, normals[facet_of]


def boundary_points(problem: Any, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` boundary points; the Dirichlet ones, split by condition: ``[(x, g(x)), ...]``."""
    if not problem.bcs or n == 0:
        return []
    x, owner, _ = boundary_samples(problem, n, rng)
    return dirichlet_sets(problem, x, owner)


def dirichlet_sets(problem: Any, x: np.ndarray, owner: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Dirichlet conditions at the points :func:`boundary_samples` gave them: ``[(x, g(x)), ...]``."""
    out = []
    for i, bc in enumerate(problem.bcs):
        pts = x[owner == i]
        if bc.kind == "dirichlet" and len(pts):
            out.append((pts, np.asarray(bc.value.numpy(pts.T), dtype=float).reshape(-1, 1)
                        * np.ones((len(pts), 1))))
    return out


@dataclass
class FluxPoints:
    """``k du/dn + alpha u = g`` at boundary points (Neumann: ``alpha = 0``), all as columns."""

    x: np.ndarray
    normal: np.ndarray
    k: np.ndarray
    alpha: np.ndarray
    g: np.ndarray


def flux_sets(problem: Any, x: np.ndarray, owner: np.ndarray, normal: np.ndarray) -> list[FluxPoints]:
    """The Neumann and Robin conditions at the points :func:`boundary_samples` gave them, with the PDE's
    diffusion coefficient ``k`` there.

    Raises:
        CaseError: a Neumann/Robin condition on a PDE without a diffusion coefficient ``k``.
    """
    pde = problem.pde
    params = getattr(pde, "params", {})
    out = []
    for i, bc in enumerate(problem.bcs):
        pts = x[owner == i]
        if bc.kind == "dirichlet" or not len(pts):
            continue
        if getattr(pde, "k", None) is None:
            raise CaseError(f"a {bc.kind} condition needs the PDE's diffusion coefficient k; "
                            f"{type(pde).__name__} has none", field=f"boundary[{i}].{bc.kind}",
                            fix="use a dirichlet condition with this PDE")

        def column(expr: Any, pts: np.ndarray = pts) -> np.ndarray:
            return np.asarray(expr.numpy(pts.T, params=params), dtype=float).reshape(-1, 1) * np.ones((len(pts), 1))

        alpha = column(bc.alpha) if bc.kind == "robin" else np.zeros((len(pts), 1))
        out.append(FluxPoints(pts, normal[owner == i], column(pde.k), alpha, column(bc.value)))
    return out


class FluxBC:
    """A DeepXDE boundary condition ``k du/dn + alpha u - g = 0`` at fixed points (its ``error`` protocol)."""

    def __init__(self, points: FluxPoints) -> None:
        f32 = torch.get_default_dtype()
        self.points = points.x.astype(np.float32)
        self.normal, self.k, self.alpha, self.g = (torch.as_tensor(a, dtype=f32)
                                                   for a in (points.normal, points.k, points.alpha, points.g))

    def collocation_points(self, X: np.ndarray) -> np.ndarray:
        return self.points

    def error(self, X: Any, inputs: Any, outputs: Any, beg: int, end: int, aux_var: Any = None) -> Any:
        du = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)[0][beg:end]
        dn = (du * self.normal.to(du)).sum(dim=1, keepdim=True)
        return self.k.to(du) * dn + self.alpha.to(du) * outputs[beg:end] - self.g.to(du)


def _boundary_facets_with_cells(mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    """The boundary facets (as :meth:`Mesh.boundary_facets`) and the cell each belongs to."""
    from ..meshes.mesh import _FACETS_OF

    local = _FACETS_OF[mesh.cell_type]
    facets = np.concatenate([mesh.cells[:, f] for f in local], axis=0)
    cells = np.tile(np.arange(len(mesh.cells)), len(local))
    _, inverse, counts = np.unique(np.sort(facets, axis=1), axis=0, return_inverse=True, return_counts=True)
    once = counts[inverse.ravel()] == 1
    return facets[once], cells[once]


def _facet_normals(mesh: Any, facets: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Outward unit normals of boundary facets (pointing away from the centroid of the cell they bound)."""
    v = mesh.points[facets]
    d = mesh.points.shape[1]
    if v.shape[1] == 1:
        n = np.ones((len(v), 1))
    elif v.shape[1] == 2:
        t = v[:, 1] - v[:, 0]
        n = np.stack([t[:, 1], -t[:, 0]], axis=1)
    else:
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n = n[:, :d] / np.linalg.norm(n[:, :d], axis=1, keepdims=True)
    away = v.mean(axis=1) - mesh.points[mesh.cells[cells]].mean(axis=1)
    return n * np.where((n * away).sum(axis=1, keepdims=True) < 0, -1.0, 1.0)


def _hypercube_boundary(bounds: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = bounds[:, 0], bounds[:, 1]
    x = lo + (hi - lo) * rng.random((n, len(lo)))
    areas = np.array([np.prod(np.delete(hi - lo, j)) for j in range(len(lo))])   # a face's (d-1)-volume
    dims = rng.choice(len(lo), n, p=areas / areas.sum())
    side = rng.random(n) < 0.5
    x[np.arange(n), dims] = np.where(side, hi[dims], lo[dims])
    normal = np.zeros_like(x)
    normal[np.arange(n), dims] = np.where(side, 1.0, -1.0)
    return x, normal


def _sample_facets(points: np.ndarray, facets: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points on the facets (points in 1D, segments in 2D, triangles/quads in 3D)."""
    v = points[facets]                                    # (m, k, d)
    k = v.shape[1]
    if k == 1:
        sizes = np.ones(len(v))
    elif k == 2:
        sizes = np.linalg.norm(v[:, 1] - v[:, 0], axis=1)
    else:
        sizes = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1) * (2 if k == 4 else 1)
    which = rng.choice(len(v), n, p=sizes / sizes.sum())
    a, b = rng.random((2, n, 1))
    f = v[which]
    if k == 1:
        x = f[:, 0]
    elif k == 2:
        x = f[:, 0] + a * (f[:, 1] - f[:, 0])
    elif k == 3:
        s = np.sqrt(a)
        x = (1 - s) * f[:, 0] + s * (1 - b) * f[:, 1] + s * b * f[:, 2]
    else:   # a planar quad in VTK order: bilinear map of the unit square
        x = (1 - a) * (1 - b) * f[:, 0] + a * (1 - b) * f[:, 1] + a * b * f[:, 2] + (1 - a) * b * f[:, 3]
    return x, which


# ------------------------------------------------------------------------------------------------ model
def _hard_bc_transform(problem: Any, cache: bool = True) -> Any:
    """``u = L[g] + D N`` on boxes, for a single ``where: all`` Dirichlet ``g``; ``D = prod (x - lo)(hi - x)``.

    ``L[g]`` lifts the boundary data into the box from boundary values *only* (:func:`boundary_lift`): using
    ``g`` itself inside would hand the net the exact solution whenever the case says ``dirichlet: exact``.
    With ``cache`` (the default) ``L[g]`` and ``D`` and their derivatives up to order 3 are computed once per
    point set (:class:`~.cached_field.CachedField`): the same values and derivatives, without autograd going
    through the ``2 d`` evaluations of ``g`` in every step (in 10D a step cost 5.5x a soft-BC step).
    """
    if not isinstance(problem.domain, _BOXES):
        raise CaseError("hard_bc needs a box domain (interval, rectangle, box, hypercube)", field="method.hard_bc",
                        fix="set hard_bc: false (the boundary is then a loss term)")
    bcs = problem.bcs
    if len(bcs) != 1 or bcs[0].kind != "dirichlet" or str(bcs[0].where).strip() != "all":
        raise CaseError("hard_bc needs exactly one Dirichlet condition with where: all", field="method.hard_bc",
                        fix="set hard_bc: false")
    g = bcs[0].value
    b = np.asarray(problem.domain.bounds, dtype=float)
    lo, hi = torch.as_tensor(b[:, 0]), torch.as_tensor(b[:, 1])
    scale = torch.as_tensor(((b[:, 1] - b[:, 0]) / 2) ** 2)

    def values(x: Any) -> Any:
        gx = g.torch(x) if hasattr(g, "torch") else torch.as_tensor(g.numpy(x.detach().cpu().numpy().T))
        gx = torch.as_tensor(gx, dtype=x.dtype, device=x.device)
        return gx.reshape(-1) * torch.ones(len(x), dtype=x.dtype, device=x.device) if gx.numel() == 1 \
            else gx.reshape(-1)

    # data that vanish on the boundary in float32 (the peak problems: 1e-109) lift to exactly 0: skip the
    # 2d evaluations of g, which cost as much as the network in the residual's double backward
    xb, _ = _hypercube_boundary(b, 20000, np.random.default_rng(0))
    zero = not np.any(np.asarray(g.numpy(xb.T), dtype=np.float32))

    def distance(x: Any) -> Any:
        return torch.prod((x - lo.to(x)) * (hi.to(x) - x) / scale.to(x), dim=1)

    def lift(x: Any) -> Any:
        return boundary_lift(values, x, lo.to(x), hi.to(x))

    def distance_factors(x: Any) -> list[Any]:     # s_i = (x_i - lo_i)(hi_i - x_i) / scale_i and its derivatives
        lo_, hi_, sc = lo.to(x), hi.to(x), scale.to(x)
        return [(x - lo_) * (hi_ - x) / sc, (lo_ + hi_ - 2 * x) / sc, (-2 / sc).expand_as(x)]

    if cache:
        from .cached_field import CachedField, product_derivatives

        distance = CachedField(distance, derivs=lambda x, order: product_derivatives(distance_factors, x, order))
        lift = CachedField(lift)

    def transform(x: Any, y: Any) -> Any:
        dist = distance(x).reshape(-1, 1)
        if zero:
            return dist * y
        return lift(x).reshape(-1, 1) + dist * y

    return transform


def boundary_lift(g: Any, x: Any, lo: Any, hi: Any, eps: float = 1e-12) -> Any:
    """A smooth extension into the box ``[lo, hi]`` of the values of ``g`` on its boundary.

    ``sum_f w_f(x) g(P_f x) / sum_f w_f(x)`` over the ``2 d`` faces ``f``, ``P_f`` the projection onto the
    face's plane and ``w_f = 1 / (d_f^2 + eps)`` with ``d_f`` the scaled distance to it: equal to ``g`` on
    the boundary, smooth inside (away from the corners), and it reads ``g`` nowhere but on the boundary.
    ``2 d`` evaluations of ``g`` per point (a transfinite interpolation would need ``3^d - 1``).

    Args:
        g: values of the data at (n, d) tensor points, as an (n,) tensor.
        x: (n, d) points inside the box.
        lo, hi: (d,) bounds of the box.

    Returns:
        The (n,) lift at ``x``.
    """
    s = (x - lo) / (hi - lo)
    num = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    den = torch.zeros_like(num)
    for j in range(x.shape[1]):
        for side, dist in ((lo[j], s[:, j]), (hi[j], 1 - s[:, j])):
            xf = torch.cat([x[:, :j], side.expand(len(x), 1), x[:, j + 1:]], dim=1)
            w = 1.0 / (dist**2 + eps)
            num = num + w * g(xf)
            den = den + w
    return num / den


def residual_function(problem: Any, weights: Any = None) -> Any:
    """The DeepXDE ``pde`` callable: ``PDE.residual`` as a column (times ``sqrt(w)`` with importance weights)."""
    pde = problem.pde

    if weights is None:
        def residual(x: Any, y: Any) -> Any:
            return pde.residual(x, y).reshape(-1, 1)
        return residual

    def weighted(x: Any, y: Any, w: Any) -> Any:
        return pde.residual(x, y).reshape(-1, 1) * torch.sqrt(w)
    return weighted


def evaluate_residual(net: Any, problem: Any, x: np.ndarray, device: str, chunk: int = 8192) -> np.ndarray:
    """The PDE residual of ``net`` at numpy points (no parameter gradients)."""
    out = []
    for s in range(0, len(x), chunk):
        xt = torch.as_tensor(x[s:s + chunk], dtype=torch.get_default_dtype(), device=device).requires_grad_(True)
        r = problem.pde.residual(xt, net(xt))
        out.append(r.detach().reshape(-1).cpu().numpy().astype(float))
    return np.concatenate(out) if out else np.zeros(0)


def predict(net: Any, x: np.ndarray, device: str, chunk: int = 65536) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([net(torch.as_tensor(x[s:s + chunk], dtype=torch.get_default_dtype(),
                                                   device=device)).reshape(-1).cpu().numpy()
                               for s in range(0, len(x), chunk)]).astype(float)


def sampler_for(config: PINNConfig, region: Region, seed: int) -> Sampler:
    s = config.sampler
    kind = "uniform" if s.type == "fixed" else s.type
    opts: dict[str, Any] = {"points": s.points, "seed": seed}
    if kind in ("rar", "rad"):
        opts["candidates"] = s.candidates
    if kind == "rar":
        opts["add"] = s.add
    if kind == "rad":
        opts.update(k=s.k, c=s.c)
    if kind in ("das", "aas"):
        f = s.flow
        opts.update(couplings=f.couplings, width=f.width, flow_steps=f.steps, lr=f.lr, batch=f.batch,
                    importance_weights=s.importance_weights, importance_power=s.importance_power)
        if f.beta is not None:
            opts["beta"] = f.beta
        if s.uniform_share is not None:
            opts["uniform_share"] = s.uniform_share
        if s.memory_share:
            opts["memory_share"] = s.memory_share
    elif s.importance_weights:
        raise CaseError("importance weights 1/q need a flow sampler", field="method.sampler.importance_weights",
                        fix="use sampler type das or aas, or importance_weights: false")
    return make_sampler(kind, region, **opts)


@dataclass
class StageRecord:
    """What one stage trained on: its collocation points and the residual there at the stage's end."""

    stage: int
    points: np.ndarray
    residual: np.ndarray
    loss: float
    seconds: float
    flow_seconds: float = 0.0
    #: |residual| on the plot grid of :func:`neuralpde.solvers.pinn_plots.grid` (2D, when pictures are asked for)
    grid_residual: np.ndarray | None = None


@dataclass
class Training:
    """The state shared by the callbacks: stages, best weights, NaN stop."""

    stages: list[StageRecord] = field(default_factory=list)
    best_loss: float = np.inf
    best_step: int = 0
    best_state: dict | None = None
    nan_at: tuple[int, int] | None = None     # (stage, step)
    #: what the L-BFGS finish did (:func:`lbfgs_finish`), empty without one
    lbfgs: dict[str, Any] = field(default_factory=dict)


def _callbacks(dde: Any, sampler: Sampler, problem: Any, config: PINNConfig, ctx: RunContext, training: Training,
               fixed: bool, advance: Any) -> list[Any]:
    period, n_stages = config.train.adam_steps, config.sampler.stages
    redraw = config.sampler.redraw_every
    pictures = "samples" in ctx.plots and sampler.region.dim == 2 and ctx.out_dir is not None

    class Stages(dde.callbacks.Callback):
        """Ends a stage every ``period`` steps: the sampler picks the next points, DeepXDE trains on them."""

        def __init__(self) -> None:
            super().__init__()
            self.steps = 0
            self.t0 = time.perf_counter()

        def on_epoch_end(self) -> None:
            self.steps += 1
            if self.steps % period:
                if redraw and not fixed and self.steps % redraw == 0:
                    self.model.data.replace_with_anchors(sampler.redraw(self.steps // period))
                return
            stage = self.steps // period - 1
            data, net = self.model.data, self.model.net
            current = np.array(data.train_x_all, dtype=float)
            r = evaluate_residual(net, problem, current, ctx.device)
            loss = float(np.sum(self.model.train_state.loss_train))
            if not np.isfinite(r).all():
                training.nan_at = (stage, self.model.train_state.step)
                self.model.stop_training = True
                return
            record = StageRecord(stage, current, r, loss, time.perf_counter() - self.t0)
            if pictures:
                from .pinn_plots import grid

                record.grid_residual = np.abs(evaluate_residual(net, problem, grid(sampler.region)[0], ctx.device))
            t_flow = time.perf_counter()       # the sampler's own cost, without the pictures
            training.stages.append(record)
            if stage + 1 < n_stages and not fixed:
                new = sampler.next_points(lambda x: evaluate_residual(net, problem, x, ctx.device), current, stage)
                if sampler.mode == "add":
                    data.add_anchors(new)
                else:
                    data.replace_with_anchors(new)
            record.flow_seconds = time.perf_counter() - t_flow
            self.t0 = time.perf_counter()

    class Guard(dde.callbacks.Callback):
        """Keeps the best weights (by training loss) and stops on a NaN loss, naming the stage."""

        def on_epoch_end(self) -> None:
            state = self.model.train_state
            if state.step % config.train.display_every:
                return
            loss = np.asarray(state.loss_train, dtype=float)
            advance(config.train.display_every, loss=float(loss.sum()))
            # DeepXDE stops by itself when its test loss is NaN; check both so the stop is always reported
            if not (np.isfinite(loss).all() and np.isfinite(np.asarray(state.loss_test, dtype=float)).all()):
                training.nan_at = (min((state.step - 1) // period, n_stages - 1), state.step)
                self.model.stop_training = True
            elif loss.sum() < training.best_loss:
                training.best_loss, training.best_step = float(loss.sum()), state.step
                training.best_state = copy.deepcopy(self.model.net.state_dict())

    return [Stages(), Guard()]


def quadratic_features(x: Any) -> Any:
    """``[x, x*x]``: the input features of ``network.features: quadratic`` (see :class:`.pinn.NetworkConfig`)."""
    return torch.cat([x, x * x], dim=1)


def build_net(dim: int, network: NetworkConfig) -> Any:
    """DeepXDE's ``FNN`` for ``network`` on ``dim`` inputs, with its feature map."""
    quadratic = network.features == "quadratic"
    net = deepxde().nn.FNN([2 * dim if quadratic else dim, *network.layers, 1], network.activation,
                           network.initializer)
    if quadratic:
        net.apply_feature_transform(quadratic_features)
    return net


def build_model(problem: Any, config: PINNConfig, region: Region, sampler: Sampler, seed: int) -> Any:
    """The DeepXDE model: ``data.PDE`` with the sampler's first points as anchors and ``PointSetBC``s."""
    dde = deepxde()
    geom = geometry_for(problem.domain)
    rng = np.random.default_rng(seed + 1)
    bcs: list[Any] = []
    if not config.hard_bc and problem.bcs and config.sampler.boundary_points:
        x, owner, normal = boundary_samples(problem, config.sampler.boundary_points, rng)
        bcs = [dde.icbc.PointSetBC(pts.astype(np.float32), g.astype(np.float32), shuffle=False)
               for pts, g in dirichlet_sets(problem, x, owner)]
        bcs += [FluxBC(p) for p in flux_sets(problem, x, owner, normal)]
    x0 = sampler.initial().astype(np.float32)
    aux = None
    if config.sampler.importance_weights:
        def aux(x: np.ndarray) -> np.ndarray:
            w = np.ones((len(x), 1), dtype=np.float32)
            if sampler.weights is not None and len(sampler.weights) <= len(x):
                w[len(x) - len(sampler.weights):, 0] = sampler.weights
            return w
    pde = residual_function(problem, weights=aux)
    data = dde.data.PDE(geom, pde, bcs, num_domain=0, num_boundary=0, anchors=x0, auxiliary_var_function=aux)
    torch.manual_seed(seed)
    net = build_net(region.dim, config.network)
    if config.hard_bc:
        net.apply_output_transform(_hard_bc_transform(problem))
    return dde.Model(data, net)


def train_pinn(problem: Any, reference: Any, config: PINNConfig, ctx: RunContext,
               sampler: Sampler | None = None) -> MethodResult:
    """Train the PINN stage by stage, then evaluate it on the reference mesh (or against ``exact``).

    ``sampler`` replaces the one ``config.sampler`` describes (any :class:`~.sampling.Sampler`, e.g. a fixed
    point set for a diagnostic); ``config.sampler`` still gives the stages and boundary points.
    """
    dde = deepxde()
    if ctx.device.startswith("cuda"):
        torch.set_default_device(ctx.device)
    region = region_for(problem.domain)
    sampler = sampler or sampler_for(config, region, ctx.seed)
    model = build_model(problem, config, region, sampler, ctx.seed)
    training = Training()
    t = config.train
    total = t.adam_steps * config.sampler.stages
    started = time.perf_counter()
    with ctx.progress.task(f"pinn ({config.sampler.type})", total=total + t.lbfgs_steps) as advance:
        callbacks = _callbacks(dde, sampler, problem, config, ctx, training, config.sampler.type == "fixed", advance)
        model.compile("adam", lr=t.lr)
        model.train(iterations=total, display_every=t.display_every, callbacks=callbacks, verbose=0)
        if training.nan_at is None and t.lbfgs_steps:
            # the Guard only: the Stages callback would resample, and L-BFGS must finish on the last stage's
            # points with their importance weights (DeepXDE keeps train_x and train_aux_vars until replaced)
            training.lbfgs = lbfgs_finish(dde, model, t.lbfgs_steps, t.display_every, callbacks[1:],
                                          float64=t.lbfgs_float64)
    train_s = time.perf_counter() - started
    net = model.net
    if training.nan_at is not None:
        stage, step = training.nan_at
        ckpt = _save(training.best_state, "pinn_best.pt", training.best_step, training.best_loss, config, region, ctx)
        where = f"; the best weights (step {training.best_step}) are in {ckpt}" if ckpt else ""
        raise SolverError(f"the PINN residual became NaN in stage {stage + 1} of {config.sampler.stages} "
                          f"(step {step}){where}", field="method.train.lr",
                          fix="lower method.train.lr, check the PDE coefficients and source for singular values")
    # the final weights, not the lowest loss: losses of different stages are on different points (an
    # adaptive sampler's later points are the hard ones), so the smallest loss is often an early, wrong net
    ckpt = _save(net.state_dict(), "pinn.pt", model.train_state.step, float(np.sum(model.train_state.loss_train)),
                 config, region, ctx)
    return _result(problem, reference, config, ctx, net, region, sampler, training, train_s, ckpt)


def lbfgs_finish(dde: Any, model: Any, steps: int, display_every: int, callbacks: list[Any],
                 float64: bool = False, **compile_kwargs: Any) -> dict[str, Any]:
    """DeepXDE's L-BFGS (torch.optim.LBFGS, strong Wolfe line search) for at most ``steps`` iterations on the
    model's current training points; it stops earlier at DeepXDE's tolerances (gtol 1e-8, no progress).

    Args:
        dde: the DeepXDE module.
        model: a compiled and trained ``dde.Model``.
        steps: the most L-BFGS iterations.
        display_every: DeepXDE's loss display interval.
        callbacks: DeepXDE callbacks for the L-BFGS run (not a resampler: the points must stay).
        float64: cast the net, the training points and weights to float64 for the run (and back after it).
        **compile_kwargs: for ``model.compile("L-BFGS", ...)``: ``loss_weights``, ``external_trainable_variables``
            (the inverse PINN's unknowns; they stay in the model's dtype, so use it with ``float64=False``).

    Returns:
        ``{"steps": iterations taken, "loss_before", "loss_after", "cpu_s"}``.
    """
    if float64:
        dtype = torch.get_default_dtype()
        _cast(model, torch.float64)
        try:
            return lbfgs_finish(dde, model, steps, display_every, callbacks, **compile_kwargs)
        finally:
            _cast(model, dtype)
    opts = dde.optimizers.config.LBFGS_options
    saved = dict(opts)          # DeepXDE's options are global: others (pinn_inverse) get them back as they were
    try:
        return _lbfgs(dde, model, steps, display_every, callbacks, opts, compile_kwargs)
    finally:
        opts.clear()
        opts.update(saved)


def _lbfgs(dde: Any, model: Any, steps: int, display_every: int, callbacks: list[Any], opts: dict,
           compile_kwargs: dict[str, Any]) -> dict[str, Any]:
    dde.optimizers.set_LBFGS_options(maxiter=steps)
    # DeepXDE derives the iterations per torch LBFGS call (at most 1000) from maxiter only once, at import (from
    # its default 15 000): without this a request of 50 steps would run up to 1000
    opts["iter_per_step"] = min(1000, steps)
    opts["fun_per_step"] = opts["maxfun"] * opts["iter_per_step"] // steps
    before, step0, c0 = float(np.sum(model.train_state.loss_train)), model.train_state.step, time.process_time()

    class Budget(dde.callbacks.Callback):
        """DeepXDE calls torch's LBFGS until ``maxiter`` is *passed* (a call that hits its evaluation limit early
        is followed by a full one): the next call gets only the iterations left."""

        def on_epoch_begin(self) -> None:
            group = self.model.opt.param_groups[0]
            group["max_iter"] = max(1, min(opts["iter_per_step"], steps - (self.model.train_state.step - step0)))
            group["max_eval"] = max(group["max_iter"] + 1, group["max_iter"] * 5 // 4)

    model.compile("L-BFGS", **compile_kwargs)
    model.train(display_every=display_every, callbacks=[Budget(), *callbacks], verbose=0)
    # DeepXDE stops without counting or testing a call that made one iteration ("converged"): the iterations
    # are torch's own count, and the loss is evaluated afresh
    taken = int(model.opt.state[model.opt._params[0]].get("n_iter", 0))
    model._test(verbose=0)
    return {"steps": taken, "loss_before": before, "loss_after": float(np.sum(model.train_state.loss_train)),
            "cpu_s": time.process_time() - c0}


def _cast(model: Any, dtype: Any) -> None:
    """The net, the default dtype and the data's cached point arrays in ``dtype`` (DeepXDE feeds numpy arrays as
    they are, so a float64 net needs float64 points)."""
    torch.set_default_dtype(dtype)
    model.net.to(dtype)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    for name in ("train_x", "train_x_all", "train_x_bc", "test_x", "train_aux_vars", "test_aux_vars", "anchors"):
        value = getattr(model.data, name, None)
        if isinstance(value, np.ndarray):
            setattr(model.data, name, value.astype(np_dtype))
    for bc in getattr(model.data, "bcs", []):       # soft boundary conditions keep their own points and values
        for name in ("points", "values"):
            value = getattr(bc, name, None)
            if isinstance(value, np.ndarray):
                setattr(bc, name, value.astype(np_dtype))
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                setattr(bc, name, value.to(dtype))


def _save(state: dict | None, name: str, step: int, loss: float, config: PINNConfig, region: Region,
          ctx: RunContext) -> Any:
    """A self-describing checkpoint (``kind: pinn``) of the network weights, or None without an output folder."""
    if ctx.checkpoint_dir is None or state is None or ctx.rank != 0:
        return None
    from ..checkpoints import save_checkpoint

    path = ctx.checkpoint_dir / name
    save_checkpoint(path, kind="pinn", config={"dim": region.dim, "layers": config.network.layers,
                                               "activation": config.network.activation,
                                               "features": config.network.features,
                                               "hard_bc": config.hard_bc},
                    state={"net": state}, step=int(step), loss=float(loss))
    return path


def _result(problem: Any, reference: Any, config: PINNConfig, ctx: RunContext, net: Any, region: Region,
            sampler: Sampler, training: Training, train_s: float, ckpt: Any) -> MethodResult:
    metrics: dict[str, Any] = {
        "sampler": config.sampler.type, "train_time_s": train_s,
        "flow_time_s": float(sum(s.flow_seconds for s in training.stages)),
        "best_step": training.best_step, "best_loss": training.best_loss,
        "collocation_points": [len(s.points) for s in training.stages],
        "stage_loss": [s.loss for s in training.stages],
        "stage_residual_rms": [float(np.sqrt(np.mean(s.residual ** 2))) for s in training.stages],
        "flow_collapses": sum(1 for h in sampler.history if h.get("collapsed")),
    }
    if training.lbfgs:
        metrics["lbfgs"] = training.lbfgs
    exact = problem.exact
    if exact is not None:
        rng = np.random.default_rng(ctx.seed + 2)
        x = region.uniform(config.eval_points, rng)
        u, ue = predict(net, x, ctx.device), np.asarray(exact.numpy(x.T), dtype=float)
        metrics["mc_vs_exact"] = {"rel_l2": float(np.linalg.norm(u - ue) / max(np.linalg.norm(ue), 1e-300)),
                                  "linf": float(np.abs(u - ue).max()), "points": len(x)}
    field = None
    files = [] if ckpt is None else [ckpt]
    if reference is not None:
        ref = reference.field
        field = ref.with_values(predict(net, ref.doflocs, ctx.device), name="u_pinn")
    if ctx.out_dir is not None and ctx.rank == 0:
        from .pinn_plots import plot_error, plot_stages

        if "samples" in ctx.plots and region.dim == 2:
            files.append(plot_stages(training.stages, region, ctx.out_dir / "samples.png"))
        if "pinn_error" in ctx.plots and exact is not None and region.dim >= 2:
            files.append(plot_error(region, exact, lambda x: predict(net, x, ctx.device), ctx.out_dir / "error.png"))
    return MethodResult(field=field, metrics=metrics, files=files)


__all__ = ["boundary_points", "build_model", "build_net", "geometry_for", "region_for", "train_pinn"]
