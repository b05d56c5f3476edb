#!/usr/bin/env python
"""PnP-LPN against Tikhonov, TV and an unconstrained network of the same size on two PDE inverse problems.

Protocol (all seeded; fields made by the package, 32 x 32 two-phase "Darcy-like" fields):

* priors: one LPN (convex, the paper's ICNN reduced: 16 channels, strides 2-1-2, beta 10, alpha 0.01, sum
  read-out) and the same network without the weight clamp ("unconstrained"), trained as denoisers at
  sigma = 0.1 with the paper's schedule scaled down (6000 steps at batch 16: half L1 at lr 1e-3, then proximal
  matching at lr 1e-4 with gamma = 8, 4, 2, 1 x gamma_min, gamma_min = 0.08 * 32); both are used for both
  problems.
* denoising check (issue 8): 16 fresh fields + noise 0.1 (the training noise): PSNR of the noisy input, of
  each network and of TV denoising at its best weight.
* problems: (a) heat: u0 from u(T) (k = 1, T = 0.002, 10 backward-Euler P1 steps, zero Dirichlet values),
  observed at 30% of the interior nodes; (b) deblur: Gaussian blur of 1.5 px. Three noise levels each.
* solver: PnP-ADMM, rho = 0.1, 30 iterations, x-step by CG (at most 30 iterations). Start: A^T y for Tikhonov and
  TV; the learned priors start from the tuned Tikhonov reconstruction of the same observation (``--start
  tikhonov``, the default; the paper starts its CT runs from FBP), or from A^T y (``--start adjoint``): the
  learned R is not convex, so PnP-LPN's fixed point depends on the start.
* tuning: for each problem, noise level and prior, one weight is picked from a small grid on 1 validation
  field (LPN/unconstrained: the data scale around the MAP value rho sigma_train^2 / noise^2; Tikhonov and
  TV: lambda); then 5 test fields are reconstructed. Reported: mean PSNR (peak = 1) and relative L2.
* ADMM convergence: ``||z_k - z_{k-1}|| / ||z_k||`` per iteration, 60 iterations, middle noise level.
* B3 probe: mean learned R over the 5 test fields with added noise (sigma 0 ... 0.3) and with blur
  (0 ... 4 px); the target is a monotone increase.

Usage::

    python benchmarks/lpn.py            # ~7 CPU minutes (4 for training); 10-20 min wall on 2 shared cores
    python benchmarks/lpn.py --quick    # about a minute, 16 x 16, 1500 training steps
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neuralpde.fileio import write_text  # noqa: E402
from neuralpde.meshes.domains import Rectangle  # noqa: E402
from neuralpde.operators.lpn import LPNConv  # noqa: E402
from neuralpde.progress import Progress  # noqa: E402
from neuralpde.solvers.inverse_problems import blur_operator, field_sampler, heat_operator  # noqa: E402
from neuralpde.solvers.lpn_training import paper_schedule, train_lpn  # noqa: E402
from neuralpde.solvers.pnp import (  # noqa: E402
    DTYPE,
    LinearOperator,
    LPNProx,
    Tikhonov,
    TotalVariation,
    check_adjoint,
    pnp_admm,
    psnr,
    rel_l2,
)

RESULTS = ROOT / "docs" / "results"
SIGMA_TRAIN, RHO, ITERS = 0.1, 0.1, 30
HIDDEN = 16
NOISE = {"heat": [0.005, 0.01, 0.02], "deblur": [0.02, 0.05, 0.1]}
LPN_FACTORS = [1.0, 4.0, 16.0, 64.0]
LAMBDAS = {"tikhonov": [1e-4, 1e-3, 1e-2], "tv": [3e-4, 3e-3, 3e-2]}


def train_priors(n: int, steps: int, batch: int, seed: int, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    nets, info = {}, {}
    for name, convex in (("lpn", True), ("unconstrained", False)):
        torch.manual_seed(seed)
        cpu0 = time.process_time()
        net = LPNConv(hidden=HIDDEN, strides=(2, 1, 2), beta=10.0, alpha=0.01, size=[n, n], convex=convex)
        t0 = time.perf_counter()
        hist = train_lpn(net, field_sampler("piecewise", n), sigma=SIGMA_TRAIN, batch=batch,
                         stages=paper_schedule(steps, 0.08 * n), seed=seed, progress=Progress(),
                         checkpoint_dir=ckpt / f"{name}_{steps}x{batch}", checkpoint_every=max(1, steps // 5),
                         description=name)
        info[name] = {"train_s": time.perf_counter() - t0, "train_cpu_s": time.process_time() - cpu0,
                      "steps": steps, "batch": batch,
                      "resumed_from": hist["resumed_from"], "params": sum(p.numel() for p in net.parameters()),
                      "final_loss": hist["loss"][-1] if hist["loss"] else None,
                      "min_constrained_weight": min(float(w.detach().min()) for w in net.constrained_weights())}
        nets[name] = net
    return nets, info


def make_problem(kind: str, n: int, seed: int) -> tuple[LinearOperator, float]:
    """The operator (heat: as a dense matrix, built once from A^T, so each ADMM x-step is cheap) and its
    dot-product-test mismatch (of the matrix-free FEM operator for heat)."""
    if kind == "deblur":
        op = blur_operator(n, 1.5)
        return op, check_adjoint(op)
    op = heat_operator(Rectangle().mesh(cells=[n - 1, n - 1]), 1.0, 0.002, 10, 0.3, seed=seed).operator
    rows = torch.stack([op.adjoint(e) for e in torch.eye(op.shape[0], dtype=DTYPE)])
    return LinearOperator.from_matrix(rows), check_adjoint(op)


def prior(name: str, weight: float, nets: dict[str, Any], noise: float, n: int):
    """(prox, data scale) of a prior with its tuned weight."""
    if name in nets:
        return LPNProx(nets[name], (1, n, n)), weight * RHO * SIGMA_TRAIN**2 / noise**2
    scale = 1.0 / noise**2
    if name == "tikhonov":
        return Tikhonov(weight * scale, (n, n)), scale
    return TotalVariation(weight * scale, (n, n)), scale


def observe(op, truth: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    clean = op(truth)
    return clean + noise * torch.randn(clean.shape, generator=gen, dtype=DTYPE)


def solve(op, y, name, weight, nets, noise, n, truth, iters=ITERS, start_weight=None):
    """PnP-ADMM with one prior; a learned prior starts from the Tikhonov reconstruction when ``start_weight``
    (Tikhonov's lambda) is given, else from ``A^T y``."""
    prox, scale = prior(name, weight, nets, noise, n)
    x0 = None
    if name in nets and start_weight is not None:
        x0 = solve(op, y, "tikhonov", start_weight, nets, noise, n, None).x
    return pnp_admm(op, y, prox, rho=RHO, scale=scale, iters=iters, cg_iter=30, truth=truth, x0=x0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, seed = args.grid, 0
    torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoints)
    started = time.perf_counter()
    nets, train_info = train_priors(n, args.steps, args.batch, seed, ckpt)
    sample = field_sampler("piecewise", n)
    gen = torch.Generator().manual_seed(12345)
    val = sample(1, gen).to(DTYPE).reshape(1, -1)
    test = sample(args.fields, gen).to(DTYPE).reshape(args.fields, -1)
    grids = {**LAMBDAS, "lpn": LPN_FACTORS, "unconstrained": LPN_FACTORS}      # Tikhonov first: it is the start
    out: dict[str, Any] = {"problems": {}}
    pictures: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, Any] = {}
    for kind in ("heat", "deblur"):
        op, mismatch = make_problem(kind, n, seed)
        res: dict[str, Any] = {"adjoint_mismatch": mismatch, "noise": {}}
        for level, noise in enumerate(NOISE[kind]):
            row: dict[str, Any] = {}
            for name, choices in grids.items():
                sw = row["tikhonov"]["weight"] if name in nets and args.start == "tikhonov" else None
                ngen = torch.Generator().manual_seed(1000 * level + 1)
                ys_val = [observe(op, v, noise, ngen) for v in val]
                scores = [np.mean([psnr(solve(op, y, name, w, nets, noise, n, None, start_weight=sw).x, v)
                                   for y, v in zip(ys_val, val, strict=True)]) for w in choices]
                best = choices[int(np.argmax(scores))]
                tgen = torch.Generator().manual_seed(1000 * level + 2)
                ps, rl = [], []
                for i, truth in enumerate(test):
                    r = solve(op, observe(op, truth, noise, tgen), name, best, nets, noise, n, truth, start_weight=sw)
                    ps.append(psnr(r.x, truth, data_range=1.0))
                    rl.append(rel_l2(r.x, truth))
                    if level == 1 and i == 0:
                        panels = pictures.setdefault(kind, {"truth": truth.reshape(n, n).numpy()})
                        panels[name] = r.x.reshape(n, n).numpy()
                row[name] = {"weight": best, "validation_psnr": [float(s) for s in scores],
                             "psnr_mean": float(np.mean(ps)), "psnr": ps, "rel_l2_mean": float(np.mean(rl)),
                             "rel_l2": rl}
                print(f"{kind} noise={noise} {name}: weight {best:g}, PSNR {np.mean(ps):.2f} dB, "
                      f"rel L2 {np.mean(rl):.3f}", flush=True)
            best_base = max(row["tikhonov"]["psnr_mean"], row["tv"]["psnr_mean"])
            row["lpn_minus_best_baseline_db"] = row["lpn"]["psnr_mean"] - best_base
            res["noise"][str(noise)] = row
        # convergence at the middle noise level, 60 iterations, each prior with its tuned weight
        noise = NOISE[kind][1]
        mid = res["noise"][str(noise)]
        y = observe(op, test[0], noise, torch.Generator().manual_seed(99))
        sw = mid["tikhonov"]["weight"] if args.start == "tikhonov" else None
        curves[kind] = {name: solve(op, y, name, mid[name]["weight"], nets, noise, n, test[0], iters=60,
                                    start_weight=sw).history for name in grids}
        res["convergence"] = {name: {"change": h["change"], "psnr": h["psnr"]} for name, h in curves[kind].items()}
        out["problems"][kind] = res
    out["denoise"] = denoise_check(nets, n)
    out["probe"] = probe(nets["lpn"], test, n)
    out["training"] = train_info
    out["wall_s"] = time.perf_counter() - started
    write_pictures(pictures, curves, out["probe"], "lpn_quick" if args.quick else "lpn")
    return out


def denoise_check(nets: dict[str, Any], n: int, count: int = 16) -> dict[str, float]:
    """Mean PSNR of denoising ``count`` fresh fields at the training noise: noisy input, each net, best TV."""
    gen = torch.Generator().manual_seed(123)
    x = field_sampler("piecewise", n)(count, gen).to(DTYPE)
    y = x + SIGMA_TRAIN * torch.randn(x.shape, generator=gen, dtype=DTYPE)

    def mean_psnr(d: torch.Tensor) -> float:
        return float(np.mean([psnr(d[i], x[i], data_range=1.0) for i in range(count)]))

    res = {"noisy": mean_psnr(y)}
    for name, net in nets.items():
        with torch.no_grad():
            res[name] = mean_psnr(net(y.float()).to(DTYPE))
    tv = {}
    for lam in (0.02, 0.05, 0.1, 0.2):
        op = TotalVariation(lam, (n, n), iters=200)
        tv[lam] = mean_psnr(torch.stack([op(y[i].reshape(-1), 1.0).reshape(1, n, n) for i in range(count)]))
    best = max(tv, key=tv.get)
    res["tv_best"], res["tv_weight"] = tv[best], best
    print("denoising PSNR at sigma 0.1: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
    return res


def probe(net, fields: torch.Tensor, n: int) -> dict[str, Any]:
    """Mean R over the test fields, with noise of growing sigma and with blur of growing width (B3)."""
    gen = torch.Generator().manual_seed(7)
    x = fields.reshape(-1, 1, n, n).float()
    noise_levels, blur_levels = [0.0, 0.05, 0.1, 0.2, 0.3], [0.0, 0.5, 1.0, 2.0, 4.0]
    mean_noise = []
    for s in noise_levels:
        noisy = x + s * torch.randn(x.shape, generator=gen)
        mean_noise.append(float(net.prior(noisy, max_iter=300, tol=1e-4).mean()))
    mean_blur = []
    for b in blur_levels:
        blurred = x if b == 0 else torch.stack([blur_operator(n, b)(f.double().reshape(-1)).float().reshape(1, n, n)
                                                for f in x])
        mean_blur.append(float(net.prior(blurred, max_iter=300, tol=1e-4).mean()))
    return {"noise_sigma": noise_levels, "mean_R_noise": mean_noise,
            "monotone_in_noise": bool(np.all(np.diff(mean_noise) > 0)),
            "blur_sigma": blur_levels, "mean_R_blur": mean_blur,
            "monotone_in_blur": bool(np.all(np.diff(mean_blur) > 0))}


def write_pictures(pictures, curves, probe_result, prefix: str) -> None:
    from neuralpde.viz import image_panels, line_plot

    for kind, images in pictures.items():
        image_panels(images, RESULTS / f"{prefix}_{kind}_reconstructions.png",
                     title=f"{kind}: middle noise level, test field 0", extent=(0, 1, 0, 1))
    for kind, hist in curves.items():
        line_plot({k: (range(1, len(h["change"]) + 1), h["change"]) for k, h in hist.items()},
                  RESULTS / f"{prefix}_{kind}_convergence.png", xlabel="ADMM iteration",
                  ylabel="||z_k - z_{k-1}|| / ||z_k||", logy=True, title=f"{kind}: PnP-ADMM convergence")
    line_plot({"noise sigma": (probe_result["noise_sigma"], probe_result["mean_R_noise"]),
               "blur sigma (px)": (probe_result["blur_sigma"], probe_result["mean_R_blur"])},
              RESULTS / f"{prefix}_probe.png", xlabel="sigma", ylabel="mean R", title="B3 probe: learned prior")


def write_report(res: dict[str, Any], args: argparse.Namespace) -> None:
    res["protocol"] = {"grid": args.grid, "train_steps": args.steps, "batch": args.batch, "fields": args.fields,
                       "noise": NOISE, "rho": RHO, "iters": ITERS, "sigma_train": SIGMA_TRAIN,
                       "quick": args.quick, "learned_prior_start": args.start}
    res["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                      "torch": torch.__version__, "threads": args.threads,
                      "note": "2-core CPU shared with other jobs; times are indicative"}
    res["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    name = "lpn_quick" if args.quick else "lpn"
    write_text(RESULTS / f"{name}.json", json.dumps(res, indent=1))
    lines = [f"# LPN benchmark{' (quick)' if args.quick else ''}", "",
             f"Measured {res['date']} on a 2-core shared CPU (torch {torch.__version__}, {args.threads} thread), "
             f"wall time {res['wall_s']:.0f} s. Protocol: see the docstring of `benchmarks/lpn.py`; "
             f"grid {args.grid}^2, {args.fields} test fields, priors trained for {args.steps} steps "
             f"(batch {args.batch}); PnP with a learned prior starts from "
             f"{'the Tikhonov reconstruction' if args.start == 'tikhonov' else 'A^T y'}. "
             f"Re-run: `.venv/bin/python benchmarks/lpn.py{' --quick' if args.quick else ''}`.",
             "", "## PSNR (dB, peak 1) and relative L2, mean over the test fields", ""]
    for kind, pr in res["problems"].items():
        lines += [f"### {kind} (adjoint test mismatch {pr['adjoint_mismatch']:.1e})", "",
                  "| noise | LPN | unconstrained | Tikhonov | TV | LPN - best(Tikhonov, TV) |",
                  "|---|---|---|---|---|---|"]
        for noise, row in pr["noise"].items():
            cells = [f"{row[k]['psnr_mean']:.2f} / {row[k]['rel_l2_mean']:.3f}"
                     for k in ("lpn", "unconstrained", "tikhonov", "tv")]
            lines.append(f"| {noise} | " + " | ".join(cells) + f" | {row['lpn_minus_best_baseline_db']:+.2f} dB |")
        mid = pr["noise"][str(NOISE[kind][1])]["lpn_minus_best_baseline_db"]
        met = "met" if mid >= 2 else "missed"
        conv = pr["convergence"]
        last = {k: conv[k]["change"][-1] for k in conv}
        lines += ["", f"Target (LPN beats the best baseline by >= 2 dB at the middle noise): **{met}** "
                  f"({mid:+.2f} dB).",
                  "ADMM relative change after 60 iterations: " + ", ".join(f"{k} {v:.1e}" for k, v in last.items())
                  + ".", "", f"![{kind}]({name}_{kind}_reconstructions.png) ![{kind} convergence]"
                  f"({name}_{kind}_convergence.png)", ""]
    d = res["denoise"]
    lines += ["## Denoising at the training noise (sigma 0.1, 16 fresh fields, PSNR dB)", "",
              "| noisy input | LPN | unconstrained | TV (best weight) |", "|---|---|---|---|",
              f"| {d['noisy']:.2f} | {d['lpn']:.2f} | {d['unconstrained']:.2f} | {d['tv_best']:.2f} "
              f"(lambda {d['tv_weight']:g}) |", ""]
    p = res["probe"]
    lines += ["## B3 probe: mean learned R", "",
              "| noise sigma | " + " | ".join(f"{s:g}" for s in p["noise_sigma"]) + " |",
              "|---|" + "---|" * len(p["noise_sigma"]),
              "| mean R | " + " | ".join(f"{v:.3f}" for v in p["mean_R_noise"]) + " |", "",
              "| blur sigma (px) | " + " | ".join(f"{s:g}" for s in p["blur_sigma"]) + " |",
              "|---|" + "---|" * len(p["blur_sigma"]),
              "| mean R | " + " | ".join(f"{v:.3f}" for v in p["mean_R_blur"]) + " |", "",
              f"Monotone in noise: **{'met' if p['monotone_in_noise'] else 'missed'}**; "
              f"monotone in blur: **{'met' if p['monotone_in_blur'] else 'missed'}**.", "",
              f"![probe]({name}_probe.png)", "", "## Training", ""]
    for k, t in res["training"].items():
        how = (f"resumed from its checkpoint at step {t['resumed_from']} (trained by an earlier run of this command)"
               if t["resumed_from"] else f"trained in {t['train_s']:.0f} s wall / {t['train_cpu_s']:.0f} s CPU, "
               f"final loss {t['final_loss']:.3g}")
        lines.append(f"- {k}: {t['params']} parameters, {t['steps']} steps, {how}; smallest constrained weight "
                     f"{t['min_constrained_weight']:.2e} (clamped >= 0 for the LPN only).")
    write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 x 16, 1500 training steps, 2 test fields")
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--fields", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--start", choices=("tikhonov", "adjoint"), default="tikhonov",
                        help="where PnP with a learned prior starts: the Tikhonov reconstruction or A^T y")
    parser.add_argument("--checkpoints", default=str(ROOT / "out" / "bench_lpn" / "checkpoints"))
    args = parser.parse_args()
    if args.quick:
        args.grid, args.steps, args.fields = 16, 1500, 2
        args.checkpoints += "_quick"
    res = run(args)
    write_report(res, args)
    print(f"wrote {RESULTS / ('lpn_quick' if args.quick else 'lpn')}.md", flush=True)


if __name__ == "__main__":
    main()
