"""PDE definitions, independent of any discretisation."""

from .base import PDE, div, grad
from .expressions import Expression
from .poisson import Heat, Poisson
from .problem import BoundaryCondition, Problem

#: PDE classes by the ``type`` name used in case files
PDES: dict[str, type[PDE]] = {"poisson": Poisson, "heat": Heat}

__all__ = ["PDE", "PDES", "BoundaryCondition", "Expression", "Heat", "Poisson", "Problem", "div", "grad"]
