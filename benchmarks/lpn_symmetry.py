#!/usr/bin/env python
"""PnP-LPN with and without the D4 symmetrisation of its prior (issue 8), on the LPN benchmark's problems.

``LPNConv(symmetry="d4")`` averages ``psi`` over the eight rotations and reflections of the square, so ``f`` is still
an exact prox (of the symmetrised prior) and commutes with the group; the fields' distribution is invariant under
it (an isotropic periodic GRF, thresholded; heat's boundary ring is too). This applies it to the priors that
``benchmarks/lpn.py`` trained (its kept checkpoints; nothing is retrained) at the middle noise level of each
problem, with that benchmark's fields, noise draws, start (the tuned TV reconstruction) and tuning rule:

* for every training noise level sigma and kept checkpoint (stage), the data-scale factor is tuned on the 16
  validation fields, separately with and without the symmetry; reported: the validation margin over the best of
  Tikhonov and TV (each tuned on the same fields), and at that factor the margin on the 5 test fields and on
  ``--held-out`` fresh fields (seed 4242, their own noise draws, as ``lpn.py --held-out``), with the standard
  error of the LPN's mean held-out PSNR (unpaired: the baseline's own spread over the fields is not removed, so
  it is larger than ``lpn.py --held-out``'s paired one);
* the selection: the (sigma, stage, factor) with the best validation PSNR over the whole grid, as ``lpn.py`` picks
  it, with and without the symmetry, and its test and held-out margins.

Usage::

    python benchmarks/lpn.py                # first (trains the priors, writes docs/results/lpn.json)
    python benchmarks/lpn_symmetry.py       # ~40 minutes on 2 cores (heat and deblurring side by side)
    python benchmarks/lpn_symmetry.py --quick   # the priors of ``lpn.py --quick``: a minute
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lpn import (
    LAMBDAS,
    LPN_FACTORS,
    NOISE,
    RESULTS,
    ROOT,
    SIGMAS,
    PriorSettings,
    Reconstructor,
    make_problem,
    observe,
    validation_and_test_fields,
)

from neuralpde.fileio import write_text
from neuralpde.progress import Progress
from neuralpde.solvers.inverse_problems import field_sampler
from neuralpde.solvers.pnp import DTYPE, psnr

VARIANTS = (None, "d4")


def label(symmetry: str | None) -> str:
    return symmetry or "none"


def study(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One problem at its middle noise level: every (sigma, stage) with and without the symmetry."""
    torch.set_num_threads(args.threads)
    proto = json.loads((RESULTS / f"{args.source}.json").read_text())["protocol"]
    n, level = proto["grid"], 1
    noise = NOISE[kind][level]
    op, _, free = make_problem(kind, n, 0)
    prior = PriorSettings(hidden=proto["hidden"][kind], steps=proto["train_steps"], batch=proto["batch"], free=free,
                          position_bias=kind == "heat" and proto["heat_position_bias"], stages=tuple(proto["stages"]))
    stages = prior.stage_steps()
    fields = argparse.Namespace(grid=n, val=proto["validation_fields"], fields=proto["fields"])
    val, test = validation_and_test_fields(fields)
    held = field_sampler("piecewise", n)(args.held_out, torch.Generator().manual_seed(4242)).to(DTYPE)
    held = held.reshape(args.held_out, -1)
    if free is not None:
        val, test, held = val * free, test * free, held * free
    sets = {"validation": (val, torch.Generator().manual_seed(1000 * level + 1)),
            "test": (test, torch.Generator().manual_seed(1000 * level + 2)),
            "held_out": (held, torch.Generator().manual_seed(5000 + level))}
    ys = {name: [observe(op, t, noise, gen) for t in truths] for name, (truths, gen) in sets.items()}
    truths = {name: s[0] for name, s in sets.items()}
    nets = {(label(sym), s, k): prior.load(Path(args.checkpoints), "lpn", s, k, n) for sym in VARIANTS
            for s in SIGMAS for k in stages}
    for (sym, _, _), net in nets.items():
        net.symmetry = None if sym == "none" else sym
    rec = Reconstructor(op, {}, noise, n, proto["learned_prior_start"], free)

    def scores(name: str, weight: Any, which: str) -> np.ndarray:
        return np.array([psnr(rec(name, weight, y).x, t, data_range=1.0)
                         for y, t in zip(ys[which], truths[which], strict=True)])

    baseline: dict[str, dict[str, float]] = {}
    for name in ("tikhonov", "tv"):
        val_scores = [float(scores(name, lam, "validation").mean()) for lam in LAMBDAS]
        rec.weights[name] = LAMBDAS[int(np.argmax(val_scores))]
        baseline[name] = {"weight": rec.weights[name], "validation": max(val_scores),
                          **{w: float(scores(name, rec.weights[name], w).mean()) for w in ("test", "held_out")}}
    best = {w: max(baseline[b][w] for b in baseline) for w in ("validation", "test", "held_out")}
    rows = []
    with Progress().task(f"{kind} symmetry study", len(SIGMAS) * len(stages) * len(VARIANTS)) as advance:
        for s in SIGMAS:
            for k in stages:
                for sym in map(label, VARIANTS):
                    t0 = time.perf_counter()
                    rec.nets = {("lpn", s, k): nets[(sym, s, k)]}
                    val_scores = [float(scores("lpn", (s, k, f), "validation").mean()) for f in LPN_FACTORS]
                    factor = LPN_FACTORS[int(np.argmax(val_scores))]
                    test_diff = scores("lpn", (s, k, factor), "test") - best["test"]
                    held_diff = scores("lpn", (s, k, factor), "held_out") - best["held_out"]
                    rows.append({"sigma": s, "step": k, "symmetry": sym, "factor": factor,
                                 "validation_margin_db": max(val_scores) - best["validation"],
                                 "test_margin_db": float(test_diff.mean()),
                                 "held_out_margin_db": float(held_diff.mean()),
                                 "held_out_se_db": float(held_diff.std(ddof=1) / np.sqrt(len(held_diff))),
                                 "seconds": time.perf_counter() - t0})
                    advance()
    chosen = {}
    for sym in map(label, VARIANTS):
        mine = [r for r in rows if r["symmetry"] == sym]
        chosen[sym] = max(mine, key=lambda r: r["validation_margin_db"])
    return {"kind": kind, "noise": noise, "fields": {k: len(v) for k, v in truths.items()}, "baselines": baseline,
            "best_baseline": best, "rows": rows, "chosen": chosen}


def write_report(results: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> None:
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = json.loads((RESULTS / f"{args.source}.json").read_text())["date"]
    name = "lpn_symmetry_quick" if args.quick else "lpn_symmetry"
    out = {"date": date, "wall_s": wall, "held_out_fields": args.held_out, "priors_from": f"docs/results/"
           f"{args.source}.json of {source}", "quick": args.quick, "torch": torch.__version__,
           "machine": platform.machine(), "problems": {r["kind"]: r for r in results}}
    write_text(RESULTS / f"{name}.json", json.dumps(out, indent=1))
    lines = ["# LPN benchmark: the D4-symmetrised prior", "",
             f"Measured {date} on a 2-core CPU (torch {torch.__version__}, 1 thread per process), wall time "
             f"{wall:.0f} s. The priors of the LPN benchmark run of {source} ([{args.source}.md]({args.source}.md); "
             "nothing retrained), with and without "
             "`symmetry: d4` (psi averaged over the square's rotations and reflections). Protocol: the docstring of "
             "`benchmarks/lpn_symmetry.py`. Margins are LPN - best(Tikhonov, TV) in dB at the middle noise level; "
             f"the factor is tuned on the validation fields for each row; held-out: {args.held_out} fresh fields. "
             f"Re-run: `.venv/bin/python benchmarks/lpn_symmetry.py{' --quick' if args.quick else ''}`.", ""]
    for r in results:
        lines += [f"## {r['kind']} (noise {r['noise']})", "",
                  "Chosen as `benchmarks/lpn.py` chooses (the best validation PSNR over sigma x stage x factor):", "",
                  f"| symmetry | choice | validation | test ({r['fields']['test']}) | "
                  f"held-out ({r['fields']['held_out']}, +- unpaired SE) |",
                  "|---|---|---|---|---|"]
        for sym, c in r["chosen"].items():
            lines.append(f"| {sym} | sigma {c['sigma']:g} step {c['step']}, x{c['factor']:g} | "
                         f"{c['validation_margin_db']:+.2f} | {c['test_margin_db']:+.2f} | "
                         f"{c['held_out_margin_db']:+.2f} +- {c['held_out_se_db']:.2f} |")
        lines += ["", "Every training noise level and stage (validation / test / held-out margin; none -> d4):", "",
                  "| sigma | step | validation | test | held-out |", "|---|---|---|---|---|"]
        by = {(row["sigma"], row["step"], row["symmetry"]): row for row in r["rows"]}
        gains: dict[str, list[float]] = {"validation_margin_db": [], "test_margin_db": [], "held_out_margin_db": []}
        for s, k in sorted({(row["sigma"], row["step"]) for row in r["rows"]}):
            a, b = by[(s, k, "none")], by[(s, k, "d4")]
            for key in gains:
                gains[key].append(b[key] - a[key])
            lines.append(f"| {s:g} | {k} | " + " | ".join(f"{a[key]:+.2f} -> {b[key]:+.2f}" for key in gains) + " |")
        lines += ["", "The symmetry's gain over the rows (d4 - none, dB): " + "; ".join(
            f"{key.split('_margin')[0].replace('_', '-')}: mean {np.mean(v):+.2f}, higher in {sum(x > 0 for x in v)} "
            f"of {len(v)}" for key, v in gains.items()) + ".", ""]
    write_text(RESULTS / f"{name}.md", "\n".join(lines).rstrip("\n") + "\n")
    print(f"wrote {RESULTS / name}.md", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the priors of `lpn.py --quick` (16 x 16), 4 held-out "
                        "fields")
    parser.add_argument("--problems", nargs="+", choices=("heat", "deblur"), default=["heat", "deblur"])
    parser.add_argument("--held-out", type=int, default=32, metavar="N", help="fresh fields for the held-out check")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=2, help="processes: 2 runs the two problems side by side")
    parser.add_argument("--checkpoints", default=str(ROOT / "out" / "bench_lpn" / "checkpoints"))
    args = parser.parse_args()
    args.source = "lpn_quick" if args.quick else "lpn"
    if args.quick:
        args.checkpoints += "_quick"
        args.held_out = min(args.held_out, 4)
    if not (RESULTS / f"{args.source}.json").exists():
        raise SystemExit(f"docs/results/{args.source}.json is missing: run benchmarks/lpn.py"
                         f"{' --quick' if args.quick else ''} first (it trains the priors)")
    t0 = time.perf_counter()
    if args.jobs > 1 and len(args.problems) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(study, args.problems, [args] * len(args.problems)))
    else:
        results = [study(kind, args) for kind in args.problems]
    write_report(results, args, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
