"""ODIL: the discrete-residual face, the Gauss-Newton/LM solver, multigrid gradient methods, the acceptance cases."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from neuralpde.errors import CaseError, SolverError
from neuralpde.meshes.domains import Interval, Rectangle
from neuralpde.pde import BoundaryCondition, Heat, Poisson, Problem
from neuralpde.pde.fisher import FisherKPP
from neuralpde.pde.stencils import Grid, set_boundary
from neuralpde.solvers.fem import TimeOptions, get_backend
from neuralpde.solvers.odil import DiscreteProblem, Multigrid, gradient_descent, march, newton

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cn_stepping(N: int, k: float = 0.1, t_end: float = 0.5) -> np.ndarray:
    """Independent Crank-Nicolson stepping of u_t = k u_xx (cell centres, Dirichlet 0 by ghost reflection)."""
    h, dt = 1.0 / N, t_end / N
    L = sp.diags([np.ones(N - 1), -2 * np.ones(N), np.ones(N - 1)], [-1, 0, 1]).tolil()
    L[0, 0] = L[-1, -1] = -3
    L = k * L.tocsc() / h**2
    eye = sp.identity(N, format="csc")
    u = np.sin(np.pi * (np.arange(N) + 0.5) * h)
    lu = spla.splu((eye - 0.5 * dt * L).tocsc())
    for _ in range(N):
        u = lu.solve((eye + 0.5 * dt * L) @ u)
    return u


def _heat_problem(N: int) -> tuple[DiscreteProblem, Grid]:
    pde = Heat(k=0.1, initial="sin(pi*x)", t_end=0.5, dim=1)
    grid = Grid(bounds=[[0, 1]], cells=[N], t_end=0.5, steps=N)
    return DiscreteProblem({"u": np.zeros(grid.shape)}, {}, lambda v: pde.discrete_residual(grid, v)), grid


@pytest.mark.parametrize("N, cn_error", [(32, 2.357e-4), (64, 5.898e-5)])
def test_odil1_forward_heat_matches_crank_nicolson(N, cn_error):
    pb, grid = _heat_problem(N)
    reference = _cn_stepping(N)
    x, _ = newton(pb, pb.initial(), linear_solver="direct")
    assert np.abs(x.reshape(grid.shape)[-1] - reference).max() <= 1e-7
    x, _ = newton(pb, pb.initial(), linear_solver="directsq")
    u_end = x.reshape(grid.shape)[-1]
    assert np.abs(u_end - reference).max() <= 1e-10
    exact = np.exp(-0.1 * np.pi**2 * 0.5) * np.sin(np.pi * grid.centres(0))
    assert np.abs(u_end - exact).max() == pytest.approx(cn_error, rel=2e-3)   # the papers file's CN errors


def test_march_equals_space_time_solve():
    pb, grid = _heat_problem(16)
    x, _ = newton(pb, pb.initial(), linear_solver="directsq")
    stepped = march(Heat(k=0.1, initial="sin(pi*x)", t_end=0.5, dim=1), grid)
    assert np.abs(stepped - x.reshape(grid.shape)).max() < 1e-12


def test_stencil_jacobian_equals_dense_autograd():
    rng = np.random.default_rng(0)
    grid = Grid(bounds=[[0, 1], [0, 2]], cells=[5, 4], t_end=0.3, steps=3)
    grid.sides[(0, 1)].dirichlet[...] = False                 # one zero-flux side, the rest Dirichlet
    grid.sides[(1, 0)].value[...] = 0.3
    pde = FisherKPP(D=0.05, rho=2.0, initial="x*y", t_end=0.3)
    pde.tissue_cells = (rng.uniform(0, 1, (5, 4)), rng.uniform(0, 0.5, (5, 4)))

    def residual(view):
        out = pde.discrete_residual(grid, view)
        rows = tuple(r[-1:] for r in grid.rows())
        out["data"] = view.get("u", rows) - 0.5
        return out

    pb = DiscreteProblem({"u": rng.uniform(0, 1, grid.shape)}, {"D": 0.1, "rho": 3.0, "ratio": 7.0}, residual,
                         weights={"data": 4.0})
    x = pb.initial()
    r, J = pb.linearize(x)

    def scaled(xt):
        fields, params = pb.unpack(xt)
        from neuralpde.pde.stencils import StencilView

        groups = residual(StencilView(fields, params))
        return torch.cat([np.sqrt(pb.weight(g) / v.numel()) * v.reshape(-1) for g, v in groups.items()])

    dense = torch.autograd.functional.jacobian(scaled, torch.tensor(x))
    assert np.allclose(scaled(torch.tensor(x)).numpy(), r, rtol=0, atol=1e-13)
    assert np.abs(J.toarray() - dense.numpy()).max() < 1e-11
    assert r @ r == pytest.approx(pb.loss(x)[0], rel=1e-12)


def _poisson_problem():
    pde = Poisson(k="1 + 0.5*x*y", source="manufactured", exact="sin(pi*x)*sin(2*pi*y) + x*y", dim=2)
    return Problem(pde, Rectangle([[0, 1], [0, 1]]), [BoundaryCondition("all", "dirichlet", "exact")])


def test_odil_poisson_matches_fem_with_second_order_convergence():
    from neuralpde.solvers.odil import problem_grid

    problem = _poisson_problem()
    fem = get_backend("skfem").solve(problem, problem.domain.mesh(cells=[64, 64]), degree=2).field
    errors = []
    for n in (8, 16, 32):
        grid = problem_grid(problem, n)
        pb = DiscreteProblem({"u": np.zeros(grid.shape)}, {}, lambda v, g=grid: problem.pde.discrete_residual(g, v))
        x, _ = newton(pb, pb.initial(), linear_solver="directsq")
        pts = grid.points().reshape(2, -1).T
        errors.append(np.abs(x - fem.probe(pts)).max())
        exact_err = np.abs(x - problem.exact.numpy(pts.T)).max()
        # vs the (much finer) FEM reference, ODIL's error is its own discretisation error
        assert errors[-1] == pytest.approx(exact_err, rel=0.05)
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.8), rates
    assert errors[-1] < 4e-3              # max error ~2.8 h^2


def test_fisher_fem_reference_backends_agree(backend):
    pde = FisherKPP(D=0.01, rho=4, initial="exp(-((x-0.3)**2+(y-0.4)**2)/0.02)", t_end=0.2, dim=2)
    problem = Problem(pde, Rectangle([[0, 1], [0, 1]]), [])
    mesh = problem.domain.mesh(cells=[10, 10])
    time = TimeOptions(dt=0.02, theta=0.5)
    sol = get_backend(backend).solve(problem, mesh, 1, time=time)
    other = get_backend("skfem").solve(problem, mesh, 1, time=time)
    assert np.abs(sol.field.values - other.field.values).max() < 1e-8
    assert 0.5 < sol.field.values.max() < 1.0        # the tumour grows (ρ) while it spreads (D)


def test_fisher_fem_reference_converges_to_odil_stencil():
    """FEM (P1, fine) and the CN finite-volume stencil are two discretisations of the same PDE."""
    pde = FisherKPP(D=0.01, rho=4, initial="exp(-(x-0.25)**2/(2*0.04**2))", t_end=0.5, dim=1)
    problem = Problem(pde, Interval([[0, 1]]), [BoundaryCondition("all", "neumann", 0)])
    fem = get_backend("skfem").solve(problem, problem.domain.mesh(cells=[240]), 1,
                                     time=TimeOptions(dt=0.5 / 120, theta=0.5)).field
    diffs = []
    for n in (30, 60):
        from neuralpde.solvers.odil import problem_grid

        grid = problem_grid(problem, n, n)
        u = march(pde, grid)[-1]
        diffs.append(np.abs(u - fem.probe(grid.points().reshape(1, -1).T)).max())
    assert diffs[1] < diffs[0] / 2.5 and diffs[1] < 0.01


@pytest.fixture(scope="module")
def fisher_data():
    """ODIL-2 data: the CN solution on 200 cells x 400 steps, cell-averaged to 100 cells at t = 0.5 and 1."""
    torch.set_num_threads(1)
    pde = FisherKPP(D=0.01, rho=4, initial="exp(-(x-0.25)**2/(2*0.04**2))", t_end=1.0, dim=1)
    fine = set_boundary(Grid([[0, 1]], [200], t_end=1.0, steps=400), [BoundaryCondition("all", "neumann", 0)])
    u = march(pde, fine)
    return pde, {t: u[int(round(t / fine.dt))].reshape(100, 2).mean(axis=1) for t in (0.5, 1.0)}


def _infer(fisher_data, sigma: float, seed: int) -> tuple[float, float, int]:
    pde, snapshots = fisher_data
    rng = np.random.default_rng(seed)
    grid = set_boundary(Grid([[0, 1]], [100], t_end=1.0, steps=100), [BoundaryCondition("all", "neumann", 0)])
    levels = [int(round(t / grid.dt)) for t in snapshots]
    data = np.stack([v + sigma * rng.standard_normal(100) for v in snapshots.values()])

    def residual(view):
        out = pde.discrete_residual(grid, view)
        rows = tuple(np.stack([r[lvl] for lvl in levels]) for r in grid.rows())
        out["data"] = view.get("u", rows) - view.tensor(data)
        return out

    start = np.repeat(pde.initial.numpy(grid.points())[None], grid.levels, axis=0)
    pb = DiscreteProblem({"u": start}, {"D": 0.02, "rho": 2.0}, residual)
    x, history = newton(pb, pb.initial(), iterations=40, damping=1e-3, step_tol=1e-9)
    _, params = pb.unpack(x)
    return float(params["D"]) / 0.01 - 1, float(params["rho"]) / 4 - 1, len(history) - 1


@pytest.mark.parametrize("sigma, bound", [(0.01, 0.02), (0.05, 0.06)])
def test_odil2_inverse_fisher_recovers_parameters(fisher_data, sigma, bound):
    d_err, rho_err, iterations = _infer(fisher_data, sigma, seed=0)
    assert abs(d_err) < bound and abs(rho_err) < bound, (d_err, rho_err)
    assert iterations < 40


@pytest.mark.slow
@pytest.mark.parametrize("sigma, bound", [(0.0, 0.005), (0.01, 0.02), (0.05, 0.06)])
@pytest.mark.parametrize("seed", [1, 2])
def test_odil2_inverse_fisher_more_seeds(fisher_data, sigma, bound, seed):
    d_err, rho_err, _ = _infer(fisher_data, sigma, seed)
    assert abs(d_err) < bound and abs(rho_err) < bound, (d_err, rho_err)


def test_gauss_newton_failure_is_a_clear_error_with_the_history():
    # r = x^3 - 1 from x = 0.1: the undamped step overshoots to x ~ 33, and one failure is allowed
    pb = DiscreteProblem({"u": np.array([0.1])}, {}, lambda v: {"pde": v.get("u", (np.array([0]),)) ** 3 - 1})
    with pytest.raises(SolverError, match=r"loss history: 9\.980e-01"):
        newton(pb, pb.initial(), max_failures=1)
    x, history = newton(pb, pb.initial(), max_failures=20)       # with room to damp, LM converges
    assert abs(x[0] - 1) < 1e-8 and any(h["damping"] > 0 for h in history)


def test_multigrid_decomposition_is_exact_and_helps_adam():
    mg = Multigrid((17, 32), levels=0)
    assert mg.shapes == [(17, 32), (9, 16), (5, 8), (5, 4)]
    u = torch.randn(17, 32, dtype=torch.float64)
    parts = mg.split(u)
    parts[1] = parts[1] + 1.0                      # a constant on a coarse level is a constant on the finest
    assert torch.allclose(mg.join(parts), u + 1.0)
    pb, grid = _heat_problem(16)
    x_n, _ = newton(pb, pb.initial(), linear_solver="directsq")
    errors = {}
    for multigrid in (False, True):
        x, history = gradient_descent(pb, pb.initial(), optimizer="adam", iterations=150, lr=0.01, multigrid=multigrid)
        errors[multigrid] = np.abs(x - x_n).max()
        assert history[-1]["loss"] < history[0]["loss"]
    assert errors[True] < errors[False]
    x, history = gradient_descent(pb, pb.initial(), optimizer="lbfgs", iterations=120)
    assert np.abs(x - x_n).max() < 1e-3


def test_bad_input_is_reported():
    with pytest.raises(CaseError, match="do not fit"):
        Grid(bounds=[[0, 1], [0, 1]], cells=[8])
    grid = Grid(bounds=[[0, 1]], cells=[8], t_end=1.0, steps=4)
    with pytest.raises(CaseError, match="robin"):
        set_boundary(grid, [BoundaryCondition("all", "robin", 0, alpha=1)])
    with pytest.raises(CaseError, match="selects no boundary face"):
        set_boundary(grid, [BoundaryCondition("where(x > 5, 1, 0)", "dirichlet", 0)])
    pde = FisherKPP(D=0.01, rho=1, t_end=1.0, dim=1)
    pde.tissue_cells = (np.ones(7), np.ones(7))
    from neuralpde.pde.stencils import StencilView

    with pytest.raises(CaseError, match="tissue maps"):
        pde.discrete_residual(grid, StencilView({"u": torch.zeros(grid.shape, dtype=torch.float64)}))
    problem = DiscreteProblem({"u": np.ones(4)}, {}, lambda view: {})
    with pytest.raises(CaseError, match="log_fields") as err:
        gradient_descent(problem, problem.initial(), iterations=1, log_fields=("v",))
    assert err.value.field == "method.optimizer.log_fields"


def test_cases_run_end_to_end(tmp_path):
    """The inverse case through the runner (tests/test_cases.py runs every case's smoke block as well)."""
    from neuralpde.cases.runner import run

    inverse = run("cases/odil_fisher_inverse.yaml", smoke=True, overrides=["reference.backend=skfem"],
                  out=tmp_path / "f", progress=False)
    inferred = inverse.metrics["method"]["inferred"]
    assert inferred["D"]["rel_error"] < 0.06 and inferred["rho"]["rel_error"] < 0.02
    assert (tmp_path / "f" / "metrics.json").exists()
    with pytest.raises(CaseError, match="cannot infer"):
        run("cases/odil_heat.yaml", smoke=True, overrides=["method.infer={kappa: {init: 1}}"], out=tmp_path / "x",
            progress=False)
