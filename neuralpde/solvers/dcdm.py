"""The DCDM iteration (Kaneda et al. 2023), as the official ``dcdm()`` loop.

From ``x0 = 0``: the direction ``q = f(r / ||r||)`` (unit residual in, any scale out) is made
A-orthogonal to the last ``k`` directions, an exact line search gives ``x += alpha q``, and the
**true** residual ``r = b - A x`` decides when to stop. With ``f`` the identity it is CG; with a
fixed SPD preconditioner it is PCG; with ``A^{-1}`` it takes one step::

    >>> import scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(40, 40), format="csr")
    >>> b = np.linspace(0, 1, 40)
    >>> dcdm(A, b, lambda r: r, rtol=1e-8).iterations == pcg(A, b, rtol=1e-8).iterations
    True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt

from ..config import Strict
from ..errors import CaseError, MeshError, SolverError
from ..runtime import seed_everything
from .fem.base import FEMSolution, get_backend
from .fem.fields import FEField
from .krylov import LinearSolveReport, check_system, not_spd, pcg, solve, start  # noqa: F401 (pcg: doctest)
from .method import Method, MethodConfig, MethodResult, RunContext, register

Direction = Callable[[np.ndarray], np.ndarray]


#: |cos(q, r)| below this means the direction cannot reduce the error (see ``fallback`` in :func:`dcdm`)
STALL_COSINE = 1e-5


def dcdm(A, b: np.ndarray, direction: Direction, *, rtol: float = 1e-6, atol: float = 0.0, max_it: int = 100,
         k: int = 2, fallback: bool = True, method: str = "dcdm", setup_s: float = 0.0) -> LinearSolveReport:
    """Solve the SPD system ``A x = b`` with search directions from ``direction``.

    Args:
        A: SPD matrix (scipy sparse or dense); b: right-hand side.
        direction: ``r_unit -> q`` (a trained network, a preconditioner, the identity).
        rtol, atol: stop when the true residual ``||b - A x|| <= max(rtol * ||b||, atol)``.
        max_it: iteration limit (100 in the official test driver).
        k: directions kept for the A-orthogonalisation (2 in the paper).
        fallback: not in the paper. A network is a fixed map of ``r``: when its (orthogonalised) direction is
            orthogonal to ``r`` (``|cos| < STALL_COSINE``) the step changes nothing and the loop would repeat
            it forever; then the step uses ``r`` (a CG-like direction) instead. The count is
            ``info["fallback_steps"]``; it stays 0 for any SPD preconditioner and for a useful network.
        method, setup_s: the name and setup time recorded in the report.

    Returns:
        A :class:`~neuralpde.solvers.krylov.LinearSolveReport`; ``info["direction_s"]`` holds the
        seconds spent in ``direction`` (the network's cost).

    Raises:
        SolverError: a non-square/non-SPD matrix, a direction with NaN/Inf or the wrong shape, or a
            direction that is zero after the A-orthogonalisation.
    """
    A = check_system(A, b)
    if k < 1:
        raise SolverError(f"k must be >= 1, got {k}", field="method.k", fix="use 2 as in the paper")
    t0 = time.perf_counter()
    b, x, r, norms, target = start(b, rtol, atol)
    kept: list[tuple[np.ndarray, np.ndarray, float]] = []   # (p, A p, p^T A p) of the last k directions
    direction_s = 0.0
    it = fallbacks = 0
    while norms[-1] > target and it < max_it:
        t1 = time.perf_counter()
        q = np.array(direction(r / norms[-1]), dtype=float).reshape(-1)
        direction_s += time.perf_counter() - t1
        if q.shape != b.shape:
            raise SolverError(f"the direction has {q.size} entries, the system {b.size}", field="method.network",
                              fix="use a network trained for this grid")
        if not np.all(np.isfinite(q)):
            raise SolverError(f"the network returned NaN or Inf at iteration {it}", field="method.checkpoint",
                              fix="retrain (lower method.train.lr) or load another checkpoint")
        q = _orthogonalise(q, kept)
        if fallback and abs(q @ r) <= STALL_COSINE * np.linalg.norm(q) * norms[-1]:
            q = _orthogonalise(r.copy(), kept)
            fallbacks += 1
        Aq = A @ q
        qAq = float(q @ Aq)
        if qAq <= 0:
            if np.linalg.norm(q) == 0:
                raise SolverError(f"the direction is zero (after A-orthogonalisation) at iteration {it}",
                                  field="method.checkpoint", fix="retrain the network or load another checkpoint")
            raise not_spd(qAq, it)
        x += float(q @ r) / qAq * q
        r = b - A @ x
        kept = (kept + [(q, Aq, qAq)])[-k:]
        it += 1
        norms.append(float(np.linalg.norm(r)))
    return LinearSolveReport(method, x, it, norms[-1] <= target, norms, time.perf_counter() - t0, setup_s,
                             info={"direction_s": direction_s, "fallback_steps": fallbacks,
                                   "direction_s_per_iteration": direction_s / max(it, 1)})


def _orthogonalise(q: np.ndarray, kept: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """``q`` made A-orthogonal to the kept directions, one after the other."""
    for p, Ap, pAp in kept:
        q -= (q @ Ap) / pAp * p
    return q


# ---------------------------------------------------------------------------------------------------
# The method ``type: dcdm`` and the FEM reference coupling (``reference.solver.type: dcdm``)

class NetworkConfig(Strict):
    """The CNN: 16 filters and (2, 3, 2) residual blocks as the paper's 64^3 model."""

    filters: int = Field(16, ge=1, le=256)
    blocks: tuple[int, int, int] = (2, 3, 2)


class DataConfig(Strict):
    """Ritz vectors: ``ritz_steps`` Lanczos steps (the paper's m; 10000 there) on the assembled matrix."""

    ritz_steps: int = Field(600, ge=2)


class TrainConfig(Strict):
    """Adam with a cosine from ``lr`` to ``lr_final``; a checkpoint every ``checkpoint_every`` steps."""

    steps: int = Field(2000, ge=0)
    batch: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_final: float | None = Field(5e-5, gt=0)
    checkpoint_every: int = Field(100, ge=0)


class SolveConfig(Strict):
    """Stopping and the baselines run on the same system."""

    rtol: float = Field(1e-6, gt=0, lt=1)
    atol: float = Field(0.0, ge=0)
    max_it: int = Field(300, ge=1)
    k: int = Field(2, ge=1)
    #: 1: the paper's direction ``f(r)``; ``auto`` or N: the same network on N coarser lattices as well,
    #: combined by a Galerkin solve (:mod:`neuralpde.solvers.dcdm_levels`; size-independent counts)
    levels: Literal["auto"] | PositiveInt = 1
    baselines: list[Literal["cg", "jacobi", "ic0", "amg"]] = ["cg", "jacobi", "ic0", "amg"]


class DCDMConfig(MethodConfig):
    """``type: dcdm``: train (or load) the network on the case's P1 system and solve it with DCDM."""

    type: Literal["dcdm"] = "dcdm"
    backend: Literal["auto", "dolfinx", "skfem"] = "auto"
    cells: int | list[int] | None = None
    #: train on this coarser grid of the same domain, then solve on ``cells`` (the net is fully convolutional;
    #: with ``solve.levels: auto`` the counts stay flat, see docs/dcdm.md); default: train on ``cells``
    train_cells: int | list[int] | None = None
    network: NetworkConfig = NetworkConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    solve: SolveConfig = SolveConfig()
    #: a trained checkpoint: skip training and use it
    checkpoint: str | None = None
    #: accept a checkpoint trained on another grid of the same dimension (the net is fully convolutional)
    transfer: bool = False


def grid_of(mesh: Any, free: np.ndarray, degree: int, field: str) -> Any:
    """:meth:`~neuralpde.operators.dcdm_net.GridMap.from_mesh` with the case-file field named in the error."""
    from ..operators.dcdm_net import GridMap

    try:
        return GridMap.from_mesh(mesh, free, degree)
    except MeshError as exc:
        raise exc.located(field=field) from None


def network_for(path: str | Path, grid: Any, *, transfer: bool, device: str, field: str) -> Any:
    """Load a checkpoint for ``grid`` (same dimension always; same lattice unless ``transfer``)."""
    from .dcdm_train import load_network

    try:
        return load_network(path, dim=grid.dim, grid=None if transfer else grid.shape, device=device)
    except SolverError as exc:
        raise exc.located(field=field) from None


def direction_for(net: Any, grid: Any, A: Any, levels: int | str, device: str) -> Direction:
    """The network's direction on ``grid``: the paper's (``levels=1``) or the multilevel one."""
    from .dcdm_levels import MultilevelDirection
    from .dcdm_train import NetworkDirection

    if levels == 1:
        return NetworkDirection(net, grid, device)
    return MultilevelDirection(net, grid, A, levels, device=device)


def reference_solve(backend: Any, problem: Any, mesh: Any, degree: int, options: Any) -> FEMSolution:
    """The FEM reference's stationary solve with DCDM (``reference.solver: {type: dcdm, checkpoint: ...}``).

    Raises:
        CaseError: a transient problem or no checkpoint; MeshError: a mesh that is not a P1 grid;
        SolverError: a checkpoint of another dimension, or DCDM not converging within ``max_it``.
    """
    if problem.time_dependent:
        raise CaseError("the DCDM linear solver handles stationary problems", field="reference.solver.type",
                        fix="use cg or lu for time-dependent cases")
    if not getattr(options, "checkpoint", None):
        raise CaseError("reference.solver.type: dcdm needs a trained network", field="reference.solver.checkpoint",
                        fix="set checkpoint: path/to/dcdm.pt (written by a `type: dcdm` run or benchmarks/dcdm.py)")
    t0 = time.perf_counter()
    A, b, free, x = backend.linear_system(problem, mesh, degree)
    grid = grid_of(mesh, free, degree, "reference.solver.type")
    t1 = time.perf_counter()
    net, _ = network_for(options.checkpoint, grid, transfer=True, device="cpu", field="reference.solver.checkpoint")
    rep = dcdm(A, b, direction_for(net, grid, A, options.levels, "cpu"), rtol=options.rtol,
               atol=options.atol, max_it=options.max_it)
    if not rep.converged:
        raise SolverError(f"DCDM did not converge in {options.max_it} iterations (relative residual "
                          f"{rep.relative_residual:.2e})", field="reference.solver",
                          fix="raise max_it, loosen rtol, or use solver type: cg")
    x[free] = rep.x
    t2 = time.perf_counter()
    return FEMSolution(field=FEField(mesh, degree, x), backend=backend.name, num_dofs=len(x),
                       timings={"mesh": 0.0, "assemble": t1 - t0, "solve": t2 - t1, "total": t2 - t0},
                       iterations=rep.iterations, linear_solver="dcdm")


@register
class DCDMMethod(Method):
    """Deep conjugate direction method on the case's P1 system, against CG/Jacobi/IC(0)/AMG-PCG."""

    name = "dcdm"
    config_model = DCDMConfig
    plot_names = ("residuals", "training")

    def run(self, problem: Any, reference: FEMSolution | None, ctx: RunContext) -> MethodResult:
        from ..operators.dcdm_net import DCDMNet

        cfg: DCDMConfig = self.config
        seed_everything(ctx.seed)
        if problem.time_dependent:
            raise CaseError("DCDM solves stationary problems", field="pde.type", fix="use type: poisson")
        mesh = problem.domain.mesh(cells=cfg.cells)
        A, b, free, x = get_backend(cfg.backend).linear_system(problem, mesh, 1)
        grid = grid_of(mesh, free, 1, "domain")
        metrics: dict[str, Any] = {"grid": list(grid.shape), "num_free_dofs": int(len(free))}
        files: list[Path] = []
        t0 = time.perf_counter()
        if cfg.checkpoint:
            net, _ = network_for(cfg.checkpoint, grid, transfer=cfg.transfer, device=ctx.device,
                                 field="method.checkpoint")
            history: dict[str, Any] = {"loss": []}
        else:
            net = DCDMNet(dim=grid.dim, filters=cfg.network.filters, blocks=cfg.network.blocks)
            A_train, grid_train = A, grid
            if cfg.train_cells is not None:
                mesh_t = problem.domain.mesh(cells=cfg.train_cells)
                A_train, _, free_t, _ = get_backend(cfg.backend).linear_system(problem, mesh_t, 1)
                grid_train = grid_of(mesh_t, free_t, 1, "method.train_cells")
                metrics["train_grid"] = list(grid_train.shape)
            history = self._train(net, A_train, grid_train, ctx, metrics)
            if ctx.checkpoint_dir is not None:
                files.append(ctx.checkpoint_dir / "dcdm.pt")
        metrics["parameters"] = net.num_parameters()
        metrics["train_s"] = time.perf_counter() - t0
        s = cfg.solve
        reports = [dcdm(A, b, direction_for(net, grid, A, s.levels, ctx.device), rtol=s.rtol, atol=s.atol,
                        max_it=s.max_it, k=s.k, method="dcdm" if s.levels == 1 else "dcdm-ml")]
        if s.levels != 1:        # the paper's single-level direction of the same network, for comparison
            reports.append(dcdm(A, b, direction_for(net, grid, A, 1, ctx.device), rtol=s.rtol, atol=s.atol,
                                max_it=s.max_it, k=s.k))
        reports += [solve(A, b, m, rtol=s.rtol, atol=s.atol, max_it=max(20 * s.max_it, 2000)) for m in s.baselines]
        metrics["solvers"] = {rep.method: rep.summary() for rep in reports}
        if not reports[0].converged:    # still a result (the metrics say so), but never a quiet one
            logging.getLogger(__name__).warning(
                "DCDM did not reach rtol %.1e in %d iterations (relative residual %.2e): train longer "
                "(method.train.steps) or raise method.solve.max_it", s.rtol, s.max_it, reports[0].relative_residual)
        cg = metrics["solvers"].get("cg")
        if cg and cg["iterations"]:
            metrics["iterations_vs_cg"] = reports[0].iterations / cg["iterations"]
        files += self._plots(reports, history, ctx)
        x[free] = reports[0].x
        return MethodResult(field=FEField(mesh, 1, x), metrics=metrics, files=files)

    def _train(self, net: Any, A: Any, grid: Any, ctx: RunContext, metrics: dict) -> dict:
        from .dcdm_train import train
        from .ritz import RitzBasis, matrix_fingerprint

        cfg: DCDMConfig = self.config
        fingerprint = matrix_fingerprint(A)
        ritz_file = None if ctx.out_dir is None else ctx.out_dir / "dcdm_ritz.h5"
        ritz = None
        if ritz_file is not None and ritz_file.is_file():
            try:
                ritz = RitzBasis.load(ritz_file, fingerprint)
            except SolverError:     # made for another matrix (the case changed): rebuild it
                ritz = None
        if ritz is None:
            ritz = RitzBasis.from_matrix(A, steps=cfg.data.ritz_steps, seed=ctx.seed)
            if ritz_file is not None:
                ritz.save(ritz_file, grid=list(grid.shape))
        metrics["ritz_vectors"] = len(ritz.values)
        t = cfg.train
        ckpt = None if ctx.checkpoint_dir is None else ctx.checkpoint_dir / "dcdm.pt"
        history = train(net, A, grid, ritz, steps=t.steps, batch=t.batch, lr=t.lr, lr_final=t.lr_final,
                        seed=ctx.seed, checkpoint=ckpt, checkpoint_every=t.checkpoint_every,
                        progress=ctx.progress, device=ctx.device)
        metrics["train"] = {"steps": t.steps, "resumed_from": history["resumed_from"],
                            "loss_first": history["loss"][0] if history["loss"] else None,
                            "loss_last": history["loss"][-1] if history["loss"] else None}
        return history

    def _plots(self, reports: list[LinearSolveReport], history: dict, ctx: RunContext) -> list[Path]:
        if ctx.out_dir is None or ctx.rank != 0:
            return []
        from ..viz import line_plot

        files = []
        if "residuals" in ctx.plots:
            series = {r.method: (np.arange(len(r.residuals)), np.asarray(r.residuals) / max(r.residuals[0], 1e-300))
                      for r in reports}
            files.append(line_plot(series, ctx.out_dir / "residuals.png", xlabel="iteration",
                                   ylabel="||r|| / ||b||", logy=True, title="DCDM vs Krylov baselines"))
        if "training" in ctx.plots and history["loss"]:
            loss = np.asarray(history["loss"])
            files.append(line_plot({"loss": (np.arange(1, len(loss) + 1), loss)}, ctx.out_dir / "training.png",
                                   xlabel="step", ylabel="DCDM loss", logy=True))
        return files
