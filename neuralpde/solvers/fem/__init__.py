"""Finite-element reference solvers (dolfinx or the embedded scikit-fem) and their fields."""

from .base import FEMSolution, LinearSolverOptions, ReferenceSolver, TimeOptions, get_backend
from .fields import FEField

__all__ = ["FEField", "FEMSolution", "LinearSolverOptions", "ReferenceSolver", "TimeOptions", "get_backend"]
