"""Every shipped case runs with --smoke, and its outputs open in meshio (ParaView's formats) and as images."""

import json
from pathlib import Path

import meshio
import numpy as np
import pytest
import yaml

import neuralpde as npde

CASES = sorted((Path(__file__).parent.parent / "cases").glob("*.yaml"))


def test_cases_exist():
    names = {c.stem for c in CASES}
    assert {"poisson", "poisson_lshape", "heat"} <= names


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_case_runs_smoke(case, tmp_path):
    out = tmp_path / case.stem
    result = npde.run(case, smoke=True, out=out, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["name"] == case.stem
    # a resolved config is itself a valid case that reproduces the run's settings
    again = npde.load_case_text(yaml.safe_dump(resolved)).config.model_dump()
    original = result.case.config.model_dump()
    if (original["domain"] or {}).get("type") == "file":   # written absolute: the resolved file runs anywhere
        assert Path(again["domain"].pop("path")).is_file()
        original["domain"].pop("path")
    assert again == original
    if "reference" not in metrics:      # a toy without a PDE or reference (node_spiral): config and metrics only
        assert "method" in metrics
        return
    assert metrics["reference"]["num_dofs"] > 0
    if "method" in metrics and "vs_reference" in metrics["method"]:
        rel_l2 = metrics["method"]["vs_reference"]["rel_l2"]
        # a smoke run trains a neural method for seconds: its error is finite, not yet small
        assert 0 < rel_l2 < (0.5 if metrics["method"]["type"] == "fem" else float("inf"))
    fields = next(out.glob("fields.*[!h5]"))
    m = meshio.read(fields)
    assert {"reference", "error"} <= set(m.point_data)
    assert all(np.all(np.isfinite(v)) for v in m.point_data.values())
    png = out / "fields.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape[0] > 100 and img.std() > 5      # not a blank picture
    assert not list(out.glob(".*.tmp"))


def test_poisson_errors_match_expected_orders(tmp_path):
    """The demo case: a P2 reference is far closer to the exact solution than the P1 method."""
    r = npde.run("cases/poisson.yaml", smoke=True, out=tmp_path, progress=False).metrics
    assert r["reference"]["vs_exact"]["rel_l2"] < 1e-3
    assert r["method"]["vs_exact"]["rel_l2"] > 10 * r["reference"]["vs_exact"]["rel_l2"]
    # the method's error against the reference is essentially its error against the exact solution
    assert r["method"]["vs_reference"]["rel_l2"] == pytest.approx(r["method"]["vs_exact"]["rel_l2"], rel=0.05)


def test_vtu_output_and_heat_series(tmp_path):
    case = npde.load_case("cases/heat.yaml", smoke=True, overrides=["output.fields=vtu"])
    npde.run(case, out=tmp_path, progress=False)
    m = meshio.read(tmp_path / "fields.vtu")
    assert m.points.shape[0] == len(m.point_data["reference"])
    case = npde.load_case("cases/heat.yaml", smoke=True, overrides=["reference.time.save_every=2"])
    npde.run(case, out=tmp_path / "series", progress=False)
    with meshio.xdmf.TimeSeriesReader(tmp_path / "series" / "reference_series.xdmf") as reader:
        points, cells = reader.read_points_cells()
        times = [reader.read_data(k)[0] for k in range(reader.num_steps)]
    assert times[0] == 0.0 and times[-1] == pytest.approx(0.5) and len(times) >= 3


def test_custom_pde_through_the_api(tmp_path):
    """A user's own PDE with only a weak form runs through the same path (dolfinx Newton)."""
    from neuralpde.solvers.fem.compat import have_dolfinx

    if not have_dolfinx():
        pytest.skip("a weak-form-only PDE needs the dolfinx backend")

    class NonlinearPoisson(npde.PDE):
        name = "nonlinear"

        def weak_form(self, u, v, x):
            import ufl

            return (1 + u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - 10 * v * ufl.dx

    case = npde.load_case("cases/poisson.yaml", smoke=True)
    case.pde = NonlinearPoisson()
    with pytest.raises(npde.CaseError, match="scikit-fem"):
        npde.get_backend("skfem").solve(case.problem(), case.problem().domain.mesh(cells=[4, 4]))
    result = npde.run(case, out=tmp_path, progress=False)
    assert result.metrics["reference"]["linear_solver"] == "newton"
    u = result.reference.field
    assert u.values.max() > 0.1       # a positive source lifts the solution
