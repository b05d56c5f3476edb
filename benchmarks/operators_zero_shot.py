"""Why zero-shot super-resolution fails: MgNO and FNO trained at n, tested at 2n - 1.

The models of ``benchmarks/operators.py`` (trained on ``n x n`` Darcy data) are applied to the ``2n - 1`` test set
(seed 1) in four ways, each scored by the relative L2 error against the ``2n - 1`` FEM solution:

* ``direct``: the network run on the fine grid (the zero-shot number of the main benchmark);
* ``restrict``: the fine coefficient restricted to the ``n`` grid (every other node: the ``n`` grid is a
  subset of the ``2n - 1`` grid), the network run at its training size, and its output compared at the shared
  nodes. This is an in-distribution input, so it isolates what the fine grid's finer interfaces cost;
* ``restrict+interp``: the same prediction interpolated bilinearly back to the fine grid (a super-resolution
  anyone can do without a resolution-invariant network);
* ``fem n``: the ``n``-grid FEM solution of the restricted coefficient against the fine FEM solution: the floor
  any model trained on ``n``-grid data inherits.

``norm ratio`` is ``||direct|| / ||u||``: far from 1, the network's output scales with the grid spacing.

    .venv/bin/python benchmarks/operators_zero_shot.py                  # models of out/bench_operators30
    .venv/bin/python benchmarks/operators_zero_shot.py --runs out/bench_operators --resolutions 64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpde.fileio import write_text  # noqa: E402


def rel_l2(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-sample relative L2 error over the last two axes."""
    return np.linalg.norm(pred - true, axis=(-2, -1)) / np.linalg.norm(true, axis=(-2, -1))


def bilinear_refine(u: np.ndarray) -> np.ndarray:
    """``(N, n, n)`` nodal values -> ``(N, 2n - 1, 2n - 1)`` by bilinear interpolation on the nested grid."""
    n = u.shape[-1]
    out = np.empty(u.shape[:-2] + (2 * n - 1, 2 * n - 1), dtype=u.dtype)
    out[..., ::2, ::2] = u
    out[..., 1::2, ::2] = 0.5 * (u[..., :-1, :] + u[..., 1:, :])
    out[..., :, 1::2] = 0.5 * (out[..., :, :-2:2] + out[..., :, 2::2])
    return out


def diagnose(model_name: str, n: int, runs: Path, data_dir: Path, fem_samples: int) -> dict:
    import torch

    from neuralpde.pde.darcy import Darcy
    from neuralpde.solvers.datasets import GridSolver, load_dataset
    from neuralpde.solvers.operator_training import load_operator, predict

    torch.set_num_threads(1)
    model, _ = load_operator(runs / f"{model_name}_{n}" / "checkpoints" / "best.pt")
    fine = load_dataset(data_dir / f"darcy_n{2 * n - 1}_s1_N100.h5", expect={"pde": "darcy",
                                                                              "resolution": 2 * n - 1})
    a, u = fine.a, fine.u
    direct = predict(model, a)
    coarse = predict(model, a[:, ::2, ::2])
    row = {"model": model_name, "n": n, "fine": 2 * n - 1, "samples": len(a),
           "direct": float(rel_l2(direct, u).mean()),
           "norm_ratio": float((np.linalg.norm(direct, axis=(1, 2)) / np.linalg.norm(u, axis=(1, 2))).mean()),
           "restrict": float(rel_l2(coarse, u[:, ::2, ::2]).mean()),
           "restrict_interp": float(rel_l2(bilinear_refine(coarse), u).mean())}
    solver = GridSolver(Darcy(grid=4), n)
    t0 = time.process_time()
    fem = np.stack([solver.solve(a[i, ::2, ::2]) for i in range(fem_samples)])
    row["fem_n"] = float(rel_l2(fem, u[:fem_samples, ::2, ::2]).mean())
    row["fem_n_interp"] = float(rel_l2(bilinear_refine(fem), u[:fem_samples]).mean())
    row["fem_n_s_per_sample"] = (time.process_time() - t0) / fem_samples
    return row


def report(rows: list[dict], args: argparse.Namespace, results: Path) -> None:
    lines = ["# Zero-shot super-resolution, diagnosed", "",
             (__doc__ or "").split("\n\n    .venv")[0].strip(), "",
             f"Models: `{args.runs}`; data: `{args.data_dir}` (2n - 1 test set, seed 1). "
             f"FEM floor over the first {args.fem_samples} samples. Command: "
             f"`python benchmarks/operators_zero_shot.py {' '.join(sys.argv[1:])}`.", "",
             "| model | n -> 2n-1 | direct | norm ratio | restrict (at n nodes) | restrict+interp | FEM n | "
             "FEM n + interp |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n']} -> {r['fine']} | {r['direct']:.4f} | {r['norm_ratio']:.3f} | "
                     f"{r['restrict']:.4f} | {r['restrict_interp']:.4f} | {r['fem_n']:.4f} | "
                     f"{r['fem_n_interp']:.4f} |")
    lines += ["", "Reading: where `restrict` is close to the model's own test error and `direct` is far above it, "
              "the inputs are in distribution and the failure is the network's dependence on the grid spacing "
              "(learned stencils act in grid units; the coarsest multigrid level halves its reach), not the "
              "data. `restrict+interp` is what a user gets at 2n - 1 from the n-grid model today; its gap to "
              "`FEM n + interp` is the model's share of it."]
    results.mkdir(parents=True, exist_ok=True)
    write_text(results / "operators_zero_shot.json", json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=1))
    write_text(results / "operators_zero_shot.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=str(ROOT / "out" / "bench_operators30"))
    p.add_argument("--data-dir", default=str(ROOT / "out" / "datasets"))
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 85])
    p.add_argument("--models", nargs="+", default=["mgno", "fno"])
    p.add_argument("--fem-samples", type=int, default=20)
    p.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = p.parse_args()
    rows = []
    for n in args.resolutions:
        for m in args.models:
            rows.append(diagnose(m, n, Path(args.runs), Path(args.data_dir), args.fem_samples))
            print(json.dumps(rows[-1]), flush=True)
    report(rows, args, Path(args.results))


if __name__ == "__main__":
    main()
