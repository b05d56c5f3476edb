"""GliODIL: infer a glioma's cell density and growth parameters from one segmentation, by ODIL.

The model is Fisher-KPP with the tissue diffusivity ``D (wm + gm / ratio)`` (no flux into CSF). The
unknowns are the density on the space-time grid plus the scalars ``D``, ``rho``, ``ratio``, the
seed position and the two visibility thresholds; the loss holds the PDE, the initial Gaussian seed,
hinge terms tying the final density to the segmentation labels, range/CSF terms and hinge bounds on
the scalars (Balcerak et al., Nat. Commun. 2025). As in the paper, the initial guess is first fitted in time (a
forward run stopped where it matches the labels best, D and rho rescaled: :func:`time_scale_fit`)::

    patient = synthetic_patient(seed=0, dim=2, cells=32, size_mm=128, margin_mm=15)   # + a synthetic recurrence
    # (the truth is grown by the P1 FEM reference: fem_forward; truth="fd" uses the inference's own model)
    result = infer(patient.wm, patient.gm, patient.labels, patient.grid, iterations=1500)
    plans = compare_plans(result.density, patient.labels, patient.truth, patient.wm + patient.gm, patient.grid,
                          recurrence=patient.recurrence)
    plans["gliodil_coverage"], plans["margin_coverage"]
    refined = forward(patient.wm, patient.gm, patient.grid, result.params)[-1]   # the inferred model's density

Units: millimetres and days (D in mm^2/day, rho in 1/day, as in GliODIL's synthetic generator). Labels:
0 background, 1 edema, 2 tumour core (:func:`brats_labels` maps BraTS 1/4 to core and 3 to edema).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from ..errors import CaseError
from ..meshes.mesh import Mesh
from ..pde.fisher import CSF_THRESHOLD, FisherKPP
from ..pde.stencils import Grid, SideData, StencilView
from ..progress import SILENT
from .fem.coefficients import CellCoefficient, NodalCoefficient
from .method import Method, MethodConfig, MethodResult, RunContext, Strict, register
from .odil import DiscreteProblem, gradient_descent, march

#: hinge bounds of the scalars (GliODIL's code); ``rho`` has only a lower bound
BOUNDS = {"D": (0.01, 10.0), "rho": (0.02, np.inf), "ratio": (10.0, 1000.0), "th_down": (0.2, 0.5),
          "th_up": (0.5, 0.85)}
#: GliODIL's loss weights (its code, without PET): multipliers of the *residuals*, as in ODIL, see :func:`loss_weights`
WEIGHTS = {"pde": 2400.0, "ic": 1000.0, "seg": 4.0, "range": 1.0, "csf": 0.01, "bounds": 1.0}
#: the longest time step (days) of a synthetic truth: Crank-Nicolson of the logistic term needs rho dt / 2 < 1 (else
#: Newton's Jacobian at u = 0 is singular or indefinite); 2.5 days keeps it <= 0.25 for the cohort's rho <= 0.2
TRUTH_MAX_DT = 2.5
SEED_PEAK, SEED_DT = 0.58, 15.0     # the seed: peak of M / (4 pi Dt)^(3/2) exp(-r^2 / (4 Dt)) for M = 1500, Dt = 15


@dataclass
class Patient:
    """A synthetic patient: tissue fractions, the hidden final density, labels and the true parameters."""

    wm: np.ndarray
    gm: np.ndarray
    truth: np.ndarray
    labels: np.ndarray
    params: dict[str, Any]
    grid: Grid
    #: the synthetic recurrence: the visible tumour (u >= th_down) after further untreated growth, at the first
    #: time its volume reaches that of the 1.5 cm margin plan (None when not asked for)
    recurrence: np.ndarray | None = None


@dataclass
class Inference:
    """GliODIL's answer: the final density, the inferred scalars, the loss history and bound reports, and the
    final density of the initial guess (the forward run inference started from: a no-inference baseline)."""

    density: np.ndarray
    params: dict[str, float]
    history: list[dict] = dataclass_field(default_factory=list)
    at_bounds: list[str] = dataclass_field(default_factory=list)
    time_s: float = 0.0
    initial_density: np.ndarray | None = None
    #: the scalars ODIL started from (after the time-scale fit) and the naive ones before it (``D = rho = 0.1``)
    initial_params: dict[str, float] = dataclass_field(default_factory=dict)
    naive_params: dict[str, float] = dataclass_field(default_factory=dict)
    #: ``t* / T`` of the time-scale fit (:func:`time_scale_fit`; 1 without it)
    time_scale: float = 1.0


def brats_labels(seg: np.ndarray) -> np.ndarray:
    """BraTS labels (1 necrosis, 4 enhancing -> core; 3 or 2 edema) to 0 / 1 edema / 2 core."""
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, dtype=np.int8)
    out[np.isin(seg, (2, 3))] = 1
    out[np.isin(seg, (1, 4))] = 2
    return out


def seed_density(points: Any, centre: Any) -> Any:
    """The initial Gaussian seed at ``centre`` (numpy or torch), clipped at 1 and zero below 0.1."""
    lib = torch if isinstance(points[0], torch.Tensor) else np
    r2 = sum((points[a] - centre[a]) ** 2 for a in range(len(centre)))
    g = SEED_PEAK * lib.exp(-r2 / (4 * SEED_DT))
    return lib.where(g < 0.1, 0.0 * g, lib.clip(g, 0.0, 1.0))


def tissue_maps(grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth white/grey-matter fractions: an ellipsoidal brain with a grey rim, white-matter "tracts" (elongated
    Gaussians of random direction, thresholded smoothly so that white matter is ~0.9 inside a tract and ~0 in grey
    matter, as in a real segmentation) and two CSF ventricles (CSF = 1 - wm - gm)."""
    pts = grid.points()
    centre = grid.bounds.mean(axis=1)
    half = 0.5 * (grid.bounds[:, 1] - grid.bounds[:, 0])
    radii = half * rng.uniform(0.85, 0.95, grid.dim)
    rho = np.sqrt(sum(((pts[a] - centre[a]) / radii[a]) ** 2 for a in range(grid.dim)))
    brain = 1 / (1 + np.exp((rho - 1) / 0.02))
    wm_raw = np.zeros(grid.cells)
    for _ in range(8):
        c = centre + rng.uniform(-0.5, 0.5, grid.dim) * half
        direction = rng.standard_normal(grid.dim)
        direction /= np.linalg.norm(direction)
        along = sum((pts[a] - c[a]) * direction[a] for a in range(grid.dim))
        across2 = sum((pts[a] - c[a]) ** 2 for a in range(grid.dim)) - along**2
        length, width = rng.uniform(0.3, 0.6) * half.mean(), rng.uniform(0.06, 0.12) * half.mean()
        wm_raw = np.maximum(wm_raw, np.exp(-along**2 / (2 * length**2) - across2 / (2 * width**2)))
    wm_frac = 0.9 / (1 + np.exp(-(wm_raw - 0.3) / 0.05)) * np.clip((1 - rho) / 0.15, 0, 1)
    csf = 1 - brain
    for side in (-1, 1):
        c = centre.copy()
        c[0] += side * 0.12 * half[0]
        r = np.sqrt(sum(((pts[a] - c[a]) / (0.08 * half[a] * (2.5 if a == 1 else 1))) ** 2 for a in range(grid.dim)))
        csf = np.maximum(csf, 1 / (1 + np.exp((r - 1) / 0.1)))
    wm = wm_frac * (1 - csf)
    return wm, (1 - csf) - wm


def synthetic_patient(seed: int = 0, dim: int = 2, cells: int = 48, steps: int = 48, days: float = 100.0,
                      size_mm: float = 96.0, label_noise: float = 0.02, margin_mm: float | None = None,
                      max_days: float = 1000.0, truth: Literal["fem", "fd"] = "fem",
                      backend: str = "skfem") -> Patient:
    """A synthetic patient grown from a seed on a 2x finer time grid than ``steps`` (and steps of at most
    :data:`TRUTH_MAX_DT` days).

    Parameters follow GliODIL's synthetic cohort (its generator: 1 mm voxels, 100 days, so ``D`` in mm^2/day and
    ``rho`` in 1/day): ``D, rho ~ U(0.035, 0.2)``, ``ratio ~ U(10, 30)``, ``th_up ~ U(0.45, 0.6)``,
    ``th_down ~ U(0.15, 0.35)``, seed inside white or grey matter near the centre. ``truth="fem"`` grows the
    tumour with the P1 finite-element reference (:func:`fem_forward`, ``backend`` scikit-fem or dolfinx), not with
    the finite-volume model the inference uses; ``"fd"`` uses that model itself (faster, but an inverse crime).
    Labels threshold the final density plus Gaussian noise ``label_noise``. With ``margin_mm``, the tumour keeps
    growing (same model, same time step, at most ``max_days`` more) until its visible part ``u >= th_down`` has the
    volume of the visible tumour + ``margin_mm`` plan: that region is ``Patient.recurrence`` (the day is
    ``params["recurrence_days"]``).
    """
    if truth not in ("fem", "fd"):
        raise CaseError(f"unknown truth model {truth!r}", field="method.patient.truth", fix="use fem or fd")
    rng = np.random.default_rng(42000 + seed)
    grid = Grid([[0.0, size_mm]] * dim, [cells] * dim, t_end=days, steps=steps)
    for side in grid.sides.values():
        side.dirichlet[...] = False
    wm, gm = tissue_maps(grid, rng)
    lo, hi = grid.bounds[:, 0] + 0.35 * size_mm, grid.bounds[:, 0] + 0.65 * size_mm
    for _ in range(100):
        centre = rng.uniform(lo, hi)
        idx = tuple(int(c / grid.h[a]) for a, c in enumerate(centre))
        if wm[idx] + gm[idx] > 0.7:
            break
    params = {"D": rng.uniform(0.035, 0.2), "rho": rng.uniform(0.035, 0.2), "ratio": rng.uniform(10, 30),
              "th_up": rng.uniform(0.45, 0.6), "th_down": rng.uniform(0.15, 0.35), "centre": centre.tolist()}
    n = max(2 * steps, int(np.ceil(days / TRUTH_MAX_DT - 1e-9)))
    dt = days / n
    advance = growth_model(truth, wm, gm, grid, params, dt, backend)
    truth_u = advance(seed_density(grid.points(), centre), n)[-1]
    observed = truth_u + label_noise * rng.standard_normal(truth_u.shape)
    brain = (wm + gm) >= CSF_THRESHOLD
    labels = np.where(observed >= params["th_up"], 2, np.where(observed >= params["th_down"], 1, 0)) * brain
    recurrence = None
    if margin_mm is not None:
        volume = int(margin_plan(labels, brain, grid, margin_mm).sum())
        recurrence, params["recurrence_days"] = grow_to_volume(advance, dt, truth_u, params["th_down"], brain,
                                                               volume, max_days)
    return Patient(wm, gm, truth_u, labels.astype(np.int8), params, grid, recurrence)


def growth_model(truth: str, wm: np.ndarray, gm: np.ndarray, grid: Grid, params: dict[str, Any], dt: float,
                 backend: str = "skfem") -> Callable[[np.ndarray, int], np.ndarray]:
    """``advance(u, n)``: ``n`` time steps of ``dt`` of the true model from the cell values ``u`` (all levels).

    ``truth="fem"``: :func:`fem_forward` (P1 FEM reference); ``"fd"``: Crank-Nicolson on the inference's
    finite-volume stencil (:func:`~neuralpde.solvers.odil.march`), no flux through the box.
    """
    if truth == "fem":
        return lambda u, n: fem_forward(wm, gm, grid, params, u, n * dt, n, backend=backend)
    pde = FisherKPP(D=params["D"], rho=params["rho"], ratio=params["ratio"], t_end=dt, dim=grid.dim)
    pde.tissue_cells = (wm, gm)

    def advance(u: np.ndarray, n: int) -> np.ndarray:
        step = Grid(grid.bounds, grid.cells, t_end=n * dt, steps=n, initial_values=u)
        for side in step.sides.values():
            side.dirichlet[...] = False                  # no flux through the box (the brain is inside it)
        return march(pde, step)

    return advance


def grow_to_volume(advance: Callable[[np.ndarray, int], np.ndarray], dt: float, start: np.ndarray, threshold: float,
                   brain: np.ndarray, volume: int, max_days: float, chunk: int = 16) -> tuple[np.ndarray, float]:
    """Grow ``start`` on (``advance(u, n)``: ``n`` steps of ``dt``, see :func:`growth_model`) until
    ``{u >= threshold}`` (in the brain) holds ``volume`` cells.

    Returns:
        The first such region (or the last one after ``max_days``) and the days grown.
    """
    u, days = start, 0.0
    while days < max_days:
        levels = advance(u, chunk)
        for n in range(1, len(levels)):
            region = (levels[n] >= threshold) & brain
            if region.sum() >= volume:
                return region, days + n * dt
        u, days = levels[-1], days + chunk * dt
    return (u >= threshold) & brain, days


def fem_mesh(grid: Grid) -> Mesh:
    """The P1 mesh whose vertices are the grid's cell centres: right-diagonal triangles (2D) or Kuhn tetrahedra
    (3D) on the box ``[h/2, L - h/2]``, so nodal values are cell values (vertex order: x fastest)."""
    from ..meshes import box, rectangle

    bounds = np.stack([grid.bounds[:, 0] + grid.h / 2, grid.bounds[:, 1] - grid.h / 2], axis=1).tolist()
    cells = [n - 1 for n in grid.cells]
    if grid.dim == 2:
        return rectangle(bounds, cells)
    if grid.dim == 3:
        return box(bounds, cells)
    raise CaseError(f"the FEM truth needs a 2D or 3D grid, got dim {grid.dim}", field="method.patient.dim",
                    fix="use dim: 2 or 3")


def tissue_diffusivity(mesh: Mesh, wm: np.ndarray, gm: np.ndarray, D: float, ratio: float) -> CellCoefficient:
    """``D (wm + gm / ratio)`` per cell, the fractions averaged over the cell's vertices, and zero on every cell
    with a CSF vertex (``wm + gm < 0.1``): the FEM form of GliODIL's face rule, so no flux reaches a CSF vertex."""
    w, g = wm.ravel(order="F")[mesh.cells], gm.ravel(order="F")[mesh.cells]
    csf = ((w + g) < CSF_THRESHOLD).any(axis=1)
    return CellCoefficient(mesh, np.where(csf, 0.0, D * (w.mean(axis=1) + g.mean(axis=1) / ratio)))


def fem_forward(wm: np.ndarray, gm: np.ndarray, grid: Grid, params: dict[str, Any], start: np.ndarray,
                t_end: float, steps: int, backend: str = "skfem", theta: float = 0.5) -> np.ndarray:
    """Fisher-KPP with GliODIL's tissue diffusivity by the P1 FEM reference on :func:`fem_mesh`.

    Natural (no-flux) boundary, diffusivity :func:`tissue_diffusivity`, lumped mass (with a consistent mass the
    density undershoots below 0 next to the front, most where diffusion is weak, in grey matter and at CSF vertices,
    and the logistic term then drives it to -inf), theta scheme (0.5: Crank-Nicolson) with Newton's method in every
    step (:meth:`ReferenceSolver.solve` of ``backend``).

    Args:
        wm, gm: tissue fractions on the grid's cells.
        grid: the patient grid (its cell centres are the mesh vertices).
        params: ``D``, ``rho``, ``ratio``.
        start: the density at ``t = 0`` on the cells.
        t_end: days to grow; steps: time steps.
        backend: ``skfem``, ``dolfinx`` or ``auto``.
        theta: 1 backward Euler, 0.5 Crank-Nicolson.

    Returns:
        The density on the cells at every step, shape ``(steps + 1, *grid.cells)``.
    """
    from ..meshes.domains import Box, Rectangle
    from ..pde.problem import Problem
    from .fem import LinearSolverOptions, TimeOptions, get_backend

    mesh = fem_mesh(grid)
    pde = FisherKPP(D=1.0, rho=params["rho"], t_end=t_end, dim=grid.dim)
    pde.diffusivity_field = tissue_diffusivity(mesh, wm, gm, params["D"], params["ratio"])
    pde.initial = NodalCoefficient(mesh, np.asarray(start).ravel(order="F"))
    domain = (Rectangle if grid.dim == 2 else Box)(np.stack([mesh.points.min(0), mesh.points.max(0)], 1).tolist())
    solution = get_backend(backend).solve(Problem(pde, domain, []), mesh, degree=1,
                                          solver=LinearSolverOptions(type="lu"),
                                          time=TimeOptions(dt=t_end / steps, theta=theta, save_every=1,
                                                           lumped=True))
    return np.stack([np.asarray(v).reshape(grid.cells, order="F") for _, v in solution.snapshots])


def margin_plan(labels: np.ndarray, brain: np.ndarray, grid: Grid, margin_mm: float) -> np.ndarray:
    """The standard plan: every brain voxel within ``margin_mm`` of the visible tumour (labels > 0)."""
    from scipy.ndimage import distance_transform_edt

    return (distance_transform_edt(labels == 0, sampling=grid.h) <= margin_mm) & brain


def check_inputs(wm: np.ndarray, gm: np.ndarray, labels: np.ndarray, grid: Grid) -> None:
    """Raises CaseError for maps of the wrong shape or tumour labels outside the brain."""
    for name, arr in (("wm", wm), ("gm", gm), ("labels", labels)):
        if tuple(np.shape(arr)) != grid.cells:
            raise CaseError(f"{name} has shape {np.shape(arr)} but the grid has {grid.cells} cells",
                            field=f"method.data.{name}", fix="resample the maps to the grid (or change grid.cells)")
    outside = (np.asarray(labels) > 0) & ((np.asarray(wm) + np.asarray(gm)) < CSF_THRESHOLD)
    if outside.any():
        raise CaseError(f"{int(outside.sum())} labelled voxels lie outside the brain mask (wm + gm < "
                        f"{CSF_THRESHOLD})", field="method.data.labels",
                        fix="register the segmentation to the tissue maps, or mask it with the brain")


def _residual(pde: FisherKPP, grid: Grid, labels: np.ndarray, brain: np.ndarray):
    dim = grid.dim
    rows_all = grid.rows()
    rows_end = tuple(r[-1:] for r in rows_all)
    rows_ic = grid.rows(slice(0, 1))
    pts = grid.points()
    core, edema, background = labels == 2, labels == 1, labels == 0
    csf = (~brain).astype(float)
    names = list(BOUNDS)

    def residual(view: StencilView) -> dict[str, torch.Tensor]:
        out = pde.discrete_residual(grid, view)       # pde in 1/day (mm, days: GliODIL's units)
        u0 = view.get("u", rows_ic)
        centre = [view.param(f"x{a}", rows_ic) for a in range(dim)]
        out["ic"] = u0 - seed_density([view.tensor(pts[a][None]) for a in range(dim)], centre)
        u_end = view.get("u", rows_end)
        up, down = view.param("th_up", rows_end), view.param("th_down", rows_end)
        relu = torch.relu
        out["seg"] = (view.tensor(core[None]) * relu(up - u_end)
                      + view.tensor(edema[None]) * (relu(down - u_end) + relu(u_end - up))
                      + view.tensor(background[None]) * relu(u_end - down))
        u = view.get("u", rows_all)
        out["range"] = relu(-u) + relu(u - 1)
        out["csf"] = u * view.tensor(csf)
        one = (np.zeros(1, dtype=int),)
        terms = []
        for name in names:
            p = view.param(name, one)
            lo, hi = BOUNDS[name]
            terms.append(relu(lo - p) + (relu(p - hi) if np.isfinite(hi) else 0 * p))
        out["bounds"] = sum(terms)                    # one residual: the sum of the hinges (GliODIL's param_loss)
        return out

    return residual


def initial_guess(wm: np.ndarray, gm: np.ndarray, labels: np.ndarray, grid: Grid, *,
                  time_scale: bool = True, horizon: float = 3.0) -> dict[str, Any]:
    """Start: seed at the centroid of the core (else of all labels), ``D = rho = 0.1``, ``ratio = 20``, then
    GliODIL's time-scale fit (:func:`time_scale_fit`, ``time_scale=False`` skips it) and a forward run.

    Returns:
        ``{"u": all levels of the forward run, "params": the scalars, "naive": the scalars before the time-scale
        fit, "time_scale": t*/T (1 without the fit), "dice": the volume-weighted Dice at t*}``.
    """
    pts = grid.points().reshape(grid.dim, -1)
    mask = (labels == 2) if (labels == 2).any() else (labels > 0)
    if not mask.any():
        raise CaseError("the segmentation has no tumour voxel", field="method.data.labels",
                        fix="give a segmentation with core (2) or edema (1) labels")
    centre = pts[:, mask.ravel()].mean(axis=1)
    naive = {"D": 0.1, "rho": 0.1, "ratio": 20.0, "th_up": 0.6, "th_down": 0.3,
             **{f"x{a}": float(c) for a, c in enumerate(centre)}}
    scale, score = time_scale_fit(wm, gm, labels, grid, naive, horizon) if time_scale else (1.0, float("nan"))
    params = {**naive, "D": naive["D"] * scale, "rho": naive["rho"] * scale}
    return {"u": forward(wm, gm, grid, params), "params": params, "naive": naive, "time_scale": scale,
            "dice": score}


def label_score(u: np.ndarray, labels: np.ndarray, th_up: float, th_down: float) -> float:
    """Volume-weighted Dice of a density with the labels: core ``u >= th_up`` vs label 2 and visible tumour
    ``u >= th_down`` vs labels > 0, weighted by the labels' volumes."""
    core, visible = labels == 2, labels > 0
    weights = (core.sum(), visible.sum())
    dices = (dice(u >= th_up, core), dice(u >= th_down, visible))
    return float(np.dot(weights, dices) / max(sum(weights), 1))


def time_scale_fit(wm: np.ndarray, gm: np.ndarray, labels: np.ndarray, grid: Grid, params: dict[str, float],
                   horizon: float = 3.0) -> tuple[float, float]:
    """GliODIL's initial-guess heuristic: run the model forward past the diagnosis (``horizon`` x ``grid.t_end``,
    the same time step), take the time ``t*`` where the volume-weighted Dice with the labels (:func:`label_score`)
    peaks, and rescale: Fisher-KPP from a fixed seed has ``u(x, t; D, rho) = u(x, s t; D / s, rho / s)``, so
    ``D, rho`` times ``s = t* / T`` reach at ``T`` the density the run had at ``t*``. This fits the combination the
    size of the tumour determines (the front speed ``2 sqrt(D rho)``); ``D / rho`` stays as given.

    Returns:
        ``s = t* / T`` and the Dice score at ``t*``.
    """
    steps = max(int(round(horizon * grid.steps)), grid.steps)
    sides = {k: SideData(s.dirichlet.copy(), np.concatenate([s.value, np.repeat(s.value[-1:], steps - grid.steps, 0)]))
             for k, s in grid.sides.items()}
    longer = Grid(grid.bounds, grid.cells, t_end=grid.dt * steps, steps=steps, sides=sides)
    levels = forward(wm, gm, longer, params)
    scores = [label_score(u, labels, params["th_up"], params["th_down"]) for u in levels[1:]]
    best = int(np.argmax(scores))
    return (best + 1) / grid.steps, scores[best]


def forward(wm: np.ndarray, gm: np.ndarray, grid: Grid, params: dict[str, float]) -> np.ndarray:
    """The Fisher-KPP forward run (Crank-Nicolson on ``grid``) from the seed at ``x0, x1[, x2]`` with ``D``,
    ``rho``, ``ratio`` of ``params``: all time levels."""
    pde = FisherKPP(D=params["D"], rho=params["rho"], ratio=params["ratio"], t_end=grid.t_end, dim=grid.dim)
    pde.tissue_cells = (wm, gm)
    centre = [params[f"x{a}"] for a in range(grid.dim)]
    start = Grid(grid.bounds, grid.cells, t_end=grid.t_end, steps=grid.steps, sides=grid.sides,
                 initial_values=seed_density(grid.points(), centre))
    return march(pde, start)


def loss_weights(grid: Grid, weights: dict[str, float] | None = None) -> dict[str, float]:
    """GliODIL's residual multipliers as weights of :class:`DiscreteProblem` groups (``weight * mean(r**2)``).

    GliODIL's loss is ``sum_g mean((w_g r_g)**2)`` where every group is an array over the *whole* space-time grid,
    zero outside its time levels (initial condition: level 0; segmentation: the last level; PDE: all but level 0).
    Our groups hold only their own levels, so the weight of a group is ``w_g**2 * (its levels / all levels)``.

    Args:
        grid: the space-time grid.
        weights: overrides of :data:`WEIGHTS` (residual multipliers, as in the paper's code).

    Returns:
        The weight of each group.
    """
    w = {**WEIGHTS, **(weights or {})}
    share = {"pde": grid.steps / grid.levels, "ic": 1 / grid.levels, "seg": 1 / grid.levels}
    return {g: v**2 * share.get(g, 1.0) for g, v in w.items()}


def gliodil_problem(wm: np.ndarray, gm: np.ndarray, labels: np.ndarray, grid: Grid, u: np.ndarray,
                    params: dict[str, float], weights: dict[str, float] | None = None) -> DiscreteProblem:
    """The GliODIL loss as a :class:`DiscreteProblem`, starting from the field ``u`` and the scalars ``params``;
    ``weights`` override the residual multipliers :data:`WEIGHTS` (see :func:`loss_weights`)."""
    pde = FisherKPP(D=1.0, rho=1.0, t_end=grid.t_end, dim=grid.dim)
    pde.tissue_cells = (wm, gm)
    residual = _residual(pde, grid, labels, (wm + gm) >= CSF_THRESHOLD)
    return DiscreteProblem({"u": u}, params, residual, loss_weights(grid, weights))


def scalar_rates(lr: float, dim: int) -> dict[str, float]:
    """Adam learning rates of the scalars, scaled to their typical size (the field's rate is ``lr``)."""
    scale = {"D": 0.01, "rho": 0.01, "ratio": 0.5, "th_up": 0.01, "th_down": 0.01}
    rates = {k: lr * v / 2e-3 for k, v in scale.items()}
    rates.update({f"x{a}": lr * 0.5 / 2e-3 for a in range(dim)})
    return rates


def infer(wm: np.ndarray, gm: np.ndarray, labels: np.ndarray, grid: Grid, *, iterations: int = 1500,
          lr: float = 2e-3, weights: dict[str, float] | None = None, time_scale: bool = True,
          density: str = "log", log_lr: float = 1e-2, warmup: int | None = None, decay: float = 0.01,
          progress=SILENT) -> Inference:
    """GliODIL inference: Adam on the multigrid decomposition from a forward-run initial guess.

    The loss is GliODIL's (:func:`loss_weights`: the paper code's residual multipliers, the PDE residual in 1/day).
    The initial guess is fitted in time first (:func:`time_scale_fit`, GliODIL's Dice-peak heuristic;
    ``time_scale=False``: start from ``D = rho = 0.1``); ``iterations=0`` returns that guess.
    Scalars that end on a hinge bound are listed in ``Inference.at_bounds``: the hinge is a penalty, so a
    parameter may sit slightly outside its interval, and the report says so rather than clipping it.

    Args:
        lr: Adam's learning rate of the scalars (scaled per scalar, :func:`scalar_rates`) and, with
            ``density="linear"``, of the density.
        density: ``log`` (default) optimises ``v = log u`` (rate ``log_lr``), ``linear`` the density itself as
            GliODIL's code does. A linear density takes an absolute haze of ~1e-3 far from the tumour (Adam moves
            the coarse multigrid levels, and logistic growth makes such a haze nearly free, docs/odil.md), which
            swamps the ~1e-5 densities that decide a plan; in ``log u`` a step is relative, so the far field keeps
            the initial guess's ranking.
        warmup, decay: Adam's learning-rate schedule (:func:`~neuralpde.solvers.odil.gradient_descent`; warmup
            defaults to ``iterations // 15``). At a constant rate Adam's first steps break the forward-run guess's
            PDE balance and the loss ends above where it started (measured on 2D patients: 4.8e-5 -> 3.4e-3);
            with the schedule it falls monotonically (4.8e-5 -> 8.0e-6).
    """
    check_inputs(wm, gm, labels, grid)
    if density not in ("log", "linear"):
        raise CaseError(f"unknown density parametrisation {density!r}", field="method.density", fix="use log or linear")
    t0 = time.perf_counter()
    guess = initial_guess(wm, gm, labels, grid, time_scale=time_scale)
    final, values, history = guess["u"][-1], dict(guess["params"]), []
    if iterations > 0:
        problem = gliodil_problem(wm, gm, labels, grid, guess["u"], guess["params"], weights)
        log = density == "log"
        x, history = gradient_descent(problem, problem.initial(), optimizer="adam", iterations=iterations,
                                      lr=log_lr if log else lr, multigrid=True, progress=progress,
                                      scalar_lr=scalar_rates(lr, grid.dim), log_fields=("u",) if log else (),
                                      warmup=iterations // 15 if warmup is None else warmup, decay=decay)
        fields, params = problem.unpack(x)
        final, values = fields["u"].numpy()[-1], {k: float(v) for k, v in params.items()}
    at_bounds = [k for k, (lo, hi) in BOUNDS.items() if not lo <= values[k] <= hi]
    return Inference(final, values, history, at_bounds, time.perf_counter() - t0, guess["u"][-1],
                     dict(guess["params"]), guess["naive"], guess["time_scale"])


def combinations(params: dict[str, float]) -> dict[str, float]:
    """What one snapshot of a Fisher-KPP tumour can tell apart: the front speed ``2 sqrt(D rho)`` (mm/day, it sets
    the tumour's size at diagnosis) and the infiltration length ``sqrt(D / rho)`` (mm, the front's width: far below
    a 4 mm voxel for the synthetic cohort, so hardly visible in the labels)."""
    return {"speed": 2 * float(np.sqrt(params["D"] * params["rho"])),
            "length": float(np.sqrt(params["D"] / params["rho"]))}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def density_plan(density: np.ndarray, brain: np.ndarray, volume: int) -> np.ndarray:
    """The ``volume`` brain voxels of highest density (the GliODIL plan at a given volume)."""
    order = np.argsort(np.where(brain, density, -np.inf), axis=None)[::-1][:volume]
    plan = np.zeros(density.size, bool)
    plan[order] = True
    return plan.reshape(density.shape)


def compare_plans(density: np.ndarray, labels: np.ndarray, truth: np.ndarray, brain_fraction: np.ndarray,
                  grid: Grid, margin_mm: float = 15.0, hidden: float = 0.01,
                  recurrence: np.ndarray | None = None) -> dict[str, float]:
    """Radiotherapy plans at equal volume: the visible tumour + a uniform margin, vs the top of the inferred
    density; each scored by the fraction of the hidden tumour it covers: the ``recurrence`` when given (also
    its part outside the visible tumour, ``*_coverage_new``), else the low-density truth ``truth >= hidden``."""
    brain = brain_fraction >= CSF_THRESHOLD
    margin = margin_plan(labels, brain, grid, margin_mm)
    volume = int(margin.sum())
    plan = density_plan(density, brain, volume)
    target = (recurrence if recurrence is not None else truth >= hidden) & brain
    n = max(int(target.sum()), 1)
    out = {"volume_voxels": volume, "margin_coverage": float((margin & target).sum() / n),
           "gliodil_coverage": float((plan & target).sum() / n), "hidden_voxels": int(target.sum())}
    if recurrence is not None:
        new = target & (labels == 0)
        m = max(int(new.sum()), 1)
        out.update(margin_coverage_new=float((margin & new).sum() / m),
                   gliodil_coverage_new=float((plan & new).sum() / m), new_voxels=int(new.sum()))
    return out


# ---------------------------------------------------------------- the `gliodil` method of a case file

class PatientConfig(Strict):
    """A synthetic patient (see :func:`synthetic_patient`)."""

    seed: int = 0
    dim: Literal[2, 3] = 2
    cells: int = Field(48, ge=8)
    steps: int = Field(48, ge=2)
    days: float = Field(100.0, gt=0)
    size_mm: float = Field(96.0, gt=0)
    label_noise: float = Field(0.02, ge=0)
    #: the model that grows the true tumour: the P1 FEM reference, or the inference's own finite-volume model
    truth: Literal["fem", "fd"] = "fem"
    #: the FEM reference backend of ``truth: fem`` (``auto``: dolfinx when installed; the same numbers to ~1e-12)
    backend: Literal["skfem", "dolfinx", "auto"] = "skfem"


class GliodilConfig(MethodConfig):
    type: Literal["gliodil"] = "gliodil"
    patient: PatientConfig = PatientConfig()
    iterations: int = Field(1500, ge=1)
    lr: float = Field(2e-3, gt=0)
    #: ``log``: Adam on log u (no far-field haze), ``linear``: on u itself (GliODIL's code); see :func:`infer`
    density: Literal["log", "linear"] = "log"
    log_lr: float = Field(1e-2, gt=0)
    #: Adam's learning rates fall by a cosine to ``decay`` x their value (``1``: constant, as GliODIL's code)
    decay: float = Field(0.01, gt=0, le=1)
    weights: dict[str, float] = {}
    #: fit the initial guess in time first (GliODIL's Dice-peak heuristic, :func:`time_scale_fit`)
    time_scale: bool = True
    margin_mm: float = Field(15.0, gt=0)
    #: the hidden tumour the plans are scored on: the synthetic recurrence, or the true density >= ``hidden``
    target: Literal["recurrence", "density"] = "recurrence"
    hidden: float = Field(0.01, gt=0, lt=1)


@register
class GliodilMethod(Method):
    """Synthetic patient -> GliODIL inference -> radiotherapy plans at equal volume (no PDE section needed)."""

    name = "gliodil"
    config_model = GliodilConfig
    needs_problem = False
    plot_names = ("data", "inferred", "plans")

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        cfg = self.config
        pc = cfg.patient
        recurrence = cfg.target == "recurrence"
        patient = synthetic_patient(pc.seed + ctx.seed, pc.dim, pc.cells, pc.steps, pc.days, pc.size_mm,
                                    pc.label_noise, margin_mm=cfg.margin_mm if recurrence else None,
                                    truth=pc.truth, backend=pc.backend)
        result = infer(patient.wm, patient.gm, patient.labels, patient.grid, iterations=cfg.iterations, lr=cfg.lr,
                       weights=cfg.weights, time_scale=cfg.time_scale, density=cfg.density, log_lr=cfg.log_lr,
                       decay=cfg.decay, progress=ctx.progress)
        plans = {name: compare_plans(density, patient.labels, patient.truth, patient.wm + patient.gm, patient.grid,
                                     margin_mm=cfg.margin_mm, hidden=cfg.hidden, recurrence=patient.recurrence)
                 for name, density in (("odil", result.density),
                                       ("forward", forward(patient.wm, patient.gm, patient.grid, result.params)[-1]))}
        true = {k: v for k, v in patient.params.items() if k != "centre"}
        metrics = {"true": true, "inferred": result.params, "at_bounds": result.at_bounds, "time_s": result.time_s,
                   "D_rel_error": abs(result.params["D"] / true["D"] - 1),
                   "rho_rel_error": abs(result.params["rho"] / true["rho"] - 1),
                   "speed_rel_error": abs(combinations(result.params)["speed"] / combinations(true)["speed"] - 1),
                   "naive_speed_rel_error": abs(combinations(result.naive_params)["speed"]
                                                / combinations(true)["speed"] - 1),
                   "time_scale": result.time_scale,
                   "dice_0.25": dice(result.density >= 0.25, patient.truth >= 0.25),
                   "dice_0.5": dice(result.density >= 0.5, patient.truth >= 0.5), "plans": plans,
                   "loss": result.history[-1]["loss"], "loss_terms": result.history[-1]["terms"]}
        return MethodResult(field=None, metrics=metrics, files=self._plots(patient, result, ctx))

    def _plots(self, patient: Patient, result: Inference, ctx: RunContext) -> list:
        if ctx.out_dir is None or not ctx.plots:
            return []
        from ..viz import image_panels

        def cut(a: np.ndarray) -> np.ndarray:     # 3D: the axial slice through the true seed
            if a.ndim == 2:
                return a.T
            k = int(patient.params["centre"][2] / patient.grid.h[2])
            return a[:, :, min(k, a.shape[2] - 1)].T

        extent = (0, patient.grid.bounds[0, 1], 0, patient.grid.bounds[1, 1])
        files = []
        if "data" in ctx.plots:
            files.append(image_panels({"white matter": cut(patient.wm), "grey matter": cut(patient.gm),
                                       "labels (1 edema, 2 core)": cut(patient.labels)},
                                      ctx.out_dir / "data.png", title="synthetic patient", extent=extent))
        if "inferred" in ctx.plots:
            files.append(image_panels({"inferred density": cut(result.density), "true density": cut(patient.truth)},
                                      ctx.out_dir / "inferred.png", title="GliODIL", extent=extent))
        if "plans" in ctx.plots:
            cfg = self.config
            brain = (patient.wm + patient.gm) >= CSF_THRESHOLD
            margin = margin_plan(patient.labels, brain, patient.grid, cfg.margin_mm)
            plan = density_plan(result.density, brain, int(margin.sum()))
            hidden = patient.recurrence if patient.recurrence is not None else patient.truth >= cfg.hidden
            files.append(image_panels({"1.5 cm margin": cut(margin + 2.0 * hidden),
                                       "GliODIL plan": cut(plan + 2.0 * hidden)}, ctx.out_dir / "plans.png",
                                      title="1 plan only, 2 hidden tumour missed, 3 covered",
                                      extent=extent))
        return files
