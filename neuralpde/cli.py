"""The ``neuralpde`` command: ``run``, ``validate``, ``list``, ``plot``, ``info``.

Bad input ends with exit code 2 and one line naming the file, the field and the fix; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural PDE methods, each checked against a finite-element reference.")
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, highlight=False)
_state = {"debug": False}


def _fail(exc: Exception) -> None:
    from .errors import NeuralPDEError

    if _state["debug"] or not isinstance(exc, NeuralPDEError):
        raise exc
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    raise typer.Exit(code=2)


def _print_version(value: bool) -> None:
    # eager: runs while the options are parsed, so `neuralpde --version` needs no command
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version.", is_eager=True,
                                                callback=_print_version)] = False) -> None:
    _state["debug"] = debug


@app.command()
def run(case: Annotated[Path, typer.Argument(help="Case file (YAML).")],
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override: KEY=VALUE (YAML value).")] = None,
        out: Annotated[Path | None, typer.Option(help="Output folder (default out/<name>).")] = None,
        device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
        smoke: Annotated[bool, typer.Option("--smoke", help="Apply the case's smoke overrides.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False) -> None:
    """Run a case end to end: reference, method, comparison, outputs."""
    from . import parallel
    from .cases.runner import run as run_case

    try:
        result = run_case(case, overrides=set_, smoke=smoke, out=out, device=device, progress=not quiet)
    except Exception as exc:
        _fail(exc)
        return
    if parallel.rank() == 0:
        _summary(result)


def _fmt(v) -> str:
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def _summary(result) -> None:
    m = result.metrics
    table = Table(title=f"{m['case']}  ({m['mpi_ranks']} rank(s), {m['device']})", title_justify="left")
    for col in ("", "backend", "DOFs", "time [s]", "rel L2 vs ref", "rel H1 vs ref", "rel L2 vs exact",
                "rel H1 vs exact"):  # errors are relative: |e| / |u_ref| (or |u_exact|)
        table.add_column(col, justify="right" if col else "left")
    ref = m.get("reference")
    if ref:
        ex = ref.get("vs_exact", {})
        table.add_row(f"reference P{ref['degree']}", ref["backend"], str(ref["num_dofs"]),
                      f"{ref['timings_s']['total']:.3f}", "-", "-", _fmt(ex.get("rel_l2", "-")),
                      _fmt(ex.get("rel_h1", "-")))
    if "method" in m:
        me = m["method"]
        vr, ve = me.get("vs_reference", {}), me.get("vs_exact", {})
        table.add_row(f"method {me['type']}", str(me.get("backend", "-")), str(me.get("num_dofs", "-")),
                      f"{me.get('time_s', float('nan')):.3f}", _fmt(vr.get("rel_l2", "-")),
                      _fmt(vr.get("rel_h1", "-")), _fmt(ve.get("rel_l2", "-")), _fmt(ve.get("rel_h1", "-")))
    console.print(table)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}")
    console.print(f"output: [bold]{result.out_dir}[/] ({', '.join(sorted(f.name for f in result.files))})")


@app.command()
def validate(case: Annotated[Path, typer.Argument(help="Case file (YAML).")],
             set_: Annotated[list[str] | None, typer.Option("--set", help="Override KEY=VALUE.")] = None,
             smoke: Annotated[bool, typer.Option("--smoke")] = False) -> None:
    """Check a case file (schema, expressions, mesh, boundary names) without solving."""
    from .cases.loader import load_case
    from .solvers.method import METHODS

    try:
        c = load_case(case, overrides=set_, smoke=smoke)
        problem = c.problem()
        if problem is None or not c.has_reference:
            what = c.config.pde.type if c.config.pde is not None else "no PDE"
            console.print(f"[green]ok[/] {case}: {what}, no FEM reference, "
                          f"method {c.config.method.type if c.config.method else 'none'}")
            return
        mesh = problem.domain.mesh(cells=c.config.reference.cells, refine=c.config.reference.refine)
        from .solvers.fem.boundary import select_facets

        facets = mesh.boundary_facets()
        mids = mesh.facet_midpoints(facets)
        for i, bc in enumerate(problem.bcs):
            if not select_facets(mesh, bc.where, mids, field=f"boundary[{i}]").any():
                from .errors import CaseError

                raise CaseError(f"where: {bc.where!r} selects no boundary facet", file=str(case),
                                field=f"boundary[{i}].where", fix=f"boundary names: {sorted(mesh.tag_names)}")
        if c.config.method is not None:
            for face in METHODS[c.config.method.type].faces:
                problem.pde.require(face, by=c.config.method.type)
    except Exception as exc:
        _fail(exc)
        return
    console.print(f"[green]ok[/] {case}: {c.config.pde.type} on {mesh.num_cells} {mesh.cell_type} cells, "
                  f"method {c.config.method.type if c.config.method else 'none'}")


@app.command("list")
def list_(folder: Annotated[Path, typer.Argument(help="Folder of case files.")] = Path("cases")) -> None:
    """List the case files in a folder and the registered methods."""
    import yaml

    from .solvers.method import METHODS

    table = Table(title=f"cases in {folder}", title_justify="left")
    table.add_column("file")
    table.add_column("pde")
    table.add_column("method")
    table.add_column("description")
    for f in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(f.read_text()) or {}
            table.add_row(f.name, str((raw.get("pde") or {}).get("type", "-")),
                          str((raw.get("method") or {}).get("type", "-")), str(raw.get("description", "")))
        except yaml.YAMLError:
            table.add_row(f.name, "?", "?", "[red]not valid YAML[/]")
    console.print(table)
    console.print("methods: " + ", ".join(sorted(METHODS)))


@app.command()
def plot(out_dir: Annotated[Path, typer.Argument(help="A run's output folder.")]) -> None:
    """Render fields.png again from a run's fields.xdmf / fields.vtu."""
    import meshio

    from .cases.plotting import plot_fields
    from .errors import CaseError

    try:
        src = next((out_dir / n for n in ("fields.xdmf", "fields.vtu") if (out_dir / n).exists()), None)
        if src is None:
            raise CaseError("no fields.xdmf or fields.vtu in this folder", file=str(out_dir),
                            fix="pass the output folder of a run (out/<case>)")
        m = meshio.read(src)
        block = m.cells[0]
        gdim = 3 if m.points.shape[1] == 3 and abs(m.points[:, 2]).max() > 0 else 2
        if block.type in ("line", "line3"):
            gdim = 1
        png = plot_fields(m.points[:, :gdim], block.data, block.type, dict(m.point_data), out_dir / "fields.png",
                          title=out_dir.name)
    except Exception as exc:
        _fail(exc)
        return
    console.print(f"wrote {png}")


@app.command()
def info() -> None:
    """Versions, FEM backends found and the device ``auto`` resolves to."""
    import importlib
    import platform

    table = Table(title=f"neuralpde {__version__}", title_justify="left", show_header=False)
    table.add_row("python", platform.python_version())
    for name in ("numpy", "scipy", "torch", "skfem", "dolfinx", "ufl", "petsc4py", "mpi4py", "meshio", "pyvista",
                 "gmsh", "pydantic", "h5py", "deepxde", "torchode", "neuralop"):
        try:
            mod = importlib.import_module(name)
            table.add_row(name, str(getattr(mod, "__version__", "installed")))
        except Exception:   # any import failure means "not usable", whatever its kind
            table.add_row(name, "[dim]not installed[/]")
    from .runtime import resolve_device
    from .solvers.fem import compat

    table.add_row("FEM backend (auto)", "dolfinx" if compat.have_dolfinx() else "scikit-fem")
    table.add_row("device (auto)", resolve_device("auto"))
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
