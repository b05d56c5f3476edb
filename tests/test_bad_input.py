"""Bad input: every mistake ends in a NeuralPDEError that names the file, the field and a fix,
and a failed run leaves the output folder as it was (no half-written or clobbered files)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import meshio
import numpy as np
import pytest
import torch
import yaml

from neuralpde.cases.loader import load_case
from neuralpde.cases.runner import run
from neuralpde.errors import CaseError, ExpressionError, MeshError, NeuralPDEError, SolverError
from neuralpde.meshes.io import read
from neuralpde.solvers.fem import compat
from neuralpde.solvers.method import METHODS

ROOT = Path(__file__).resolve().parents[1]
POISSON = ROOT / "cases" / "poisson.yaml"

BACKENDS = ["skfem", pytest.param("dolfinx", marks=pytest.mark.skipif(not compat.have_dolfinx(),
                                                                       reason="dolfinx is not installed"))]
FAST = ["reference.backend=skfem", "method.backend=skfem"]   # the quickest successful smoke run


# ----------------------------------------------------------------------------------------------- helpers


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("neuralpde")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "neuralpde"]


def write_case(tmp_path: Path, name: str = "case.yaml", drop: tuple[str, ...] = (), **changes) -> Path:
    """``cases/poisson.yaml`` with top-level keys replaced (``changes``) or removed (``drop``)."""
    raw = yaml.safe_load(POISSON.read_text())
    for key in drop:
        raw.pop(key)
    raw.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def assert_located(err: NeuralPDEError, file: str | Path, field: str | None) -> str:
    """``err`` names ``file`` and ``field`` (``None``: no field) and carries a fix; returns str(err)."""
    text = str(err)
    assert err.file == str(file), text
    assert text.startswith(f"{file}: "), text
    assert err.field == field, text
    if field is not None:
        assert f"{file}: {field}: " in text, text
    assert err.fix and "(fix: " in text and text.endswith(")"), text
    assert "\n" not in text, text
    return text


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def assert_no_partial_outputs(out: Path, before: dict[str, bytes] | None = None) -> None:
    """No temporary leftovers; a fresh folder got no results, an old run's results are untouched."""
    if not out.exists():
        return      # failing before anything was written is the cleanest outcome
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp") or ".tmp" in n], names
    if before is None:
        assert "metrics.json" not in names, names
        assert not [n for n in names if n.startswith("fields.")], names
        return
    # run.log records the failed run; everything else is exactly what the earlier run wrote
    assert set(names) - {"run.log"} == set(before) - {"run.log"}, names
    for name, data in before.items():
        if name != "run.log":
            assert (out / name).read_bytes() == data, f"{name} changed by a failed run"


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """The output folder of a successful smoke run of cases/poisson.yaml."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    run(POISSON, overrides=FAST, smoke=True, out=out, progress=False)
    assert (out / "metrics.json").is_file() and (out / "fields.xdmf").is_file()
    return out


def failing_run(case: str | Path, error: type[NeuralPDEError], tmp_path: Path, earlier: Path,
                **kwargs) -> NeuralPDEError:
    """Run ``case`` into a fresh folder and into a copy of an earlier run's folder; both must fail
    with ``error`` (exactly that type) and leave no half-written files."""
    kwargs.setdefault("progress", False)
    fresh = tmp_path / "fresh"
    with pytest.raises(NeuralPDEError) as first:
        run(case, out=fresh, **kwargs)
    assert type(first.value) is error, repr(first.value)
    assert_no_partial_outputs(fresh)

    reused = tmp_path / "reused"
    shutil.copytree(earlier, reused)
    before = snapshot(reused)
    assert "metrics.json" in before
    with pytest.raises(NeuralPDEError) as second:
        run(case, out=reused, **kwargs)
    assert type(second.value) is error and str(second.value) == str(first.value)
    assert_no_partial_outputs(reused, before)
    return first.value


# ---------------------------------------------------------------------------------------- 1. bad YAML


@pytest.mark.parametrize("text, line", [
    ("name: t\npde: {type: poisson, source: 1\ndomain: {type: interval}\n", 3),          # unclosed brace
    ("name: t\npde:\n  type: poisson\n   source: 1\ndomain: {type: interval}\n", 4),     # bad indentation
    ("name: t\nboundary: [{where: all, dirichlet: 0}\n", 3),                              # unclosed bracket
])
def test_malformed_yaml(tmp_path, earlier_run, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = assert_located(info.value, path, None)
    assert "not valid YAML" in msg and f"line {line}" in msg
    assert failing_run(path, CaseError, tmp_path, earlier_run).message == info.value.message


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(CaseError) as info:
        load_case(path)
    assert "mapping" in assert_located(info.value, path, None)
    with pytest.raises(CaseError) as info:
        load_case(tmp_path / "nope.yaml")
    assert "not found" in assert_located(info.value, tmp_path / "nope.yaml", None)


# ------------------------------------------------------------------------------ 2. unknown keys (typos)


def test_unknown_top_level_key(tmp_path, earlier_run):
    raw = yaml.safe_load(POISSON.read_text())
    path = write_case(tmp_path, drop=("reference",), refrence=raw["reference"])
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = assert_located(info.value, path, "refrence")
    assert "unknown key 'refrence'" in msg and "did you mean 'reference'" in msg
    failing_run(path, CaseError, tmp_path, earlier_run)


@pytest.mark.parametrize("section, value, field, meant", [
    ("method", {"type": "fem", "degre": 1}, "method.degre", "degree"),
    ("reference", {"degree": 2, "solver": {"type": "cg", "max_iter": 5}}, "reference.solver.max_iter", "max_it"),
    ("domain", {"type": "rectangle", "bounds": [[0, 1], [0, 1]], "cell_typ": "triangle"}, "domain.cell_typ",
     "cell_type"),
])
def test_unknown_nested_key(tmp_path, earlier_run, section, value, field, meant):
    path = write_case(tmp_path, **{section: value})
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = assert_located(info.value, path, field)
    assert f"did you mean '{meant}'" in msg and "allowed keys here:" in msg
    failing_run(path, CaseError, tmp_path, earlier_run)


@pytest.mark.parametrize("changes, field, words", [
    ({"pde": {"type": "poisson", "sourc": 1}}, "pde.sourc", "did you mean 'source'"),
    ({"pde": {"type": "heat", "source": 1, "t_end": -1}}, "pde.t_end", "greater than 0"),
    ({"domain": {"type": "file"}}, "domain.path", "required key missing"),
    ({"boundary": [{"where": "all", "robin": {"value": 1}}]}, "boundary.0.robin.alpha", "required key missing"),
])
def test_field_path_inside_tagged_unions(tmp_path, changes, field, words):
    # the path is the one written in the file (and usable with --set), without pydantic's union labels
    path = write_case(tmp_path, **changes)
    with pytest.raises(CaseError) as info:
        load_case(path)
    assert words in assert_located(info.value, path, field)


def test_typo_in_override_key(tmp_path):
    with pytest.raises(CaseError) as info:
        load_case(POISSON, overrides=["method.degre=2"])
    assert "did you mean 'degree'" in assert_located(info.value, POISSON, "method.degre")


# ----------------------------------------------------------------------------------- 3. unknown types


def test_unknown_method_type(tmp_path, earlier_run):
    path = write_case(tmp_path, method={"type": "pinnn"})
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = assert_located(info.value, path, "method.type")
    assert "unknown type 'pinnn'" in msg and "known types:" in msg
    fix = info.value.fix
    assert all(name in fix for name in METHODS) and "fem" in fix
    failing_run(path, CaseError, tmp_path, earlier_run)


def test_unknown_pde_type(tmp_path, earlier_run):
    path = write_case(tmp_path, pde={"type": "poison", "source": 1})
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = assert_located(info.value, path, "pde.type")
    assert "unknown type 'poison'" in msg and "did you mean 'poisson'" in msg
    assert "known types:" in msg and "heat" in msg
    failing_run(path, CaseError, tmp_path, earlier_run)


def test_unknown_domain_type(tmp_path):
    path = write_case(tmp_path, domain={"type": "square"})
    with pytest.raises(CaseError) as info:
        load_case(path)
    msg = assert_located(info.value, path, "domain.type")
    assert "rectangle" in msg


# ------------------------------------------------------------------------------- 4. unsafe expressions


UNSAFE = ["__import__('os')", "().__class__", "__import__('os').system('touch PWNED')",
          "[c for c in ().__class__.__base__.__subclasses__()]", "open('/etc/passwd').read()"]


@pytest.mark.parametrize("expr", UNSAFE)
def test_unsafe_expression_in_source(tmp_path, earlier_run, expr, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(POISSON.read_text())
    path = write_case(tmp_path, pde={**raw["pde"], "source": expr})
    err = failing_run(path, ExpressionError, tmp_path, earlier_run, smoke=True)
    msg = assert_located(err, path, "pde.source")
    assert "not allowed" in msg or "cannot be called" in msg
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("field, changes", [
    ("exact", {"exact": "().__class__"}),
    ("pde.k", {"pde": {"type": "poisson", "k": "__import__('os')", "source": 1}}),
    ("pde.params", {"pde": {"type": "poisson", "source": 1, "params": {"x": 1.0}}}),
    ("boundary[0].dirichlet", {"boundary": [{"where": "all", "dirichlet": "__import__('os')"}]}),
    ("boundary[1].neumann", {"boundary": [{"where": "all", "dirichlet": 0},
                                          {"where": "left", "neumann": "().__class__"}]}),
])
def test_bad_expression_elsewhere(tmp_path, field, changes):
    path = write_case(tmp_path, **changes)
    load_case(path)                   # the schema accepts any string; the expression is checked next
    with pytest.raises(ExpressionError) as info:
        load_case(path).problem()
    assert_located(info.value, path, field)


@pytest.mark.parametrize("expr", ["__import__('os')", "().__class__"])
def test_unsafe_expression_cli(tmp_path, expr):
    raw = yaml.safe_load(POISSON.read_text())
    path = write_case(tmp_path, pde={**raw["pde"], "source": expr})
    out = tmp_path / "out"
    proc = subprocess.run(cli() + ["run", str(path), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and f"{path}: pde.source: " in lines[0] and "(fix: " in lines[0]
    assert not out.exists()


# -------------------------------------------------------------------------------------- 5./6. meshes


def test_missing_mesh_file(tmp_path, earlier_run):
    path = write_case(tmp_path, domain={"type": "file", "path": "nope.msh"}, drop=("smoke",),
                      reference={"degree": 1}, method={"type": "fem", "degree": 1})
    err = failing_run(path, CaseError, tmp_path, earlier_run)
    msg = assert_located(err, path, "domain.path")
    assert "nope.msh" in msg and "does not exist" in msg


def _square_msh(path: Path, flip: int | None) -> Path:
    """A 3x3-vertex unit square of 8 triangles (gmsh 2.2) with a boundary and a domain physical group;
    ``flip``: the index of a cell whose orientation is reversed."""
    n = 3
    xs = np.linspace(0.0, 1.0, n)
    points = np.array([[x, y, 0.0] for y in xs for x in xs])
    tris = []
    for j in range(n - 1):
        for i in range(n - 1):
            a = j * n + i
            tris += [[a, a + 1, a + n + 1], [a, a + n + 1, a + n]]
    tris = np.array(tris)
    if flip is not None:
        tris[flip] = tris[flip][[1, 0, 2]]
    lines = []
    for i in range(n - 1):
        top = (n - 1) * n
        lines += [[i, i + 1], [top + i + 1, top + i], [i * n, (i + 1) * n], [(i + 1) * n + n - 1, i * n + n - 1]]
    lines = np.array(lines)
    m = meshio.Mesh(points, [("line", lines), ("triangle", tris)],
                    cell_data={"gmsh:physical": [np.full(len(lines), 1), np.full(len(tris), 2)],
                               "gmsh:geometrical": [np.full(len(lines), 1), np.full(len(tris), 1)]},
                    field_data={"wall": np.array([1, 1]), "domain": np.array([2, 2])})
    meshio.write(path, m, file_format="gmsh22", binary=False)
    return path


def test_inverted_cells(tmp_path, earlier_run):
    good = read(_square_msh(tmp_path / "good.msh", flip=None))      # the same file unflipped reads fine
    assert good.num_cells == 8 and "wall" in good.tag_names
    mesh = _square_msh(tmp_path / "inverted.msh", flip=3)
    with pytest.raises(MeshError) as info:
        read(mesh)
    assert "inverted" in assert_located(info.value, mesh, None)

    path = write_case(tmp_path, domain={"type": "file", "path": "inverted.msh"}, drop=("smoke",),
                      boundary=[{"where": "wall", "dirichlet": "exact"}],
                      reference={"degree": 1}, method={"type": "fem", "degree": 1})
    err = failing_run(path, MeshError, tmp_path, earlier_run)
    # the mesh file is the place to fix; its name is in the message, with the cell at fault
    msg = assert_located(err, mesh, None)
    assert "1 inverted cells" in msg and "cell 3" in msg and "inverted.msh" in msg


# ---------------------------------------------------------------------------------- 7. no convergence


@pytest.mark.parametrize("backend", BACKENDS)
def test_solver_does_not_converge(tmp_path, backend):
    base = [f"reference.backend={backend}", f"method.backend={backend}"]
    out = tmp_path / "out"
    run(POISSON, overrides=base, smoke=True, out=out, progress=False)      # an earlier, successful run
    before = snapshot(out)
    assert "metrics.json" in before and "fields.xdmf" in before

    bad = base + ["reference.solver.type=cg", "reference.solver.max_it=1", "reference.solver.rtol=1e-14"]
    with pytest.raises(NeuralPDEError) as info:
        run(POISSON, overrides=bad, smoke=True, out=out, progress=False)
    assert type(info.value) is SolverError, repr(info.value)
    msg = assert_located(info.value, POISSON, "reference.solver")
    assert "did not converge" in msg and "max_it" in info.value.fix
    assert_no_partial_outputs(out, before)
    assert "run failed" in (out / "run.log").read_text()

    fresh = tmp_path / "fresh"
    with pytest.raises(SolverError):
        run(POISSON, overrides=bad, smoke=True, out=fresh, progress=False)
    assert_no_partial_outputs(fresh)


# ---------------------------------------------------------------------------------- 8. boundary names


@pytest.mark.parametrize("backend", BACKENDS)
def test_boundary_name_typo(tmp_path, earlier_run, backend):
    path = write_case(tmp_path, boundary=[{"where": "lft", "dirichlet": "exact"},
                                          {"where": "x > 1e-12", "dirichlet": "exact"}])
    err = failing_run(path, CaseError, tmp_path, earlier_run, smoke=True,
                      overrides=[f"reference.backend={backend}", f"method.backend={backend}"])
    msg = assert_located(err, path, "boundary[0].where")
    assert "did you mean 'left'" in msg and "'lft'" in msg


def test_boundary_selects_nothing(tmp_path, earlier_run):
    path = write_case(tmp_path, boundary=[{"where": "where(x > 5, 1, 0)", "dirichlet": "exact"}])
    err = failing_run(path, CaseError, tmp_path, earlier_run, smoke=True, overrides=FAST)
    assert "selects no boundary facet" in assert_located(err, path, "boundary[0].where")


# ------------------------------------------------------------------------------------- 9. bad --set


@pytest.mark.parametrize("item", ["foo", "=1", "reference.degree"])
def test_bad_set_syntax(tmp_path, earlier_run, item):
    with pytest.raises(CaseError) as info:
        load_case(POISSON, overrides=[item])
    msg = assert_located(info.value, POISSON, "--set")
    assert "KEY=VALUE" in msg
    failing_run(POISSON, CaseError, tmp_path, earlier_run, overrides=[item])


def test_bad_set_value(tmp_path):
    with pytest.raises(CaseError) as info:
        load_case(POISSON, overrides=["reference.degree=[1"])
    assert "not valid YAML" in assert_located(info.value, POISSON, "reference.degree")
    with pytest.raises(CaseError) as info:
        load_case(POISSON, overrides=["reference.degree=3"])
    assert_located(info.value, POISSON, "reference.degree")


# --------------------------------------------------------------------------------------- 10. device


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("how", ["file", "override", "argument"])
def test_cuda_without_cuda(tmp_path, earlier_run, how):
    kwargs: dict = {"smoke": True}
    case: Path = POISSON
    if how == "file":
        case = write_case(tmp_path, device="cuda")
    elif how == "override":
        kwargs["overrides"] = ["device=cuda:0"]
    else:
        kwargs["device"] = "cuda"
    err = failing_run(case, CaseError, tmp_path, earlier_run, **kwargs)
    msg = assert_located(err, case, "device")
    assert "CUDA" in msg and "cpu" in err.fix


def test_unknown_device(tmp_path):
    path = write_case(tmp_path, device="tpu")
    with pytest.raises(CaseError) as info:
        load_case(path)
    assert_located(info.value, path, "device")
