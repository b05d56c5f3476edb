#!/usr/bin/env python
"""Our dolfinx reference path against a bare dolfinx script, on the same Poisson problem.

The problem: ``-laplace(u) = f`` on the unit square with ``u = g`` on the whole boundary and the
manufactured solution ``u = sin(pi x) sin(pi y)`` (``f = 2 pi^2 sin(pi x) sin(pi y)``, ``g = u``),
P1 elements on an n x n mesh of right-diagonal triangles, CG + hypre BoomerAMG with
``rtol=1e-10, atol=1e-14, max_it=2000``, one process.

* ours: ``Rectangle().mesh(cells=[n, n])`` (the numpy mesh) and ``DolfinxSolver().solve(...)``.
* bare: what a competent dolfinx user writes: ``create_unit_square``, ``locate_entities_boundary``,
  ``dirichletbc``, ``fem.form``, ``fem.petsc.assemble_*`` and a PETSc KSP.

Timed phases (the same boundaries on both sides; the issue's metric is their sum):

* mesh: the mesh, the function space and the Dirichlet condition (boundary facets, boundary data
  interpolated, ``dirichletbc``); ours also counts building its numpy mesh here.
* assemble: the source interpolated, forms compiled (from the JIT cache) and the system assembled.
* solve: KSP setup and solve, then the KSP, matrix and vector destroyed (petsc4py >= 3.18 does not
  free them when they are garbage collected; repeated solves would otherwise leak memory).
* gather (ours only, reported apart): conversion of the solution to our canonical layout.

Each size gets one untimed warm-up run per implementation (JIT, caches, first touch of memory;
the warm-up solutions are also the ones checked against each other and the exact solution), then
``--repeats`` timed runs per implementation, alternating between the two (and which goes first)
to spread the noise of a shared machine. Reported: median and min per phase, and the overhead
``(ours - bare) / bare`` of the median ``mesh + assemble + solve``.

Usage::

    python benchmarks/fem_reference.py                     # 256, 512, 1024; about 2 minutes on 2 cores
    python benchmarks/fem_reference.py --sizes 64 128      # quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RTOL, ATOL, MAX_IT = 1e-10, 1e-14, 2000
EXACT = "sin(pi*x)*sin(pi*y)"
TARGET_PCT, TARGET_DOFS = 10.0, 250_000
#: our own (scikit-fem) error norms are cross-checked up to this size (they take 11 GB at 1024^2)
SKFEM_CHECK_MAX_DOFS = 300_000
PHASES = ("mesh", "assemble", "solve")

PHASE_NOTES = {
    "mesh": "mesh + function space + Dirichlet condition (boundary facets, g interpolated, dirichletbc); "
            "ours includes building the numpy mesh (reported as numpy_mesh too)",
    "assemble": "f interpolated, forms, matrix and vector assembly with lifting and set_bc",
    "solve": "KSP setup (CG + BoomerAMG) and solve; KSP, matrix and vector destroyed",
    "total": "mesh + assemble + solve (the issue's metric)",
    "gather": "ours only: the solution converted to the canonical FEField layout (not in total)",
}


# --------------------------------------------------------------------------------------------- ours
def ours_problem() -> Any:
    from neuralpde.meshes.domains import Rectangle
    from neuralpde.pde import BoundaryCondition, Poisson, Problem

    return Problem(Poisson(source="manufactured", exact=EXACT), Rectangle(),
                   [BoundaryCondition("all", "dirichlet", "exact")])


def run_ours(problem: Any, n: int) -> tuple[dict[str, float], Any, Any]:
    """One solve through our path; returns (timings, solution, numpy mesh)."""
    from neuralpde.solvers.fem.base import LinearSolverOptions
    from neuralpde.solvers.fem.dolfinx_backend import DolfinxSolver

    t0 = time.perf_counter()
    mesh = problem.domain.mesh(cells=[n, n])
    numpy_mesh = time.perf_counter() - t0
    sol = DolfinxSolver().solve(problem, mesh, degree=1,
                                solver=LinearSolverOptions(type="cg", rtol=RTOL, atol=ATOL, max_it=MAX_IT))
    t = sol.timings
    timings = {"mesh": numpy_mesh + t["mesh"], "assemble": t["assemble"], "solve": t["solve"],
               "gather": t["gather"], "numpy_mesh": numpy_mesh, "iterations": sol.iterations,
               "dofs": sol.num_dofs}
    return timings, sol, mesh


# --------------------------------------------------------------------------------------------- bare
def _exact(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])


def _source(x: np.ndarray) -> np.ndarray:
    return 2 * np.pi**2 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])


def run_bare(n: int) -> tuple[dict[str, float], Any]:
    """The bare dolfinx script; returns (timings, solution Function)."""
    import ufl
    from dolfinx import fem
    from dolfinx import mesh as dmesh
    from dolfinx.fem import petsc
    from mpi4py import MPI
    from petsc4py import PETSc

    functionspace = getattr(fem, "functionspace", None) or fem.FunctionSpace   # 0.8+ / 0.5-0.7

    t0 = time.perf_counter()
    msh = dmesh.create_unit_square(MPI.COMM_WORLD, n, n)      # triangles, diagonal "right"
    V = functionspace(msh, ("Lagrange", 1))
    fdim = msh.topology.dim - 1
    facets = dmesh.locate_entities_boundary(msh, fdim, lambda x: np.ones(x.shape[1], dtype=bool))
    g = fem.Function(V)
    g.interpolate(_exact)
    bc = fem.dirichletbc(g, fem.locate_dofs_topological(V, fdim, facets))
    t1 = time.perf_counter()
    f = fem.Function(V)
    f.interpolate(_source)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
    L = fem.form(f * v * ufl.dx)
    A = petsc.assemble_matrix(a, bcs=[bc])
    A.assemble()
    b = petsc.assemble_vector(L)
    petsc.apply_lifting(b, [a], bcs=[[bc]])
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    petsc.set_bc(b, [bc])
    t2 = time.perf_counter()
    ksp = PETSc.KSP().create(msh.comm)
    ksp.setOperators(A)
    ksp.setType("cg")
    ksp.getPC().setType("hypre")
    ksp.getPC().setHYPREType("boomeramg")
    ksp.setTolerances(rtol=RTOL, atol=ATOL, max_it=MAX_IT)
    uh = fem.Function(V)
    ksp.solve(b, uh.x.petsc_vec if hasattr(uh.x, "petsc_vec") else uh.vector)
    uh.x.scatter_forward()
    reason, iterations = ksp.getConvergedReason(), ksp.getIterationNumber()
    for obj in (ksp, A, b):     # as dolfinx advises for petsc4py >= 3.18; our path does the same
        obj.destroy()
    t3 = time.perf_counter()
    if reason <= 0:
        raise RuntimeError(f"bare KSP did not converge (reason {reason})")
    timings = {"mesh": t1 - t0, "assemble": t2 - t1, "solve": t3 - t2,
               "iterations": iterations, "dofs": V.dofmap.index_map.size_global}
    return timings, uh


# ------------------------------------------------------------------------------------- verification
def verify(n: int, problem: Any, sol: Any, mesh: Any, uh: Any) -> dict[str, float | None]:
    """Both warm-up solutions against the exact solution and against each other."""
    import ufl
    from dolfinx import fem

    V = uh.function_space
    coords = V.tabulate_dof_coordinates()[:, :2]
    # our rectangle numbers the vertex at (i/n, j/n) as j (n + 1) + i; P1 dofs sit at the vertices
    ij = np.rint(coords * n).astype(np.int64)
    ours_on_bare = sol.field.vertex_values[ij[:, 1] * (n + 1) + ij[:, 0]]
    if not np.allclose(mesh.points[ij[:, 1] * (n + 1) + ij[:, 0]], coords, rtol=0, atol=1e-12):
        raise RuntimeError("vertex mapping between the two meshes failed")
    exact_ours = problem.exact.numpy(mesh.points.T)
    bare_values = uh.x.array.real

    # the same L2 functional (quadrature degree 6 on the exact solution) for both solutions
    w = fem.Function(V)
    w.x.array[:] = ours_on_bare
    x = ufl.SpatialCoordinate(V.mesh)
    u_ex = ufl.sin(np.pi * x[0]) * ufl.sin(np.pi * x[1])
    dx6 = ufl.dx(metadata={"quadrature_degree": 6})

    def l2(fn: Any) -> float:
        return float(np.sqrt(fem.assemble_scalar(fem.form((fn - u_ex) ** 2 * dx6))))

    scale = float(np.max(np.abs(bare_values)))
    out: dict[str, float | None] = {
        "max_nodal_error_ours": float(np.max(np.abs(sol.field.vertex_values - exact_ours))),
        "max_nodal_error_bare": float(np.max(np.abs(bare_values - _exact(coords.T)))),
        "l2_error_ours": l2(w),
        "l2_error_bare": l2(uh),
        "max_abs_difference": float(np.max(np.abs(ours_on_bare - bare_values))),
        "max_rel_difference": float(np.max(np.abs(ours_on_bare - bare_values))) / scale,
        "l2_error_ours_skfem": None,
    }
    if sol.num_dofs <= SKFEM_CHECK_MAX_DOFS:
        out["l2_error_ours_skfem"] = float(sol.field.errors(problem.exact)["l2"])
    return out


# -------------------------------------------------------------------------------------------- stats
def summarise(runs: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {"median": {k: statistics.median(r[k] for r in runs) for k in keys},
            "min": {k: min(r[k] for r in runs) for k in keys}}


def machine_info() -> dict[str, Any]:
    import dolfinx
    import petsc4py
    from petsc4py import PETSc

    cpu = platform.processor() or "unknown"
    mem_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "dolfinx": dolfinx.__version__,
            "petsc": ".".join(str(v) for v in PETSc.Sys.getVersion()), "petsc4py": petsc4py.__version__,
            "mpi_processes": 1}


# ----------------------------------------------------------------------------------------- markdown
def _s(x: float) -> str:
    return f"{x:.3f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# FEM reference: our dolfinx path vs a bare dolfinx script",
        "",
        f"Poisson `-laplace(u) = f` on the unit square, `u = sin(pi x) sin(pi y)` (manufactured), Dirichlet "
        f"on the whole boundary, P1 on n x n right-diagonal triangles, CG + BoomerAMG (rtol {RTOL:g}), "
        f"one process. Median of {report['repeats']} timed runs per implementation after one warm-up, "
        "runs of the two implementations alternating.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; dolfinx {m['dolfinx']}, "
        f"PETSc {m['petsc']}, Python {m['python']}; {report['date']}. The machine was shared with other "
        "work, so single runs are noisy; medians and minima are both given.",
        "",
        f"Re-run: `python benchmarks/fem_reference.py` (this run: `{report['command']}`); "
        "raw numbers in `fem_reference.json`.",
        "",
        f"## Overhead (target: at most {TARGET_PCT:g}% from {TARGET_DOFS // 1000}k DOFs up)",
        "",
        "| mesh | DOFs | ours: mesh+assemble+solve (s) | bare (s) | overhead (median) | overhead (min) | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        o, b = r["ours"], r["bare"]
        target = "n/a" if not r["target_applies"] else ("met" if r["target_met"] else "missed")
        lines.append(f"| {r['n']}² | {r['dofs']:,} | {_s(o['median']['total'])} | {_s(b['median']['total'])} "
                     f"| {r['overhead_pct']:+.1f}% | {r['overhead_pct_min']:+.1f}% | {target} |")
    lines += [
        "",
        "## Phases (seconds, median [min])",
        "",
        "| mesh | impl. | mesh | assemble | solve | mesh+assemble+solve | gather | CG its |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        for name in ("ours", "bare"):
            s = r[name]
            cells = [f"{_s(s['median'][k])} [{_s(s['min'][k])}]" for k in (*PHASES, "total")]
            gather = f"{_s(s['median']['gather'])} [{_s(s['min']['gather'])}]" if name == "ours" else "-"
            lines.append(f"| {r['n']}² | {name} | " + " | ".join(cells) + f" | {gather} | {s['iterations']} |")
    lines += [
        "",
        "Phase boundaries: " + "; ".join(f"**{k}**: {v}" for k, v in PHASE_NOTES.items()) + ". "
        "Of our mesh phase, building the numpy mesh took (median) "
        + ", ".join(f"{_s(r['ours']['median']['numpy_mesh'])} s at {r['n']}²" for r in report["results"]) + ".",
        "",
        "## Same solution",
        "",
        "| mesh | max nodal error ours | bare | L2 error ours | bare | max abs(ours - bare) | ours L2 (scikit-fem) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        v = r["verification"]
        skfem = "-" if v["l2_error_ours_skfem"] is None else f"{v['l2_error_ours_skfem']:.6e}"
        lines.append(f"| {r['n']}² | {v['max_nodal_error_ours']:.6e} | {v['max_nodal_error_bare']:.6e} "
                     f"| {v['l2_error_ours']:.6e} | {v['l2_error_bare']:.6e} | {v['max_abs_difference']:.1e} "
                     f"| {skfem} |")
    lines += [
        "",
        "L2 errors of both solutions come from one dolfinx functional (quadrature degree 6 on the exact "
        "solution); the last column is our own error norm (`FEField.errors`), computed up to "
        f"{SKFEM_CHECK_MAX_DOFS // 1000}k DOFs.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024],
                        help="cells per side (default: 256 512 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size and implementation")
    parser.add_argument("--out", type=Path, default=Path("docs/results"), help="folder for the results")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.sizes) < 1:
        parser.error("--repeats and --sizes must be positive")

    logging.disable(logging.INFO)     # the JIT's build chatter
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from neuralpde.fileio import write_text

    console = Console(stderr=True)
    problem = ours_problem()
    report: dict[str, Any] = {
        "benchmark": "fem_reference",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/fem_reference.py", *(argv if argv is not None else sys.argv[1:])]),
        "repeats": args.repeats,
        "machine": machine_info(),
        "problem": {"pde": "-laplace(u) = f", "exact": EXACT, "domain": "unit square", "element": "P1",
                    "cells": "n x n squares, two right-diagonal triangles each",
                    "solver": {"type": "cg", "preconditioner": "hypre boomeramg", "rtol": RTOL, "atol": ATOL,
                               "max_it": MAX_IT}},
        "phases": PHASE_NOTES,
        "target": {"max_overhead_pct": TARGET_PCT, "from_dofs": TARGET_DOFS},
        "results": [],
    }
    total_steps = len(args.sizes) * 2 * (1 + args.repeats)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("fem_reference", total=total_steps)
        for n in args.sizes:
            load_before = os.getloadavg()
            progress.update(bar, description=f"{n}²: warm-up")
            ours_t, sol, mesh = run_ours(problem, n)
            progress.advance(bar)
            bare_t, uh = run_bare(n)
            progress.advance(bar)
            check = verify(n, problem, sol, mesh, uh)
            if check["max_rel_difference"] > 1e-6:
                console.print(f"[red]{n}²: the two solutions differ by {check['max_rel_difference']:.2e} "
                              "(relative)[/red]")
            del sol, mesh, uh
            gc.collect()
            runs: dict[str, list[dict[str, float]]] = {"ours": [], "bare": []}
            for rep in range(args.repeats):
                order = ("ours", "bare") if rep % 2 == 0 else ("bare", "ours")
                for name in order:
                    progress.update(bar, description=f"{n}²: {name} run {rep + 1}/{args.repeats}")
                    t = run_ours(problem, n)[0] if name == "ours" else run_bare(n)[0]
                    t["total"] = sum(t[k] for k in PHASES)
                    runs[name].append(t)
                    gc.collect()
                    progress.advance(bar)
                    console.print(f"{n}² {name:4s} " + "  ".join(f"{k} {t[k]:.3f}" for k in (*PHASES, "total"))
                                + (f"  (gather {t['gather']:.3f})" if name == "ours" else ""))
            ours = {**summarise(runs["ours"], (*PHASES, "total", "gather", "numpy_mesh")),
                    "iterations": runs["ours"][0]["iterations"], "runs": runs["ours"]}
            bare = {**summarise(runs["bare"], (*PHASES, "total")),
                    "iterations": runs["bare"][0]["iterations"], "runs": runs["bare"]}
            dofs = int(runs["bare"][0]["dofs"])
            if dofs != int(runs["ours"][0]["dofs"]):
                raise RuntimeError(f"DOF counts differ: ours {runs['ours'][0]['dofs']}, bare {dofs}")
            pct = 100 * (ours["median"]["total"] - bare["median"]["total"]) / bare["median"]["total"]
            pct_min = 100 * (ours["min"]["total"] - bare["min"]["total"]) / bare["min"]["total"]
            applies = dofs >= TARGET_DOFS
            report["results"].append({
                "n": n, "cells": 2 * n * n, "dofs": dofs, "ours": ours, "bare": bare,
                "overhead_pct": pct, "overhead_pct_min": pct_min, "target_applies": applies,
                "target_met": (pct <= TARGET_PCT) if applies else None, "verification": check,
                "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
            })
            console.print(f"[bold]{n}² ({dofs:,} DOFs): ours {ours['median']['total']:.3f} s, bare "
                        f"{bare['median']['total']:.3f} s, overhead {pct:+.1f}% (median), {pct_min:+.1f}% (min); "
                        f"solutions differ by {check['max_abs_difference']:.1e}[/bold]")

    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "fem_reference.json", json.dumps(report, indent=2) + "\n")
    write_text(args.out / "fem_reference.md", markdown(report))
    console.print(f"wrote {args.out / 'fem_reference.md'} and {args.out / 'fem_reference.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
