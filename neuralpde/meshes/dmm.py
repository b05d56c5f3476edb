"""DMM: the data-free neural mesh mover of MM-PDE (Hu, Wang, Ma, ICLR 2024).

A network maps a solution ``u`` (sampled on a grid: the branch CNN) and a computational point ``xi`` (the
trunk MLP) to a potential ``phi(u, xi)``; the mesh is ``x = xi + grad_xi phi`` (autograd). It is trained
without any mesh data, on the Monge-Ampere residual ``M(x) det(I + H(phi)) / theta - 1`` at points drawn
with probability proportional to ``M`` (plus the paper's boundary and convexity terms), over a family of
solutions. Once trained, one forward pass moves a mesh for a new solution; the trunk depends on the mesh only,
so its features at the nodes and their derivatives are cached per mesh, and a move runs just the branch and
the decoder (with a hand-written gradient, no autograd graph)::

    >>> import numpy as np
    >>> from neuralpde.meshes import rectangle
    >>> fam = solution_family("ring", 4, seed=0)
    >>> mover = DMMMover(DMMConfig(grid=16, width=16, trunk=(16,), decoder=(16,), monitor_resolution=33))
    >>> log = mover.fit([f.grid(16) for f in fam], steps=2, batch=2, points=32)
    >>> res = mover.move(rectangle(cells=[8, 8]), fam[0].grid(16))
    >>> res.quality["valid"]
    True

Choices where the paper is silent or was changed (see docs/mesh_movers.md): the trunk sees
``(cos(pi xi_1), cos(pi xi_2))`` so ``d phi/dn = 0`` holds exactly and boundary nodes cannot leave their
side (the boundary loss is kept and is zero); the default monitor is the Hessian monitor (the paper's
gradient monitor is :func:`~neuralpde.meshes.monitors.dmm_monitor`, ``monitor="dmm"``); no random-feature
(BFGS) stage.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..errors import CaseError, SolverError
from .mesh import Mesh
from .monge_ampere import MoveResult, moved_mesh
from .monitors import grid_points, monitor_from_grid
from .quality import equidistribution_cv, mesh_report, rectangle_bounds

UNIT = np.array([[0.0, 1.0], [0.0, 1.0]])


@dataclass
class FamilyMember:
    """One solution of a family: ``u(points (k, 2)) -> (k,)`` on the unit square, and its parameters."""

    kind: str
    params: dict[str, float]
    expression: str

    def __call__(self, p: np.ndarray) -> np.ndarray:
        q = self.params
        if self.kind == "ring":
            return np.tanh((np.hypot(p[:, 0] - q["cx"], p[:, 1] - q["cy"]) - q["r"]) / q["eps"])
        return np.tanh(((p[:, 0] - q["cx"]) * math.cos(q["angle"]) + (p[:, 1] - q["cy"]) * math.sin(q["angle"]))
                       / q["eps"])

    def grid(self, n: int) -> np.ndarray:
        """Samples on the ``n x n`` grid of the unit square (``ij`` indexing)."""
        return self(grid_points(UNIT, n).reshape(-1, 2)).reshape(n, n)


def solution_family(kind: str, count: int, seed: int = 0,
                    eps: tuple[float, float] = (0.03, 0.06)) -> list[FamilyMember]:
    """Random members of the ``front`` (tanh front, any angle) or ``ring`` (tanh ring) family on [0, 1]^2.

    Args:
        kind: ``front`` or ``ring``.
        count: number of members.
        seed: the draws are reproducible.
        eps: range of the front width.
    """
    if kind not in ("front", "ring"):
        raise CaseError(f"unknown solution family {kind!r}", field="method.family", fix="use front or ring")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        q = {"cx": rng.uniform(0.35, 0.65), "cy": rng.uniform(0.35, 0.65), "eps": rng.uniform(*eps)}
        if kind == "ring":
            q["r"] = rng.uniform(0.15, 0.3)
            expr = "tanh((sqrt((x-{cx:.6g})**2 + (y-{cy:.6g})**2) - {r:.6g})/{eps:.6g})".format(**q)
        else:
            q["angle"] = rng.uniform(0, math.pi)
            expr = "tanh(((x-{cx:.6g})*{c:.6g} + (y-{cy:.6g})*{s:.6g})/{eps:.6g})".format(
                c=math.cos(q["angle"]), s=math.sin(q["angle"]), **q)
        out.append(FamilyMember(kind, q, expr))
    return out


@dataclass
class DMMConfig:
    """Architecture and loss of the mover (JSON-able; it rebuilds the network from a checkpoint).

    Attributes:
        grid: the branch CNN sees ``u`` on a ``grid x grid`` sample of the unit square (a finer input grid whose
            spacing divides the branch's is subsampled, anything else is interpolated).
        width: feature width shared by branch and trunk outputs.
        trunk: hidden widths of the trunk MLP.
        decoder: hidden widths of the decoder MLP.
        monitor: ``hessian`` (default), ``arclength`` or ``dmm`` (the paper's gradient monitor).
        mm_gamma: the constant of the ``dmm`` monitor (0.01 in the paper's code).
        monitor_resolution: grid on which the monitor is tabulated for the loss.
        w_in, w_bound, w_convex: the paper's loss weights (1, 1000, 1).
    """

    grid: int = 33
    width: int = 128
    trunk: tuple[int, ...] = (64, 64)
    decoder: tuple[int, ...] = (128, 128)
    monitor: str = "hessian"
    mm_gamma: float = 0.01
    monitor_resolution: int = 129
    w_in: float = 1.0
    w_bound: float = 1000.0
    w_convex: float = 1.0


def _mlp(sizes: Sequence[int], last_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class DMMNet(nn.Module):
    """Branch CNN on ``u``, trunk MLP on ``xi``, decoder on their concatenation -> potential ``phi``."""

    def __init__(self, config: DMMConfig):
        super().__init__()
        g = config.grid
        self.c1 = nn.Conv2d(1, 8, 5, stride=2, padding=2)
        self.c2 = nn.Conv2d(8, 16, 5, padding=2)
        self.c3 = nn.Conv2d(16, 8, 5, padding=2)
        self.c4 = nn.Conv2d(8, 1, 5, stride=2, padding=2)
        side = ((g + 1) // 2 + 1) // 2
        self.branch_fc = _mlp([side * side, config.width, config.width])
        self.trunk = _mlp([2, *config.trunk, config.width], last_activation=True)
        self.decoder = _mlp([2 * config.width, *config.decoder, 1])

    def branch(self, u: torch.Tensor) -> torch.Tensor:
        """Features ``(B, width)`` of solutions ``u`` ``(B, grid, grid)``."""
        h1 = torch.tanh(self.c1(u[:, None]))
        h = torch.tanh(self.c2(h1))
        h = torch.tanh(self.c3(h) + h1)               # the paper's skip from the first layer
        h = torch.tanh(self.c4(h))
        return self.branch_fc(h.flatten(1))

    def trunk_features(self, xi: torch.Tensor) -> torch.Tensor:
        """The trunk's features of points ``xi`` (``(..., 2)`` -> ``(..., width)``)."""
        # cos(pi xi) has zero derivative at xi = 0, 1: d phi / dn = 0 holds exactly on the square's sides
        return self.trunk(torch.cos(math.pi * xi))

    def potential(self, features: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        """``phi`` at points ``xi`` ``(B, P, 2)`` for branch ``features`` ``(B, width)``, shape ``(B, P)``."""
        t = self.trunk_features(xi)
        f = features[:, None, :].expand(-1, xi.shape[1], -1)
        return self.decoder(torch.cat([f, t], dim=-1))[..., 0]


@dataclass
class _TrunkCache:
    """What a mesh's nodes give the network: ``xi`` ``(P, 2)`` in the unit square, the trunk's share of the
    decoder's first pre-activation ``(P, H)`` and its derivative along each ``xi`` axis ``(2, P, H)``."""

    xi: torch.Tensor
    trunk_pre: torch.Tensor
    trunk_jac: torch.Tensor


def _bilinear(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Batched bilinear interpolation of ``values`` ``(B, R, R)`` on the unit square at ``points`` ``(B, P, 2)``."""
    n = values.shape[-1] - 1
    s = torch.clamp(points, 0.0, 1.0) * n
    i = torch.clamp(torch.floor(s.detach()), max=n - 1)
    f = s - i
    i = i.long()
    b = torch.arange(values.shape[0])[:, None]
    ix, iy, fx, fy = i[..., 0], i[..., 1], f[..., 0], f[..., 1]
    return ((1 - fx) * (1 - fy) * values[b, ix, iy] + fx * (1 - fy) * values[b, ix + 1, iy]
            + (1 - fx) * fy * values[b, ix, iy + 1] + fx * fy * values[b, ix + 1, iy + 1])


def _check_solutions(solutions: Sequence[np.ndarray], grid: int) -> np.ndarray:
    arr = np.asarray(solutions, dtype=float)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] < 3:
        raise CaseError(f"solutions must be square grids (n, n), got shape {arr.shape[1:]}", field="solutions",
                        fix="sample each solution on an n x n grid of the domain (ij indexing)")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))[0])
        raise SolverError(f"solution {bad} has NaN or infinite values", fix="drop or fix that solution")
    return arr


class DMMMover:
    """Train once on a family of solutions, then move meshes in one forward pass.

    Args:
        config: the architecture and loss (:class:`DMMConfig`).
        device: torch device.
        seed: initialisation seed.
    """

    kind = "dmm_mesh_mover"

    def __init__(self, config: DMMConfig | None = None, device: str = "cpu", seed: int = 0):
        self.config = config or DMMConfig()
        self.device = device
        torch.manual_seed(seed)
        self.dtype = torch.float32
        self.net = DMMNet(self.config).to(device)
        self._trunk_cache: OrderedDict[tuple, _TrunkCache] = OrderedDict()

    # ---- inputs -------------------------------------------------------------------------------------
    def _branch_input(self, solutions: np.ndarray) -> torch.Tensor:
        """Solutions resampled to the branch grid and scaled to max |u| = 1."""
        g = self.config.grid
        n = solutions.shape[1]
        if n != g and (n - 1) % (g - 1) == 0:
            stride = (n - 1) // (g - 1)         # the branch grid is a sub-grid: slice, no interpolation
            solutions = solutions[:, ::stride, ::stride]
        elif n != g:
            from scipy.interpolate import RegularGridInterpolator

            src = np.linspace(0, 1, solutions.shape[1])
            pts = grid_points(UNIT, g).reshape(-1, 2)
            solutions = np.stack([RegularGridInterpolator((src, src), s)(pts).reshape(g, g) for s in solutions])
        scale = np.maximum(np.abs(solutions).max(axis=(1, 2), keepdims=True), 1e-12)
        return torch.as_tensor(solutions / scale, dtype=self.dtype, device=self.device)

    def _monitors(self, solutions: np.ndarray) -> torch.Tensor:
        r = self.config.monitor_resolution
        vals = []
        for s in solutions:
            if s.shape[0] != r:
                from scipy.interpolate import RegularGridInterpolator

                src = np.linspace(0, 1, s.shape[0])
                s = RegularGridInterpolator((src, src), s, method="cubic")(grid_points(UNIT, r).reshape(-1, 2))
                s = s.reshape(r, r)
            vals.append(monitor_from_grid(s, UNIT, self.config.monitor, mm_gamma=self.config.mm_gamma).values)
        return torch.as_tensor(np.stack(vals), dtype=self.dtype, device=self.device)

    # ---- the map and the loss -------------------------------------------------------------------------
    def _map(self, features: torch.Tensor, xi: torch.Tensor, hessian: bool,
             create_graph: bool = True) -> tuple[torch.Tensor, ...]:
        xi = xi.requires_grad_(True)
        phi = self.net.potential(features, xi)
        g = torch.autograd.grad(phi.sum(), xi, create_graph=create_graph or hessian)[0]
        if not hessian:
            return xi + g, g
        hx = torch.autograd.grad(g[..., 0].sum(), xi, create_graph=True)[0]
        hy = torch.autograd.grad(g[..., 1].sum(), xi, create_graph=True)[0]
        return xi + g, g, hx[..., 0], hy[..., 1], 0.5 * (hx[..., 1] + hy[..., 0])

    def loss(self, features: torch.Tensor, monitors: torch.Tensor, theta: torch.Tensor, xi: torch.Tensor,
             side_points: int = 16) -> dict[str, torch.Tensor]:
        """The paper's loss terms for points ``xi`` ``(B, P, 2)``."""
        x, g, pxx, pyy, pxy = self._map(features, xi, hessian=True)
        det = (1 + pxx) * (1 + pyy) - pxy ** 2
        lhs = _bilinear(monitors, x) * det / theta[:, None]
        loss_in = torch.mean((lhs - 1) ** 2)
        loss_convex = torch.mean(torch.relu(-(1 + pxx)) ** 2 + torch.relu(-(1 + pyy)) ** 2)
        s = torch.linspace(0, 1, side_points, dtype=xi.dtype, device=xi.device)
        z, o = torch.zeros_like(s), torch.ones_like(s)
        sides = torch.cat([torch.stack(p, dim=-1) for p in ((z, s), (o, s), (s, z), (s, o))])
        _, gb = self._map(features, sides[None].expand(len(features), -1, -1).clone(), hessian=False)
        n = side_points
        loss_bound = torch.mean(torch.cat([gb[:, :2 * n, 0], gb[:, 2 * n:, 1]], dim=1) ** 2)
        c = self.config
        total = c.w_in * loss_in + c.w_bound * loss_bound + c.w_convex * loss_convex
        return {"loss": total, "in": loss_in, "bound": loss_bound, "convex": loss_convex}

    def _sample(self, monitors: torch.Tensor, points: int, gen: torch.Generator) -> torch.Tensor:
        """Per solution: ``40 * points`` uniform candidates, ``points`` of them kept with probability ∝ M."""
        cand = torch.rand(monitors.shape[0], 40 * points, 2, generator=gen, dtype=monitors.dtype)
        weight = _bilinear(monitors, cand)
        idx = torch.multinomial(weight, points, replacement=False, generator=gen)
        return torch.gather(cand, 1, idx[..., None].expand(-1, -1, 2))

    def fit(self, solutions: Sequence[np.ndarray], *, steps: int = 2000, lr: float = 1e-3, batch: int = 16,
            points: int = 256, seed: int = 0, advance: Callable[..., None] | None = None,
            milestones: Sequence[float] = (0.6, 0.85)) -> list[dict[str, float]]:
        """Train on ``solutions`` (each an ``n x n`` grid sample of the unit square, ``ij`` indexing).

        Adam with weight decay 1e-5 and a step decay (x0.2 at the ``milestones`` fractions of ``steps``), as in
        the paper's schedule. Returns the loss history (every 10 steps).
        """
        sols = _check_solutions(solutions, self.config.grid)
        branch_in = self._branch_input(sols)
        monitors = self._monitors(sols)
        theta = monitors.mean(dim=(1, 2))
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(m * steps) for m in milestones], gamma=0.2)
        history = []
        for step in range(steps):
            pick = torch.randperm(len(sols), generator=gen)[:batch]
            xi = self._sample(monitors[pick], points, gen)
            parts = self.loss(self.net.branch(branch_in[pick]), monitors[pick], theta[pick], xi)
            opt.zero_grad()
            parts["loss"].backward()
            opt.step()
            sched.step()
            if not torch.isfinite(parts["loss"]):
                raise SolverError(f"the DMM loss became {parts['loss'].item()} at step {step}",
                                  fix="lower the learning rate")
            if step % 10 == 0 or step == steps - 1:
                history.append({"step": step, **{k: float(v.detach()) for k, v in parts.items()}})
            if advance is not None:
                advance(1, loss=f"{parts['loss'].item():.3e}")
        return history

    # ---- inference -------------------------------------------------------------------------------------
    def move(self, mesh: Mesh, solution: np.ndarray, monitor: Callable[[np.ndarray], np.ndarray] | None = None,
             cache: bool = True) -> MoveResult:
        """Move the nodes of ``mesh`` (any triangle mesh of a rectangle) for ``solution`` in one forward pass.

        Args:
            mesh: the computational mesh (its bounding box is mapped to the unit square).
            solution: ``u`` on an ``n x n`` grid of the rectangle (``ij`` indexing).
            monitor: for the quality report only (CV of M·area); default: the mover's own monitor of ``solution``.
            cache: reuse the trunk features of this mesh's nodes and their derivatives (computed on the first move
                of a mesh, keyed by its node coordinates and the network's weights); ``False`` runs the plain
                autograd forward pass (same mesh to float32 rounding).

        Returns:
            A :class:`MoveResult` (``iterations=1``, ``time_s``: forward pass and validity check);
            ``status="inverted"`` with ``inverted_at=1`` and the unmoved mesh when the map tangles a cell.
        """
        bounds = rectangle_bounds(mesh)
        sol = _check_solutions([solution], self.config.grid)
        start, cpu = time.perf_counter(), time.process_time()
        if cache:
            entry = self._cache_for(mesh.points, bounds)
            with torch.inference_mode():
                features = self.net.branch(self._branch_input(sol))
                x = self._cached_map(features, entry)
        else:
            xi = torch.as_tensor((mesh.points - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]),
                                 dtype=self.dtype, device=self.device)[None]
            with torch.no_grad():
                features = self.net.branch(self._branch_input(sol))
            x, _ = self._map(features, xi, hessian=False, create_graph=False)   # inference: a first derivative
        pts = bounds[:, 0] + x[0].detach().cpu().numpy() * (bounds[:, 1] - bounds[:, 0])
        moved = moved_mesh(mesh, pts, f"{mesh.source} moved by the DMM")
        report = mesh_report(mesh, moved.points)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        status, inverted_at = "converged", None
        if not report["valid"]:
            status, inverted_at, moved = "inverted", 1, mesh
        if monitor is None:
            monitor = monitor_from_grid(sol[0], bounds, self.config.monitor, mm_gamma=self.config.mm_gamma)
        quality = {**report, "cv": equidistribution_cv(moved.points, mesh.cells, monitor),
                   "cv_uniform": equidistribution_cv(mesh.points, mesh.cells, monitor)}
        return MoveResult(moved, status, 1, float("nan"), inverted_at, quality, elapsed, [], cpu)

    # ---- the cached forward pass ---------------------------------------------------------------------
    # The trunk sees only the mesh, so per mesh we keep xi, the trunk's share c(xi) = W_t trunk(xi) of the
    # decoder's first pre-activation and its derivatives dc/dxi (forward mode, exact). A move then costs the
    # branch, the decoder's remaining layers and their hand-written backward pass: no trunk, no autograd graph.
    _CACHE_SIZE = 4

    def clear_cache(self) -> None:
        """Forget the cached trunk features of every mesh (the next move on a mesh rebuilds them)."""
        self._trunk_cache.clear()

    def _weights_key(self) -> tuple:
        """Identity and in-place version of every parameter the cache depends on (an optimiser step or
        ``load_state_dict`` bumps ``_version``; a copied network has new storage)."""
        params = [*self.net.trunk.parameters(), *self.net.decoder[0].parameters()]
        return tuple((p.data_ptr(), p._version) for p in params)

    def _cache_for(self, points: np.ndarray, bounds: np.ndarray) -> _TrunkCache:
        """The trunk cache of a mesh's nodes (built on a miss; a few meshes are kept, least recent dropped)."""
        digest = hashlib.blake2b(np.ascontiguousarray(points, dtype=float).tobytes(), digest_size=16)
        digest.update(np.ascontiguousarray(bounds, dtype=float).tobytes())
        key = (digest.hexdigest(), points.shape, self._weights_key(), self.dtype, str(self.device))
        hit = self._trunk_cache.get(key)
        if hit is not None:
            self._trunk_cache.move_to_end(key)
            return hit
        entry = self._build_cache((points - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]))
        self._trunk_cache[key] = entry
        while len(self._trunk_cache) > self._CACHE_SIZE:
            self._trunk_cache.popitem(last=False)
        return entry

    def _build_cache(self, xi_points: np.ndarray) -> _TrunkCache:
        """The cache of nodes at ``xi_points`` ``(P, 2)`` (unit square): forward-mode AD of the trunk, one pass
        per axis (the trunk acts point by point). Never in inference mode, where torch 2.6's ``jvp`` returns zero
        tangents: a mover called inside the user's ``torch.inference_mode()`` still gets the right derivatives."""
        from torch.func import jvp

        with torch.inference_mode(False), torch.no_grad():
            xi = torch.as_tensor(xi_points, dtype=self.dtype, device=self.device)
            w_t = self.net.decoder[0].weight[:, self.config.width:]

            def trunk_pre(p: torch.Tensor) -> torch.Tensor:
                return self.net.trunk_features(p) @ w_t.T

            pre, jac = None, []
            for d in range(2):
                axis = torch.zeros_like(xi)
                axis[:, d] = 1.0
                pre, tangent = jvp(trunk_pre, (xi,), (axis,))
                jac.append(tangent)
            return _TrunkCache(xi, pre, torch.stack(jac))

    def _cached_map(self, features: torch.Tensor, cache: _TrunkCache) -> torch.Tensor:
        """Moved points ``(B, P, 2)`` for branch ``features`` ``(B, width)`` (inference only)."""
        first = self.net.decoder[0]
        # decoder(cat(f, t)) first layer = W_f f + b + W_t t: the branch's share is one row per solution
        z = cache.trunk_pre[None] + (features @ first.weight[:, :self.config.width].T + first.bias)[:, None]
        layers = list(self.net.decoder)[1:]
        outputs = []
        h = z
        for layer in layers:
            h = layer(h)
            outputs.append(h)
        grad = torch.ones_like(h)                              # d phi / d (each layer's output), backwards
        for layer, out in zip(reversed(layers), reversed(outputs), strict=True):
            grad = grad * (1 - out * out) if isinstance(layer, nn.Tanh) else grad @ layer.weight
        # d phi / d xi_d = sum_k (d phi / d z_k) (d z_k / d xi_d)
        g = torch.stack([(grad * cache.trunk_jac[d][None]).sum(-1) for d in range(2)], dim=-1)
        return cache.xi[None] + g

    # ---- checkpoints -----------------------------------------------------------------------------------
    def save(self, path: str, **extra: object) -> None:
        """Self-describing checkpoint: the config rebuilds the network."""
        from ..checkpoints import save_checkpoint

        save_checkpoint(path, kind=self.kind, config=_jsonable(asdict(self.config)),
                        state={"net": self.net.state_dict()}, **extra)

    @classmethod
    def load(cls, path: str, device: str = "cpu", expect: dict | None = None) -> DMMMover:
        """Rebuild a mover from :meth:`save`'s checkpoint (a mismatched ``expect`` is a clear error)."""
        from ..checkpoints import load_checkpoint

        ckpt = load_checkpoint(path, kind=cls.kind, expect=expect, map_location=device)
        cfg = dict(ckpt["config"])
        for key in ("trunk", "decoder"):
            cfg[key] = tuple(cfg[key])
        mover = cls(DMMConfig(**cfg), device=device)
        mover.net.load_state_dict(ckpt["state"]["net"])
        return mover


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


__all__ = ["DMMConfig", "DMMMover", "DMMNet", "FamilyMember", "solution_family"]
