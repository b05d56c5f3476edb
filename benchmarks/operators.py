"""MgNO vs FNO on FEM-generated Darcy data, trained with the same wall-clock budget.

Protocol: Darcy ``-div(a grad u) = 1``, ``a`` = 12/3 from a thresholded GRF (alpha 2, tau 3); P1 FEM on
the n x n grid (nodal values = grid values); 1000 train / 100 validation / 100 test samples (seed 0),
plus 100 samples (seed 1) at 2n - 1 nodes for the zero-shot test. Both models train with Adam +
OneCycle and the relative H1 loss, one torch thread each, both at the same time (so they share the
machine's load), for the same budget; the epoch count is what fits in the budget after the first epoch.
The weights with the best validation rel. L2 are tested.

    .venv/bin/python benchmarks/operators.py                       # this session's run: 10 min per model, 64x64
    .venv/bin/python benchmarks/operators.py --budget-min 30 --resolutions 64 85 --epochs 500   # full protocol
    .venv/bin/python benchmarks/operators.py --quick               # a smoke run (tiny data, seconds per model)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "mgno": {"type": "mgno", "channels": 16, "num_layers": 3, "iterations": "10 10 10 10 20"},
    "fno": {"type": "fno", "modes": 8, "width": 16, "layers": 4},
}
QUICK_MODELS = {
    "mgno": {"type": "mgno", "channels": 4, "num_layers": 1, "iterations": "10 20"},
    "fno": {"type": "fno", "modes": 4, "width": 8, "layers": 2},
}


def dataset_paths(data_dir: Path, n: int, total: int) -> tuple[Path, Path]:
    return data_dir / f"darcy_n{n}_s0_N{total}.h5", data_dir / f"darcy_n{2 * n - 1}_s1_N100.h5"


def generate(data_dir: Path, resolutions: list[int], total: int, workers: int, zero_shot: int) -> None:
    from neuralpde.pde.darcy import Darcy
    from neuralpde.progress import Progress
    from neuralpde.solvers.datasets import generate_dataset

    for n in resolutions:
        main, fine = dataset_paths(data_dir, n, total)
        generate_dataset(main, Darcy(), resolution=n, num_samples=total, seed=0, chunk=50, workers=workers,
                         progress=Progress())
        generate_dataset(fine, Darcy(), resolution=2 * n - 1, num_samples=zero_shot, seed=1, chunk=50,
                         workers=workers, progress=Progress())


def train_one(args: argparse.Namespace) -> None:
    """One (model, resolution) run in its own process; writes a JSON record."""
    import torch

    from neuralpde.runtime import seed_everything
    from neuralpde.solvers.datasets import load_dataset
    from neuralpde.solvers.operator_training import (
        TrainConfig,
        build_model,
        load_operator,
        model_config,
        num_parameters,
        train_operator,
    )

    torch.set_num_threads(1)
    seed_everything(0)
    spec = json.loads(args.spec)
    n, (n_train, n_val, n_test) = args.resolution, args.split
    main, fine = Path(args.main), Path(args.fine)
    expect = {"pde": "darcy", "resolution": n}
    train = load_dataset(main, expect=expect, start=0, stop=n_train)
    val = load_dataset(main, expect=expect, start=n_train, stop=n_train + n_val)
    test = load_dataset(main, expect=expect, start=n_train + n_val, stop=n_train + n_val + n_test)
    net = build_model(spec, grid=n)
    ckpt_dir = Path(args.out) / "checkpoints"
    if not args.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    cfg = TrainConfig(epochs=args.epochs, batch_size=8, lr=1e-3, weight_decay=1e-4, loss="h1",
                      budget_s=60 * args.budget_min, budget_clock=args.clock, resume=args.resume)
    result = train_operator(net, model_config(net, spec), (train.a, train.u), (val.a, val.u), cfg,
                            checkpoint_dir=ckpt_dir)
    model, _ = load_operator(ckpt_dir / "best.pt")        # what a user gets back: rebuilt from the file alone
    record = {"model": spec["type"], "spec": spec, "resolution": n, "parameters": num_parameters(net),
              "epochs": result.epochs_run, "best_epoch": result.best_epoch, "budget_min": args.budget_min,
              "seconds_per_epoch": result.seconds_per_epoch, "train_seconds": result.train_seconds,
              "history": result.history}
    record.update(evaluate_record(model, test, fine, n))
    Path(args.record).write_text(json.dumps(record, indent=1))


def evaluate_record(model, test, fine: Path, n: int) -> dict:
    """Test and zero-shot errors, and wall-clock inference vs FEM seconds per sample."""
    import torch

    from neuralpde.solvers.datasets import load_dataset
    from neuralpde.solvers.operator_training import evaluate, predict

    l2, h1 = evaluate(model, torch.as_tensor(test.a), torch.as_tensor(test.u))
    record = {"test_rel_l2": l2, "test_rel_h1": h1, "fem_s_per_sample": float(np.mean(test.fem_seconds))}
    timing = {}
    for name, data in (("n", test), ("2n-1", None)):
        if data is None:
            if not fine.exists():
                continue
            data = load_dataset(fine, expect={"pde": "darcy", "resolution": 2 * n - 1})
            zl2, zh1 = evaluate(model, torch.as_tensor(data.a), torch.as_tensor(data.u))
            record.update(zero_shot_resolution=2 * n - 1, zero_shot_rel_l2=zl2, zero_shot_rel_h1=zh1,
                          zero_shot_fem_s_per_sample=float(np.mean(data.fem_seconds)))
        predict(model, data.a[:32])                       # warm-up
        t0 = time.perf_counter()
        predict(model, data.a, batch_size=32)
        timing[name] = (time.perf_counter() - t0) / len(data.a)
    record["inference_s_per_sample"] = timing["n"]
    if "2n-1" in timing:
        record["zero_shot_inference_s_per_sample"] = timing["2n-1"]
    return record


def partial_record(model_name: str, n: int, paths: tuple[Path, Path], args: argparse.Namespace, out: Path) -> dict:
    """A record from the newest checkpoint of a run that has not finished (its best weights so far)."""
    import torch

    from neuralpde.checkpoints import latest_checkpoint, load_checkpoint
    from neuralpde.solvers.datasets import load_dataset
    from neuralpde.solvers.operator_training import KIND, Normaliser, OperatorModel, build_model, num_parameters

    torch.set_num_threads(1)
    path = latest_checkpoint(out / f"{model_name}_{n}" / "checkpoints", "ckpt")
    if path is None:
        raise SystemExit(f"no checkpoint for {model_name} at n={n} yet")
    ck = load_checkpoint(path, kind=KIND)
    cfg = ck["config"]
    net = build_model(cfg["model"])
    model = OperatorModel(net, Normaliser.empty(cfg["normalize_input"], tuple(cfg["x_norm_shape"])),
                          Normaliser.empty(cfg["normalize_output"], tuple(cfg["y_norm_shape"])))
    model.load_state_dict(ck["state"]["best"])
    n_train, n_val, n_test = args.split
    test = load_dataset(paths[0], expect={"pde": "darcy", "resolution": n}, start=n_train + n_val,
                        stop=n_train + n_val + n_test)
    hist = ck["history"]
    record = {"model": cfg["model"]["type"], "spec": cfg["model"], "resolution": n, "parameters": num_parameters(net),
              "epochs": f"{ck['epoch']} of {ck['epochs']} (unfinished)", "best_epoch": ck["best_epoch"],
              "budget_min": args.budget_min, "seconds_per_epoch": ck["train_seconds"] / max(ck["epoch"], 1),
              "train_seconds": ck["train_seconds"], "history": hist}
    record.update(evaluate_record(model, test, paths[1], n))
    return record


def launch(model: str, spec: dict, n: int, paths: tuple[Path, Path], args: argparse.Namespace, out: Path):
    record = out / f"{model}_{n}.json"
    cmd = [sys.executable, __file__, "--train-one", "--spec", json.dumps(spec), "--resolution", str(n),
           "--main", str(paths[0]), "--fine", str(paths[1]), "--split", *map(str, args.split),
           "--budget-min", str(args.budget_min), "--clock", args.clock, "--epochs", str(args.epochs),
           "--out", str(out / f"{model}_{n}"), "--record", str(record), *(["--resume"] if args.resume else [])]
    log = open(out / f"{model}_{n}.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), record


def report(records: list[dict], args: argparse.Namespace, results: Path, times: list[dict]) -> None:
    from neuralpde.fileio import write_text
    from neuralpde.viz import line_plot

    name = "operators_quick" if args.quick else "operators"
    meta = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "),
            "machine": f"{platform.machine()} CPU, 2 cores shared with other work, torch 1 thread per model, "
                       "both models trained at the same time",
            "budget_min_per_model": args.budget_min, "budget_clock": args.clock, "split": args.split,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_text(results / f"{name}.json", json.dumps({"meta": meta, "runs": records, "timing": times}, indent=1))
    series = {}
    for r in records:
        sec = np.cumsum([h["budget_seconds"] for h in r["history"]]) / 60
        series[f"{r['model']} {r['resolution']}²"] = (sec, [h["val_rel_l2"] for h in r["history"]])
    line_plot(series, results / f"{name}_val.png", xlabel=f"training time [min, {args.clock} clock]",
              ylabel="validation rel. L2", logy=True, title="MgNO vs FNO, same time budget")
    lines = [f"# Neural operators on Darcy: MgNO vs FNO ({'quick run' if args.quick else 'measured'})", "",
             meta["protocol"], "", f"Machine: {meta['machine']}. Date: {meta['date']}.", "",
             f"| model | n | parameters | epochs (budget, {args.clock} clock) | {args.clock} s used | "
             f"s/epoch ({args.clock}) | test rel. L2 | test rel. H1 | inference wall s/sample | FEM wall s/sample | "
             "zero-shot 2n-1 rel. L2 | "
             "zero-shot rel. H1 | zero-shot inference / FEM wall s/sample |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        zs = (f"{r['zero_shot_rel_l2']:.4f} | {r['zero_shot_rel_h1']:.4f} | "
              f"{r['zero_shot_inference_s_per_sample']:.2e} / {r['zero_shot_fem_s_per_sample']:.2e}"
              if "zero_shot_rel_l2" in r else "- | - | -")
        lines.append(f"| {r['model']} | {r['resolution']} | {r['parameters']:,} | {r['epochs']} "
                     f"({r['budget_min']:g} min) | {r['train_seconds']:.0f} | {r['seconds_per_epoch']:.1f} | "
                     f"{r['test_rel_l2']:.4f} | "
                     f"{r['test_rel_h1']:.4f} | "
                     f"{r['inference_s_per_sample']:.2e} | {r['fem_s_per_sample']:.2e} | {zs} |")
    lines += ["", f"![validation error over training time]({name}_val.png)", "",
              "FEM solve (P1 assembly + sparse LU) vs batched network inference (batch 16): CPU seconds per "
              "sample, one thread, same process (untrained networks cost what trained ones do):", ""]
    model_keys = [k for k in times[0] if k.endswith("_s_per_sample") and k != "fem_s_per_sample"]
    lines.append("| n | FEM | " + " | ".join(k.removesuffix("_s_per_sample") for k in model_keys) + " |")
    lines.append("|---|---|" + "---|" * len(model_keys))
    for row in times:
        lines.append(f"| {row['n']} | {row['fem_s_per_sample']:.2e} | "
                     + " | ".join(f"{row[k]:.2e}" for k in model_keys) + " |")
    lines += ["", "## Targets", ""]
    for n in sorted({r["resolution"] for r in records}):
        by = {r["model"]: r for r in records if r["resolution"] == n}
        if {"mgno", "fno"} <= set(by):
            m, f = by["mgno"], by["fno"]
            lines.append(f"- n = {n}: MgNO test rel. L2 {m['test_rel_l2']:.4f} vs FNO {f['test_rel_l2']:.4f} at "
                         f"{m['parameters']:,} vs {f['parameters']:,} parameters: MgNO <= FNO in error "
                         f"{'met' if m['test_rel_l2'] <= f['test_rel_l2'] else 'MISSED'}, in parameters "
                         f"{'met' if m['parameters'] <= f['parameters'] else 'MISSED'}; MgNO <= 0.03 "
                         f"{'met' if m['test_rel_l2'] <= 0.03 else 'MISSED'}; <= 0.015 (the GPU "
                         f"target) {'met on this CPU' if m['test_rel_l2'] <= 0.015 else 'not met (CPU budget)'}; "
                         f"FNO's published 0.0108 at 85² {'beaten' if m['test_rel_l2'] < 0.0108 else 'not beaten'}.")
    for key in model_keys:
        wins = [row["n"] for row in times if row[key] < row["fem_s_per_sample"]]
        lines.append(f"- {key.removesuffix('_s_per_sample')} inference is cheaper than the FEM solve from n = "
                     f"{min(wins)} on (CPU time, batched)." if wins else
                     f"- {key.removesuffix('_s_per_sample')} inference is not cheaper than FEM at the sizes measured.")
    lines.append("")
    write_text(results / f"{name}.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget-min", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="budget in wall-clock or process CPU time (cpu: equal compute on a shared machine)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[64])
    p.add_argument("--split", type=int, nargs=3, default=[1000, 100, 100])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--data-dir", default=str(ROOT / "out" / "datasets"))
    p.add_argument("--out", default=str(ROOT / "out" / "bench_operators"))
    p.add_argument("--results", default=str(ROOT / "docs" / "results"))
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted runs from their last checkpoints (the CPU budget already spent counts)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs")
    p.add_argument("--partial", action="store_true",
                   help="with --report-only: use the newest checkpoints of unfinished runs (best weights so far)")
    p.add_argument("--timing-sizes", type=int, nargs="+", default=[33, 64, 85, 127, 169, 255])
    p.add_argument("--train-one", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--spec", "--main", "--fine", "--record"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.train_one:
        return train_one(args)
    models = MODELS
    if args.quick:
        args.resolutions, args.split, args.budget_min, args.epochs = [17], [32, 8, 8], 0.1, 3
        args.data_dir, args.out = str(Path(args.out) / "quick_data"), str(Path(args.out) / "quick")
        args.results = args.out                # a smoke run does not overwrite the measured results
        models = QUICK_MODELS
    total = sum(args.split)
    zero_shot = args.split[2]
    data_dir, out, results = Path(args.data_dir), Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    generate(data_dir, args.resolutions, total, args.workers, zero_shot)
    if args.generate_only:
        return
    records = []
    for n in args.resolutions:
        if args.report_only:
            for m in models:
                rec = out / f"{m}_{n}.json"
                if rec.exists():
                    records.append(json.loads(rec.read_text()))
                elif args.partial:
                    records.append(partial_record(m, n, dataset_paths(data_dir, n, total), args, out))
                else:
                    raise SystemExit(f"{rec} missing: the run has not finished (--partial reports its best so far)")
            continue
        runs = [launch(m, spec, n, dataset_paths(data_dir, n, total), args, out) for m, spec in models.items()]
        for proc, record in runs:
            if proc.wait() != 0:
                raise SystemExit(f"training failed, see {record.with_suffix('.log')}")
            records.append(json.loads(record.read_text()))
            print(f"{record.stem}: test rel. L2 {records[-1]['test_rel_l2']:.4f}", flush=True)
    sizes = [17, 33] if args.quick else args.timing_sizes
    report(records, args, results, timing(models, sizes, data_dir))


def timing(models: dict, sizes: list[int], data_dir: Path, samples: int = 3) -> list[dict]:
    """FEM (assembly + sparse LU) vs batched inference CPU seconds per sample by grid size, one thread.

    Untrained networks cost what trained ones do. Process CPU time, not wall time: on a machine shared
    with other work the wall time mostly measures the other work.
    """
    import torch

    from neuralpde.pde.darcy import Darcy, sample_rng
    from neuralpde.solvers.datasets import GridSolver
    from neuralpde.solvers.operator_training import build_model

    torch.set_num_threads(1)
    rows = []
    for n in sizes:
        pde = Darcy(grid=4)
        solver = GridSolver(pde, n)
        inputs = np.stack([pde.sample_input(sample_rng(7, i), n) for i in range(samples)])
        t0 = time.process_time()
        for a in inputs:
            solver.solve(a)
        row = {"n": n, "fem_s_per_sample": (time.process_time() - t0) / samples}
        batch = torch.as_tensor(np.resize(inputs, (16, n, n)), dtype=torch.float32)[:, None]
        for name, spec in models.items():
            net = build_model(spec, grid=n).eval()
            with torch.no_grad():
                net(batch[:2])
                t0 = time.process_time()
                net(batch)
            row[f"{name}_s_per_sample"] = (time.process_time() - t0) / len(batch)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
