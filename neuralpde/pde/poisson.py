"""Poisson and heat equations with a variable coefficient, a reaction term and a source.

``-div(k grad u) + c u = f`` (and ``u_t - div(k grad u) + c u = f`` for :class:`Heat`)::

    >>> p = Poisson(k="1 + x**2", source="manufactured", exact="sin(pi*x)*sin(pi*y)")
    >>> float(p.f.numpy([[0.5], [0.5]])[0]) > 0     # f was derived from the exact solution
    True
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field

from ..config import Strict
from ..errors import CaseError
from .base import PDE, div, grad, register_pde
from .expressions import SYMBOLS, Expression

Expr = Union[str, float, int]  # noqa: UP007 (a runtime alias; `|` needs Python 3.10 types)


class PoissonConfig(Strict):
    """``-div(k grad u) + c u = f``; ``source: manufactured`` derives f from ``exact``."""

    type: Literal["poisson"]
    k: Expr = 1
    c: Expr = 0
    source: Expr = 0
    params: dict[str, float] = {}


class HeatConfig(PoissonConfig):
    """``u_t - div(k grad u) + c u = f`` on ``(0, t_end]``; ``initial: exact`` uses the exact solution."""

    type: Literal["heat"]  # type: ignore[assignment]
    initial: Expr = "exact"
    t_end: float = Field(1.0, gt=0)

COORDS = ("x", "y", "z")


def _expr(value: Any, params: dict[str, float] | None, field: str) -> Expression:
    if isinstance(value, Expression):
        return value
    return Expression.parse(value, params, field=field)


def initial_condition(initial: Any, exact: Expression | None, params: dict[str, float]) -> Expression:
    """``initial: exact`` takes the exact solution at ``t = 0``; anything else is an expression."""
    if isinstance(initial, str) and initial.strip() == "exact":
        if exact is None:
            raise CaseError("initial: exact needs an exact solution", field="pde.initial",
                            fix="add `exact:` or give the initial condition as an expression")
        return exact.subs(t=0.0)
    return _expr(initial, params, "pde.initial")


def manufactured_source(exact: Expression, k: Expression, c: Expression, dim: int,
                        time_dependent: bool = False) -> Expression:
    """The source ``f`` that makes ``exact`` solve ``[u_t] - div(k grad u) + c u = f`` (symbolically)."""
    f = c.sympy * exact.sympy
    for var in COORDS[:dim]:
        f -= (k.sympy * exact.sympy.diff(SYMBOLS[var])).diff(SYMBOLS[var])
    if time_dependent:
        f += exact.sympy.diff(SYMBOLS["t"])
    return Expression.from_sympy(f, {**k.params, **c.params, **exact.params})


@register_pde
class Poisson(PDE):
    """``-div(k grad u) + c u = f`` on a domain of dimension ``dim``.

    Args:
        k: diffusion coefficient (expression, > 0).
        c: reaction coefficient (expression, >= 0 keeps the problem SPD).
        source: ``f`` as an expression, or ``"manufactured"`` to derive it from ``exact``.
        exact: the exact solution, when known (needed for ``source="manufactured"``).
        params: values of named parameters used in the expressions.
        dim: spatial dimension (needed only for a manufactured source).
    """

    name = "poisson"
    config_model = PoissonConfig

    def __init__(self, k: Any = 1, c: Any = 0, source: Any = 0, exact: Any = None,
                 params: dict[str, float] | None = None, dim: int = 2):
        self.params = dict(params or {})
        _expr(0, self.params, "pde.params")     # a bad parameter name is blamed on params, not on k
        self.k = _expr(k, self.params, "pde.k")
        self.c = _expr(c, self.params, "pde.c")
        self.exact = None if exact is None else _expr(exact, self.params, "exact")
        self.dim = dim
        if isinstance(source, str) and source.strip() == "manufactured":
            if self.exact is None:
                raise CaseError("source: manufactured needs an exact solution", field="pde.source",
                                fix="add `exact: <expression>` to the case or give the source explicitly")
            self.f = manufactured_source(self.exact, self.k, self.c, dim, self.time_dependent)
        else:
            self.f = _expr(source, self.params, "pde.source")

    def residual(self, x: Any, u: Any) -> Any:
        u = u.reshape(-1)
        space = x[:, : self.dim]
        k = self.k.torch(space, params=self.params)
        flux = k[:, None] * grad(u, x)[:, : self.dim]
        return -div_space(flux, x, self.dim) + self.c.torch(space, params=self.params) * u \
            - self.f.torch(space, params=self.params)

    def weak_form(self, u: Any, v: Any, x: Any) -> Any:
        import ufl

        k, c, f = (e.ufl(x, params=self.params) for e in (self.k, self.c, self.f))
        return k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + c * u * v * ufl.dx - f * v * ufl.dx

    def discrete_residual(self, grid: Any, u: Any) -> Any:
        from .stencils import poisson_residual

        return poisson_residual(self, grid, u)


def div_space(flux: Any, x: Any, dim: int) -> Any:
    """Divergence over the first ``dim`` coordinates of ``x`` (time, if present, is excluded)."""
    return div(flux[:, :dim], x) if x.shape[1] == dim else sum(
        grad(flux[:, i], x)[:, i] for i in range(dim))


@register_pde
class Heat(Poisson):
    """``u_t - div(k grad u) + c u = f`` for ``0 < t <= t_end``, ``u(x, 0) = initial``.

    Points passed to :meth:`residual` carry time as their last column. The weak form is the
    stationary part; the reference steps it in time with the theta scheme.
    """

    name = "heat"
    config_model = HeatConfig
    time_dependent = True

    def __init__(self, k: Any = 1, c: Any = 0, source: Any = 0, exact: Any = None,
                 initial: Any = "exact", t_end: float = 1.0, params: dict[str, float] | None = None,
                 dim: int = 2):
        super().__init__(k=k, c=c, source=source, exact=exact, params=params, dim=dim)
        if t_end <= 0:
            raise CaseError(f"t_end must be positive, got {t_end}", field="pde.t_end", fix="e.g. t_end: 1.0")
        self.t_end = float(t_end)
        self.initial = initial_condition(initial, self.exact, self.params)

    def residual(self, x: Any, u: Any) -> Any:
        u = u.reshape(-1)
        u_t = grad(u, x)[:, self.dim]
        space, t = x[:, : self.dim], x[:, self.dim]
        k = self.k.torch(space, t=t, params=self.params)
        flux = k[:, None] * grad(u, x)[:, : self.dim]
        return u_t - div_space(flux, x, self.dim) + self.c.torch(space, t=t, params=self.params) * u \
            - self.f.torch(space, t=t, params=self.params)

    def discrete_residual(self, grid: Any, u: Any) -> Any:
        from .stencils import heat_residual

        return heat_residual(self, grid, u)
