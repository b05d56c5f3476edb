"""ODIL benchmarks: heat inverse time-to-accuracy (Gauss-Newton, L-BFGS, Adam, a DeepXDE PINN); GliODIL cohorts.

Problem: u_t = kappa u_xx on [0, 1] x (0, 0.5], u = 0 at both ends, u(x, 0) = sin(pi x) + sin(3 pi x)/2; kappa = 0.1 is
unknown (start 0.05). Data: the exact solution (two decaying modes) at 200 random grid cells with
|t - 0.25| < 1/12 (the "stripe" of the ODIL paper's heat example). Unknowns: the 64 x 65 space-time grid
and kappa. "Accurate" means: the final-time error vs the exact solution within 5% of the error of the fully
converged discrete solution (the discretisation error, i.e. what the FEM reference also reaches at this
resolution) and kappa within 1%.

    .venv/bin/python benchmarks/odil.py                     # everything (~1 CPU hour on the 2-core machine)
    .venv/bin/python benchmarks/odil.py --part heat --optimizers newton,pinn   # re-run some rows, keep the others
    .venv/bin/python benchmarks/odil.py --part gliodil      # 10 synthetic 2D patients; also gliodil3d, timing3d
    .venv/bin/python benchmarks/odil.py --part gliodil --truth fd   # patients grown by the inference's own model
    .venv/bin/python benchmarks/odil.py --quick --dest /tmp/odil   # a few minutes, reduced sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpde.fileio import write_text  # noqa: E402
from neuralpde.pde import Heat  # noqa: E402
from neuralpde.pde.stencils import Grid, StencilView  # noqa: E402
from neuralpde.runtime import seed_everything  # noqa: E402
from neuralpde.solvers.odil import DiscreteProblem, gradient_descent, newton  # noqa: E402

KAPPA = 0.1
N = 64
PINN_BUDGET_S = 600.0     # CPU seconds for the PINN (the ODIL optimizers get BUDGET)
PINN_ADAM_SHARE = 0.5     # share of the PINN budget spent in Adam before L-BFGS
PINN_STEP_S = 0.03        # CPU s per Adam step (4096 points, 1 thread; measured 0.019), sizes the Adam phase
GLIODIL_WEIGHTS: dict[str, float] = {}   # overrides of GliODIL's loss weights: none (the paper's code)


def build() -> tuple[DiscreteProblem, Grid, np.ndarray]:
    grid = Grid(bounds=[[0, 1]], cells=[N], t_end=0.5, steps=N)
    pde = Heat(k="kappa", initial="sin(pi*x) + 0.5*sin(3*pi*x)", t_end=0.5, params={"kappa": KAPPA}, dim=1)
    rng = np.random.default_rng(0)
    t_idx, x_idx = np.nonzero(np.abs(grid.times[:, None] - 0.25 + 0 * grid.centres(0)[None]) < 1 / 12)
    pick = rng.choice(len(t_idx), 200, replace=False)
    rows = (t_idx[pick], x_idx[pick])
    values = exact(grid.centres(0)[rows[1]], grid.times[rows[0]])

    def residual(view: StencilView) -> dict:
        groups = pde.discrete_residual(grid, view)
        groups["data"] = view.get("u", rows) - view.tensor(values)
        return groups

    pb = DiscreteProblem({"u": np.zeros(grid.shape)}, {"kappa": 0.05}, residual, weights={"data": 4.0})
    pb.observations = (np.stack([grid.centres(0)[rows[1]], grid.times[rows[0]]], axis=1), values)  # for the PINN
    return pb, grid, exact(grid.centres(0), 0.5)


def exact(x: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    return (np.exp(-KAPPA * np.pi**2 * t) * np.sin(np.pi * x)
            + 0.5 * np.exp(-9 * KAPPA * np.pi**2 * t) * np.sin(3 * np.pi * x))



def errors(pb: DiscreteProblem, grid: Grid, exact_end: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    fields, params = pb.unpack(x)
    u_end = fields["u"].numpy()[-1]
    return float(np.abs(u_end - exact_end).max()), abs(float(params["kappa"]) / KAPPA - 1)


def run(optimizer: str, budget_s: float, pb, grid, exact_end, target_u: float) -> dict:
    seed_everything(0)
    trace: list[tuple[float, float, float]] = []
    t0 = time.process_time()

    def callback(it: int, x: np.ndarray, loss: float) -> bool:
        e_u, e_k = errors(pb, grid, exact_end, x)
        trace.append((time.process_time() - t0, e_u, e_k))
        return time.process_time() - t0 > budget_s

    if optimizer == "newton":
        newton(pb, pb.initial(), iterations=50, damping=1e-3, callback=callback, step_tol=1e-13)
    else:
        gradient_descent(pb, pb.initial(), optimizer=optimizer, iterations=10**7, lr=3e-3, multigrid=True,
                         callback=callback, every=10 if optimizer == "adam" else 5)
    hit = next((t for t, e_u, e_k in trace if e_u <= target_u and e_k <= 0.01), None)
    return {"optimizer": optimizer, "time_to_accuracy_s": hit, "final_u_error": trace[-1][1],
            "final_kappa_rel_error": trace[-1][2], "wall_s": trace[-1][0], "trace": trace}


def run_pinn(budget_s: float, pb, grid, exact_end, target_u: float) -> dict:
    """The DeepXDE PINN (4 x 32 tanh, the ODIL paper's baseline) on the same data: Adam, then L-BFGS."""
    from neuralpde.solvers.pinn_inverse import solve_inverse

    pde = Heat(k="kappa", initial="sin(pi*x) + 0.5*sin(3*pi*x)", t_end=0.5, params={"kappa": 0.05}, dim=1)
    x_end = np.stack([grid.centres(0), np.full(N, 0.5)], axis=1)
    trace: list[tuple[float, float, float]] = []

    def callback(step: int, partial) -> bool:
        e_u = float(np.abs(partial.predict(x_end) - exact_end).max())
        trace.append((partial.history[-1]["cpu_s"], e_u, abs(partial.params["kappa"] / KAPPA - 1)))
        return trace[-1][0] > budget_s

    adam = max(1000, int(PINN_ADAM_SHARE * budget_s / PINN_STEP_S))
    result = solve_inverse(pde, [[0, 1]], pb.observations, {"kappa": 0.05}, layers=[32] * 4, points=4096,
                           boundary_points=128, initial_points=128, weights={"data": 4.0}, lr=1e-3,
                           iterations=adam, lbfgs_steps=10**6, record_every=100, seed=0, callback=callback)
    hit = next((t for t, e_u, e_k in trace if e_u <= target_u and e_k <= 0.01), None)
    hit_k = next((t for t, _, e_k in trace if e_k <= 0.01), None)
    best = min(range(len(trace)), key=lambda i: trace[i][1])
    return {"optimizer": "pinn", "time_to_accuracy_s": hit, "time_to_kappa_1pct_s": hit_k,
            "best_u_error": trace[best][1], "best_u_error_at_s": trace[best][0], "final_u_error": trace[-1][1],
            "final_kappa_rel_error": trace[-1][2], "wall_s": trace[-1][0], "adam_steps": adam,
            "steps": result.history[-1]["step"], "trace": trace,
            "setup": "DeepXDE 1.15 (PyTorch, float32), FNN 4 x 32 tanh, 4096 pseudo-random collocation points, "
                     "128 boundary + 128 initial points, data weight 4, Adam lr 1e-3 then L-BFGS"}


def heat_benchmark(quick: bool, optimizers: list[str], previous: dict | None) -> dict:
    pb, grid, exact_end = build()
    x_conv, _ = newton(pb, pb.initial(), iterations=50, damping=1e-3, step_tol=1e-13)
    e_disc, k_disc = errors(pb, grid, exact_end, x_conv)
    target_u = 1.05 * e_disc
    budget = 60.0 if quick else 240.0
    kept = {r["optimizer"]: r for r in (previous or {}).get("results", []) if r["optimizer"] not in optimizers}
    for r in kept.values():
        r.setdefault("clock", "wall (earlier run)")
    results = [{**run(o, budget, pb, grid, exact_end, target_u), "clock": "cpu"} for o in optimizers if o != "pinn"]
    results = [r for o in ("newton", "lbfgs", "adam") for r in [*results, *kept.values()] if r["optimizer"] == o]
    out = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "), "grid": [N + 1, N], "unknowns": pb.size,
           "discretisation_error_u": e_disc, "converged_kappa_rel_error": k_disc, "target_u_error": target_u,
           "budget_s": budget, "results": results, "pinn": (previous or {}).get("pinn")}
    if "pinn" in optimizers:
        out["pinn"] = {**run_pinn(PINN_BUDGET_S / (4 if quick else 1), pb, grid, exact_end, target_u),
                       "budget_s": PINN_BUDGET_S / (4 if quick else 1), "clock": "cpu"}
    return out


MARGIN_MM = 15.0
TRUTH = {"fem": "tumour grown by the P1 FEM reference (scikit-fem; lumped mass, Crank-Nicolson + Newton, 2x the "
                "inference's time steps) on the mesh whose vertices are the cell centres",
         "fd": "tumour grown by the inference's own finite-volume Crank-Nicolson model (2x its time steps: an inverse "
               "crime)"}
PLANS = ("odil", "odil_linear", "forward", "init", "naive", "oracle")
STAGES = ("naive", "init", "odil")   # the scalars before the time-scale fit, after it, after ODIL
FAR = 1e-4      # "far from the tumour": brain voxels where the true density and the forward run are both below this


def gliodil_patient(seed: int, dim: int, cells: int, steps: int, size_mm: float, iterations: int,
                    picture: Path | None = None, truth: str = "fem") -> dict:
    """One synthetic patient (grown by the ``truth`` model: the FEM reference or the inference's own finite-volume
    model): GliODIL inference and the density plans vs the 1.5 cm margin, the haze of the ODIL field far from the
    tumour, the density at which each plan's volume is reached, and (FEM truth) how far the finite-volume model
    with the true parameters is from the FEM truth (the model gap the inference faces)."""
    from neuralpde.solvers.gliodil import (
        CSF_THRESHOLD,
        combinations,
        compare_plans,
        dice,
        forward,
        infer,
        synthetic_patient,
    )

    t0 = time.process_time()
    p = synthetic_patient(seed, dim=dim, cells=cells, steps=steps, size_mm=size_mm, margin_mm=MARGIN_MM, truth=truth)
    t1, w1 = time.process_time(), time.perf_counter()
    r = infer(p.wm, p.gm, p.labels, p.grid, iterations=iterations, weights=GLIODIL_WEIGHTS)
    t2, w2 = time.process_time(), time.perf_counter()
    # ablation: the same inference on the density itself (GliODIL's code), not on log u
    lin = infer(p.wm, p.gm, p.labels, p.grid, iterations=iterations, weights=GLIODIL_WEIGHTS, density="linear")
    gap = {}
    if truth == "fem":        # the same patient (same draws) grown by the inference's own model
        fd = synthetic_patient(seed, dim=dim, cells=cells, steps=steps, size_mm=size_mm, truth="fd").truth
        gap = {"fd_vs_fem_rel_l2": float(np.linalg.norm(fd - p.truth) / np.linalg.norm(p.truth)),
               "fd_vs_fem_dice_th_down": dice(fd >= p.params["th_down"], p.truth >= p.params["th_down"])}
    t3 = time.process_time()
    refined = forward(p.wm, p.gm, p.grid, r.params)[-1]
    densities = {"odil": r.density, "odil_linear": lin.density, "forward": refined, "init": r.initial_density,
                 "naive": forward(p.wm, p.gm, p.grid, r.naive_params)[-1], "oracle": p.truth}
    plans = {k: compare_plans(d, p.labels, p.truth, p.wm + p.gm, p.grid, margin_mm=MARGIN_MM,
                              recurrence=p.recurrence) for k, d in densities.items()}
    if picture is not None and dim == 2:
        plan_picture(p, densities, picture)
    true = {k: v for k, v in p.params.items() if k != "centre"}
    exact = {**true, **combinations(true)}
    errors = {stage: {k: abs(v / exact[k] - 1) for k, v in {**q, **combinations(q)}.items()
                      if k in ("D", "rho", "ratio", "speed", "length")}
              for stage, q in (("naive", r.naive_params), ("init", r.initial_params), ("odil", r.params))}
    brain = (p.wm + p.gm) >= CSF_THRESHOLD
    far = brain & (p.truth < FAR) & (refined < FAR)
    volume = plans["odil"]["volume_voxels"]
    # the density at the last voxel each plan takes (the ranking decides there)
    at_volume = {k: float(np.sort(d[brain])[::-1][volume - 1]) for k, d in densities.items()}
    losses = {name: {"start": q.history[0]["loss"], "end": q.history[-1]["loss"],
                     "min": min(h["loss"] for h in q.history), "max": max(h["loss"] for h in q.history),
                     "end_terms": q.history[-1]["terms"]} for name, q in (("log", r), ("linear", lin))}
    return {"seed": seed, "haze_median": float(np.median(np.abs(r.density[far]))) if far.any() else 0.0,
            "haze_median_linear": float(np.median(np.abs(lin.density[far]))) if far.any() else 0.0,
            "losses": losses, "centre_shift_mm": float(np.sqrt(sum((r.params[f"x{a}"] - r.initial_params[f"x{a}"])**2
                                                                   for a in range(dim)))),
            "haze_max": float(np.abs(r.density[far]).max()) if far.any() else 0.0, "far_voxels": int(far.sum()),
            "density_at_volume": at_volume, "generate_cpu_s": t1 - t0, "inference_cpu_s": t2 - t1,
            "inference_wall_s": w2 - w1, "forward_cpu_s": time.process_time() - t3, **gap,
            "at_bounds": r.at_bounds, "true": exact, "inferred": r.params, "initial": r.initial_params,
            "naive": r.naive_params, "time_scale": r.time_scale, "errors": errors,
            "D_rel_error": abs(r.params["D"] / true["D"] - 1), "rho_rel_error": abs(r.params["rho"] / true["rho"] - 1),
            "dice_0.25": dice(r.density >= 0.25, p.truth >= 0.25), "dice_0.5": dice(r.density >= 0.5, p.truth >= 0.5),
            "visible_voxels": int((p.labels > 0).sum()), "plans": plans}


def plan_picture(p, densities: dict, path: Path) -> None:
    """Tissue, labels, log densities and the plans (1 plan only, 2 recurrence missed, 3 covered) of a 2D patient."""
    from neuralpde.solvers.gliodil import CSF_THRESHOLD, density_plan, margin_plan
    from neuralpde.viz import image_panels

    brain = (p.wm + p.gm) >= CSF_THRESHOLD
    margin = margin_plan(p.labels, brain, p.grid, MARGIN_MM)
    rec = 2.0 * p.recurrence
    panels = {"white matter": p.wm.T, "labels (1 edema, 2 core)": p.labels.T,
              "log10 true density": np.log10(np.clip(p.truth, 1e-6, 1)).T,
              "log10 GliODIL field": np.log10(np.clip(densities["odil"], 1e-6, 1)).T,
              "margin plan": (margin + rec).T}
    for name in ("odil", "forward"):
        panels[f"{name} plan"] = (density_plan(densities[name], brain, int(margin.sum())) + rec).T
    image_panels(panels, path, title="synthetic patient 0: plans at equal volume (1 plan only, 2 recurrence missed, "
                 "3 covered)", extent=(0, p.grid.bounds[0, 1], 0, p.grid.bounds[1, 1]))


def gliodil_benchmark(patients: int, dim: int, cells: int, steps: int, size_mm: float, iterations: int,
                      dest: Path | None = None, truth: str = "fem") -> dict:
    """GliODIL on synthetic patients: parameter errors, Dice, recurrence coverage of the plans at equal volume."""
    rows = []
    for seed in range(patients):
        picture = dest / "odil_gliodil_patient0.png" if dest is not None and seed == 0 else None
        row = gliodil_patient(seed, dim, cells, steps, size_mm, iterations, picture, truth)
        rows.append(row)
        print(f"patient {seed}: " + json.dumps({k: row[k] for k in ("inference_cpu_s", "at_bounds", "dice_0.25")})
              + " " + json.dumps({k: {m: round(v, 3) for m, v in c.items()} for k, c in row["plans"].items()}),
              flush=True)
    summary = {"patients": patients, "dim": dim, "grid": [steps + 1] + [cells] * dim, "size_mm": size_mm,
               "h_mm": size_mm / cells, "iterations": iterations, "weights": GLIODIL_WEIGHTS, "truth": truth,
               "rows": rows}
    for key in ("D_rel_error", "rho_rel_error", "dice_0.25", "dice_0.5", "generate_cpu_s", "inference_cpu_s",
                "inference_wall_s", "forward_cpu_s", "fd_vs_fem_rel_l2", "fd_vs_fem_dice_th_down"):
        if key in rows[0]:
            summary[f"mean_{key}"] = float(np.mean([r[key] for r in rows]))
    summary["mean_errors"] = {stage: {k: float(np.mean([r["errors"][stage][k] for r in rows]))
                                      for k in rows[0]["errors"][stage]} for stage in STAGES}
    summary["median_haze"] = float(np.median([r["haze_median"] for r in rows]))
    if "losses" in rows[0]:
        summary["median_haze_linear"] = float(np.median([r["haze_median_linear"] for r in rows]))
        summary["median_centre_shift_mm"] = float(np.median([r["centre_shift_mm"] for r in rows]))
        summary["loss_ratio"] = {}
        for name in ("log", "linear"):
            q = np.array([r["losses"][name]["end"] / r["losses"][name]["start"] for r in rows])
            summary["loss_ratio"][name] = {"median": float(np.median(q)), "min": float(q.min()), "max": float(q.max()),
                                           "peak": float(max(r["losses"][name]["max"] / r["losses"][name]["start"]
                                                             for r in rows))}
    summary["median_density_at_volume"] = {k: float(np.median([r["density_at_volume"][k] for r in rows]))
                                           for k in rows[0]["density_at_volume"]}
    for part in ("", "_new"):
        m = np.array([r["plans"]["odil"][f"margin_coverage{part}"] for r in rows])
        summary[f"margin{part}"] = float(m.mean())
        for plan in PLANS:
            g = np.array([r["plans"][plan][f"gliodil_coverage{part}"] for r in rows])
            summary[f"{plan}{part}"] = {"mean": float(g.mean()), "better": int((g > m).sum()),
                                        "ties": int((g == m).sum()), "mean_gain": float((g - m).mean())}
    return summary


def timing3d(sizes: list[tuple[int, int]], steps: int = 3) -> dict:
    """CPU seconds per Adam step (multigrid) of the GliODIL loss on 3D grids ``cells^3 x levels`` and peak memory."""
    import resource

    from neuralpde.pde.stencils import Grid
    from neuralpde.solvers.gliodil import gliodil_problem, scalar_rates, tissue_maps
    from neuralpde.solvers.odil import gradient_descent

    out = []
    for cells, nt in sizes:
        grid = Grid([[0.0, 128.0]] * 3, [cells] * 3, t_end=100.0, steps=nt)
        for side in grid.sides.values():
            side.dirichlet[...] = False
        wm, gm = tissue_maps(grid, np.random.default_rng(0))
        r = np.sqrt(sum((p - 64.0) ** 2 for p in grid.points()))
        labels = np.where(r < 10, 2, np.where(r < 20, 1, 0)).astype(np.int8) * ((wm + gm) >= 0.1)
        params = {"D": 0.1, "rho": 0.1, "ratio": 20.0, "th_up": 0.6, "th_down": 0.3, "x0": 64.0, "x1": 64.0,
                  "x2": 64.0}
        pb = gliodil_problem(wm, gm, labels, grid, np.zeros(grid.shape), params)
        stamps: list[float] = []

        def stamp(it: int, x: np.ndarray, loss: float, stamps: list[float] = stamps) -> bool:
            stamps.append(time.process_time())
            return False

        gradient_descent(pb, pb.initial(), optimizer="adam", iterations=steps + 1, lr=2e-3, multigrid=True,
                         scalar_lr=scalar_rates(2e-3, 3), every=1, callback=stamp)
        per_step = float(np.diff(stamps).mean()) if len(stamps) > 1 else float("nan")
        out.append({"cells": cells, "levels": nt + 1, "unknowns": pb.size, "cpu_s_per_adam_step": per_step,
                    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})
        print(f"3D timing: {out[-1]}", flush=True)
    # cost per step grows with the number of unknowns: fit s = a * n on the measured sizes
    a = float(np.mean([o["cpu_s_per_adam_step"] / o["unknowns"] for o in out]))
    full = 48**3 * 193 + 8
    return {"sizes": out, "full_unknowns": full, "full_cpu_s_per_step": a * full,
            "full_9000_steps_cpu_h": a * full * 9000 / 3600,
            "full_memory_gb_estimate": out[-1]["peak_rss_gb"] * full / out[-1]["unknowns"]}


def markdown(out: dict) -> list[str]:
    lines = ["# ODIL benchmarks", "", f"Machine: {out['machine']}.", ""]
    heat = out.get("heat")
    if heat:
        lines += ["## Heat inverse problem: time to accuracy", "", heat["protocol"], "",
                  f"Grid {heat['grid'][0]} levels x {heat['grid'][1]} cells, {heat['unknowns']} unknowns. Converged "
                  f"discretisation error {heat['discretisation_error_u']:.3e} (max at t = 0.5), kappa error "
                  f"{heat['converged_kappa_rel_error']:.2e}; target: u error <= {heat['target_u_error']:.3e} and "
                  f"kappa within 1%. Budget {heat['budget_s']:.0f} s per ODIL optimizer. Times are CPU seconds "
                  "(`time.process_time`, torch 1 thread) where the clock says cpu"
                  + ("; rows marked 'wall (earlier run)' are wall seconds of a previous run (load ~20), kept to save "
                     "CPU." if any(r.get("clock") != "cpu" for r in heat["results"]) else ".")
                  + " 'best u error' is the smallest error of any iterate (an iterate on its way can cross the "
                  "converged discrete solution's error).", "",
                  "| method | time to accuracy (s) | time to kappa within 1% (s) | best u error | final kappa rel. "
                  "error | ran (s) | clock |", "|---|---|---|---|---|---|---|"]
        rows = list(heat["results"]) + ([heat["pinn"]] if isinstance(heat.get("pinn"), dict) else [])
        for r in rows:
            tta = f"{r['time_to_accuracy_s']:.2f}" if r["time_to_accuracy_s"] is not None else "not reached"
            k1 = next((t for t, _, e_k in r["trace"] if e_k <= 0.01), None)
            best = min(e for _, e, _ in r["trace"])
            name = "PINN (DeepXDE)" if r["optimizer"] == "pinn" else f"ODIL-{r['optimizer']}"
            lines.append(f"| {name} | {tta} | {'-' if k1 is None else f'{k1:.2f}'} | {best:.3e} | "
                         f"{r['final_kappa_rel_error']:.2e} | {r['wall_s']:.1f} | {r.get('clock', 'wall')} |")
        pinn = heat.get("pinn")
        if isinstance(pinn, dict):
            newton = next(r for r in heat["results"] if r["optimizer"] == "newton")
            k1 = next(t for t, _, e_k in newton["trace"] if e_k <= 0.01)
            lines += ["", f"PINN setup: {pinn['setup']}; CPU budget {pinn['budget_s']:.0f} s, "
                      f"{pinn['adam_steps']} Adam steps then L-BFGS ({pinn['steps']} steps in all; L-BFGS stopped by "
                      f"itself after {pinn['wall_s']:.0f} s, as torch's L-BFGS does when a float32 step makes no "
                      "progress).", ""]
            if pinn["time_to_accuracy_s"] is None:
                ratio_k = (pinn["time_to_kappa_1pct_s"] / k1) if pinn["time_to_kappa_1pct_s"] else None
                lines.append(
                    f"**Target 'ODIL-Newton reaches the FEM-reference accuracy >= 10x faster than the PINN': met.** "
                    f"The PINN never reached the reference accuracy (best u error {pinn['best_u_error']:.2e}, "
                    f"{pinn['best_u_error'] / heat['target_u_error']:.1f}x the target) within its budget; "
                    f"ODIL-Newton reached it in {newton['time_to_accuracy_s']:.2f} CPU s, i.e. > "
                    f"{pinn['wall_s'] / newton['time_to_accuracy_s']:.0f}x faster. On the weaker criterion "
                    f"(kappa within 1%) the PINN took "
                    + (f"{pinn['time_to_kappa_1pct_s']:.0f} CPU s vs {k1:.2f} s for Newton ({ratio_k:.0f}x)."
                       if ratio_k else "longer than its budget."))
            else:
                ratio = pinn["time_to_accuracy_s"] / newton["time_to_accuracy_s"]
                lines.append(f"Target (>= 10x): {'met' if ratio >= 10 else 'missed'}, ratio {ratio:.0f}x.")
        lines += ["", "![time to accuracy](odil_time_to_accuracy.png)", ""]
    for key, title in (("gliodil", "GliODIL, synthetic 2D patients"), ("gliodil3d", "GliODIL, synthetic 3D patients")):
        glio = out.get(key)
        if glio and "odil" in glio:
            lines += gliodil_markdown(glio, title)
            if key == "gliodil":
                lines += ["![patient 0](odil_gliodil_patient0.png)", ""]
    t3 = out.get("timing3d")
    if t3:
        lines += ["## 3D cost per Adam step", "",
                  "| grid (cells^3 x levels) | unknowns | CPU s per Adam step | peak RSS (GB, process) |",
                  "|---|---|---|---|"]
        for s in t3["sizes"]:
            lines.append(f"| {s['cells']}^3 x {s['levels']} | {s['unknowns']} | {s['cpu_s_per_adam_step']:.2f} | "
                         f"{s['peak_rss_gb']:.1f} |")
        per = [s["cpu_s_per_adam_step"] / s["unknowns"] * t3["full_unknowns"] for s in t3["sizes"]]
        lo, hi = min(per), max(per)
        lines += ["", f"Scaled linearly in the unknowns from each measured size, 48^3 x 193 ({t3['full_unknowns']} "
                  f"unknowns) costs {lo:.0f}-{hi:.0f} CPU s per Adam step (the larger grid was slower per unknown: "
                  "cache and memory bandwidth on a machine shared with other jobs), so the paper's 9000 steps take "
                  f"{lo * 9000 / 3600:.0f}-{hi * 9000 / 3600:.0f} CPU hours ({lo * 9000 / 7200:.0f}-"
                  f"{hi * 9000 / 7200:.0f} h if both cores were ours), and ~{t3['full_memory_gb_estimate']:.0f} GB of "
                  "memory (scaled from the largest size; this machine has 23 GB). **Target '48^3 x 192 under 30 "
                  f"minutes on this 2-core CPU': missed** by a factor {lo * 9000 / 3600:.0f}-"
                  f"{hi * 9000 / 3600:.0f} even with both cores; it needs a GPU (the paper: 30-45 min on one) "
                  "or far fewer steps. Gauss-Newton does not apply at this size: the normal equations of a 4D "
                  "(space-time) stencil on ~10^6-10^7 unknowns are beyond sparse LU fill-in, and the hinge terms "
                  "make the Jacobian change its sparsity pattern between steps.", ""]
    return lines


def gliodil_markdown(glio: dict, title: str) -> list[str]:
    grid = " x ".join(str(g) for g in glio["grid"])
    overrides = f" except {glio['weights']}" if glio["weights"] else ""
    lines = [f"## {title}", "",
             f"{glio['patients']} patients, grid {grid} (levels x cells), box {glio['size_mm']:.0f} mm (h = "
             f"{glio['h_mm']:.1f} mm), 100 days, {TRUTH.get(glio.get('truth', 'fd'))}. Adam (multigrid) "
             f"{glio['iterations']} steps"
             + (" on log u (`odil`; `odil_linear`: the same on u itself, as GliODIL's code), learning rates warmed "
                "up over the first 1/15 of the steps and decayed by a cosine to 1% (`infer`'s defaults)"
                if "odil_linear" in glio else "") + " from a forward-run "
             + ("initial guess fitted in time (GliODIL's Dice-peak heuristic, `time_scale_fit`), "
                if "mean_errors" in glio else "initial guess, ")
             + "the loss weights of GliODIL's code (residual multipliers, means over the whole "
             f"space-time grid){overrides}. Hidden tumour = the synthetic recurrence (the visible tumour u >= "
             "th_down after further untreated growth, at the first time its volume reaches the margin plan's). Plans "
             "at equal volume: visible tumour + 15 mm margin; the top of the GliODIL density (`odil`); the top of a "
             "forward run with GliODIL's inferred scalars and seed (`forward`); the top of the forward run of the "
             "initial guess (`init`"
             + (", after the time-scale fit; `naive`: the forward run of D = rho = 0.1, no inference at all"
                if "mean_errors" in glio else ", before any inference: a baseline")
             + "); the top of the true density (`oracle`, an upper bound).", "",
             f"Mean |dD/D| {glio['mean_D_rel_error']:.2f}, mean |drho/rho| {glio['mean_rho_rel_error']:.2f}, mean "
             f"Dice at 0.25 / 0.5: {glio['mean_dice_0.25']:.3f} / {glio['mean_dice_0.5']:.3f}; mean CPU s per patient: "
             f"generation {glio['mean_generate_cpu_s']:.0f}, inference {glio['mean_inference_cpu_s']:.0f}, forward "
             f"{glio['mean_forward_cpu_s']:.1f}"
             + (f"; inference wall time {glio['mean_inference_wall_s']:.0f} s (2 cores shared with other jobs)"
                if "mean_inference_wall_s" in glio else "") + ".", ""]
    if "mean_errors" in glio:
        e = glio["mean_errors"]
        lines += ["Parameter errors (mean over patients of |estimate / truth - 1|). speed = 2 sqrt(D rho) (sets the "
                  "tumour's size at diagnosis: identifiable from one snapshot), length = sqrt(D / rho) (the front "
                  "width, 0.4-2.4 mm in this cohort, below the voxel: hardly identifiable from labels at this h).", "",
                  "| scalars | D | rho | speed 2 sqrt(D rho) | length sqrt(D/rho) | ratio |",
                  "|---|---|---|---|---|---|"]
        names = {"naive": "naive start (D = rho = 0.1)", "init": "after the time-scale fit", "odil": "after ODIL"}
        for stage in STAGES:
            q = e[stage]
            lines.append(f"| {names[stage]} | {q['D']:.2f} | {q['rho']:.2f} | {q['speed']:.2f} | {q['length']:.2f} "
                         f"| {q['ratio']:.2f} |")
        better = {st: sum(r["errors"][st]["speed"] < r["errors"]["naive"]["speed"] for r in glio["rows"])
                  for st in ("init", "odil")}
        lines += ["", f"Speed closer to the truth than the naive start: time-scale fit {better['init']}/"
                  f"{glio['patients']}, after ODIL {better['odil']}/{glio['patients']}.", ""]
    if "mean_fd_vs_fem_rel_l2" in glio:
        lines += [f"Model gap: the inference's finite-volume model run with the true parameters differs from the FEM "
                  f"truth by {glio['mean_fd_vs_fem_rel_l2']:.3f} (relative L2 of the final density, mean) and its "
                  f"visible tumour (u >= th_down) has Dice {glio['mean_fd_vs_fem_dice_th_down']:.3f} with the truth's: "
                  "the discretisation error at this h, which the old (finite-volume-grown) cohort did not have.", ""]
    if "median_haze_linear" in glio:
        d = glio["median_density_at_volume"]
        lo = glio["loss_ratio"]
        lines += [f"Haze of the ODIL field at the final time (median |u| over brain voxels where the true density "
                  f"and the forward run are both < {FAR:g}; median over patients): log u {glio['median_haze']:.1e}, "
                  f"linear u {glio['median_haze_linear']:.1e}. The density at which a plan reaches the margin's "
                  f"volume (median over patients): true {d['oracle']:.1e}, forward {d['forward']:.1e}, ODIL on log u "
                  f"{d['odil']:.1e}, on u {d['odil_linear']:.1e}: on u itself the plan is decided by the haze "
                  "(docs/odil.md, 'Why the raw field's plan missed').", "",
                  "Loss at the end / at the start (the forward-run guess), median over patients [min, max]: log u "
                  f"{lo['log']['median']:.2f} [{lo['log']['min']:.2f}, {lo['log']['max']:.2f}], linear u "
                  f"{lo['linear']['median']:.2f} [{lo['linear']['min']:.2f}, {lo['linear']['max']:.2f}]; largest "
                  f"loss on the way / start: {lo['log']['peak']:.1f} (log), {lo['linear']['peak']:.1f} (linear). "
                  f"Seed centre moved by ODIL: median {glio['median_centre_shift_mm']:.2f} mm.", ""]
    elif "median_haze" in glio:
        d = glio["median_density_at_volume"]
        lines += [f"Haze of the ODIL field at the final time (median |u| over brain voxels where the true density "
                  f"and the forward run are both < {FAR:g}; median over patients): {glio['median_haze']:.1e}. The "
                  "density at which a plan reaches the margin's volume (median over patients): true "
                  f"{d['oracle']:.1e}, forward {d['forward']:.1e}, ODIL {d['odil']:.1e}: the plans are decided by "
                  "densities far below what the ODIL field resolves (docs/odil.md, 'Why the raw field's plan missed').",
                  ""]
    lines += ["| plan | coverage of the recurrence | better than margin | coverage of its new part | better |",
              "|---|---|---|---|---|",
              f"| 1.5 cm margin | {glio['margin']:.3f} | - | {glio['margin_new']:.3f} | - |"]
    n = glio["patients"]
    for plan in [q for q in PLANS if q in glio]:     # older results lack `init`
        a, b = glio[plan], glio[f"{plan}_new"]
        lines.append(f"| {plan} | {a['mean']:.3f} | {a['better']}/{n} | {b['mean']:.3f} | {b['better']}/{n} |")
    lines += ["", "| seed | D true / inferred | rho true / inferred | speed true / naive / init / odil | ratio true / "
              "inferred | Dice 0.25 | margin | odil | odil_linear | forward | init | naive | oracle | haze | at bounds "
              "| CPU s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in glio["rows"]:
        t, i, pl = r["true"], r["inferred"], r["plans"]
        lines.append(f"| {r['seed']} | {t['D']:.3f} / {i['D']:.3f} | {t['rho']:.3f} / {i['rho']:.3f} | "
                     + (" / ".join(f"{2 * np.sqrt(q['D'] * q['rho']):.3f}" for q in (t, r["naive"], r["initial"], i))
                        if "naive" in r else "-") + " | "
                     f"{t['ratio']:.1f} / {i['ratio']:.1f} | {r['dice_0.25']:.3f} | "
                     f"{pl['odil']['margin_coverage']:.3f} | "
                     f"{pl['odil']['gliodil_coverage']:.3f} | "
                     f"{pl['odil_linear']['gliodil_coverage'] if 'odil_linear' in pl else float('nan'):.3f} | "
                     f"{pl['forward']['gliodil_coverage']:.3f} | "
                     f"{pl['init']['gliodil_coverage'] if 'init' in pl else float('nan'):.3f} | "
                     f"{pl['naive']['gliodil_coverage'] if 'naive' in pl else float('nan'):.3f} | "
                     f"{pl['oracle']['gliodil_coverage']:.3f} | {r.get('haze_median', float('nan')):.0e} | "
                     f"{', '.join(r['at_bounds']) or '-'} | "
                     f"{r['inference_cpu_s']:.0f} |")
    m = glio["margin"]
    for plan in [q for q in ("odil", "odil_linear", "forward") if q in glio]:
        a = glio[plan]
        met = a["mean"] > m and 2 * a["better"] > n
        lines.append("")
        lines.append(f"Target 'the GliODIL plan covers more of the hidden tumour than the margin at equal volume, on "
                     f"average and in most patients', plan `{plan}`: **{'met' if met else 'missed'}** (mean "
                     f"{a['mean']:.3f} vs {m:.3f}, better in {a['better']}/{n}).")
    if "init" in glio:
        a, f = glio["init"], glio["forward"]
        lines += ["", "Forward run of the initial guess (`init`): mean "
                  f"{a['mean']:.3f}, better than the margin in {a['better']}/{n}; ODIL changes the forward "
                  f"plan's mean coverage by {f['mean'] - a['mean']:+.3f}."]
    if "naive" in glio:
        a, f = glio["naive"], glio["forward"]
        lines += ["", f"Baseline without any inference (`naive`, D = rho = 0.1): mean {a['mean']:.3f}, better than the "
                  f"margin in {a['better']}/{n}; the whole inference (time-scale fit + ODIL) changes the forward "
                  f"plan's mean coverage by {f['mean'] - a['mean']:+.3f}."]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter budgets, fewer patients, smaller grids")
    parser.add_argument("--part", choices=["all", "heat", "gliodil", "gliodil3d", "timing3d"], default="all")
    parser.add_argument("--optimizers", default="newton,lbfgs,adam,pinn",
                        help="heat part: which rows to (re-)run; the others are kept from odil.json")
    parser.add_argument("--patients", type=int, default=None, help="default 10 (2D), 3 (3D)")
    parser.add_argument("--cells", type=int, default=None, help="default 32 (2D), 20 (3D)")
    parser.add_argument("--steps", type=int, default=None, help="default 32 (2D), 20 (3D)")
    parser.add_argument("--size-mm", type=float, default=128.0)
    parser.add_argument("--truth", choices=["fem", "fd"], default="fem", help="model that grows the patients")
    parser.add_argument("--iterations", type=int, default=None, help="default 1500 (2D), 600 (3D)")
    parser.add_argument("--dest", default=str(ROOT / "docs" / "results"), help="folder of odil.json/.md")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite odil.md from odil.json")
    args = parser.parse_args()
    torch.set_num_threads(1)       # gathers are far slower with 2 threads on the shared 2-core machine
    dest = Path(args.dest)
    path = dest / "odil.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    if args.markdown_only:
        write_text(dest / "odil.md", "\n".join(markdown(out)) + "\n")
        return
    out["machine"] = f"{platform.processor() or 'x86_64'} 2-core CPU shared with other jobs, torch 1 thread"
    if args.part in ("all", "heat"):
        out["heat"] = heat_benchmark(args.quick, args.optimizers.split(","), out.get("heat"))
        try:
            from neuralpde.viz import line_plot

            rows = out["heat"]["results"] + ([out["heat"]["pinn"]] if isinstance(out["heat"]["pinn"], dict) else [])
            line_plot({f"{r['optimizer']} ({r.get('clock', 'wall')})": ([max(t, 1e-3) for t, _, _ in r["trace"]],
                                                                        [e for _, e, _ in r["trace"]]) for r in rows},
                      dest / "odil_time_to_accuracy.png", xlabel="time (s)", ylabel="max error of u(t=0.5)",
                      logx=True, logy=True, title="heat inverse: ODIL vs PINN")
        except Exception as exc:  # noqa: BLE001 (a missing plot must not lose the numbers)
            print(f"plot skipped: {exc}")
    q = args.quick
    if args.part in ("all", "gliodil"):
        out["gliodil"] = gliodil_benchmark(args.patients or (2 if q else 10), 2, args.cells or (16 if q else 32),
                                           args.steps or (16 if q else 32), args.size_mm,
                                           args.iterations or (100 if q else 1500), dest, args.truth)
    if args.part in ("all", "gliodil3d"):
        out["gliodil3d"] = gliodil_benchmark(args.patients or (1 if q else 3), 3, args.cells or (10 if q else 20),
                                             args.steps or (8 if q else 20), args.size_mm,
                                             args.iterations or (20 if q else 600), truth=args.truth)
    if args.part in ("all", "timing3d"):
        out["timing3d"] = timing3d([(12, 24), (16, 32)] if q else [(24, 96), (32, 128)])
    write_text(path, json.dumps(out, indent=1))
    lines = markdown(out)
    write_text(dest / "odil.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
