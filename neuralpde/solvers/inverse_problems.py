"""Two PDE inverse problems for plug-and-play priors, and the fields the priors learn from.

* :func:`heat_operator`: recover the initial temperature ``u0`` from a noisy, sparse ``u(T)``; ``A`` is the
  finite-element theta-scheme time stepper (P1, scikit-fem mass and stiffness matrices on the case mesh,
  zero Dirichlet values) followed by sampling at observed nodes, and ``A^T`` runs the transposed steps
  in reverse order. The Dirichlet condition fixes ``u0 = 0`` on the boundary ring: those values are known data,
  not unknowns, so :class:`HeatInverse` exposes the mask ``free`` of the unknown pixels (pass it to
  :func:`~neuralpde.solvers.pnp.pnp_admm`) and samples test fields that satisfy the condition.
* :func:`blur_operator`: Gaussian deblurring/denoising of a field on an ``n x n`` grid.

Fields: :func:`gaussian_random_field` and :func:`piecewise_constant_field` (a thresholded GRF, the
two-phase Darcy-like permeability), made by the package itself.

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> u0 = piecewise_constant_field(2, 16, gen)
    >>> tuple(u0.shape), sorted(u0.unique().tolist())
    ((2, 1, 16, 16), [0.0, 1.0])
    >>> op = blur_operator(16, sigma=1.0)
    >>> from neuralpde.solvers.pnp import check_adjoint
    >>> check_adjoint(op) < 1e-12
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import CaseError
from .method import Method, MethodConfig, MethodResult, RunContext, Strict, register
from .pnp import DTYPE, LinearOperator

__all__ = ["HeatInverse", "HeatStepper", "LPNMethod", "LPNMethodConfig", "blur_operator", "field_sampler",
           "gaussian_random_field", "heat_operator",
           "observation_image", "piecewise_constant_field"]


# ------------------------------------------------------------------------------------------------ fields
def gaussian_random_field(batch: int, n: int, generator: torch.Generator, length: float = 0.1,
                          smoothness: float = 2.0) -> torch.Tensor:
    """Periodic Gaussian random fields on the unit square, ``(batch, 1, n, n)``, each with mean 0 and std 1.

    The spectrum is Matern-like: amplitude ``(1 + (2 pi length |k|)^2)^(-smoothness)``.
    """
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    kk = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    amp = (1.0 + (2 * math.pi * length * kk) ** 2) ** (-smoothness)
    white = torch.randn(batch, n, n, generator=generator, dtype=torch.float64)
    g = torch.fft.ifft2(torch.fft.fft2(white) * amp).real
    g = (g - g.mean(dim=(1, 2), keepdim=True)) / g.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return g[:, None].to(torch.float32)


def piecewise_constant_field(batch: int, n: int, generator: torch.Generator, length: float = 0.1,
                             low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Two-phase fields ``low``/``high``: a GRF thresholded at 0 (the Darcy permeability of FNO's benchmark)."""
    g = gaussian_random_field(batch, n, generator, length)
    return torch.where(g > 0, torch.tensor(high), torch.tensor(low))


def field_sampler(kind: str, n: int, length: float = 0.1, free: torch.Tensor | None = None):
    """``sample(batch, generator) -> (batch, 1, n, n)`` for ``kind`` ``grf`` (mapped to ``0.5 + 0.2 g``) or
    ``piecewise``.

    Args:
        kind: ``grf`` or ``piecewise``.
        n: grid size.
        length: correlation length of the underlying GRF.
        free: optional mask of ``n * n`` pixels (row-major); the fields are 0 elsewhere (e.g. on a Dirichlet
            boundary ring with value 0, see :meth:`HeatInverse.field_sampler`). The random stream is the same.
    """
    if kind == "grf":
        def sample(batch, gen):
            return 0.5 + 0.2 * gaussian_random_field(batch, n, gen, length)
    elif kind == "piecewise":
        def sample(batch, gen):
            return piecewise_constant_field(batch, n, gen, length)
    else:
        raise CaseError(f"unknown field kind {kind!r}", field="method.data.field", fix="use grf or piecewise")
    if free is None:
        return sample
    mask = torch.as_tensor(free).reshape(1, 1, n, n).to(torch.float32)
    return lambda batch, gen: sample(batch, gen) * mask


# --------------------------------------------------------------------------------------- deblurring
def blur_operator(n: int, sigma: float) -> LinearOperator:
    """Gaussian blur of width ``sigma`` pixels on ``n x n`` images (zero padding, so ``A`` is symmetric).

    The kernel has ``max(5, int(3 sigma))`` taps (made odd), as in the paper's deblurring experiments.
    """
    if sigma <= 0:
        raise CaseError(f"the blur width must be positive, got {sigma}", field="method.inverse.blur",
                        fix="e.g. blur: 1.0 (pixels)")
    size = max(5, int(3 * sigma))
    size += 1 - size % 2
    t = torch.arange(size, dtype=DTYPE) - size // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.to(DTYPE).reshape(1, 1, n, n), kernel, padding=size // 2).reshape(-1)

    return LinearOperator(blur, blur, (n * n, n * n))


# ----------------------------------------------------------------------------------- heat equation
class HeatStepper:
    """The P1 theta scheme ``(M + theta dt K) u_{k+1} = (M - (1 - theta) dt K) u_k`` with ``u = 0`` on the
    boundary (also in ``u0``, as the reference imposes it), on an ``n x n``-node rectangle mesh.

    Args:
        mesh: a structured rectangle mesh (its vertices form an ``n x n`` grid).
        k: diffusion coefficient (an expression with ``.numpy(coords)``, or a number).
        t_end: final time.
        steps: number of time steps.
        theta: 1 backward Euler, 0.5 Crank-Nicolson.
    """

    def __init__(self, mesh: Any, k: Any, t_end: float, steps: int, theta: float = 1.0):
        import scipy.sparse.linalg as spla
        import skfem
        from skfem.helpers import dot, grad
        from skfem.models.poisson import mass

        from ..meshes.convert import to_skfem

        if steps < 1 or t_end <= 0 or not 0 <= theta <= 1:
            raise CaseError(f"need steps >= 1, t_end > 0 and theta in [0, 1], got {steps}, {t_end}, {theta}",
                            field="method.inverse", fix="e.g. steps: 10, theta: 1")
        skmesh = to_skfem(mesh)
        basis = skfem.Basis(skmesh, skfem.ElementTriP1())
        k_values = np.broadcast_to(np.asarray(k.numpy(basis.doflocs) if hasattr(k, "numpy") else k, dtype=float),
                                   (basis.N,))

        @skfem.BilinearForm
        def stiffness(u, v, w):
            return w.k * dot(grad(u), grad(v))

        K = stiffness.assemble(basis, k=basis.interpolate(np.array(k_values)))
        M = mass.assemble(basis)
        dt = t_end / steps
        self.free = basis.complement_dofs(basis.get_dofs())
        lhs = (M + theta * dt * K).tocsc()
        explicit = (M - (1 - theta) * dt * K).tocsr()
        self.lu = spla.splu(lhs[self.free][:, self.free].tocsc())
        self.step_ff = explicit[self.free][:, self.free].tocsr()
        self.step_ff_t = self.step_ff.T.tocsr()
        self.steps, self.num_dofs = steps, basis.N
        self.points = mesh.points[:, :2]
        self.n, self.grid_to_dof = _grid_order(self.points)

    def forward_dofs(self, u0: np.ndarray) -> np.ndarray:
        """``u(T)`` at all dofs (zero on the boundary) from ``u0`` at all dofs."""
        # the boundary values of u0 are replaced by the Dirichlet value 0, as the reference does
        x = np.asarray(u0, dtype=float)[self.free]
        for _ in range(self.steps):
            x = self.lu.solve(self.step_ff @ x)
        out = np.zeros(self.num_dofs)
        out[self.free] = x
        return out

    def adjoint_dofs(self, w: np.ndarray) -> np.ndarray:
        """The transpose of :meth:`forward_dofs`: the transposed steps in reverse order."""
        s = np.asarray(w, dtype=float)[self.free]
        for _ in range(self.steps):
            s = self.step_ff_t @ self.lu.solve(s, trans="T")
        out = np.zeros(self.num_dofs)
        out[self.free] = s
        return out

    def to_grid(self, dofs: np.ndarray) -> np.ndarray:
        """Dof values -> row-major ``(n, n)`` image (row = y index, column = x index)."""
        return np.asarray(dofs)[self.grid_to_dof].reshape(self.n, self.n)

    def to_dofs(self, grid: np.ndarray) -> np.ndarray:
        out = np.empty(self.num_dofs)
        out[self.grid_to_dof] = np.asarray(grid, dtype=float).reshape(-1)
        return out


def _grid_order(points: np.ndarray) -> tuple[int, np.ndarray]:
    n = int(round(math.sqrt(len(points))))
    if n * n != len(points):
        raise CaseError(f"the heat inverse problem needs an n x n grid of vertices, got {len(points)} vertices",
                        field="domain", fix="use a rectangle domain (the method meshes it with method.data.grid)")
    lo, hi = points.min(axis=0), points.max(axis=0)
    idx = np.rint((points - lo) / (hi - lo) * (n - 1)).astype(int)
    order = np.full(n * n, -1)
    order[idx[:, 1] * n + idx[:, 0]] = np.arange(len(points))
    if (order < 0).any():
        raise CaseError("the mesh vertices do not form a tensor grid", field="domain",
                        fix="use a rectangle domain")
    return n, order


@dataclass
class HeatInverse:
    """``A``: grid image of ``u0`` -> ``u(T)`` at the observed nodes; ``observed`` are dof indices; ``free``: the
    pixels of ``u0`` that are unknown (row-major bool, ``n * n``), False on the boundary ring, where the Dirichlet
    condition gives ``u0 = 0`` (``A`` does not depend on those pixels)."""

    operator: LinearOperator
    stepper: HeatStepper
    observed: np.ndarray
    free: torch.Tensor

    def field_sampler(self, kind: str, length: float = 0.1):
        """Fields ``(batch, 1, n, n)`` that satisfy the boundary condition: :func:`field_sampler`'s, set to 0 on the
        boundary ring."""
        return field_sampler(kind, self.stepper.n, length, free=self.free)


def heat_operator(mesh: Any, k: Any, t_end: float, steps: int, observe: float, seed: int = 0,
                  theta: float = 1.0) -> HeatInverse:
    """The heat inverse problem's forward operator on ``mesh``, observing a random ``observe`` fraction of the
    interior nodes (seeded)."""
    if not 0 < observe <= 1:
        raise CaseError(f"observe must be in (0, 1], got {observe}", field="method.inverse.observe",
                        fix="e.g. observe: 0.3 (30% of the interior nodes)")
    stepper = HeatStepper(mesh, k, t_end, steps, theta)
    rng = np.random.default_rng(seed)
    count = max(1, int(round(observe * len(stepper.free))))
    observed = np.sort(rng.choice(stepper.free, size=count, replace=False))

    def forward(x: torch.Tensor) -> torch.Tensor:
        u_t = stepper.forward_dofs(stepper.to_dofs(x.detach().cpu().numpy()))
        return torch.from_numpy(u_t[observed].copy())

    def adjoint(y: torch.Tensor) -> torch.Tensor:
        w = np.zeros(stepper.num_dofs)
        w[observed] = y.detach().cpu().numpy()
        return torch.from_numpy(stepper.to_grid(stepper.adjoint_dofs(w)).reshape(-1).copy())

    n = stepper.n
    free_dofs = np.zeros(stepper.num_dofs, dtype=bool)
    free_dofs[stepper.free] = True
    free = torch.from_numpy(stepper.to_grid(free_dofs).reshape(-1).copy())
    return HeatInverse(LinearOperator(forward, adjoint, (count, n * n)), stepper, observed, free)


def observation_image(inverse: HeatInverse, y: np.ndarray) -> np.ndarray:
    """The sparse observation as a grid image (NaN where nothing is observed)."""
    dofs = np.full(inverse.stepper.num_dofs, np.nan)
    dofs[inverse.observed] = np.asarray(y)
    return inverse.stepper.to_grid(dofs)


# ------------------------------------------------------------------------------ the `lpn` case method
class NetworkConfig(Strict):
    """The ICNN: ``hidden`` width/channels, ``layers`` (dense, 1D toy) or ``strides`` (conv), softplus ``beta``,
    ``alpha`` (default 0 for the 1D toy as in the paper, 0.01 for fields), and for fields ``position_bias``: a
    learned bias per position in every layer (still convex), for truths that are not translation invariant, such
    as the heat problem's (0 on the Dirichlet ring)."""

    hidden: int = Field(32, ge=1)
    layers: int = Field(4, ge=1)
    strides: list[int] = [2, 1, 2]
    beta: float = Field(10.0, gt=0)
    alpha: float | None = Field(None, ge=0)
    position_bias: bool = False


class TrainConfig(Strict):
    """Denoiser training on ``y = x + sigma n``; ``steps`` for L1 (and L2) training, ``pm_steps`` for proximal
    matching (toy) — for fields ``steps`` is the whole paper schedule: ``l1_fraction`` of it L1 (the paper: half),
    the rest proximal matching; 1 trains by L1 only (the posterior-median denoiser, still an exact prox: on the
    heat benchmark a checkpoint inside the L1 stage made the better PnP prior, docs/lpn.md).
    ``checkpoint``: a trained network to load instead of training.
    ``toy_loss`` (the 1D toy): ``expected``, each noisy sample's loss averaged over the clean value given it (by
    quadrature; the same objective as ``sampled``, one clean value per noisy one, with far less gradient noise)."""

    steps: int = Field(2000, ge=0)
    pm_steps: int = Field(900, ge=0)
    batch: int = Field(32, ge=1)
    pm_batch: int | None = Field(None, ge=1)
    sigma: float = Field(0.1, gt=0)
    lr: float = Field(1e-3, gt=0)
    gamma_min: float | None = Field(None, gt=0)
    l1_fraction: float = Field(0.5, ge=0, le=1)
    checkpoint: str | None = None
    toy_loss: Literal["expected", "sampled"] = "expected"


class DataConfig(Strict):
    """Training/test fields: ``piecewise`` (two-phase) or ``grf`` on a ``grid x grid`` image."""

    field: Literal["piecewise", "grf"] = "piecewise"
    grid: int = Field(32, ge=8)
    length: float = Field(0.1, gt=0)


class InverseConfig(Strict):
    """Observation noise (std), for heat: observed fraction of interior nodes, time ``steps`` and ``theta``;
    for deblurring: ``blur`` width in pixels."""

    noise: float = Field(0.01, ge=0)
    observe: float = Field(0.3, gt=0, le=1)
    steps: int = Field(10, ge=1)
    theta: float = Field(1.0, ge=0, le=1)
    blur: float = Field(1.5, gt=0)


class PnPConfig(Strict):
    """``scale`` multiplies the data term; ``auto`` = ``rho sigma_train^2 / noise^2`` (the MAP weighting).

    ``start``: where the learned prior starts, ``tv``/``tikhonov`` (that baseline's reconstruction; the learned
    R is not convex, so the fixed point depends on the start) or ``adjoint`` (``A^T y``). The convex baselines
    run from ``A^T y`` with their own ``baseline_rho`` and ``baseline_iters`` (their minimiser does not depend on
    rho, only the speed does).

    ``symmetry``: ``d4`` makes PnP use the trained network's ``psi`` averaged over the square's rotations and
    reflections (:class:`~neuralpde.operators.lpn.LPNConv`; still an exact prox, of the symmetrised prior), for
    fields whose distribution is isotropic; ``none`` uses the network as trained.
    """

    algorithm: Literal["admm", "pgd"] = "admm"
    rho: float = Field(0.1, gt=0)
    scale: float | Literal["auto"] = "auto"
    step: float = Field(1.0, gt=0)
    iters: int = Field(30, ge=1)
    cg_iter: int = Field(30, ge=1)
    start: Literal["tv", "tikhonov", "adjoint"] = "tv"
    baseline_rho: float = Field(10.0, gt=0)
    baseline_iters: int = Field(50, ge=1)
    symmetry: Literal["none", "d4"] = "none"


class BaselineConfig(Strict):
    """Regularisation weights of the baselines (``null`` skips one): Tikhonov on the gradient, and TV."""

    tikhonov: float | None = Field(1e-3, gt=0)
    tv: float | None = Field(1e-3, gt=0)


class LPNMethodConfig(MethodConfig):
    type: Literal["lpn"] = "lpn"
    task: Literal["laplace1d", "heat_inverse", "deblur"] = "heat_inverse"
    network: NetworkConfig = NetworkConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    inverse: InverseConfig = InverseConfig()
    pnp: PnPConfig = PnPConfig()
    baselines: BaselineConfig = BaselineConfig()


@register
class LPNMethod(Method):
    """Learned proximal networks: the 1D Laplacian toy, or PnP-ADMM/PGD on the heat/deblurring inverse problems."""

    name = "lpn"
    config_model = LPNMethodConfig
    needs_problem = False
    plot_names = ("reconstructions", "prior", "convergence", "toy")

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        cfg = self.config
        if cfg.task == "laplace1d":
            from .lpn_training import run_laplace1d

            return run_laplace1d(cfg, ctx)
        if cfg.task == "heat_inverse" and problem is None:
            raise CaseError("task heat_inverse needs the heat equation", field="pde",
                            fix="add `pde: {type: heat, ...}` and a rectangle domain (see cases/lpn_heat_inverse.yaml)")
        return run_inverse(cfg, problem, ctx)


def field_lpn(cfg: LPNMethodConfig, ctx: RunContext, convex: bool = True, free: torch.Tensor | None = None) -> Any:
    """The conv LPN for the case's fields: loaded from ``train.checkpoint`` (checked against the grid) or
    trained with the paper's schedule (resumable from ``ctx.checkpoint_dir``) on the distribution of the truths:
    the case's fields, set to 0 off ``free`` (heat: the Dirichlet ring) when given."""
    from ..operators.lpn import LPNConv
    from .lpn_training import field_schedule, load_lpn, train_lpn

    n = cfg.data.grid
    if cfg.train.checkpoint:
        return load_lpn(cfg.train.checkpoint, expect={"size": [n, n], "convex": convex})
    net = LPNConv(hidden=cfg.network.hidden, strides=cfg.network.strides, beta=cfg.network.beta,
                  alpha=0.01 if cfg.network.alpha is None else cfg.network.alpha, size=[n, n], convex=convex,
                  position_bias=cfg.network.position_bias)
    folder = None if ctx.checkpoint_dir is None else ctx.checkpoint_dir / ("lpn" if convex else "unconstrained")
    train_lpn(net, field_sampler(cfg.data.field, n, cfg.data.length, free=free), sigma=cfg.train.sigma,
              batch=cfg.train.batch, stages=field_schedule(cfg.train, n * n), seed=ctx.seed, progress=ctx.progress,
              checkpoint_dir=folder, checkpoint_every=max(1, cfg.train.steps // 4), device="cpu",
              description="LPN training" if convex else "unconstrained net training")
    return net


BASELINES = ("tikhonov", "tv")


def solve_all(cfg: LPNMethodConfig, op: LinearOperator, y: torch.Tensor, priors: dict[str, Any],
              truth: torch.Tensor | None = None, free: torch.Tensor | None = None) -> dict[str, Any]:
    """PnP reconstructions of ``y`` with every prior in ``priors`` (name -> (prox, data scale)): the baselines
    first, by ADMM from ``A^T y`` with ``baseline_rho``/``baseline_iters``; then the learned priors with the
    configured algorithm, from ``pnp.start``. ``free``: the mask of unknown pixels (heat: all but the Dirichlet
    ring); every method keeps the others at 0."""
    from .pnp import pnp_admm, pnp_pgd

    p = cfg.pnp
    out = {}
    for name in sorted(priors, key=lambda k: k not in BASELINES):
        prox, scale = priors[name]
        if name in BASELINES:
            out[name] = pnp_admm(op, y, prox, rho=p.baseline_rho, scale=scale, iters=p.baseline_iters,
                                 cg_iter=p.cg_iter, truth=truth, free=free)
            continue
        x0 = None
        if p.start != "adjoint":
            if p.start not in out:
                raise CaseError(f"the learned prior starts from the {p.start} reconstruction, but that baseline is "
                                "switched off", field="method.pnp.start",
                                fix=f"set method.baselines.{p.start} to a weight, or start: adjoint")
            x0 = out[p.start].x
        if p.algorithm == "admm":
            out[name] = pnp_admm(op, y, prox, rho=p.rho, scale=scale, iters=p.iters, cg_iter=p.cg_iter, truth=truth,
                                 x0=x0, free=free)
        else:
            out[name] = pnp_pgd(op, y, prox, step=p.step, scale=scale, iters=p.iters, truth=truth, x0=x0, free=free)
    return out


def make_priors(cfg: LPNMethodConfig, nets: dict[str, Any], n: int) -> dict[str, Any]:
    """name -> (prox, data scale): the LPN(s) with the MAP weighting, the baselines with scale 1."""
    from .pnp import LPNProx, Tikhonov, TotalVariation

    p, noise = cfg.pnp, max(cfg.inverse.noise, 1e-6)
    lpn_scale = p.rho * cfg.train.sigma**2 / noise**2 if p.scale == "auto" else float(p.scale)
    if p.symmetry != "none":
        for net in nets.values():
            net.symmetry = p.symmetry
    priors = {name: (LPNProx(net, (1, n, n)), lpn_scale) for name, net in nets.items()}
    base_scale = 1.0 / noise**2
    if cfg.baselines.tikhonov is not None:
        priors["tikhonov"] = (Tikhonov(cfg.baselines.tikhonov * base_scale, (n, n)), base_scale)
    if cfg.baselines.tv is not None:
        priors["tv"] = (TotalVariation(cfg.baselines.tv * base_scale, (n, n)), base_scale)
    return priors


def build_inverse(cfg: LPNMethodConfig, problem: Any, seed: int) -> tuple[LinearOperator, HeatInverse | None]:
    """The task's forward operator (and, for heat, the stepper/observation data)."""
    n = cfg.data.grid
    if cfg.task == "deblur":
        return blur_operator(n, cfg.inverse.blur), None
    if getattr(problem.domain, "dim", 0) != 2 or not hasattr(problem.domain, "cell_type") \
            or problem.domain.cell_type != "triangle":
        raise CaseError("the heat inverse problem runs on a rectangle of triangles", field="domain",
                        fix="use domain: {type: rectangle}")
    if not getattr(problem.pde, "time_dependent", False):
        raise CaseError("task heat_inverse needs the heat equation", field="pde.type", fix="use pde: {type: heat}")
    mesh = problem.domain.mesh(cells=[n - 1, n - 1])
    inverse = heat_operator(mesh, problem.pde.k, problem.pde.t_end, cfg.inverse.steps, cfg.inverse.observe,
                            seed=seed, theta=cfg.inverse.theta)
    return inverse.operator, inverse


def run_inverse(cfg: LPNMethodConfig, problem: Any, ctx: RunContext) -> MethodResult:
    """One test field: observe it, reconstruct with PnP-LPN and the baselines, report PSNR and rel. L2."""
    from ..viz import image_panels, line_plot
    from .fem.fields import FEField
    from .pnp import check_adjoint

    n = cfg.data.grid
    op, inverse = build_inverse(cfg, problem, ctx.seed)
    adjoint_mismatch = check_adjoint(op)
    # heat: the truth satisfies the Dirichlet condition (0 on the boundary ring), the prior is trained on such
    # fields, and every method keeps the ring at 0
    free = None if inverse is None else inverse.free
    net = field_lpn(cfg, ctx, free=free)
    gen = torch.Generator().manual_seed(ctx.seed + 10_007)       # test fields apart from the training stream
    sample = field_sampler(cfg.data.field, n, cfg.data.length, free=free)
    truth = sample(1, gen).to(DTYPE).reshape(-1)
    clean = op(truth)
    y = clean + cfg.inverse.noise * torch.randn(clean.shape, generator=gen, dtype=DTYPE)
    results = solve_all(cfg, op, y, make_priors(cfg, {"lpn": net}, n), truth=truth, free=free)
    from .pnp import psnr, rel_l2

    metrics: dict[str, Any] = {"task": cfg.task, "adjoint_mismatch": adjoint_mismatch, "grid": n,
                               "observations": int(y.numel())}
    for name, r in results.items():
        metrics[name] = {"psnr": psnr(r.x, truth), "rel_l2": rel_l2(r.x, truth), "iterations": len(r.history["change"]),
                         "final_change": r.history["change"][-1]}
        if free is not None:        # the PSNR over the unknown pixels; the ring is the known value 0
            metrics[name]["psnr_interior"] = psnr(r.x[free], truth[free], data_range=1.0)
            metrics[name]["ring_max_abs"] = float(r.x[~free].abs().max())
    metrics["backprojection"] = {"psnr": psnr(op.adjoint(y), truth), "rel_l2": rel_l2(op.adjoint(y), truth)}
    files = []
    out = ctx.out_dir
    images = {"truth": truth.reshape(n, n).numpy()}
    if inverse is not None:
        images["observation u(T)"] = observation_image(inverse, y.numpy())
    else:
        images["observation"] = y.reshape(n, n).numpy()
    images.update({name: r.x.reshape(n, n).numpy() for name, r in results.items()})
    if out is not None and ctx.rank == 0:
        if "reconstructions" in ctx.plots:
            files.append(image_panels(images, out / "reconstructions.png", title=f"{cfg.task}: truth, data, PnP",
                                      extent=(0, 1, 0, 1)))
        if "convergence" in ctx.plots:
            files.append(line_plot({k: (range(1, len(r.history["change"]) + 1), r.history["change"])
                                    for k, r in results.items()}, out / "convergence.png", xlabel="iteration",
                                   ylabel="||z_k - z_{k-1}|| / ||z_k||", logy=True, title=f"PnP-{cfg.pnp.algorithm}"))
        if "prior" in ctx.plots:
            s, values = prior_along_line(net, truth.reshape(1, 1, n, n), cfg.train.sigma, ctx.seed)
            files.append(line_plot({"R(truth + s d)": (s, values)}, out / "prior.png",
                                   xlabel="s (d: noise of the training level)", ylabel="R - min R",
                                   title="learned prior along a line through a test field"))
    field, extra = None, {}
    if inverse is not None:
        # the method's field is the FEM stepper applied to the case's initial condition: the runner's
        # vs_reference then checks that A is the reference's time stepper; reconstructions go alongside
        mesh = problem.domain.mesh(cells=[n - 1, n - 1])
        base = FEField(mesh, 1, np.zeros(mesh.num_points))
        u0 = np.asarray(problem.pde.initial.numpy(mesh.points[:, :2].T), dtype=float)
        u0 = np.broadcast_to(u0, (mesh.num_points,)).copy()
        field = base.with_values(inverse.stepper.forward_dofs(u0), name="u(T) of pde.initial")
        extra = {"truth_u0": base.with_values(inverse.stepper.to_dofs(truth.numpy()))}
        extra.update({f"{k}_u0": base.with_values(inverse.stepper.to_dofs(r.x.numpy())) for k, r in results.items()})
    return MethodResult(field=field, metrics=metrics, extra_fields=extra, files=files)


def prior_along_line(net: Any, x: torch.Tensor, sigma: float, seed: int, points: int = 13) -> tuple[list, list]:
    """``R(x + s d) - min`` for ``s`` in [-3, 3], ``d`` a noise image of std ``sigma``."""
    gen = torch.Generator().manual_seed(seed + 7)
    d = sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    s = torch.linspace(-3, 3, points, dtype=x.dtype)
    batch = (x + s[:, None, None, None] * d).to(next(net.parameters()).dtype)
    r = net.prior(batch, max_iter=200, tol=1e-4).double()
    return s.tolist(), (r - r.min()).tolist()
