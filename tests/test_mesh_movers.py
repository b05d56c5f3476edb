"""Mesh movers: monitors, 1D equidistribution (A1), the 2D Monge-Ampere mover (A3), FEM on moved meshes, DMM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuralpde.errors import CaseError, MeshError, SolverError
from neuralpde.meshes import lshape_msh, rectangle
from neuralpde.meshes.monge_ampere import equidistribute_1d, move_mesh, moved_mesh
from neuralpde.meshes.monitors import (
    arclength,
    dmm_monitor,
    grid_derivatives,
    hessian_monitor,
    monitor_from_field,
    monitor_from_function,
    monitor_from_grid,
)
from neuralpde.meshes.quality import mesh_report, p1_interpolation_error, p1_interpolation_error_1d, signed_areas

UNIT = [[0.0, 1.0], [0.0, 1.0]]

# shared/papers/mmpde.md, table A1 (relL2 of P1 interpolation of tanh((x-0.5)/0.02), computed with numpy/scipy)
A1 = {33: (3.593e-2, 3.991e-3, 8.318e-4, 1.308e-3, 2.908e-2),
      65: (8.105e-3, 1.476e-3, 2.047e-4, 3.225e-4, 1.201e-2),
      129: (2.057e-3, 4.528e-4, 5.089e-5, 8.007e-5, 3.653e-3)}


def front_1d(x: np.ndarray) -> np.ndarray:
    return np.tanh((x - 0.5) / 0.02)


def ring(eps: float):
    return lambda p: np.tanh((np.hypot(p[:, 0] - 0.5, p[:, 1] - 0.5) - 0.25) / eps)


def test_a1_table_reproduced_by_1d_equidistribution():
    x = np.linspace(0.0, 1.0, 2_000_001)
    grad, hess = grid_derivatives(front_1d(x), x[1] - x[0])
    u2 = np.abs(hess[..., 0, 0])
    monitors = [arclength(grad), hessian_monitor(u2, 1, beta=1.0), hessian_monitor(u2, 1, beta=4.51),
                dmm_monitor(grad, mm_gamma=0.01)]
    for n, row in A1.items():
        got = [p1_interpolation_error_1d(np.linspace(0, 1, n), front_1d)]
        got += [p1_interpolation_error_1d(equidistribute_1d(x, m, n), front_1d) for m in monitors]
        np.testing.assert_allclose(got, row, rtol=0.02, err_msg=f"A1 row N={n}")


def test_monitors_formulas():
    g = np.array([[3.0, 4.0]])
    assert arclength(g)[0] == pytest.approx(np.sqrt(26))
    assert hessian_monitor(np.array([2.0]), 2, beta=1.0)[0] == pytest.approx(3 ** (2 / 3))
    assert hessian_monitor(np.array([2.0]), 1, beta=1.0)[0] == pytest.approx(3 ** 0.4)
    # the DMM monitor: 1 + |g| / (gamma * mean |g|), the constant is exposed
    m = dmm_monitor(np.array([[1.0, 0.0], [3.0, 0.0]]), mm_gamma=0.5)
    np.testing.assert_allclose(m, [1 + 1 / (0.5 * 2), 1 + 3 / (0.5 * 2)])


def test_recovered_hessian_monitor_matches_grid_monitor():
    from neuralpde.pde.expressions import Expression
    from neuralpde.solvers.fem import FEField

    u = Expression.parse("tanh((x - 0.5)/0.1)")
    field = FEField.interpolate(rectangle(cells=[64, 64]), 1, u)
    fem = monitor_from_field(field, "hessian", resolution=65, beta=10.0)
    exact = monitor_from_function(lambda p: u.numpy(p.T), UNIT, "hessian", resolution=65, beta=10.0)
    # recovery is second order inside, first order at the boundary: compare away from it
    inner = (slice(4, -4), slice(4, -4))
    assert np.max(np.abs(fem.values[inner] - exact.values[inner]) / exact.values[inner]) < 0.05


def test_nan_solution_is_a_clear_error():
    bad = np.ones((17, 17))
    bad[3, 4] = np.nan
    with pytest.raises(SolverError, match="NaN"):
        monitor_from_grid(bad, UNIT)


@pytest.mark.parametrize("eps, target_err, target_cv", [(0.05, 6.5e-3, 0.2), (0.02, 9.1e-3, 0.2)])
def test_a3_ring_hessian_monitor(eps, target_err, target_cv):
    mesh = rectangle(cells=[32, 32])
    u = ring(eps)
    monitor = monitor_from_function(u, UNIT, "hessian", resolution=513)
    res = move_mesh(mesh, monitor, dtau=0.2)
    assert res.converged and res.iterations < 1000
    assert res.quality["valid"] and res.quality["min_area"] > 0
    err = p1_interpolation_error(res.mesh.points, mesh.cells, u)
    assert err <= target_err, err
    assert p1_interpolation_error(mesh.points, mesh.cells, u) > 1.8 * err      # uniform: 1.18e-2
    assert res.quality["cv"] <= target_cv and res.quality["cv_uniform"] > 0.5


def test_quasi_newton_agrees_with_relaxation():
    mesh = rectangle(cells=[16, 16])
    monitor = monitor_from_function(ring(0.08), UNIT, "hessian", resolution=129)
    relax = move_mesh(mesh, monitor, dtau=0.2, rtol=1e-9)
    newton = move_mesh(mesh, monitor, method="quasi_newton", rtol=1e-9)
    assert relax.converged and newton.converged
    assert newton.iterations < relax.iterations / 3
    np.testing.assert_allclose(newton.mesh.points, relax.mesh.points, atol=1e-6)


def test_moved_mesh_is_valid_boundary_and_corners():
    mesh = rectangle([[0, 2], [-1, 1]], cells=[20, 12])
    u = lambda p: np.tanh((p[:, 0] + p[:, 1] - 0.7) / 0.1)   # a diagonal front: nodes slide along all sides
    res = move_mesh(mesh, monitor_from_function(u, [[0, 2], [-1, 1]], "arclength", resolution=257), dtau=0.2)
    assert res.converged
    rep = mesh_report(mesh, res.mesh.points)
    assert rep["valid"] and rep["boundary_drift"] == 0 and rep["corner_drift"] == 0 and rep["outside"] == 0
    moved_far = np.abs(res.mesh.points - mesh.points).max()
    assert moved_far > 0.05                    # nodes did move, including along the sides
    assert res.mesh.facet_tags.keys() == mesh.facet_tags.keys()


def test_inversion_stops_and_returns_last_valid_mesh():
    mesh = rectangle(cells=[32, 32])
    monitor = monitor_from_function(ring(0.02), UNIT, "arclength", resolution=257)
    res = move_mesh(mesh, monitor, dtau=0.9, maxiter=50)       # far too large a pseudo time step
    assert res.status == "inverted" and res.inverted_at is not None
    assert res.iterations == res.inverted_at
    assert signed_areas(res.mesh.points, mesh.cells).min() > 0


def test_non_rectangular_domain_is_a_clear_error(tmp_path):
    pytest.importorskip("gmsh")
    lshape = lshape_msh(tmp_path / "l.msh", h=0.25)
    from neuralpde.meshes import read

    with pytest.raises(MeshError, match="not a rectangle"):
        move_mesh(read(lshape), lambda p: np.ones(len(p)))


def test_unstructured_mesh_and_bad_settings_are_clear_errors():
    mesh = rectangle(cells=[8, 8])
    shuffled = moved_mesh(mesh, mesh.points + 0.01 * np.sin(7 * mesh.points[:, ::-1]) * (
        (mesh.points > 0) & (mesh.points < 1)))
    with pytest.raises(MeshError, match="tensor grid"):
        move_mesh(shuffled, lambda p: np.ones(len(p)))
    with pytest.raises(CaseError, match="method"):
        move_mesh(mesh, lambda p: np.ones(len(p)), method="newton-raphson")


def test_fem_on_moved_mesh_beats_uniform_at_equal_dofs():
    from neuralpde.meshes.domains import Rectangle
    from neuralpde.pde import BoundaryCondition, Poisson, Problem
    from neuralpde.solvers.fem import get_backend
    from neuralpde.solvers.mmpde import solve_on_mesh

    # centre off the nodes: the manufactured source has a (weak) 1/r singularity there
    exact = "tanh((sqrt((x-0.503)**2 + (y-0.497)**2) - 0.25)/0.05)"
    pb = Problem(Poisson(source="manufactured", exact=exact), Rectangle(), [BoundaryCondition("all", "dirichlet",
                                                                                              "exact")])
    mesh = rectangle(cells=[32, 32])
    uniform = get_backend("skfem").solve(pb, mesh, degree=1).field
    monitor = monitor_from_field(uniform, "hessian", resolution=257)     # from the FEM solution itself
    moved = move_mesh(mesh, monitor, dtau=0.2).mesh
    errors = {name: solve_on_mesh(pb, m).errors(pb.exact)["rel_l2"]
              for name, m in (("uniform", mesh), ("moved", moved))}
    # same dofs; quadrature load: uniform 1.50e-2, moved 6.8e-3
    assert errors["moved"] < 0.5 * errors["uniform"], errors
    # the backend's own load (source interpolated at the nodes) is consistent with the reference solve
    same = solve_on_mesh(pb, mesh, load="backend").values
    np.testing.assert_allclose(same, uniform.values, atol=1e-10)


# ---- DMM ------------------------------------------------------------------------------------------------------
SMALL = dict(grid=17, width=32, trunk=(32,), decoder=(32,), monitor_resolution=65)
WIDE = (0.06, 0.1)      # wide rings: a tiny network learns them in 400 steps (~20 s); benchmarks/ has the real run


@pytest.fixture(scope="module")
def trained_dmm():
    import torch

    from neuralpde.meshes.dmm import DMMConfig, DMMMover, solution_family

    torch.set_num_threads(1)
    mover = DMMMover(DMMConfig(**SMALL), seed=0)
    train = solution_family("ring", 8, seed=1, eps=WIDE)
    history = mover.fit([f.grid(65) for f in train], steps=400, batch=8, points=64, lr=5e-3, seed=0)
    return mover, history


def test_dmm_training_equidistributes_held_out_ring(trained_dmm):
    from neuralpde.meshes.dmm import solution_family

    mover, history = trained_dmm
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    assert history[-1]["bound"] < 1e-10          # d phi/dn = 0 is built into the trunk's input features
    mesh = rectangle(cells=[16, 16])
    for member in solution_family("ring", 2, seed=99, eps=WIDE):       # held out: other seed
        res = mover.move(mesh, member.grid(65))
        rep = mesh_report(mesh, res.mesh.points)
        assert res.status == "converged" and rep["valid"] and rep["boundary_drift"] == 0
        assert res.quality["cv"] < 0.8 * res.quality["cv_uniform"], res.quality     # measured 0.69, 0.64
        ratio = p1_interpolation_error(res.mesh.points, mesh.cells, member) / p1_interpolation_error(
            mesh.points, mesh.cells, member)
        assert ratio < 0.92, ratio                                                  # measured 0.87, 0.80


def test_dmm_checkpoint_roundtrip_and_mismatch(trained_dmm, tmp_path):
    from neuralpde.meshes.dmm import DMMMover, solution_family

    mover, _ = trained_dmm
    path = tmp_path / "dmm.pt"
    mover.save(path, family="ring")
    again = DMMMover.load(path, expect={"width": 32})
    mesh = rectangle(cells=[8, 8])
    u = solution_family("ring", 1, seed=5)[0].grid(65)
    np.testing.assert_allclose(again.move(mesh, u).mesh.points, mover.move(mesh, u).mesh.points, atol=1e-12)
    with pytest.raises(SolverError, match="width"):
        DMMMover.load(path, expect={"width": 64})


def test_dmm_bad_inputs_and_inverted_map(trained_dmm):
    import copy

    import torch

    from neuralpde.meshes.dmm import solution_family

    mover, _ = trained_dmm
    mesh = rectangle(cells=[8, 8])
    u = solution_family("ring", 1, seed=5)[0].grid(65)
    bad = u.copy()
    bad[10, 10] = np.nan
    with pytest.raises(SolverError, match="NaN"):
        mover.move(mesh, bad)
    with pytest.raises(SolverError, match="NaN"):
        mover.fit([u, bad], steps=1)
    wild = copy.deepcopy(mover)
    with torch.no_grad():                        # a huge potential folds the map: the mesh inverts
        wild.net.decoder[-1].weight.mul_(300.0)
    res = wild.move(mesh, u)
    assert res.status == "inverted" and res.inverted_at == 1
    np.testing.assert_array_equal(res.mesh.points, mesh.points)      # the last valid mesh: the unmoved one


def test_dmm_cached_move_matches_autograd_and_is_keyed_by_mesh(trained_dmm):
    import copy

    import torch

    from neuralpde.meshes.dmm import solution_family

    mover = copy.deepcopy(trained_dmm[0])          # its weights are changed below
    mover.clear_cache()
    u = solution_family("ring", 1, seed=7, eps=WIDE)[0].grid(65)
    square = rectangle(cells=[16, 16])
    inner = (square.points > 0) & (square.points < 1)
    # same node count and cells, other coordinates: must not reuse the square's cache
    bent = moved_mesh(square, square.points + 0.01 * np.sin(2 * np.pi * square.points[:, ::-1]) * inner)
    box = rectangle([[0, 2], [-1, 1]], cells=[16, 16])
    for mesh in (square, bent, box):
        cached = mover.move(mesh, u).mesh.points
        plain = mover.move(mesh, u, cache=False).mesh.points
        np.testing.assert_allclose(cached, plain, atol=1e-6)
    assert len(mover._trunk_cache) == 3
    moved_square, moved_bent = (mover.move(m, u).mesh.points for m in (square, bent))
    assert np.abs(moved_square - moved_bent).max() > 1e-3          # a reused cache would move both alike
    assert len(mover._trunk_cache) == 3                               # hits, no new entries
    with torch.no_grad():                      # an in-place weight change (as an optimiser step) invalidates it
        mover.net.trunk[0].weight.mul_(1.5)
    np.testing.assert_allclose(mover.move(square, u).mesh.points, mover.move(square, u, cache=False).mesh.points,
                               atol=1e-6)
    assert np.abs(mover.move(square, u).mesh.points - moved_square).max() > 1e-4
    plain = mover.move(square, u, cache=False).mesh.points
    mover.clear_cache()                        # a cache built inside the caller's inference mode is the same
    with torch.inference_mode():
        np.testing.assert_allclose(mover.move(square, u).mesh.points, plain, atol=1e-6)


def test_dmm_needs_a_rectangle(trained_dmm, tmp_path):
    pytest.importorskip("gmsh")
    from neuralpde.meshes import read

    mover, _ = trained_dmm
    with pytest.raises(MeshError, match="not a rectangle"):
        mover.move(read(lshape_msh(tmp_path / "l.msh", h=0.25)), np.zeros((17, 17)))


def test_mesh_mover_case_with_dmm_trains_once_then_reuses_checkpoint(tmp_path):
    import json

    import neuralpde as npde

    case = Path(__file__).parent.parent / "cases" / "mesh_mover_front.yaml"
    overrides = {"method.mover": {"type": "dmm", "family": "front", "members": 8, "steps": 20, "batch": 4,
                                  "points": 32, "width": 16, "trunk": [16], "decoder": [16], "samples": 33},
                 "reference": "none", "method.monitor.source": "exact"}
    first = npde.run(case, smoke=True, overrides=overrides, out=tmp_path, progress=False)
    assert first.metrics["method"]["dmm_checkpoint"].startswith("saved")
    assert first.metrics["method"]["mover"]["valid"]
    second = npde.run(case, smoke=True, overrides=overrides, out=tmp_path, progress=False)
    assert second.metrics["method"]["dmm_checkpoint"].startswith("loaded")
    metrics = json.loads((tmp_path / "metrics.json").read_text())["method"]
    assert metrics["num_dofs_each"] == 13 * 13
    assert (tmp_path / "meshes.png").stat().st_size > 0


def test_mesh_mover_method_rejects_a_non_rectangular_case():
    import neuralpde as npde
    from neuralpde.solvers.method import RunContext
    from neuralpde.solvers.mmpde import MeshMoverConfig, MeshMoverMethod

    pytest.importorskip("gmsh")
    case = npde.load_case(Path(__file__).parent.parent / "cases" / "poisson_lshape.yaml")
    with pytest.raises(MeshError, match="rectangle") as err:
        MeshMoverMethod(MeshMoverConfig()).run(case.problem(), None, RunContext())
    assert err.value.field == "domain"
