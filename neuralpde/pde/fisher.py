"""Fisher-KPP reaction-diffusion, ``u_t = div(D grad u) + rho u (1 - u)``, with GliODIL's tissue diffusivity.

With white/grey-matter fractions ``wm``, ``gm`` the diffusivity is ``D (wm + gm / ratio)``; where
``wm + gm < 0.1`` (cerebrospinal fluid) it is zero, so no tumour cells flow into CSF::

    >>> p = FisherKPP(D=0.01, rho=4, initial="exp(-(x-0.25)**2/0.0032)", t_end=1.0, dim=1)
    >>> sorted(p.faces())
    ['discrete_residual', 'residual', 'weak_form']
    >>> float(p.reaction(0.5))
    1.0
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import sympy as sp
from pydantic import Field

from ..config import Strict
from ..errors import CaseError
from .base import PDE, grad, register_pde
from .expressions import Expression
from .poisson import Expr, _expr, div_space, initial_condition

CSF_THRESHOLD = 0.1     #: faces or points with wm + gm below this carry no flux (GliODIL)


class FisherKPPConfig(Strict):
    """``u_t = div(D grad u) + rho u (1 - u)``; optional tissue maps ``wm``/``gm`` with ``ratio``."""

    type: Literal["fisher_kpp"]
    D: Expr = 1.0
    rho: Expr = 1.0
    initial: Expr = 0.0
    t_end: float = Field(1.0, gt=0)
    wm: Expr | None = None
    gm: Expr | None = None
    ratio: float = Field(10.0, gt=0)
    params: dict[str, float] = {}


@register_pde
class FisherKPP(PDE):
    """``u_t = div(D_eff grad u) + rho u (1 - u)`` on ``(0, t_end]``, ``u(x, 0) = initial``.

    Args:
        D: diffusivity (in white matter when ``wm``/``gm`` are given); an expression.
        rho: proliferation rate (a constant expression).
        initial: the initial condition.
        t_end: final time.
        wm, gm: optional tissue fractions (expressions); then ``D_eff = D (wm + gm / ratio)``, zero in CSF.
        ratio: white-to-grey-matter diffusivity ratio.
        exact: exact solution, when known.
        params: named parameter values used in the expressions.
        dim: spatial dimension.
    """

    name = "fisher_kpp"
    config_model = FisherKPPConfig
    time_dependent = True
    #: scalars the odil method may infer besides ``params``
    inferable = ("D", "rho", "ratio")

    def __init__(self, D: Any = 1.0, rho: Any = 1.0, initial: Any = 0.0, t_end: float = 1.0, wm: Any = None,
                 gm: Any = None, ratio: float = 10.0, exact: Any = None, params: dict[str, float] | None = None,
                 dim: int = 2):
        self.params = dict(params or {})
        self.D = _expr(D, self.params, "pde.D")
        self.rho = _expr(rho, self.params, "pde.rho")
        if not self.rho.is_constant:
            raise CaseError("rho must be a constant", field="pde.rho", fix="give a number, e.g. rho: 4")
        if t_end <= 0:
            raise CaseError(f"t_end must be positive, got {t_end}", field="pde.t_end", fix="e.g. t_end: 1.0")
        if (wm is None) != (gm is None):
            raise CaseError("give both wm and gm, or neither", field="pde.wm", fix="add the missing tissue map")
        if ratio <= 0:
            raise CaseError(f"ratio must be positive, got {ratio}", field="pde.ratio", fix="e.g. ratio: 10")
        self.t_end, self.ratio, self.dim = float(t_end), float(ratio), dim
        self.exact = None if exact is None else _expr(exact, self.params, "exact")
        self.wm = None if wm is None else _expr(wm, self.params, "pde.wm")
        self.gm = None if gm is None else _expr(gm, self.params, "pde.gm")
        self.initial = initial_condition(initial, self.exact, self.params)
        #: tissue fractions on a grid (arrays of the grid's cell shape), set by GliODIL instead of wm/gm
        self.tissue_cells: tuple[np.ndarray, np.ndarray] | None = None
        #: a data coefficient that replaces ``D_eff`` in the FEM reference (GliODIL's FEM forward sets a
        #: :class:`~neuralpde.solvers.fem.coefficients.CellCoefficient` built from the tissue maps)
        self.diffusivity_field: Any = None

    @property
    def diffusivity(self) -> Expression:
        """``D_eff(x)`` as one expression (used by the FEM reference), or ``diffusivity_field`` when set."""
        if self.diffusivity_field is not None:
            return self.diffusivity_field
        if self.wm is None:
            return self.D
        wm, gm = self.wm.sympy, self.gm.sympy
        brain = sp.Piecewise((self.D.sympy * (wm + gm / self.ratio), wm + gm >= CSF_THRESHOLD), (0, True))
        return Expression.from_sympy(brain, {**self.params, **self.D.params, **self.wm.params, **self.gm.params})

    def rho_value(self, params: dict[str, Any] | None = None) -> float:
        return float(self.rho.numpy(np.zeros((1, 1)), params=params or self.params).ravel()[0])

    def reaction(self, u: Any) -> Any:
        """``rho u (1 - u)`` (numpy, torch or UFL)."""
        return self.rho_value() * u * (1 - u)

    def reaction_derivative(self, u: Any) -> Any:
        return self.rho_value() * (1 - 2 * u)

    def residual(self, x: Any, u: Any) -> Any:
        u = u.reshape(-1)
        g = grad(u, x)
        space, t = x[:, : self.dim], x[:, self.dim]
        D = self.diffusivity.torch(space, t=t, params=self.params)
        return g[:, self.dim] - div_space(D[:, None] * g[:, : self.dim], x, self.dim) - self.reaction(u)

    def weak_form(self, u: Any, v: Any, x: Any) -> Any:
        """Stationary part ``F(u; v)`` with ``u_t + F = 0``: ``D grad u . grad v - rho u (1 - u) v``."""
        import ufl

        D = self.diffusivity
        # a data coefficient has no formula: dolfinx gets it as a function on u's mesh (DG0 for a cell-wise one)
        D = D.ufl_function(u.function_space) if hasattr(D, "ufl_function") else D.ufl(x, params=self.params)
        return D * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - self.reaction(u) * v * ufl.dx

    def discrete_residual(self, grid: Any, u: Any) -> Any:
        from .stencils import fisher_residual

        return fisher_residual(self, grid, u)


__all__ = ["CSF_THRESHOLD", "FisherKPP"]
