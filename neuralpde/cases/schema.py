"""The case-file schema (pydantic v2). ``pde``, ``domain`` and ``method`` are unions tagged by ``type``.

    >>> cfg = case_model().model_validate({
    ...     "name": "demo", "pde": {"type": "poisson", "source": 1},
    ...     "domain": {"type": "rectangle"}, "boundary": [{"where": "all", "dirichlet": 0}]})
    >>> cfg.reference.degree, cfg.method is None
    (2, True)
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from ..solvers.fem.method import FEMDiscretisation
from ..solvers.method import METHODS, Strict

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


PDEConfig = Annotated[PoissonConfig | HeatConfig, Field(discriminator="type")]


class IntervalConfig(Strict):
    type: Literal["interval"]
    bounds: list[list[float]] = [[0.0, 1.0]]


class RectangleConfig(Strict):
    type: Literal["rectangle"]
    bounds: list[list[float]] = [[0.0, 1.0], [0.0, 1.0]]
    cell_type: Literal["triangle", "quadrilateral"] = "triangle"
    diagonal: Literal["right", "left"] = "right"


class BoxConfig(Strict):
    type: Literal["box"]
    bounds: list[list[float]] = [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    cell_type: Literal["tetrahedron", "hexahedron"] = "tetrahedron"


class FileDomainConfig(Strict):
    """A mesh file (gmsh .msh, .vtu, .xdmf); a relative path is relative to the case file."""

    type: Literal["file"]
    path: str


DomainConfig = Annotated[IntervalConfig | RectangleConfig | BoxConfig | FileDomainConfig,
                         Field(discriminator="type")]


class RobinConfig(Strict):
    """``k du/dn + alpha u = value``."""

    alpha: Expr
    value: Expr = 0


class BoundaryConfig(Strict):
    """One condition: ``where`` (``all``, a boundary name, a tag or a condition) and exactly one kind."""

    where: str | int = "all"
    dirichlet: Expr | None = None
    neumann: Expr | None = None
    robin: RobinConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BoundaryConfig:
        kinds = [k for k in ("dirichlet", "neumann", "robin") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of dirichlet, neumann, robin (got {kinds or 'none'})")
        return self


class ReferenceConfig(FEMDiscretisation):
    """The finite-element reference: backend, degree (default P2) and resolution."""

    degree: Literal[1, 2] = 2


class OutputConfig(Strict):
    """``dir`` defaults to ``out/<name>``; ``fields``: xdmf (+h5), vtu or none; PNG plots to make."""

    dir: str | None = None
    fields: Literal["xdmf", "vtu", "none"] = "xdmf"
    plots: list[Literal["solution", "reference", "error", "exact"]] = ["solution", "reference", "error"]


def _method_union() -> Any:
    models = tuple(cls.config_model for cls in METHODS.values())
    if len(models) == 1:
        return models[0]
    return Annotated[models, Field(discriminator="type")]  # type: ignore[valid-type]


@functools.cache
def _build(method_names: tuple[str, ...]) -> type[Strict]:
    method_type = _method_union()

    class CaseConfig(Strict):
        """A whole case file."""

        name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
        description: str = ""
        pde: PDEConfig
        domain: DomainConfig
        boundary: list[BoundaryConfig] = []
        exact: Expr | None = None
        reference: ReferenceConfig = ReferenceConfig()
        method: method_type | None = None  # type: ignore[valid-type]
        output: OutputConfig = OutputConfig()
        seed: int = 0
        device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
        smoke: dict[str, Any] = {}

    return CaseConfig


def case_model() -> type[Strict]:
    """The case model for the methods registered now (new registrations extend the method union)."""
    return _build(tuple(sorted(METHODS)))
