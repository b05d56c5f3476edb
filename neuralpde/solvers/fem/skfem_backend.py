"""The embedded reference backend: scikit-fem (serial, pure Python).

    >>> from neuralpde.meshes.domains import Rectangle
    >>> from neuralpde.pde import BoundaryCondition, Poisson, Problem
    >>> pb = Problem(Poisson(source="manufactured", exact="sin(pi*x)*sin(pi*y)"), Rectangle(),
    ...              [BoundaryCondition("all", "dirichlet", "exact")])
    >>> sol = SkfemSolver().solve(pb, pb.domain.mesh(cells=[16, 16]), degree=2)
    >>> bool(sol.field.errors(pb.exact)["rel_l2"] < 1e-3)
    True
"""

from __future__ import annotations

import time as _time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ...errors import CaseError, SolverError
from ...meshes.convert import to_skfem
from ...meshes.mesh import Mesh
from ...pde.problem import Problem
from .base import (
    FEMSolution,
    LinearSolverOptions,
    ReferenceSolver,
    TimeOptions,
    is_linear,
    num_steps,
)
from .boundary import select_facets
from .fields import FEField, skfem_element

DIRECT_LIMIT = 150_000   # `auto` uses a sparse LU below this many dofs, AMG-preconditioned CG above


class _Discretisation:
    """Spaces, matrices and boundary data of one problem on one mesh (time-independent parts)."""

    def __init__(self, problem: Problem, mesh: Mesh, degree: int):
        import skfem
        from skfem.helpers import dot, grad
        from skfem.models.poisson import mass

        pde = problem.pde
        if not all(hasattr(pde, a) for a in ("k", "c", "f")):
            raise CaseError(f"the scikit-fem backend solves -div(k grad u) + c u = f; {type(pde).__name__} "
                            "does not provide k, c and f", field="reference.backend",
                            fix="use backend: dolfinx, which solves any weak_form()")
        self.problem, self.mesh, self.degree = problem, mesh, degree
        self.skmesh = to_skfem(mesh)
        element = skfem_element(mesh.cell_type, degree)
        order = 3 * degree      # exact for k_h grad u . grad v and c_h u v with interpolated coefficients
        self.basis = skfem.Basis(self.skmesh, element, intorder=order)
        self.X = self.basis.doflocs
        self.field = FEField(mesh, degree, np.zeros(self.basis.N))
        for coef in (pde.k, pde.c) + tuple(bc.alpha for bc in problem.bcs if bc.alpha is not None):
            if coef.depends_on_time:
                raise CaseError("time-dependent k, c or alpha are not supported by the reference",
                                field="pde", fix="make the coefficient independent of t")

        @skfem.BilinearForm
        def operator(u, v, w):
            return w.k * dot(grad(u), grad(v)) + w.c * u * v

        self.K = operator.assemble(self.basis, k=self._coefficient(pde.k), c=self._coefficient(pde.c))
        self.M = mass.assemble(self.basis)
        boundary = self.skmesh.boundary_facets()
        mids = self.skmesh.p[:, self.skmesh.facets[:, boundary]].mean(axis=1).T
        self.dirichlet: list[tuple[np.ndarray, object]] = []
        self.fluxes: list[tuple[sp.csr_matrix, object]] = []
        for i, bc in enumerate(problem.bcs):
            facets = boundary[select_facets(mesh, bc.where, mids, field=f"boundary[{i}]")]
            if len(facets) == 0:
                raise CaseError(f"where: {bc.where!r} selects no boundary facet", field=f"boundary[{i}].where",
                                fix=f"check the condition; the mesh's boundary names are {sorted(mesh.tag_names)}")
            if bc.kind == "dirichlet":
                self.dirichlet.append((self.basis.get_dofs(facets).all(), bc.value))
                continue
            fb = skfem.FacetBasis(self.skmesh, element, facets=facets, intorder=order + 1)
            self.fluxes.append((mass.assemble(fb), bc.value))
            if bc.kind == "robin":
                @skfem.BilinearForm
                def robin(u, v, w):
                    return w.alpha * u * v

                self.K = self.K + robin.assemble(fb, alpha=fb.interpolate(self._values(bc.alpha)))
        self.D = (np.unique(np.concatenate([d for d, _ in self.dirichlet])) if self.dirichlet
                  else np.zeros(0, dtype=np.int64))
        self.free = np.setdiff1d(np.arange(self.basis.N), self.D)

    def _coefficient(self, expr):
        """The coefficient at the quadrature points: its nodal interpolant, or for a cell-wise one (``cellwise``,
        e.g. :class:`~neuralpde.solvers.fem.coefficients.CellCoefficient`) its value on each cell."""
        if not getattr(expr, "cellwise", False):
            return self.basis.interpolate(self._values(expr))
        centroids = self.skmesh.p[:, self.skmesh.t].mean(axis=1)
        values = np.asarray(expr.numpy(centroids, params=self.problem.pde.params), dtype=float)
        return np.repeat(values[:, None], self.basis.X.shape[-1], axis=1)

    def _values(self, expr, t: float = 0.0) -> np.ndarray:
        return np.asarray(expr.numpy(self.X, t=t, params=self.problem.pde.params), dtype=float)

    def load(self, t: float = 0.0) -> np.ndarray:
        """``M f_h + sum M_boundary g_h`` at time ``t``."""
        b = self.M @ self._values(self.problem.pde.f, t)
        for mb, g in self.fluxes:
            b += mb @ self._values(g, t)
        return b

    def dirichlet_values(self, x: np.ndarray, t: float = 0.0) -> np.ndarray:
        for dofs, g in self.dirichlet:   # later conditions win where regions touch
            x[dofs] = self._values(g, t)[dofs]
        return x


class _LinearSolver:
    """Factorises (LU) or preconditions (AMG/Jacobi CG) once, solves many times."""

    def __init__(self, A: sp.spmatrix, options: LinearSolverOptions):
        self.A = A.tocsr()
        kind = options.type
        if kind == "auto":
            kind = "lu" if A.shape[0] <= DIRECT_LIMIT else "cg"
        if kind not in ("lu", "cg"):
            raise CaseError(f"unknown linear solver {options.type!r}", field="reference.solver.type",
                            fix="use auto, cg or lu")
        self.kind, self.options, self.iterations = kind, options, 0
        if kind == "lu":
            try:
                self.lu = spla.splu(self.A.tocsc())
            except RuntimeError as exc:
                raise SolverError(f"the system matrix is singular ({exc})", field="boundary",
                                  fix="add a Dirichlet condition, or a reaction c > 0") from None
        else:
            self.M = self._preconditioner(options.preconditioner)

    def _preconditioner(self, name: str):
        if name == "amg":
            import pyamg

            return pyamg.smoothed_aggregation_solver(self.A).aspreconditioner(cycle="V")
        if name == "jacobi":
            return sp.diags(1.0 / self.A.diagonal())
        if name == "none":
            return None
        raise CaseError(f"unknown preconditioner {name!r}", field="reference.solver.preconditioner",
                        fix="use amg, jacobi or none")

    def solve(self, b: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "lu":
            self.iterations += 1
            return self.lu.solve(b)
        count = [0]

        def callback(_):
            count[0] += 1

        o = self.options
        x, info = spla.cg(self.A, b, x0=x0, rtol=o.rtol, atol=o.atol, maxiter=o.max_it, M=self.M,
                          callback=callback)
        self.iterations += count[0]
        if info != 0 or not np.all(np.isfinite(x)):
            res = np.linalg.norm(b - self.A @ x) / max(np.linalg.norm(b), 1e-300)
            raise SolverError(f"CG did not converge in {o.max_it} iterations (relative residual {res:.2e})",
                              field="reference.solver",
                              fix="raise reference.solver.max_it, loosen rtol, or use solver type: lu")
        return x


class SkfemSolver(ReferenceSolver):
    """scikit-fem backend: P1/P2 Lagrange, Dirichlet/Neumann/Robin, stationary and theta scheme."""

    name = "scikit-fem"

    def _solve(self, problem: Problem, mesh: Mesh, degree: int, solver: LinearSolverOptions,
               time: TimeOptions | None, progress) -> FEMSolution:
        t0 = _time.perf_counter()
        disc = _Discretisation(_diffusion_part(problem), mesh, degree)
        t1 = _time.perf_counter()
        if time is not None and not is_linear(problem.pde):
            x, lin, snapshots, t2 = _theta_newton(disc, problem.pde, time, solver, progress)
        elif time is None:
            x = disc.dirichlet_values(np.zeros(disc.basis.N))
            b = disc.load() - disc.K @ x
            A = disc.K[disc.free][:, disc.free]
            t2 = _time.perf_counter()
            lin = _LinearSolver(A, solver)
            x[disc.free] = lin.solve(b[disc.free])
            snapshots = []
        else:
            x, lin, snapshots, t2 = self._theta(disc, time, solver, progress)
        t3 = _time.perf_counter()
        if not np.all(np.isfinite(x)):
            raise SolverError("the solution contains NaN or Inf", field="reference",
                              fix="check coefficients (k > 0) and boundary data for singular values")
        return FEMSolution(field=disc.field.with_values(x), backend=self.name, num_dofs=int(disc.basis.N),
                           timings={"mesh": t1 - t0, "assemble": t2 - t1, "solve": t3 - t2, "total": t3 - t0},
                           iterations=lin.iterations, snapshots=snapshots, linear_solver=lin.kind)

    def _theta(self, disc: _Discretisation, time: TimeOptions, solver: LinearSolverOptions, progress):
        pde = disc.problem.pde
        n = num_steps(pde.t_end, time.dt)
        dt, th = pde.t_end / n, time.theta
        x = disc._values(pde.initial, 0.0)
        disc.dirichlet_values(x, 0.0)
        _, lhs, explicit = _theta_matrices(disc, time, dt)
        free, D = disc.free, disc.D
        t_assembled = _time.perf_counter()
        lin = _LinearSolver(lhs[free][:, free], solver)
        snapshots = [(0.0, x.copy())]
        load_old = disc.load(0.0)
        with progress.task(f"theta scheme ({n} steps)", total=n) as advance:
            for step in range(1, n + 1):
                t = step * dt
                load_new = disc.load(t)
                rhs = explicit @ x + dt * (th * load_new + (1 - th) * load_old)
                x_new = disc.dirichlet_values(np.zeros_like(x), t)
                rhs -= lhs[:, D] @ x_new[D]
                x_new[free] = lin.solve(rhs[free], x0=x[free])
                x, load_old = x_new, load_new
                if time.save_every and step % time.save_every == 0 and step != n:
                    snapshots.append((t, x.copy()))
                advance()
        snapshots.append((pde.t_end, x.copy()))
        return x, lin, snapshots, t_assembled

    def linear_system(self, problem: Problem, mesh: Mesh, degree: int = 1):
        if problem.time_dependent:
            raise CaseError("linear_system() is for stationary problems", field="pde.type",
                            fix="use a poisson case")
        disc = _Discretisation(problem, mesh, degree)
        x = disc.dirichlet_values(np.zeros(disc.basis.N))
        b = disc.load() - disc.K @ x
        return disc.K[disc.free][:, disc.free].tocsr(), b[disc.free], disc.free, x


class _DiffusionPart:
    """The linear part ``u_t - div(D grad u)`` of a reaction-diffusion PDE, in the heat-equation attributes
    (``k``, ``c``, ``f``) the discretisation assembles; the reaction is added by :func:`_theta_newton`."""

    time_dependent = True

    def __init__(self, pde):
        from ...pde.expressions import Expression

        self.k, self.params = pde.diffusivity, pde.params
        self.c = self.f = Expression.parse(0)
        self.initial, self.t_end = pde.initial, pde.t_end


def _diffusion_part(problem: Problem) -> Problem:
    if not (problem.time_dependent and hasattr(problem.pde, "reaction")):
        return problem
    from dataclasses import replace

    return replace(problem, pde=_DiffusionPart(problem.pde))


def _theta_newton(disc: _Discretisation, pde, time: TimeOptions, solver: LinearSolverOptions, progress,
                  rtol: float = 1e-12, max_it: int = 30):
    """Theta scheme for ``u_t = div(D grad u) + R(u)`` with Newton's method in every step."""
    import skfem

    @skfem.LinearForm
    def reaction(v, w):
        return pde.reaction(w.uh) * v

    @skfem.BilinearForm
    def reaction_jac(u, v, w):
        return pde.reaction_derivative(w.uh) * u * v

    n = num_steps(pde.t_end, time.dt)
    dt, th = pde.t_end / n, time.theta
    basis, free = disc.basis, disc.free
    x = disc.dirichlet_values(disc._values(pde.initial, 0.0), 0.0)
    M, lhs, explicit = _theta_matrices(disc, time, dt)
    t_assembled = _time.perf_counter()
    snapshots, iterations = [(0.0, x.copy())], 0
    if time.lumped:        # vertex rule: the reaction at the nodes, weighted by the lumped mass
        m = M.diagonal()
        assemble_r = lambda u: m * pde.reaction(u)                          # noqa: E731
        assemble_jac = lambda u: sp.diags(m * pde.reaction_derivative(u))   # noqa: E731
    else:
        assemble_r = lambda u: reaction.assemble(basis, uh=basis.interpolate(u))            # noqa: E731
        assemble_jac = lambda u: reaction_jac.assemble(basis, uh=basis.interpolate(u))      # noqa: E731
    r_old = assemble_r(x)
    load_old = disc.load(0.0)
    lin = None
    with progress.task(f"theta scheme + Newton ({n} steps)", total=n) as advance:
        for step in range(1, n + 1):
            t = step * dt
            load_new = disc.load(t)
            rhs = explicit @ x + dt * (th * load_new + (1 - th) * load_old) + (1 - th) * dt * r_old
            x_new = disc.dirichlet_values(x.copy(), t)
            for _ in range(max_it):
                r_new = assemble_r(x_new)
                G = lhs @ x_new - th * dt * r_new - rhs
                Jac = (lhs - th * dt * assemble_jac(x_new)).tocsr()
                lin = _LinearSolver(Jac[free][:, free], solver)
                delta = lin.solve(-G[free])
                x_new[free] += delta
                iterations += 1
                if np.max(np.abs(delta), initial=0.0) <= rtol * max(1.0, np.max(np.abs(x_new))):
                    break
            else:
                raise SolverError(f"Newton did not converge in {max_it} iterations at t = {t:g}",
                                  field="reference.time.dt", fix="use a smaller time step")
            x, load_old = x_new, load_new
            r_old = assemble_r(x)
            if time.save_every and step % time.save_every == 0 and step != n:
                snapshots.append((t, x.copy()))
            advance()
    snapshots.append((pde.t_end, x.copy()))
    lin.iterations = iterations
    return x, lin, snapshots, t_assembled


def _theta_matrices(disc: _Discretisation, time: TimeOptions, dt: float
                    ) -> tuple[sp.spmatrix, sp.csr_matrix, sp.csr_matrix]:
    """The mass (row-sum lumped with ``time.lumped``) and the theta scheme's implicit and explicit matrices."""
    M = _lumped(disc.M) if time.lumped else disc.M
    return M, (M + time.theta * dt * disc.K).tocsr(), (M - (1 - time.theta) * dt * disc.K).tocsr()


def _lumped(M: sp.spmatrix) -> sp.csr_matrix:
    """The row-sum diagonal of a P1 mass matrix (= the vertex quadrature rule)."""
    return sp.diags(np.asarray(M.sum(axis=1)).ravel()).tocsr()
