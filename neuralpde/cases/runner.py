"""Running a case: problem -> reference -> method -> comparison -> outputs. ``neuralpde run`` calls this.

    result = run("cases/poisson.yaml", overrides=["reference.degree=1"])
    result.metrics["method"]["vs_reference"]["rel_l2"]
"""

from __future__ import annotations

import io
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, parallel
from ..errors import NeuralPDEError
from ..fileio import write_text
from ..progress import Progress
from ..runtime import resolve_device, seed_everything
from ..solvers.fem.base import FEMSolution
from ..solvers.method import METHODS, MethodResult, RunContext
from . import outputs
from .loader import Case, load_case
from .plotting import plot_fields

log = logging.getLogger("neuralpde")
log.propagate = False      # the run's log goes to run.log; the console shows warnings (see cli.py)


@dataclass
class RunResult:
    """What a run produced: metrics, the output folder and the solutions themselves (rank 0)."""

    case: Case
    out_dir: Path
    metrics: dict[str, Any]
    reference: FEMSolution | None = None
    method: MethodResult | None = None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run(case: Case | str | Path, *, overrides: list[str] | dict | None = None, smoke: bool = False,
        out: str | Path | None = None, device: str | None = None, progress: bool = True) -> RunResult:
    """Run a case end to end and write its outputs (on MPI rank 0).

    Args:
        case: a :class:`Case` or the path of a case file.
        overrides: ``["a.b=value"]`` overrides (only when ``case`` is a path).
        smoke: apply the case's ``smoke:`` overrides (only when ``case`` is a path).
        out: output folder (default: ``output.dir`` or ``out/<name>``).
        device: ``auto``, ``cpu`` or ``cuda`` (default: the case's ``device``).
        progress: show progress bars.

    Returns:
        A :class:`RunResult`; ``metrics`` is also written to ``<out>/metrics.json``.
    """
    if not isinstance(case, Case):
        case = load_case(case, overrides=overrides, smoke=smoke)
    cfg = case.config
    rank = parallel.rank()
    out_dir = Path(out or cfg.output.dir or Path("out") / cfg.name)
    log_buffer = io.StringIO()
    handler = logging.StreamHandler(log_buffer)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and h.level >= logging.WARNING for h in log.handlers):
        console_handler = logging.StreamHandler()
        console_handler.setLevel(logging.WARNING)
        console_handler.setFormatter(logging.Formatter("warning: %(message)s"))
        # errors end the run and are reported by the caller (the CLI's one `error:` line), not twice
        console_handler.addFilter(lambda record: record.levelno < logging.ERROR)
        log.addHandler(console_handler)
    try:
        result = _run(case, out_dir, device, Progress(enabled=progress and rank == 0), rank)
    except BaseException as exc:
        log.error("run failed: %s", exc)
        if not isinstance(exc, NeuralPDEError):
            log.error("%s", traceback.format_exc())
        _write_log(out_dir, log_buffer, rank)
        raise
    finally:
        log.removeHandler(handler)
    _write_log(out_dir, log_buffer, rank)
    if rank == 0:
        result.files.append(out_dir / "run.log")
    return result


def _write_log(out_dir: Path, buffer: io.StringIO, rank: int) -> None:
    if rank == 0 and out_dir.exists():
        write_text(out_dir / "run.log", buffer.getvalue())


def _run(case: Case, out_dir: Path, device: str | None, progress: Progress, rank: int) -> RunResult:
    cfg = case.config
    started = time.perf_counter()
    try:
        problem = case.problem()
        method = None
        if cfg.method is not None:
            method = METHODS[cfg.method.type](cfg.method)
            if problem is not None:
                for face in method.faces:
                    problem.pde.require(face, by=cfg.method.type)
        plots = set(cfg.output.plots) & set(method.plot_names if method is not None else ())
        ctx = RunContext(device=resolve_device(device or cfg.device), seed=cfg.seed, out_dir=out_dir,
                         progress=progress, rank=rank, plots=plots)
    except NeuralPDEError as exc:
        raise exc.located(file=case.source) from None
    seed_everything(cfg.seed)
    log.info("case %s (%s), device %s, %d MPI rank(s)", cfg.name, case.source, ctx.device, parallel.size())

    t_end = getattr(problem.pde, "t_end", 0.0) if problem is not None else 0.0
    exact = problem.exact if problem is not None else None
    metrics: dict[str, Any] = {"case": cfg.name, "version": __version__, "device": ctx.device,
                               "mpi_ranks": parallel.size(), "seed": cfg.seed}
    reference = None
    if problem is not None and case.has_reference:
        try:
            reference = cfg.reference.solve(problem, ctx)
        except NeuralPDEError as exc:
            raise exc.located(file=case.source) from None
        log.info("reference: %s P%d, %d dofs, %.3f s", reference.backend, cfg.reference.degree,
                 reference.num_dofs, reference.timings["total"])
        ref_metrics = {"backend": reference.backend, "degree": cfg.reference.degree,
                       "num_dofs": reference.num_dofs, "iterations": reference.iterations,
                       "linear_solver": reference.linear_solver, "timings_s": reference.timings}
        if rank == 0 and exact is not None:
            ref_metrics["vs_exact"] = reference.field.errors(exact, t=t_end)
        metrics["reference"] = ref_metrics

    result_method = None
    if method is not None:
        t0 = time.perf_counter()
        try:
            result_method = method.run(problem, reference, ctx)
        except NeuralPDEError as exc:
            raise exc.located(file=case.source) from None
        m = {"type": cfg.method.type, **result_method.metrics}
        m.setdefault("time_s", time.perf_counter() - t0)
        if rank == 0 and result_method.field is not None:
            if reference is not None:
                m["vs_reference"] = result_method.field.difference(reference.field)
            if exact is not None:
                m["vs_exact"] = result_method.field.errors(exact, t=t_end)
        metrics["method"] = m
        log.info("method %s: %s", cfg.method.type, {k: v for k, v in m.items() if not isinstance(v, dict)})
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics = parallel.bcast(metrics)
    result = RunResult(case=case, out_dir=out_dir, metrics=metrics, reference=reference, method=result_method)
    if rank == 0:
        _write_outputs(result, problem, exact, t_end)
    return result


def _write_outputs(result: RunResult, problem: Any, exact: Any, t_end: float) -> None:
    cfg = result.case.config
    out_dir = result.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if result.method is not None:
        result.files.extend(result.method.files)
    method_field = result.method.field if result.method is not None else None
    ref = result.reference.field if result.reference is not None else method_field
    if ref is None:     # nothing on a mesh (a toy without a PDE): config and metrics only
        result.files.extend([outputs.write_config(out_dir, cfg, result.case.path),
                             outputs.write_metrics(out_dir, result.metrics)])
        return
    fields = {} if result.reference is None else {"reference": ref}
    if method_field is not None:
        fields["method"] = method_field
        fields.update(result.method.extra_fields)
    if exact is not None:
        fields["exact"] = ref.with_values(exact.numpy(ref.doflocs.T, t=t_end))
    points, cells, cell_type, data = outputs.field_data(ref, fields)
    if "method" in data and "reference" in data:
        data["error"] = data["method"] - data["reference"]
    elif "method" in data and "exact" in data:
        data["error"] = data["method"] - data["exact"]
    elif "exact" in data:
        data["error"] = data["reference"] - data["exact"]
    files = [outputs.write_config(out_dir, cfg, result.case.path)]
    kind = cfg.output.fields
    if kind == "xdmf" and not outputs.hdf5_available():
        kind = "vtu"
        warning = "h5py is not usable here, so fields are written as VTU (install python3-h5py for XDMF)"
        log.warning(warning)
        result.warnings.append(warning)
    if kind != "none":
        files.append(outputs.write_fields(out_dir / f"fields.{kind}", points, cells, cell_type, data))
        snapshots = result.reference.snapshots if result.reference is not None else []
        if len(snapshots) > 2 or (snapshots and problem.time_dependent and kind == "xdmf"):
            files.append(outputs.write_series(out_dir / "reference_series.xdmf", ref, snapshots))
    files.append(outputs.write_metrics(out_dir, result.metrics))
    wanted = {"solution": "method" if "method" in data else "reference", "reference": "reference",
              "error": "error", "exact": "exact"}
    panels = {}
    for p in cfg.output.plots:
        key = wanted.get(p)         # other names are the method's own plots (ctx.plots)
        if key in data and key not in panels:
            panels[key] = data[key]
    if panels:
        png, warning = outputs.safe_write("fields.png", plot_fields, points, cells, cell_type, panels,
                                          out_dir / "fields.png", title=cfg.name)
        if png is not None:
            files.append(png)
        if warning:
            log.warning(warning)
            result.warnings.append(warning)
    result.files.extend(files)
    log.info("wrote %s", ", ".join(f.name for f in files))
