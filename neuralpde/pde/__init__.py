"""PDE definitions, independent of any discretisation. ``PDES`` maps case-file ``type`` names to classes."""

import importlib

from .base import PDE, PDES, div, grad, register_pde
from .expressions import Expression
from .poisson import Heat, Poisson
from .problem import BoundaryCondition, Problem

#: modules whose PDEs register themselves (``burgers``; ``darcy``, ``helmholtz``; ``fisher_kpp``; ``gaussian_peaks``)
BUILTIN_PDE_MODULES: tuple[str, ...] = ("burgers", "darcy", "fisher", "gaussian")

for _module in BUILTIN_PDE_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["PDE", "PDES", "BoundaryCondition", "Expression", "Heat", "Poisson", "Problem", "div", "grad",
           "register_pde"]
