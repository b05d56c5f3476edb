"""A :class:`Problem`: a PDE on a domain with boundary conditions (and its exact solution, if known).

    >>> from neuralpde.meshes.domains import Rectangle
    >>> from neuralpde.pde import Poisson
    >>> pb = Problem(Poisson(source=1), Rectangle([[0, 1], [0, 1]]),
    ...              [BoundaryCondition("all", "dirichlet", 0)])
    >>> pb.bcs[0].value.is_constant
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CaseError
from .base import PDE
from .expressions import Expression

BC_KINDS = ("dirichlet", "neumann", "robin")


@dataclass
class BoundaryCondition:
    """A boundary condition on part of the boundary.

    Args:
        where: ``"all"``, a boundary tag name (``left``, a gmsh physical name), an integer tag, or a
            boolean expression evaluated at facet midpoints (``"x < 1e-12"``).
        kind: ``dirichlet`` (``u = g``), ``neumann`` (``k du/dn = g``) or robin (``k du/dn + alpha u = g``).
        value: ``g`` (an expression; ``"exact"`` means the exact solution, for Dirichlet).
        alpha: the Robin coefficient.
    """

    where: str | int
    kind: str
    value: Any = 0
    alpha: Any = None

    def __post_init__(self) -> None:
        if self.kind not in BC_KINDS:
            raise CaseError(f"unknown boundary condition kind {self.kind!r}", field="boundary",
                            fix=f"use one of {list(BC_KINDS)}")
        if self.kind == "robin" and self.alpha is None:
            raise CaseError("a robin condition needs alpha", field="boundary", fix="add `alpha: <expression>`")


@dataclass
class Problem:
    """A PDE, its domain, boundary conditions and (optionally) exact solution.

    ``exact`` defaults to the PDE's own ``exact`` attribute when it has one.
    """

    pde: PDE
    domain: Any
    bcs: list[BoundaryCondition] = field(default_factory=list)
    exact: Expression | None = None

    def __post_init__(self) -> None:
        if self.exact is None:
            self.exact = getattr(self.pde, "exact", None)
        params = getattr(self.pde, "params", {})
        for i, bc in enumerate(self.bcs):
            where = f"boundary[{i}]"
            if isinstance(bc.value, str) and bc.value.strip() == "exact":
                if self.exact is None:
                    raise CaseError("`exact` used as a boundary value but the case has no exact solution",
                                    field=f"{where}.{bc.kind}", fix="add `exact: <expression>` to the case")
                if bc.kind != "dirichlet":
                    raise CaseError("`exact` is only allowed as a Dirichlet value", field=f"{where}.{bc.kind}",
                                    fix="give the flux as an expression")
                bc.value = self.exact
            elif not isinstance(bc.value, Expression):
                bc.value = Expression.parse(bc.value, params, field=f"{where}.{bc.kind}")
            if bc.alpha is not None and not isinstance(bc.alpha, Expression):
                bc.alpha = Expression.parse(bc.alpha, params, field=f"{where}.alpha")

    @property
    def time_dependent(self) -> bool:
        return bool(getattr(self.pde, "time_dependent", False))
