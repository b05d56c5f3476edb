"""DCDM benchmark: iterations and wall time to relative residual 1e-6, DCDM vs CG, Jacobi-, IC(0)- and AMG-PCG.

Protocol: Poisson ``-lap u = f`` with zero Dirichlet data on the unit square/cube, P1 on the built-in
grid meshes with ``n + 1`` cells per side, so the unknowns form an ``n^d`` grid (in 2D the P1 matrix is
exactly the 5-point (4, -1) stencil of the papers file). The system comes from
``ReferenceSolver.linear_system()`` (scikit-fem). Right-hand sides: ``ones``, ``bump``
(``exp(-((x-.3)^2+(y-.6)^2)/.01)``) and ``random`` (standard normal, seed 0). The network is trained
once on the 64^2 system (Ritz vectors, scale-invariant loss) and applied unchanged at every size; a 3D
network is trained once on the 16^3 system and applied at 16^3, 32^3 and 64^3. Two directions from the
same network: ``dcdm`` is the paper's (``q = f(r)``), ``dcdm-ml`` applies it on the grid and on its
coarsenings down to 8 unknowns per axis and combines the candidates by a Galerkin solve
(``neuralpde.solvers.dcdm_levels``, not in the paper). Stopping: true residual ``||r|| <= 1e-6 ||b||``
for DCDM, recursive residual for the PCG baselines, all from ``x0 = 0``. IC(0) and AMG (BoomerAMG)
come from PETSc when dolfinx is installed.

    .venv/bin/python benchmarks/dcdm.py               # train both nets (resumes), evaluate: docs/results/dcdm.*
    .venv/bin/python benchmarks/dcdm.py --train-only  # just the training (resumable checkpoints)
    .venv/bin/python benchmarks/dcdm.py --quick       # a smoke version; writes out/benchmarks/dcdm/quick/
    .venv/bin/python benchmarks/dcdm.py --report-only # rewrite dcdm.md and the plots from dcdm.json
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
from neuralpde.meshes.domains import Box, Rectangle  # noqa: E402
from neuralpde.operators.dcdm_net import DCDMNet, GridMap  # noqa: E402
from neuralpde.pde import BoundaryCondition, Poisson, Problem  # noqa: E402
from neuralpde.progress import Progress  # noqa: E402
from neuralpde.runtime import seed_everything  # noqa: E402
from neuralpde.solvers.dcdm import dcdm  # noqa: E402
from neuralpde.solvers.dcdm_levels import MultilevelDirection  # noqa: E402
from neuralpde.solvers.dcdm_train import NetworkDirection, load_network, train  # noqa: E402
from neuralpde.solvers.fem.skfem_backend import SkfemSolver  # noqa: E402
from neuralpde.solvers.krylov import BASELINES, solve  # noqa: E402
from neuralpde.solvers.ritz import RitzBasis  # noqa: E402

RESULTS = ROOT / "docs" / "results"
WORK = ROOT / "out" / "benchmarks" / "dcdm"
RTOL = 1e-6


def system(n: int, dim: int):
    """``(A, free dof coordinates, GridMap, h)`` of the P1 Poisson system with ``n^dim`` unknowns."""
    domain = Rectangle() if dim == 2 else Box()
    pb = Problem(Poisson(source="1"), domain, [BoundaryCondition("all", "dirichlet", "0")])
    mesh = domain.mesh(cells=[n + 1] * dim)
    A, _, free, _ = SkfemSolver().linear_system(pb, mesh)
    return A, mesh.points[free], GridMap.from_mesh(mesh, free), 1.0 / (n + 1)


def right_hand_sides(X: np.ndarray, h: float) -> dict[str, np.ndarray]:
    r2 = (X[:, 0] - 0.3) ** 2 + (X[:, 1] - 0.6) ** 2 + (((X[:, 2] - 0.5) ** 2) if X.shape[1] == 3 else 0.0)
    return {"ones": np.full(len(X), h * h), "bump": np.exp(-r2 / 0.01) * h * h,
            "random": np.random.default_rng(0).standard_normal(len(X))}


def train_network(args, dim: int = 2) -> tuple[Path, dict]:
    torch.set_num_threads(1)      # on a shared 2-core machine one thread is several times faster than two
    seed_everything(0)
    A, _, grid, _ = system(args.train_n, dim)
    t0 = time.perf_counter()
    ritz = RitzBasis.from_matrix(A, steps=args.ritz_steps, seed=0)
    ritz_s = time.perf_counter() - t0
    tag = f"{args.train_n}" if dim == 2 else f"{args.train_n}_3d"
    ritz.save(WORK / f"ritz{tag}.h5", grid=list(grid.shape))
    ckpt = WORK / f"dcdm{tag}.pt"
    net = DCDMNet(dim=dim)
    hist = train(net, A, grid, ritz, steps=args.steps, batch=args.batch, lr=args.lr, lr_final=args.lr / 20,
                 seed=0, checkpoint=ckpt, checkpoint_every=50, progress=Progress(enabled=sys.stderr.isatty()))
    loss = hist["loss"]
    record = WORK / ("train.json" if dim == 2 else "train_3d.json")
    if hist["resumed_from"] >= args.steps and record.is_file():      # already trained: keep the first run's record
        return ckpt, json.loads(record.read_text())
    info = {"grid": args.train_n, "dim": dim, "ritz_steps": args.ritz_steps, "ritz_vectors": len(ritz.values),
            "ritz_s": ritz_s,
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "lr_final": args.lr / 20,
            "parameters": net.num_parameters(), "train_s_this_run": hist["time_s"],
            "resumed_from": hist["resumed_from"], "loss_first": float(np.mean(loss[:20])),
            "loss_last": float(np.mean(loss[-50:]))}
    write_text(record, json.dumps(info, indent=1))
    return ckpt, info


def evaluate(ckpts: dict[int, Path], sizes: list[tuple[int, int]], max_it: int) -> tuple[list[dict], dict]:
    torch.set_num_threads(1)
    rows, histories = [], {}
    for n, dim in sizes:
        A, X, grid, h = system(n, dim)
        t0 = time.perf_counter()
        net, _ = load_network(ckpts[dim], dim=dim) if dim in ckpts else (None, None)
        load_s = time.perf_counter() - t0
        levels = MultilevelDirection(net, grid, A, "auto") if net is not None else None
        levels_s = time.perf_counter() - t0
        for rhs, b in right_hand_sides(X, h).items():
            reports = [solve(A, b, m, rtol=RTOL, max_it=20 * max_it) for m in BASELINES]
            if net is not None:
                reports.append(dcdm(A, b, NetworkDirection(net, grid), rtol=RTOL, max_it=max_it, setup_s=load_s))
                reports.append(dcdm(A, b, levels, rtol=RTOL, max_it=max_it, setup_s=levels_s, method="dcdm-ml"))
                reports[-1].info["levels"] = [list(s) for s in levels.shapes]
            for rep in reports:
                rows.append({"grid": f"{n}^{dim}", "n": n, "dim": dim, "rhs": rhs, **rep.summary()})
                histories[f"{n}^{dim}/{rhs}/{rep.method}"] = rep.residuals
                print(f"{n}^{dim} {rhs:6s} {rep.method:7s} it={rep.iterations:4d} conv={rep.converged} "
                      f"t={rep.time_s:.3f}s setup={rep.setup_s:.3f}s", flush=True)
    return rows, histories


TARGETS = ("iterations <= 0.3x CG's at the training size (64^2)",
           "iterations <= IC(0)-PCG's at the training size",
           "count grows at most 1.5x from 64^2 to 256^2 (CG's grows about 4x)")
VARIANTS = ("dcdm", "dcdm-ml")


def _targets(rows: list[dict]) -> list[dict]:
    it = {(r["grid"], r["rhs"], r["method"]): (r["iterations"] if r["converged"] else None) for r in rows}
    out = []
    for variant in VARIANTS:
        for rhs in ("ones", "bump", "random"):
            d64, cg64, ic64 = it.get(("64^2", rhs, variant)), it.get(("64^2", rhs, "cg")), it.get(("64^2", rhs, "ic0"))
            d256, cg256 = it.get(("256^2", rhs, variant)), it.get(("256^2", rhs, "cg"))
            checks = [(d64 / cg64 if d64 and cg64 else None, 0.3), (d64 / ic64 if d64 and ic64 else None, 1.0),
                      (d256 / d64 if d256 and d64 else None, 1.5)]
            for (name, (ratio, limit)) in zip(TARGETS, checks, strict=True):
                out.append({"target": name, "method": variant, "rhs": rhs, "ratio": ratio, "limit": limit,
                            "met": ratio is not None and ratio <= limit,
                            "cg_growth_64_to_256": cg256 / cg64 if cg256 and cg64 else None})
    return out


def write_report(folder: Path, rows: list[dict], histories: dict, train_info: dict, *, quick: bool,
                 machine: str) -> None:
    from neuralpde.viz import line_plot

    name = "dcdm_quick" if quick else "dcdm"
    targets = _targets(rows)
    protocol = __doc__.split("\n\n")[1].replace("\n", " ").removeprefix("Protocol: ")
    data = {"protocol": protocol, "rtol": RTOL, "machine": machine, "training": train_info, "results": rows,
            "targets": targets, "histories": histories}
    write_text(folder / f"{name}.json", json.dumps(data, indent=1))
    plots = []
    for grid in sorted({r["grid"] for r in rows}, key=lambda g: (g[-1], int(g.split("^")[0]))):
        series = {m: (np.arange(len(h)), np.asarray(h) / h[0]) for key, h in histories.items()
                  for m in [key.split("/")[2]] if key.startswith(f"{grid}/random/")}
        png = f"{name}_residuals_{grid.replace('^', '_')}.png"
        line_plot(series, folder / png, xlabel="iteration", ylabel="||r|| / ||b||", logy=True,
                  title=f"random right-hand side, {grid} unknowns (cg = jacobi: constant diagonal)")
        plots.append(png)
    lines = [f"# DCDM benchmark{' (quick run, not the published numbers)' if quick else ''}", "",
             f"Machine: {machine}. Command: `.venv/bin/python benchmarks/dcdm.py{' --quick' if quick else ''}`.", "",
             "Protocol: " + protocol, "",
             "Training (once, at {grid}^2): {ritz_vectors} Ritz vectors from {ritz_steps} Lanczos steps, {steps} Adam "
             "steps of batch {batch}, lr {lr:g} -> {lr_final:g} (cosine), {parameters} parameters; "
             "loss {loss_first:.3f} (first 20 steps) -> {loss_last:.4f} (last 50); {train_s_this_run:.0f} s wall "
             "(one torch thread beside other jobs).".format(**train_info), "",
             ("3D: a separate 3D network ({parameters} parameters) trained once at {grid}^3: "
              "{ritz_vectors} Ritz vectors from {ritz_steps} Lanczos steps, {steps} Adam steps of batch {batch}, "
              "lr {lr:g} -> {lr_final:g}, loss {loss_first:.3f} -> {loss_last:.4f}; {train_s_this_run:.0f} s wall."
              .format(**train_info["3d"]) if "3d" in train_info else
              "3D: no 3D network was trained, so the 3D rows are the baselines only."), "",
             "## Iterations to ||r|| <= 1e-6 ||b||", "",
             "`*`: not converged within the limit. `dcdm`: the paper's direction; `dcdm-ml`: the same network on "
             "the grid and its coarsenings (levels in the JSON).", "",
             "| grid | rhs | CG | Jacobi | IC(0) | AMG | DCDM | DCDM-ML |", "|---|---|---|---|---|---|---|---|"]
    cell = {(r["grid"], r["rhs"], r["method"]): f"{r['iterations']}{'' if r['converged'] else '*'}" for r in rows}
    for key in dict.fromkeys((r["grid"], r["rhs"]) for r in rows):
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cell.get((*key, m), "") for m in
                                                              ("cg", "jacobi", "ic0", "amg", *VARIANTS)) + " |")
    lines += ["", "## Wall time", "",
              "Time = iteration seconds (setup = preconditioner build, network load and, for `dcdm-ml`, the "
              "transfer matrices, listed separately). DCDM's time includes the network, whose share is the "
              "`net s/it` column. Wall times on this shared machine are noisy (other jobs ran at the same time), "
              "iteration counts are exact.", "",
              "| grid | rhs | method | iterations | time s | setup s | net s/it |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        net = f"{r['direction_s_per_iteration']:.4f}" if "direction_s_per_iteration" in r else ""
        star = "" if r["converged"] else "*"
        lines.append(f"| {r['grid']} | {r['rhs']} | {r['method']} | {r['iterations']}{star} | {r['time_s']:.3f} | "
                     f"{r['setup_s']:.3f} | {net} |")
    lines += ["", "## Wall time: DCDM against the fastest baseline", "",
              "Total = iteration + setup seconds.", "",
              "| grid | rhs | method | total s | net share | fastest baseline | its total s | ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for key in sorted({(r["grid"], r["rhs"]) for r in rows if r["method"] in VARIANTS},
                      key=lambda k: (k[0][-1], int(k[0].split("^")[0]), k[1])):
        group = [r for r in rows if (r["grid"], r["rhs"]) == key]
        best = min((r for r in group if r["method"] not in VARIANTS), key=lambda r: r["time_s"] + r["setup_s"])
        total_b = best["time_s"] + best["setup_s"]
        for d in (r for r in group if r["method"] in VARIANTS):
            total_d = d["time_s"] + d["setup_s"]
            lines.append(f"| {key[0]} | {key[1]} | {d['method']} | {total_d:.3f} | "
                         f"{d['direction_s'] / max(d['time_s'], 1e-12):.0%} | {best['method']} | {total_b:.3f} | "
                         f"{total_d / max(total_b, 1e-12):.1f}x |")
    lines += ["", "## Targets", "", "| target | method | rhs | measured ratio | limit | met |",
              "|---|---|---|---|---|---|"]
    for t in targets:
        ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.2f}"
        lines.append(f"| {t['target']} | {t['method']} | {t['rhs']} | {ratio} | {t['limit']} | "
                     f"{'yes' if t['met'] else 'no'} |")
    lines += ["", "## Residual histories (random right-hand side)", ""] + [f"![{p}]({p})" for p in plots]
    write_text(folder / f"{name}.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--skip-3d", action="store_true", help="leave out the 3D network and the 3D sizes")
    ap.add_argument("--steps-3d", type=int, default=3000)
    ap.add_argument("--train-n-3d", type=int, default=16)
    ap.add_argument("--batch-3d", type=int, default=10)
    ap.add_argument("--ritz-steps-3d", type=int, default=400)
    ap.add_argument("--train-n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ritz-steps", type=int, default=600)
    ap.add_argument("--max-it", type=int, default=300)
    args = ap.parse_args()
    if args.quick:
        global WORK
        WORK = WORK / "quick"
        args.steps, args.train_n, args.ritz_steps = 300, 32, 200
    if args.report_only:          # redraw docs/results from the last run's JSON
        data = json.loads((RESULTS / "dcdm.json").read_text())
        write_report(RESULTS, data["results"], data["histories"], data["training"], quick=False,
                     machine=data["machine"])
        return
    ckpts = {}
    ckpts[2], train_info = train_network(args)
    if not (args.quick or args.skip_3d):
        args3 = argparse.Namespace(**{**vars(args), "train_n": args.train_n_3d, "steps": args.steps_3d,
                                      "batch": args.batch_3d, "ritz_steps": args.ritz_steps_3d})
        ckpts[3], train_info["3d"] = train_network(args3, dim=3)
    if args.train_only:
        print(json.dumps(train_info, indent=1))
        return
    sizes = [(32, 2), (64, 2)] if args.quick else [(64, 2), (128, 2), (256, 2)]
    if 3 in ckpts:
        sizes += [(args.train_n_3d, 3), (32, 3), (64, 3)]
    rows, histories = evaluate(ckpts, sizes, args.max_it)
    write_report(WORK if args.quick else RESULTS, rows, histories, train_info, quick=args.quick,
                 machine=f"{platform.processor() or platform.machine()}, 2 shared CPU cores, torch 1 thread")


if __name__ == "__main__":
    main()
