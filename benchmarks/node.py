#!/usr/bin/env python
"""Regularised neural ODEs: none vs ERNODE vs SRNODE vs STEER on the two NODE cases, 3 seeds each.

Protocol: each case file (``cases/node_spiral.yaml``, ``cases/node_reaction_diffusion.yaml``) is loaded
with the overrides below; the FEM reference of the reaction-diffusion case is solved once and shared.
For every case, mode and seed the ``node`` method runs exactly as ``neuralpde run`` would run it
(same data, network, solver tolerances, epochs, learning rate) and we record

* test error: MSE on held-out trajectories (spiral) / held-out snapshot times (POD coefficients), and for
  the reaction-diffusion case the relative L2 error of the reconstructed final field against the FEM field;
* test NFE: vector-field evaluations of the batched test rollout (torchode's count, rejected steps included);
* prediction time: best of 3 test rollouts; training time: CPU time (``time.process_time``, torch on one
  thread) and wall time of the training loop. On a shared machine the CPU time is the cost measure; the
  wall time also counts waiting for a core.

Modes: ``none``; ``ernode`` (the case's λ schedule); ``srnode`` (constant λ, ``--srnode-lam``);
``steer`` (unregularised, end time ~ U(T - b T, T + b T), b = 0.5). Targets (issue 9): ERNODE test NFE
≤ 0.6× unregularised with test error within 10 %, and ERNODE training time ≤ 1.0× unregularised (judged on CPU time).

Usage::

    python benchmarks/node.py                       # both cases, 3 seeds, 4 modes (the cases' λ; SRNODE λ 0.01)
    python benchmarks/node.py --quick               # 1 seed, 30 epochs: a check that it runs

    # what produced docs/results/node.*: one job at a time (shared 2-core machine), then one report
    python benchmarks/node.py --cases spiral --out /tmp/b_spiral
    python benchmarks/node.py --cases spiral --modes ernode --ernode-lam 1 0.1 --out /tmp/b_spiral_l1
    python benchmarks/node.py --cases spiral --seeds 1 --modes ernode --ernode-lam 10 1 --out /tmp/b_spiral_l10
    python benchmarks/node.py --cases reaction_diffusion --out /tmp/b_rd
    python benchmarks/node.py --cases reaction_diffusion --modes ernode --ernode-lam 0.1 0.01 --out /tmp/b_rd_l0.1
    (same with 0.01 and 0.005, end = start / 10; and with --seeds 1 for 0.001 and 0.0003)
    python benchmarks/node.py --combine /tmp/b_*.json

The λ rule (``lambda_rule``) is applied to the seed-0 runs of every ERNODE schedule in the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
CASES = {"spiral": ROOT / "cases" / "node_spiral.yaml",
         "reaction_diffusion": ROOT / "cases" / "node_reaction_diffusion.yaml"}
MODES = ("none", "ernode", "srnode", "steer")
NFE_TARGET, ERROR_TARGET, TIME_TARGET = 0.6, 1.10, 1.0
TIMING_NOTE = ("Timing caveat: the machine's 2 cores are shared with other jobs (the load average is recorded "
               "with each run), so wall-time ratios carry tens of percent of noise. Training cost is judged on "
               "CPU time (time.process_time of the training loop, torch on one thread), which counts the work "
               "done rather than the wait for a core; the training NFE ratio (forward NFE summed over all "
               "epochs, vs none) is a second, load-independent measure. "
               "Ratios are of means over seeds; ± is the spread (population std) over seeds.")


def mode_overrides(mode: str, srnode_lam: float, ernode_lam: list[float] | None = None) -> dict[str, Any]:
    if mode == "none":
        return {"method.regulariser": "none", "method.steer": 0.0}
    if mode == "ernode":
        lam = {"method.lam": {"start": ernode_lam[0], "end": ernode_lam[1]}} if ernode_lam else {}
        return {"method.regulariser": "ernode", "method.steer": 0.0, **lam}
    if mode == "srnode":
        return {"method.regulariser": "srnode", "method.steer": 0.0,
                "method.lam": {"start": srnode_lam, "end": None}}
    if mode == "steer":
        return {"method.regulariser": "none", "method.steer": 0.5}
    raise ValueError(mode)


def run_one(case_name: str, mode: str, seed: int, base: dict[str, Any], args: argparse.Namespace,
            shared: dict[str, Any]) -> dict[str, Any]:
    from neuralpde.cases.loader import load_case
    from neuralpde.runtime import seed_everything
    from neuralpde.solvers.method import METHODS, RunContext

    overrides = {**base, **mode_overrides(mode, args.srnode_lam, args.ernode_lam), "seed": seed}
    case = load_case(CASES[case_name], overrides=overrides)
    cfg = case.config
    if case_name not in shared:
        shared[case_name] = _reference(case)
    problem, reference = shared[case_name]
    seed_everything(seed)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(device="cpu", seed=seed, out_dir=Path(tmp))
        result = METHODS["node"](cfg.method).run(problem, reference, ctx)
        history = json.loads((Path(tmp) / "node_history.json").read_text())
    m = result.metrics
    record = {"case": case_name, "mode": mode, "seed": seed, "test_mse": m["test_mse"], "test_nfe": m["test_nfe"],
              "predict_time_s": m["predict_time_s"], "predict_cpu_s": m["predict_cpu_s"],
              "train_time_s": m["train_time_s"], "train_cpu_s": m["train_cpu_s"],
              "train_mse_last": m["train_mse_last"], "load_average": os.getloadavg()[0],
              "train_nfe_last": m["train_nfe_last"], "nfe_history": [int(n) for n in history["nfe"]]}
    if result.field is not None and reference is not None:
        record["field_rel_l2_vs_fem"] = result.field.difference(reference.field)["rel_l2"]
        record["test_rel_l2_dofs_mean"] = m["test_rel_l2_dofs_mean"]
    return record


def spiral_truth(seeds: list[int]) -> list[dict[str, Any]]:
    """Cost of the *true* spiral dynamics ``u' = (u^3)^T A`` on each seed's test starts, solved exactly as a
    trained model is evaluated (batched Tsit5, the case's tolerances): the NFE an exact model would need."""
    import torch

    from neuralpde.cases.loader import load_case
    from neuralpde.solvers.node import NeuralODE, SolverSettings
    from neuralpde.solvers.node_data import SPIRAL_A, spiral_data

    method = load_case(CASES["spiral"]).config.method
    d, a = method.data, torch.tensor(SPIRAL_A)

    class Truth(torch.nn.Module):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (y**3) @ a

    out = []
    for seed in seeds:
        data = spiral_data(d.trajectories, d.test_trajectories, d.points, d.t_end, d.spread, d.noise, seed=seed)
        ys = torch.tensor(data.test)
        with torch.no_grad():
            sol = NeuralODE(Truth(), SolverSettings(**method.solver.model_dump()))(ys[:, 0], torch.tensor(data.t))
        out.append({"seed": seed, "test_nfe": sol.nfe, "test_mse": float(((sol.ys - ys)[:, 1:] ** 2).mean())})
    return out


def _reference(case: Any) -> tuple[Any, Any]:
    from neuralpde.solvers.method import RunContext

    problem = case.problem()
    if problem is None or not case.has_reference:
        return problem, None
    return problem, case.config.reference.solve(problem, RunContext())


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and spreads per case and mode; ratios against ``none`` on the same seeds; the targets; the λ rule."""
    keys = ("test_mse", "test_nfe", "predict_time_s", "predict_cpu_s", "train_time_s", "train_cpu_s",
            "train_nfe_total", "field_rel_l2_vs_fem")
    for r in records:       # summed forward NFE of training: a cost measure the machine's load cannot skew
        r.setdefault("train_nfe_total", float(sum(r["nfe_history"])))

    def stats(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: {"mean": statistics.fmean(r[k] for r in rs), "std": statistics.pstdev(r[k] for r in rs)}
                for k in keys if all(k in r for r in rs)}

    out: dict[str, Any] = {}
    for case in sorted({r["case"] for r in records}):
        out[case] = {}
        nones = [r for r in records if r["case"] == case and r["mode"] == "none"]
        for mode in _modes(records):
            rs = [r for r in records if r["case"] == case and r["mode"] == mode]
            if not rs:
                continue
            s = out[case][mode] = {**stats(rs), "seeds": sorted(r["seed"] for r in rs)}
            # a sweep run on fewer seeds is compared with the unregularised runs of those same seeds
            base = [r for r in nones if r["seed"] in s["seeds"]]
            if mode != "none" and base:
                ref = stats(base)
                s["ratio_vs_none"] = {k: s[k]["mean"] / ref[k]["mean"] for k in keys
                                      if k in s and k in ref and ref[k]["mean"] > 0}
        er = out[case].get("ernode", {}).get("ratio_vs_none")
        if er:
            out[case]["targets"] = {
                "ernode_nfe_le_0.6x": er["test_nfe"] <= NFE_TARGET,
                "ernode_error_within_10pct": er["test_mse"] <= ERROR_TARGET,
                "ernode_train_time_le_1.0x": er.get("train_cpu_s", er["train_time_s"]) <= TIME_TARGET}
        rule = lambda_rule([r for r in records if r["case"] == case])
        if rule:
            out[case]["lambda_rule"] = rule
    return out


def lambda_rule(records: list[dict[str, Any]], seed: int = 0) -> dict[str, Any] | None:
    """The λ choice rule on one seed: lowest test NFE among the ERNODE runs whose test MSE is within 10 % of
    the unregularised run's (ties: lower MSE). None when there is no sweep (fewer than two ERNODE schedules)."""
    none = [r for r in records if r["mode"] == "none" and r["seed"] == seed]
    ernode = [r for r in records if r["mode"].startswith("ernode") and r["seed"] == seed]
    if not none or len(ernode) < 2:
        return None
    limit = ERROR_TARGET * none[0]["test_mse"]
    ok = sorted((r for r in ernode if r["test_mse"] <= limit), key=lambda r: (r["test_nfe"], r["test_mse"]))
    return {"seed": seed, "none_test_mse": none[0]["test_mse"], "none_test_nfe": none[0]["test_nfe"],
            "mse_limit": limit, "candidates": {r["mode"]: [r["test_mse"], r["test_nfe"]] for r in ernode},
            "choice": ok[0]["mode"] if ok else None}


def plots(records: list[dict[str, Any]], stem: Path, truth: list[dict[str, Any]] | None = None) -> list[Path]:
    """PNGs next to the results files: ``<stem>_<case>_nfe_vs_epoch.png`` and ``..._error_vs_nfe.png``
    (the latter with the true spiral dynamics' cost, ``truth``, as stars)."""
    from neuralpde import viz

    plt = viz._pyplot()
    files = []
    for case in sorted({r["case"] for r in records}):
        series = {}
        for mode in _modes(records):
            hs = [r["nfe_history"] for r in records if r["case"] == case and r["mode"] == mode]
            if hs:
                n = min(len(h) for h in hs)
                series[mode] = (np.arange(1, n + 1), np.mean([h[:n] for h in hs], axis=0))
        files.append(viz.line_plot(series, stem.parent / f"{stem.name}_{case}_nfe_vs_epoch.png", xlabel="epoch",
                                   ylabel="training NFE (mean over seeds)",
                                   title=f"{case}: solver cost during training"))
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode in _modes(records):
            rs = [r for r in records if r["case"] == case and r["mode"] == mode]
            if rs:
                ax.scatter([r["test_nfe"] for r in rs], [r["test_mse"] for r in rs], label=mode, s=30)
        if truth and case == "spiral":
            ax.scatter([t["test_nfe"] for t in truth], [t["test_mse"] for t in truth], marker="*", s=120,
                       color="k", label="true dynamics")
        ax.set_xlabel("test NFE")
        ax.set_ylabel("test MSE")
        ax.set_yscale("log")
        ax.set_title(f"{case}: error vs cost (one dot per seed)")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        files.append(viz.save_figure(fig, stem.parent / f"{stem.name}_{case}_error_vs_nfe.png"))
    return files


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Regularised neural ODEs (ERNODE / SRNODE / STEER) — benchmark", "",
             f"Measured {report['date']} on {report['machine']} with `{report['command']}`.", "",
             report["protocol"], "", TIMING_NOTE, ""]
    for case, modes in report["summary"].items():
        fem = "field_rel_l2_vs_fem" in modes.get("none", {})
        lines += [f"## {case}", "", "| mode | seeds | test MSE | test NFE | prediction ms | training CPU s | "
                  "training wall s | NFE ratio | MSE ratio | train CPU ratio | train wall ratio | training NFE ratio |"
                  + (" field rel L2 vs FEM |" if fem else ""), "|---" * (12 + fem) + "|"]
        for mode, s in modes.items():
            if mode in ("targets", "lambda_rule"):
                continue
            r = s.get("ratio_vs_none", {})
            cpu = s.get("train_cpu_s", {"mean": math.nan})["mean"]
            row = (f"| {mode} | {len(s['seeds'])} | {s['test_mse']['mean']:.3g} ± {s['test_mse']['std']:.2g} | "
                   f"{s['test_nfe']['mean']:.0f} ± {s['test_nfe']['std']:.0f} | "
                   f"{1e3 * s['predict_time_s']['mean']:.3g} | {cpu:.3g} | {s['train_time_s']['mean']:.3g} | "
                   f"{r.get('test_nfe', 1.0):.2f} | {r.get('test_mse', 1.0):.2f} | {r.get('train_cpu_s', 1.0):.2f} | "
                   f"{r.get('train_time_s', 1.0):.2f} | {r.get('train_nfe_total', 1.0):.2f} |")
            if fem:
                row += f" {s['field_rel_l2_vs_fem']['mean']:.3g} |"
            lines.append(row)
        t = modes.get("targets")
        if t:
            r = modes["ernode"]["ratio_vs_none"]
            got = {"ernode_nfe_le_0.6x": r["test_nfe"], "ernode_error_within_10pct": r["test_mse"],
                   "ernode_train_time_le_1.0x": r.get("train_cpu_s", r["train_time_s"])}
            lines += ["", "Targets (ERNODE at the case's λ vs none, means over its seeds): " + ", ".join(
                f"{k}: {'met' if v else 'MISSED'} ({got[k]:.2f}×)" for k, v in t.items())]
        truth = report.get("spiral_truth") if case == "spiral" else None
        if truth:
            lines += ["", "The true dynamics, solved the same way on the same test starts (batched Tsit5, the case's "
                      "tolerances): test NFE " + " / ".join(str(t["test_nfe"]) for t in truth) + ", test MSE "
                      + " / ".join(f"{t['test_mse']:.2g}" for t in truth) + " (seeds "
                      + ", ".join(str(t["seed"]) for t in truth) + "): the cost of an exact model."]
        rule = modes.get("lambda_rule")
        if rule:
            tried = "; ".join(f"{m}: MSE {v[0]:.3g}, NFE {v[1]}" for m, v in rule["candidates"].items())
            lines += ["", f"λ rule on seed {rule['seed']} (lowest test NFE with test MSE ≤ 1.1 × "
                      f"{rule['none_test_mse']:.3g}, the unregularised run's; its NFE {rule['none_test_nfe']}): "
                      f"{tried} → **{rule['choice'] or 'none qualifies'}**."]
        name = report.get("stem", "node")
        lines += ["", f"![NFE vs epoch]({name}_{case}_nfe_vs_epoch.png) "
                  f"![error vs NFE]({name}_{case}_error_vs_nfe.png)", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and fewer epochs")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override method.train.epochs")
    parser.add_argument("--srnode-lam", type=float, default=0.01, help="constant SRNODE weight")
    parser.add_argument("--ernode-lam", type=float, nargs=2, default=None, metavar=("START", "END"),
                        help="override the case's ERNODE schedule")
    parser.add_argument("--out", default=str(RESULTS / "node"), help="results stem (.json/.md)")
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                        help="no runs: merge the runs of earlier results files (e.g. one per case, run in parallel)")
    args = parser.parse_args(argv)
    if args.combine:
        return combine([Path(p) for p in args.combine], args, argv)
    import torch

    torch.set_num_threads(1)    # tiny networks: threads only add contention on a shared machine
    seeds = range(1 if args.quick else args.seeds)
    base: dict[str, Any] = {}
    if args.epochs or args.quick:
        base["method.train.epochs"] = args.epochs or 30
    records, shared = [], {}
    started = time.perf_counter()
    for case in args.cases:
        for seed in seeds:
            for mode in args.modes:
                tic = time.perf_counter()
                rec = run_one(case, mode, seed, base, args, shared)
                records.append(rec)
                print(f"{case:>18} {mode:>6} seed {seed}: test MSE {rec['test_mse']:.3e}, test NFE {rec['test_nfe']}, "
                      f"train {rec['train_time_s']:.1f} s, predict {rec['predict_time_s']:.4f} s "
                      f"({time.perf_counter() - tic:.0f} s)", flush=True)
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()} CPU, {_cores()} cores shared with other jobs (torch 1 thread)",
              "command": "python benchmarks/node.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "protocol": " ".join(__doc__.split("Usage::")[0].split("\n\n")[1:]).replace("\n", " ").strip(),
              "overrides": base, "srnode_lam": args.srnode_lam, "ernode_lam": args.ernode_lam, "seeds": list(seeds),
              "wall_time_s": time.perf_counter() - started, "summary": summarise(records), "runs": records}
    return finish(report, args.out, list(seeds) if "spiral" in args.cases else [])


def finish(report: dict[str, Any], out: str | Path, spiral_seeds: list[int]) -> int:
    """The true spiral's cost on ``spiral_seeds`` (if any), the plots, ``<out>.json`` and ``<out>.md``."""
    from neuralpde.fileio import write_text

    if spiral_seeds:
        report["spiral_truth"] = spiral_truth(spiral_seeds)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    report["stem"] = Path(out).name
    report["plots"] = [p.name for p in plots(report["runs"], Path(out), report.get("spiral_truth"))]
    write_text(Path(f"{out}.json"), to_json(report))
    write_text(Path(f"{out}.md"), markdown(report))
    print(markdown(report))
    return 0


def to_json(report: dict[str, Any]) -> str:
    """The report as JSON, one run per line (the per-step NFE histories would take a line per number)."""
    head = {k: v for k, v in report.items() if k != "runs"}
    runs = [{**{k: v for k, v in r.items() if k != "mse_history"}, "nfe_history": [int(n) for n in r["nfe_history"]]}
            for r in report.get("runs", [])]
    body = ",\n".join("  " + json.dumps(r) for r in runs)
    return json.dumps(head, indent=1)[:-2] + ',\n "runs": [\n' + body + "\n ]\n}\n"


def _modes(records: list[dict[str, Any]]) -> list[str]:
    """The standard modes first, then extra ones (λ sweeps) in the order met."""
    extra = [m for m in dict.fromkeys(r["mode"] for r in records) if m not in MODES]
    return [m for m in MODES if any(r["mode"] == m for r in records)] + extra


def combine(paths: list[Path], args: argparse.Namespace, argv: list[str] | None) -> int:
    """One report from several results files (cases run as separate processes to use both cores).

    Runs made with ``--ernode-lam`` become modes of their own (``ernode λ 0.1→0.01``): a λ sweep.
    """
    parts = [json.loads(p.read_text()) for p in paths]
    for part in parts:
        if part.get("ernode_lam"):
            for r in part["runs"]:
                if r["mode"] == "ernode":
                    r["mode"] = f"ernode λ {part['ernode_lam'][0]:g}→{part['ernode_lam'][1]:g}"
    records = [r for part in parts for r in part["runs"]]
    report = {**parts[0], "command": " + ".join(part["command"] for part in parts),
              "date": max(part["date"] for part in parts),  # when the last part finished
              "wall_time_s": max(part["wall_time_s"] for part in parts), "summary": summarise(records),
              "runs": records}
    return finish(report, args.out, sorted({r["seed"] for r in records if r["case"] == "spiral"}))


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
