"""The reference-solver contract and its result.

A backend solves a :class:`~neuralpde.pde.Problem` on a :class:`~neuralpde.meshes.Mesh` with
Lagrange elements and returns a :class:`FEMSolution` whose field is in the canonical layout of
:class:`~neuralpde.solvers.fem.fields.FEField` (on MPI rank 0; other ranks get ``field=None``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace

import numpy as np

from ...errors import CaseError
from ...meshes.mesh import Mesh
from ...pde.problem import Problem
from .fields import FEField


@dataclass
class LinearSolverOptions:
    """``type``: ``auto`` (backend's choice), ``cg`` (with ``preconditioner``), ``lu`` or ``dcdm``
    (a trained DCDM network from ``checkpoint``; stationary P1 problems on grid meshes)."""

    type: str = "auto"
    rtol: float = 1e-10
    atol: float = 1e-14
    max_it: int = 2000
    preconditioner: str = "amg"
    checkpoint: str | None = None
    #: DCDM only: 1 is the paper's direction, ``auto``/N applies the network on coarser lattices too
    #: (:mod:`neuralpde.solvers.dcdm_levels`)
    levels: int | str = 1


@dataclass
class TimeOptions:
    """Theta scheme: ``theta=1`` backward Euler, ``0.5`` Crank-Nicolson."""

    dt: float = 0.01
    theta: float = 0.5
    save_every: int = 0          # store a snapshot every N steps (0: only the initial and last)
    #: mass lumping (P1 only): the mass and the reaction by the vertex rule, so that, on meshes without obtuse
    #: angles, a positive density stays positive (a consistent mass undershoots next to a moving front)
    lumped: bool = False


@dataclass
class FEMSolution:
    """A reference solution.

    Attributes:
        field: the solution at the final time (rank 0; ``None`` elsewhere under MPI).
        backend: ``dolfinx`` or ``scikit-fem``.
        num_dofs: global number of degrees of freedom.
        timings: seconds for ``mesh``, ``assemble``, ``solve`` and ``total``.
        iterations: Krylov iterations (summed over time steps; 1 for a direct solve).
        snapshots: ``(t, values)`` pairs for transient problems (rank 0).
    """

    field: FEField | None
    backend: str
    num_dofs: int
    timings: dict[str, float]
    iterations: int
    snapshots: list[tuple[float, np.ndarray]] = field(default_factory=list)
    linear_solver: str = ""


class ReferenceSolver(abc.ABC):
    """A finite-element backend."""

    name: str = "abstract"

    def solve(self, problem: Problem, mesh: Mesh, degree: int = 1,
              solver: LinearSolverOptions | None = None, time: TimeOptions | None = None,
              progress=None) -> FEMSolution:
        """Solve ``problem`` on ``mesh`` with Lagrange elements of ``degree``.

        ``solver.type: auto`` becomes a direct solve when the operator may be indefinite (a negative reaction
        coefficient, as in Helmholtz), where CG would fail; ``dcdm`` hands the assembled system to a trained
        network (:func:`neuralpde.solvers.dcdm.reference_solve`).
        """
        from ...progress import SILENT

        solver = solver or LinearSolverOptions()
        if solver.type == "auto" and indefinite(problem.pde, mesh):
            solver = replace(solver, type="lu")
        if time is not None and time.lumped and degree != 1:
            raise CaseError(f"mass lumping needs degree 1, got {degree}", field="reference.time.lumped",
                            fix="use degree: 1, or lumped: false")
        if solver.type == "dcdm":
            from ..dcdm import reference_solve

            return reference_solve(self, problem, mesh, degree, solver)
        return self._solve(problem, mesh, degree, solver, check_time_options(problem, time), progress or SILENT)

    @abc.abstractmethod
    def _solve(self, problem: Problem, mesh: Mesh, degree: int, solver: LinearSolverOptions,
               time: TimeOptions | None, progress) -> FEMSolution:
        """The backend's solve, with the options checked (``time`` is ``None`` for a stationary problem)."""

    @abc.abstractmethod
    def linear_system(self, problem: Problem, mesh: Mesh, degree: int = 1):
        """The assembled system of a stationary problem with Dirichlet rows removed.

        Returns:
            ``(A, b, free, x)``: SPD ``A`` (scipy CSR) and ``b`` on the free dofs, the free dof indices
            (canonical numbering) and the full vector ``x`` holding the Dirichlet values.
        """


def check_time_options(problem: Problem, time: TimeOptions | None) -> TimeOptions | None:
    if not problem.time_dependent:
        return None
    time = time or TimeOptions()
    if not 0.0 <= time.theta <= 1.0:
        raise CaseError(f"theta must be in [0, 1], got {time.theta}", field="reference.time.theta",
                        fix="use 1 (backward Euler) or 0.5 (Crank-Nicolson)")
    if time.dt <= 0 or time.dt > problem.pde.t_end:
        raise CaseError(f"dt must be in (0, t_end], got {time.dt}", field="reference.time.dt",
                        fix=f"e.g. dt: {problem.pde.t_end / 50:g}")
    return time


def is_linear(pde: object) -> bool:
    """``-div(k grad u) + c u = f`` (one linear solve, or one per time step); otherwise Newton (Fisher-KPP)."""
    return all(hasattr(pde, a) for a in ("k", "c", "f")) and not hasattr(pde, "reaction")


def indefinite(pde: object, mesh: Mesh) -> bool:
    """Whether the linear operator may be indefinite: the reaction ``c`` is negative somewhere on the mesh."""
    c = getattr(pde, "c", None)
    if c is None or not hasattr(c, "numpy"):
        return False
    values = np.asarray(c.numpy(mesh.points.T, 0.0, getattr(pde, "params", None)), dtype=float)
    return bool(np.min(values) < 0)


def num_steps(t_end: float, dt: float) -> int:
    """Steps of size close to ``dt`` that land exactly on ``t_end``."""
    return max(1, int(round(t_end / dt)))


def get_backend(name: str = "auto") -> ReferenceSolver:
    """``auto`` picks dolfinx when it imports, else scikit-fem.

    Raises:
        CaseError: an unknown backend name.
        BackendUnavailable: dolfinx was asked for but is not installed.
    """
    from .skfem_backend import SkfemSolver

    if name in ("skfem", "scikit-fem"):
        return SkfemSolver()
    if name in ("dolfinx", "fenicsx", "auto"):
        from . import compat

        if compat.have_dolfinx():
            from .dolfinx_backend import DolfinxSolver

            return DolfinxSolver()
        if name == "auto":
            return SkfemSolver()
        from ...errors import BackendUnavailable

        raise BackendUnavailable("the dolfinx backend was requested but dolfinx is not installed",
                                 field="reference.backend",
                                 fix="apt-get install python3-dolfinx-real (Debian), or use backend: skfem")
    raise CaseError(f"unknown FEM backend {name!r}", field="reference.backend",
                    fix="use auto, dolfinx or skfem")
