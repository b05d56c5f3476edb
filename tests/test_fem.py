"""Reference backends: manufactured-solution convergence, agreement between backends, heat equation."""

import numpy as np
import pytest

from neuralpde.meshes.domains import Box, Rectangle
from neuralpde.pde import BoundaryCondition, Heat, Poisson, Problem
from neuralpde.solvers.fem import LinearSolverOptions, TimeOptions, get_backend
from neuralpde.solvers.fem.compat import have_dolfinx

needs_dolfinx = pytest.mark.skipif(not have_dolfinx(), reason="dolfinx is not installed")

LU = LinearSolverOptions(type="lu")


def poisson_problem(domain=None, dim=2):
    """Variable k, reaction, Neumann on the left, Robin on the top, Dirichlet elsewhere."""
    exact = "sin(pi*x)*sin(pi*y) + x*y" if dim == 2 else "sin(pi*x)*y*z + x"
    pde = Poisson(k="1 + x**2", c=1, source="manufactured", exact=exact, dim=dim)
    # Neumann data k du/dn on the left (n = -x): -k du/dx; Robin on top: k du/dy + u
    du_dx, du_dy = pde.exact.diff("x"), pde.exact.diff("y")
    neumann = f"-(1 + x**2)*({du_dx.text})"
    robin = f"(1 + x**2)*({du_dy.text}) + 2*({pde.exact.text})"
    bcs = [BoundaryCondition("left", "neumann", neumann),
           BoundaryCondition("top", "robin", robin, alpha=2),
           BoundaryCondition("right", "dirichlet", "exact"),
           BoundaryCondition("bottom", "dirichlet", "exact")]
    if dim == 3:
        bcs = [BoundaryCondition("left", "neumann", neumann), BoundaryCondition("right", "dirichlet", "exact"),
               BoundaryCondition("front", "dirichlet", "exact"), BoundaryCondition("back", "dirichlet", "exact"),
               BoundaryCondition("top", "dirichlet", "exact"), BoundaryCondition("bottom", "dirichlet", "exact")]
    return Problem(pde, domain or Rectangle(), bcs)


def rates(errors):
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


@pytest.mark.parametrize("degree,sizes,expected,tol", [(1, [16, 32, 64], 2.0, 0.1), (2, [8, 16, 32], 3.0, 0.15)])
def test_l2_convergence_rate(backend, degree, sizes, expected, tol):
    pb = poisson_problem()
    solver = get_backend(backend)
    errors = [solver.solve(pb, pb.domain.mesh(cells=[n, n]), degree, solver=LU).field.errors(pb.exact)["l2"]
              for n in sizes]
    assert np.all(np.abs(rates(errors) - expected) <= tol), (errors, rates(errors))


@pytest.mark.parametrize("degree", [1, 2])
def test_h1_convergence_rate(degree):
    pb = poisson_problem()
    errors = [get_backend("skfem").solve(pb, pb.domain.mesh(cells=[n, n]), degree).field.errors(pb.exact)["h1"]
              for n in (8, 16, 32)]
    assert np.all(np.abs(rates(errors) - degree) <= 0.1), rates(errors)


@needs_dolfinx
@pytest.mark.parametrize("domain,cells,degree", [
    (Rectangle(), [12, 10], 1), (Rectangle(), [12, 10], 2),
    (Rectangle(cell_type="quadrilateral"), [9, 7], 1), (Rectangle(cell_type="quadrilateral"), [9, 7], 2),
    (Rectangle(diagonal="left"), [7, 7], 2), (Box(), [4, 3, 3], 1), (Box(), [3, 3, 2], 2),
])
def test_backends_agree(domain, cells, degree):
    pb = poisson_problem(domain, dim=domain.dim)
    mesh = domain.mesh(cells=cells)
    a = get_backend("skfem").solve(pb, mesh, degree, solver=LU).field
    b = get_backend("dolfinx").solve(pb, mesh, degree, solver=LU).field
    assert np.linalg.norm(a.values - b.values) <= 1e-8 * np.linalg.norm(a.values)
    assert a.errors(pb.exact)["l2"] == pytest.approx(b.errors(pb.exact)["l2"], rel=1e-8)


def test_iterative_matches_direct(backend):
    pb = poisson_problem()
    mesh = pb.domain.mesh(cells=[20, 20])
    solver = get_backend(backend)
    direct = solver.solve(pb, mesh, 1, solver=LU)
    cg = solver.solve(pb, mesh, 1, solver=LinearSolverOptions(type="cg", rtol=1e-12))
    assert cg.iterations > 1
    assert np.allclose(cg.field.values, direct.field.values, rtol=0, atol=1e-9)


def test_linear_system_reproduces_solution(backend):
    pb = poisson_problem()
    mesh = pb.domain.mesh(cells=[10, 10])
    solver = get_backend(backend)
    A, b, free, x = solver.linear_system(pb, mesh, 2)
    assert abs(A - A.T).max() <= 1e-12 * abs(A).max()      # SPD system for DCDM
    import scipy.sparse.linalg as spla

    x[free] = spla.spsolve(A.tocsc(), b)
    assert np.allclose(x, solver.solve(pb, mesh, 2, solver=LU).field.values, atol=1e-10)


def heat_problem():
    pde = Heat(source="manufactured", exact="exp(-t)*sin(pi*x)*sin(pi*y) + x*t", t_end=0.5)
    return Problem(pde, Rectangle(), [BoundaryCondition("left", "neumann", "-t - pi*exp(-t)*sin(pi*y)"),
                                      BoundaryCondition("right", "dirichlet", "exact"),
                                      BoundaryCondition("bottom", "dirichlet", "exact"),
                                      BoundaryCondition("top", "dirichlet", "exact")])


def test_heat_converges_in_space_and_time(backend):
    pb = heat_problem()
    errors = []
    for n, dt in ((8, 0.1), (16, 0.05), (32, 0.025)):
        sol = get_backend(backend).solve(pb, pb.domain.mesh(cells=[n, n]), 1, solver=LU,
                                         time=TimeOptions(dt=dt, theta=0.5))
        errors.append(sol.field.errors(pb.exact, t=0.5)["l2"])
        assert sol.snapshots[0][0] == 0.0 and sol.snapshots[-1][0] == pytest.approx(0.5)
    # P1 in space, Crank-Nicolson in time: both second order
    assert np.all(np.abs(rates(errors) - 2.0) <= 0.2), (errors, rates(errors))


@needs_dolfinx
def test_heat_backends_agree():
    pb = heat_problem()
    mesh = pb.domain.mesh(cells=[10, 10])
    t = TimeOptions(dt=0.05, theta=1.0, save_every=3)
    a = get_backend("skfem").solve(pb, mesh, 2, solver=LU, time=t)
    b = get_backend("dolfinx").solve(pb, mesh, 2, solver=LU, time=t)
    assert [s[0] for s in a.snapshots] == pytest.approx([s[0] for s in b.snapshots])
    assert np.linalg.norm(a.field.values - b.field.values) <= 1e-8 * np.linalg.norm(a.field.values)


def test_constant_solution_is_exact(backend):
    """A linear exact solution lies in the P1 space: the discrete solution must reproduce it."""
    pb = Problem(Poisson(source=0, exact="1 + 2*x - 3*y"), Rectangle(),
                 [BoundaryCondition("all", "dirichlet", "exact")])
    sol = get_backend(backend).solve(pb, pb.domain.mesh(cells=[5, 5]), 1, solver=LU)
    assert sol.field.errors(pb.exact)["linf"] < 1e-12


@pytest.mark.parametrize("backend", ["skfem", pytest.param("dolfinx", marks=needs_dolfinx)])
def test_auto_solver_is_direct_for_an_indefinite_operator(backend):
    """-lap u - 60 u = f is indefinite (60 lies between the Dirichlet eigenvalues 5 pi^2 and 8 pi^2): CG, the
    default for the dolfinx backend, fails on it; ``auto`` must switch to LU and still converge at P1 accuracy."""
    from neuralpde.meshes import rectangle
    from neuralpde.solvers.fem.base import indefinite

    exact = "sin(pi*x)*sin(2*pi*y)"
    pde = Poisson(k=1, c=-60, source="manufactured", exact=exact)
    problem = Problem(pde, Rectangle(), [BoundaryCondition("all", "dirichlet", "exact")])
    assert indefinite(pde, rectangle(cells=[4, 4])) and not indefinite(Poisson(k=1, c=1, source=1),
                                                                       rectangle(cells=[4, 4]))
    errors = []
    for n in (16, 32):
        sol = get_backend(backend).solve(problem, rectangle(cells=[n, n]), 1, solver=LinearSolverOptions())
        assert sol.linear_solver == "lu"
        errors.append(sol.field.errors(pde.exact)["rel_l2"])
    assert errors[1] < 0.03 and rates(errors)[0] > 1.8      # P1's second order (pollution makes 32^2 ~2%)
