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

from ..config import Strict
from ..pde import PDES
from ..pde.poisson import Expr
from ..solvers.fem.method import FEMDiscretisation
from ..solvers.method import METHODS


def _pde_union() -> Any:
    models = tuple(cls.config_model for cls in PDES.values())
    return models[0] if len(models) == 1 else Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


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


class HypercubeConfig(Strict):
    """A box in ``dim`` dimensions (no FEM mesh: use ``reference: none``); one ``[lo, hi]`` applies to all."""

    type: Literal["hypercube"]
    dim: int | None = Field(None, ge=1)
    bounds: list[list[float]] = [[0.0, 1.0]]


class PolygonConfig(Strict):
    """A simple polygon; edge ``i`` is the boundary ``edge<i>``; meshed with gmsh for the FEM reference."""

    type: Literal["polygon"]
    vertices: list[list[float]]


DomainConfig = Annotated[IntervalConfig | RectangleConfig | BoxConfig | FileDomainConfig | HypercubeConfig
                         | PolygonConfig,
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
    plots: list[str] = ["solution", "reference", "error"]


#: plots the runner makes itself; a method adds its own names (``Method.plot_names``)
RUNNER_PLOTS = ("solution", "reference", "error", "exact")


def _method_union() -> Any:
    models = tuple(cls.config_model for cls in METHODS.values())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


@functools.cache
def _build(method_names: tuple[str, ...], pde_names: tuple[str, ...]) -> type[Strict]:
    method_type = _method_union()
    pde_type = _pde_union()

    class CaseConfig(Strict):
        """A whole case file."""

        name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
        description: str = ""
        pde: pde_type | None = None  # type: ignore[valid-type]
        domain: DomainConfig | None = None
        boundary: list[BoundaryConfig] = []
        exact: Expr | None = None
        reference: ReferenceConfig | Literal["none"] | None = ReferenceConfig()
        method: method_type | None = None  # type: ignore[valid-type]
        output: OutputConfig = OutputConfig()
        seed: int = 0
        device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
        smoke: dict[str, Any] = {}

    return CaseConfig


def case_model() -> type[Strict]:
    """The case model for the methods and PDEs registered now (registrations extend the unions)."""
    return _build(tuple(sorted(METHODS)), tuple(sorted(PDES)))
