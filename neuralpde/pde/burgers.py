"""2D viscous Burgers (scalar): ``u_t + u (u_x + u_y) = nu lap(u)``, the PDE of MM-PDE's Burgers benchmark.

A travelling wave along the diagonal solves it exactly (with ``z = x + y``, ``w = 2u`` obeys the 1D Burgers
equation with viscosity ``2 nu``), which the tests and the case use::

    >>> p = Burgers(nu=0.02, exact=travelling_wave(nu=0.02))
    >>> sorted(p.faces()), p.time_dependent
    (['residual'], True)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..config import Strict
from ..errors import CaseError
from .base import PDE, grad, register_pde
from .poisson import Expr, _expr, initial_condition


def travelling_wave(nu: float, speed: float = 1.0, amplitude: float = 0.5, shift: float = 0.5) -> str:
    """Exact solution ``(c - a tanh(a (x + y - shift - c t) / (4 nu))) / 2`` (an expression string)."""
    return f"({speed} - {amplitude}*tanh({amplitude}*(x + y - {shift} - {speed}*t)/(4*{nu})))/2"


class BurgersConfig(Strict):
    """``u_t + u (u_x + u_y) = nu lap(u)`` with ``u(x, 0) = initial`` (``exact``: the case's exact solution)."""

    type: Literal["burgers"]
    nu: float = Field(0.01, gt=0)
    initial: Expr = "exact"
    t_end: float = Field(1.0, gt=0)
    params: dict[str, float] = {}


@register_pde
class Burgers(PDE):
    """Scalar 2D viscous Burgers with the convection velocity ``(u, u)``.

    Args:
        nu: viscosity (> 0).
        initial: ``u(x, 0)``; ``"exact"`` takes the exact solution at ``t = 0``.
        t_end: final time.
        exact: exact solution (an expression in x, y, t), when known.
        params: named parameter values used in the expressions.
        dim: spatial dimension (2).
    """

    name = "burgers"
    config_model = BurgersConfig
    time_dependent = True

    def __init__(self, nu: float = 0.01, initial: Any = "exact", t_end: float = 1.0, exact: Any = None,
                 params: dict[str, float] | None = None, dim: int = 2):
        if dim != 2:
            raise CaseError(f"Burgers is defined here in 2D, got dim={dim}", field="domain",
                            fix="use a rectangle domain")
        if nu <= 0:
            raise CaseError(f"nu must be positive, got {nu}", field="pde.nu", fix="e.g. nu: 0.01")
        if t_end <= 0:
            raise CaseError(f"t_end must be positive, got {t_end}", field="pde.t_end", fix="e.g. t_end: 1.0")
        self.params = dict(params or {})
        self.nu, self.t_end, self.dim = float(nu), float(t_end), dim
        self.exact = None if exact is None else _expr(exact, self.params, "exact")
        self.initial = initial_condition(initial, self.exact, self.params)

    def residual(self, x: Any, u: Any) -> Any:
        """``u_t + u (u_x + u_y) - nu (u_xx + u_yy)`` at points ``(x, y, t)``."""
        u = u.reshape(-1)
        g = grad(u, x)
        lap = grad(g[:, 0], x)[:, 0] + grad(g[:, 1], x)[:, 1]
        return g[:, 2] + u * (g[:, 0] + g[:, 1]) - self.nu * lap
