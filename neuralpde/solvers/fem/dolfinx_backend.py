"""The FEniCSx reference backend: dolfinx + PETSc, serial or under ``mpirun``.

Linear problems (``-div(k grad u) + c u = f`` and its theta-scheme heat version) are assembled
once and solved with CG + hypre BoomerAMG (or LU on request). A user PDE that only provides
``weak_form`` is solved by Newton's method. The solution is gathered to rank 0 in the canonical
:class:`~neuralpde.solvers.fem.fields.FEField` layout.
"""

from __future__ import annotations

import time as _time
from typing import Any

import numpy as np

from ...errors import CaseError, SolverError
from ...meshes.mesh import Mesh
from ...pde.problem import Problem
from . import compat
from .base import (
    FEMSolution,
    LinearSolverOptions,
    ReferenceSolver,
    TimeOptions,
    is_linear,
    num_steps,
)
from .boundary import select_facets
from .fields import FEField

VERTEX_RULE = {"quadrature_rule": "vertex", "quadrature_degree": 1}   #: mass lumping (P1)


def _comm(comm: Any = None) -> Any:
    from mpi4py import MPI

    return comm or MPI.COMM_WORLD


class _Setup:
    """Mesh, space, boundary conditions and coefficient functions of one problem."""

    def __init__(self, problem: Problem, mesh: Mesh, degree: int, comm: Any):
        import dolfinx
        import ufl
        from dolfinx import fem

        self.problem, self.mesh, self.degree, self.comm = problem, mesh, degree, comm
        self.params = getattr(problem.pde, "params", {})
        self.msh = compat.create_mesh(comm, mesh)
        self.V = compat.function_space(self.msh, ("Lagrange", degree))
        self.gdim = mesh.gdim
        tdim = self.msh.topology.dim
        fdim = tdim - 1
        self.msh.topology.create_connectivity(fdim, tdim)
        boundary = dolfinx.mesh.exterior_facet_indices(self.msh.topology)
        mids = dolfinx.mesh.compute_midpoints(self.msh, fdim, boundary)[:, : self.gdim]
        self.dirichlet: list[tuple[Any, Any, Any]] = []   # (Function g, DirichletBC, expression)
        self.fluxes: list[tuple[Any, Any, Any, Any]] = []  # (Function g, alpha or None, ds, expression)
        flux_masks = np.zeros(len(boundary), dtype=np.int64)   # bit j: facet is in the j-th flux condition
        flux_bcs = []
        for i, bc in enumerate(problem.bcs):
            selected = select_facets(mesh, bc.where, mids, field=f"boundary[{i}]")
            if comm.allreduce(int(selected.sum())) == 0:
                raise CaseError(f"where: {bc.where!r} selects no boundary facet", field=f"boundary[{i}].where",
                                fix=f"check the condition; the mesh's boundary names are {sorted(mesh.tag_names)}")
            if bc.kind == "dirichlet":
                dofs = fem.locate_dofs_topological(self.V, fdim, boundary[selected])
                g = self.function(bc.value)
                self.dirichlet.append((g, fem.dirichletbc(g, dofs), bc.value))
            else:
                flux_masks[selected] |= 1 << len(flux_bcs)
                flux_bcs.append(bc)
        if flux_bcs:
            # one tag object for all flux conditions (UFL allows one per form): each distinct set of
            # overlapping conditions gets its own value; a condition integrates over all values containing it
            masks = comm.allgather(np.unique(flux_masks[flux_masks > 0]))
            values = {int(m): k + 1 for k, m in enumerate(np.unique(np.concatenate(masks)))}
            on = flux_masks > 0
            tags = compat.meshtags(self.msh, fdim, boundary[on], np.array([values[int(m)] for m in flux_masks[on]]))
            ds = ufl.Measure("ds", domain=self.msh, subdomain_data=tags)
            for j, bc in enumerate(flux_bcs):
                ids = tuple(v for m, v in values.items() if m >> j & 1)
                alpha = self.coefficient(bc.alpha) if bc.kind == "robin" else None
                self.fluxes.append((self.function(bc.value), alpha, ds(ids), bc.value))

    def function(self, expr: Any, t: float = 0.0) -> Any:
        from dolfinx import fem

        u = fem.Function(self.V)
        self.interpolate(u, expr, t)
        return u

    def interpolate(self, u: Any, expr: Any, t: float = 0.0) -> None:
        gdim = self.gdim
        u.interpolate(lambda X: np.asarray(expr.numpy(X[:gdim], t=t, params=self.params), dtype=float))

    def coefficient(self, expr: Any) -> Any:
        """A constant where the expression is one (cheaper), else its interpolant."""
        from dolfinx import fem
        from petsc4py import PETSc

        if expr.depends_on_time:
            raise CaseError("time-dependent k, c or alpha are not supported by the reference", field="pde",
                            fix="make the coefficient independent of t")
        if expr.is_constant:
            value = float(np.asarray(expr.numpy(np.zeros((self.gdim, 1)), params=self.params)).ravel()[0])
            return fem.Constant(self.msh, PETSc.ScalarType(value))
        return self.function(expr)

    def bcs(self, t: float | None = None) -> list:
        if t is not None:
            for g, _, expr in self.dirichlet:
                self.interpolate(g, expr, t)
        return [bc for _, bc, _ in self.dirichlet]

    def gather(self, u: Any) -> FEField | None:
        """The solution in canonical layout on rank 0 (``None`` elsewhere)."""
        n_local = self.V.dofmap.index_map.size_local
        coords = self.V.tabulate_dof_coordinates()[:n_local, : self.gdim]
        values = u.x.array[:n_local].real.copy()
        coords, values = self.comm.gather(coords, root=0), self.comm.gather(values, root=0)
        if self.comm.rank != 0:
            return None
        coords, values = np.concatenate(coords), np.concatenate(values)
        target = FEField(self.mesh, self.degree, np.zeros(0))
        return target.with_values(values[_match(_canonical_doflocs(self.mesh, self.degree), coords)])

    def permutation(self) -> np.ndarray:
        """dolfinx dof index of each canonical dof (serial)."""
        n_local = self.V.dofmap.index_map.size_local
        coords = self.V.tabulate_dof_coordinates()[:n_local, : self.gdim]
        return _match(_canonical_doflocs(self.mesh, self.degree), coords)


def _canonical_doflocs(mesh: Mesh, degree: int) -> np.ndarray:
    """Coordinates of the canonical dofs; for degree 1 the mesh's points (scikit-fem numbers P1 dofs
    like the vertices), which spares building a scikit-fem basis just to read them."""
    if degree == 1:
        return mesh.points
    return FEField(mesh, degree, np.zeros(0)).doflocs


def _match(wanted: np.ndarray, have: np.ndarray) -> np.ndarray:
    """Index into ``have`` of each row of ``wanted`` (same point sets, any order)."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(have).query(wanted)
    scale = max(float(np.ptp(wanted, axis=0).max()), 1.0)
    if len(have) != len(wanted) or dist.max(initial=0.0) > 1e-9 * scale:
        raise RuntimeError("dolfinx and canonical dof locations do not match "
                           f"({len(have)} vs {len(wanted)} dofs, max distance {dist.max(initial=0):.2e})")
    return idx


def _ksp(comm: Any, A: Any, options: LinearSolverOptions) -> tuple[Any, str]:
    from petsc4py import PETSc

    ksp = PETSc.KSP().create(comm)
    ksp.setOperators(A)
    kind = "cg" if options.type == "auto" else options.type
    pc = ksp.getPC()
    if kind == "lu":
        ksp.setType("preonly")
        pc.setType("lu")
        if comm.size > 1:
            pc.setFactorSolverType("mumps")
    elif kind == "cg":
        ksp.setType("cg")
        prec = {"amg": "hypre", "jacobi": "jacobi", "none": "none"}.get(options.preconditioner)
        if prec is None:
            raise CaseError(f"unknown preconditioner {options.preconditioner!r}",
                            field="reference.solver.preconditioner", fix="use amg, jacobi or none")
        pc.setType(prec)
        if prec == "hypre":
            pc.setHYPREType("boomeramg")
        ksp.setTolerances(rtol=options.rtol, atol=options.atol, max_it=options.max_it)
    else:
        raise CaseError(f"unknown linear solver {options.type!r}", field="reference.solver.type",
                        fix="use auto, cg or lu")
    return ksp, kind


def _destroy(*objects: Any) -> None:
    """Free PETSc objects now: since petsc4py 3.18 the garbage collector no longer reliably does, and
    every stationary solve leaked its matrix, vector and AMG hierarchy (about 0.45 GB per solve at
    1M P1 dofs), which also slowed later solves in the same process."""
    for obj in objects:
        obj.destroy()


def _solve(ksp: Any, b: Any, u: Any, options: LinearSolverOptions) -> int:
    ksp.solve(b, compat.petsc_vector(u))
    u.x.scatter_forward()
    reason = ksp.getConvergedReason()
    if reason < 0:
        raise SolverError(f"the linear solver did not converge (PETSc reason {reason}, "
                          f"{ksp.getIterationNumber()} iterations)", field="reference.solver",
                          fix="raise reference.solver.max_it, loosen rtol, or use solver type: lu")
    return max(ksp.getIterationNumber(), 1)


class DolfinxSolver(ReferenceSolver):
    """dolfinx backend (works under ``mpirun -n N``)."""

    name = "dolfinx"

    def __init__(self, comm: Any = None):
        self.comm = _comm(comm)

    def _solve(self, problem: Problem, mesh: Mesh, degree: int, solver: LinearSolverOptions,
               time: TimeOptions | None, progress) -> FEMSolution:
        t0 = _time.perf_counter()
        setup = _Setup(problem, mesh, degree, self.comm)
        t1 = _time.perf_counter()
        if time is not None and not is_linear(problem.pde):
            u, iterations, kind, t2, snapshots = self._theta_newton(setup, time, progress)
        elif not is_linear(problem.pde):
            u, iterations, kind, t2 = self._newton(setup)
            snapshots = []
        elif time is None:
            u, iterations, kind, t2 = self._stationary(setup, solver)
            snapshots = []
        else:
            u, iterations, kind, t2, snapshots = self._theta(setup, solver, time, progress)
        t3 = _time.perf_counter()
        if not np.all(np.isfinite(u.x.array)):
            raise SolverError("the solution contains NaN or Inf", field="reference",
                              fix="check coefficients (k > 0) and boundary data for singular values")
        field = setup.gather(u)
        t4 = _time.perf_counter()
        num_dofs = setup.V.dofmap.index_map.size_global
        return FEMSolution(field=field, backend=self.name, num_dofs=int(num_dofs),
                           timings={"mesh": t1 - t0, "assemble": t2 - t1, "solve": t3 - t2,
                                    "gather": t4 - t3, "total": t4 - t0},
                           iterations=iterations, snapshots=snapshots, linear_solver=kind)

    def _forms(self, setup: _Setup, scale: float = 1.0):
        """Operator ``a(u, v)`` and load ``L(v)`` forms of ``-div(k grad u) + c u = f``."""
        import ufl

        pde = setup.problem.pde
        u, v = ufl.TrialFunction(setup.V), ufl.TestFunction(setup.V)
        k = setup.coefficient(pde.k)
        a = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
        if not (pde.c.is_constant and float(pde.c.numpy(np.zeros((setup.gdim, 1)), params=setup.params)[0]) == 0):
            a = a + setup.coefficient(pde.c) * u * v * ufl.dx
        f = setup.function(pde.f)
        L = f * v * ufl.dx
        for g, alpha, ds, _ in setup.fluxes:
            L = L + g * v * ds
            if alpha is not None:
                a = a + alpha * u * v * ds
        return u, v, a, L, f

    def _stationary(self, setup: _Setup, options: LinearSolverOptions):
        from dolfinx import fem
        from dolfinx.fem import petsc
        from petsc4py import PETSc

        _, _, a, L, _ = self._forms(setup)
        a_form, L_form = compat.form(a), compat.form(L)
        bcs = setup.bcs()
        A = petsc.assemble_matrix(a_form, bcs=bcs)
        A.assemble()
        b = petsc.assemble_vector(L_form)
        petsc.apply_lifting(b, [a_form], bcs=[bcs])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        petsc.set_bc(b, bcs)
        t2 = _time.perf_counter()
        ksp, kind = _ksp(setup.comm, A, options)
        uh = fem.Function(setup.V)
        try:
            iterations = _solve(ksp, b, uh, options)
        finally:
            _destroy(ksp, A, b)
        return uh, iterations, kind, t2

    def _theta(self, setup: _Setup, options: LinearSolverOptions, time: TimeOptions, progress):
        import ufl
        from dolfinx import fem
        from dolfinx.fem import petsc
        from petsc4py import PETSc

        pde = setup.problem.pde
        n = num_steps(pde.t_end, time.dt)
        dt, th = pde.t_end / n, time.theta
        u, v, a_op, L_src, f_new = self._forms(setup)
        u_old = setup.function(pde.initial)
        f_old = setup.function(pde.f, 0.0)
        g_old = [setup.function(expr, 0.0) for _, _, _, expr in setup.fluxes]
        dm = ufl.dx(metadata=VERTEX_RULE) if time.lumped else ufl.dx     # mass measure
        a = u * v * dm + th * dt * a_op
        # explicit part: (1 - theta) dt times the operator applied to u_old, and the theta-weighted loads
        L = u_old * v * dm - (1 - th) * dt * ufl.action(a_op, u_old) \
            + dt * (th * f_new + (1 - th) * f_old) * v * ufl.dx
        for (g_new, _, ds, _), g_prev in zip(setup.fluxes, g_old, strict=True):
            L = L + dt * (th * g_new + (1 - th) * g_prev) * v * ds
        a_form, L_form = compat.form(a), compat.form(L)
        bcs = setup.bcs(0.0)
        A = petsc.assemble_matrix(a_form, bcs=bcs)
        A.assemble()
        b = compat.create_petsc_vector(L_form)
        t2 = _time.perf_counter()
        ksp, kind = _ksp(setup.comm, A, options)
        uh = fem.Function(setup.V)
        uh.x.array[:] = u_old.x.array
        snapshots = [(0.0, setup.gather(uh))]
        iterations = 0
        with progress.task(f"theta scheme ({n} steps)", total=n) as advance:
            for step in range(1, n + 1):
                t = step * dt
                setup.interpolate(f_new, pde.f, t)
                for (g_new, _, _, expr) in setup.fluxes:
                    setup.interpolate(g_new, expr, t)
                bcs = setup.bcs(t)
                with b.localForm() as local:
                    local.set(0.0)
                petsc.assemble_vector(b, L_form)
                petsc.apply_lifting(b, [a_form], bcs=[bcs])
                b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
                petsc.set_bc(b, bcs)
                iterations += _solve(ksp, b, uh, options)
                u_old.x.array[:] = uh.x.array
                f_old.x.array[:] = f_new.x.array
                for (g_new, _, _, _), g_prev in zip(setup.fluxes, g_old, strict=True):
                    g_prev.x.array[:] = g_new.x.array
                if time.save_every and step % time.save_every == 0 and step != n:
                    snapshots.append((t, setup.gather(uh)))
                advance()
        _destroy(ksp, A, b)
        snapshots.append((pde.t_end, setup.gather(uh)))
        snapshots = [(t, s.values) for t, s in snapshots] if setup.comm.rank == 0 else []
        return uh, iterations, kind, t2, snapshots

    def _theta_newton(self, setup: _Setup, time: TimeOptions, progress):
        """Theta scheme on ``u_t + F(u; v) = 0`` (the PDE's ``weak_form``), Newton's method in every step."""
        import ufl
        from dolfinx import fem

        pde = setup.problem.pde
        n = num_steps(pde.t_end, time.dt)
        dt, th = pde.t_end / n, time.theta
        v = ufl.TestFunction(setup.V)
        x = ufl.SpatialCoordinate(setup.msh)
        u_old = setup.function(pde.initial)
        uh = fem.Function(setup.V)
        uh.x.array[:] = u_old.x.array
        F = (uh - u_old) / dt * v * ufl.dx + th * pde.weak_form(uh, v, x) + (1 - th) * pde.weak_form(u_old, v, x)
        for g, alpha, ds, _ in setup.fluxes:
            if alpha is not None:
                raise CaseError("robin conditions are not supported for nonlinear transient PDEs", field="boundary",
                                fix="use dirichlet or neumann conditions")
            F = F - g * v * ds
        if time.lumped:
            # the vertex rule on every cell integral: lumps the mass and the reaction, and is exact for the
            # diffusion term of P1 elements (a constant or P1 coefficient times constant gradients)
            F = ufl.Form([itg.reconstruct(metadata=VERTEX_RULE) if itg.integral_type() == "cell" else itg
                          for itg in F.integrals()])
        t2 = _time.perf_counter()
        snapshots = [(0.0, setup.gather(uh))]
        iterations = 0
        with progress.task(f"theta scheme + Newton ({n} steps)", total=n) as advance:
            for step in range(1, n + 1):
                t = step * dt
                bcs = setup.bcs(t)
                for g, bc, _ in setup.dirichlet:
                    uh.x.array[bc.dof_indices()[0]] = g.x.array[bc.dof_indices()[0]]
                try:
                    iterations += compat.nonlinear_solve(F, uh, bcs, rtol=1e-12)
                except RuntimeError as exc:
                    raise SolverError(f"{exc} at t = {t:g}", field="reference.time.dt",
                                      fix="use a smaller time step") from None
                u_old.x.array[:] = uh.x.array
                if time.save_every and step % time.save_every == 0 and step != n:
                    snapshots.append((t, setup.gather(uh)))
                advance()
        snapshots.append((pde.t_end, setup.gather(uh)))
        snapshots = [(t, s.values) for t, s in snapshots] if setup.comm.rank == 0 else []
        return uh, iterations, "newton", t2, snapshots

    def _newton(self, setup: _Setup):
        import ufl
        from dolfinx import fem

        if setup.problem.time_dependent:
            raise CaseError("transient problems need k, c and f (the heat equation)", field="pde",
                            fix="use type: heat")
        uh = fem.Function(setup.V)
        v = ufl.TestFunction(setup.V)
        x = ufl.SpatialCoordinate(setup.msh)
        F = setup.problem.pde.weak_form(uh, v, x)
        for g, alpha, ds, _ in setup.fluxes:
            F = F - g * v * ds + (alpha * uh * v * ds if alpha is not None else 0)
        bcs = setup.bcs()
        for g, bc, _ in setup.dirichlet:   # start from the boundary data
            uh.x.array[bc.dof_indices()[0]] = g.x.array[bc.dof_indices()[0]]
        t2 = _time.perf_counter()
        try:
            iterations = compat.nonlinear_solve(F, uh, bcs)
        except RuntimeError as exc:
            raise SolverError(str(exc), field="reference", fix="check the weak form; start closer to the solution"
                              ) from None
        return uh, iterations, "newton", t2

    def linear_system(self, problem: Problem, mesh: Mesh, degree: int = 1):
        from dolfinx.fem import petsc

        if self.comm.size > 1 or problem.time_dependent:
            raise CaseError("linear_system() needs a serial run of a stationary problem", field="reference",
                            fix="run without mpirun, on a poisson case")
        setup = _Setup(problem, mesh, degree, self.comm)
        _, _, a, L, _ = self._forms(setup)
        A = petsc.assemble_matrix(compat.form(a))
        A.assemble()
        b = petsc.assemble_vector(compat.form(L))
        import scipy.sparse as sp

        indptr, indices, data = A.getValuesCSR()
        A_full = sp.csr_matrix((data, indices, indptr), shape=A.getSize())
        perm = setup.permutation()
        A_can = A_full[perm][:, perm].tocsr()
        b_can = b.array[perm].copy()
        _destroy(A, b)
        x = np.zeros(len(perm))
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        for g, bc, _ in setup.dirichlet:
            dofs = bc.dof_indices()[0]
            x[inverse[dofs]] = g.x.array[dofs]
        D = np.unique(np.concatenate([inverse[bc.dof_indices()[0]] for _, bc, _ in setup.dirichlet]
                                     or [np.zeros(0, dtype=np.int64)]))
        free = np.setdiff1d(np.arange(len(perm)), D)
        rhs = b_can - A_can @ x
        return A_can[free][:, free].tocsr(), rhs[free], free, x
