"""PDE definitions, independent of any discretisation. ``PDES`` maps case-file ``type`` names to classes."""

from .base import PDE, PDES, div, grad, register_pde
from .expressions import Expression
from .poisson import Heat, Poisson
from .problem import BoundaryCondition, Problem

__all__ = ["PDE", "PDES", "BoundaryCondition", "Expression", "Heat", "Poisson", "Problem", "div", "grad",
           "register_pde"]
