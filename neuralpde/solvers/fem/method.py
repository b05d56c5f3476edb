"""The ``fem`` method: a finite-element solution at another resolution or degree than the reference.

It makes the whole case path (reference, method, comparison, outputs) run without any network,
and it is the yardstick for the neural methods: what does a plain FEM solve of the same cost give?
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from ..method import Method, MethodResult, RunContext, Strict, register
from .base import FEMSolution, LinearSolverOptions, TimeOptions, get_backend


class SolverConfig(Strict):
    """Linear solver: ``auto``, ``cg`` (with a preconditioner), ``lu`` or ``dcdm`` (with ``checkpoint``)."""

    type: Literal["auto", "cg", "lu", "dcdm"] = "auto"
    rtol: float = Field(1e-10, gt=0, lt=1)
    atol: float = Field(1e-14, ge=0)
    max_it: int = Field(2000, ge=1)
    preconditioner: Literal["amg", "jacobi", "none"] = "amg"
    checkpoint: str | None = None
    #: DCDM: 1 (the paper's direction) or ``auto``/N (the same network on coarser lattices as well)
    levels: Literal["auto"] | PositiveInt = 1

    def options(self) -> LinearSolverOptions:
        return LinearSolverOptions(**self.model_dump())


class TimeConfig(Strict):
    """Theta time stepping (``theta: 1`` backward Euler, ``0.5`` Crank-Nicolson)."""

    dt: float = Field(0.01, gt=0)
    theta: float = Field(0.5, ge=0, le=1)
    save_every: int = Field(0, ge=0)

    def options(self) -> TimeOptions:
        return TimeOptions(dt=self.dt, theta=self.theta, save_every=self.save_every)


class FEMDiscretisation(Strict):
    """Backend, element degree and resolution of a finite-element solve."""

    backend: Literal["auto", "dolfinx", "skfem"] = "auto"
    degree: Literal[1, 2] = 1
    cells: int | list[int] | None = None
    refine: int = Field(0, ge=0, le=6)
    solver: SolverConfig = SolverConfig()
    time: TimeConfig = TimeConfig()

    def solve(self, problem: Any, ctx: RunContext) -> FEMSolution:
        mesh = problem.domain.mesh(cells=self.cells, refine=self.refine)
        return get_backend(self.backend).solve(problem, mesh, self.degree, solver=self.solver.options(),
                                               time=self.time.options(), progress=ctx.progress)


class FEMMethodConfig(FEMDiscretisation):
    type: Literal["fem"] = "fem"


@register
class FEMMethod(Method):
    """Finite elements at the method's own resolution, compared with the (finer) reference."""

    name = "fem"
    config_model = FEMMethodConfig

    def run(self, problem: Any, reference: FEMSolution, ctx: RunContext) -> MethodResult:
        sol = self.config.solve(problem, ctx)
        return MethodResult(field=sol.field, metrics={
            "backend": sol.backend, "num_dofs": sol.num_dofs, "iterations": sol.iterations,
            "time_s": sol.timings["total"], "timings_s": sol.timings})
