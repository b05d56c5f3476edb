"""Errors that tell the user what is wrong, where, and how to fix it.

Every error raised for bad input derives from :class:`NeuralPDEError`. Its message names the
file (when there is one), the field path inside it (``method.train.lr``) and a fix::

    >>> err = CaseError("learning rate must be positive", file="cases/a.yaml", field="method.train.lr",
    ...                 fix="set a value > 0, e.g. 1.0e-3")
    >>> print(err)
    cases/a.yaml: method.train.lr: learning rate must be positive (fix: set a value > 0, e.g. 1.0e-3)
"""

from __future__ import annotations


class NeuralPDEError(Exception):
    """Base class of all errors the CLI reports as one line with exit code 2."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text

    def located(self, *, file: str | None = None, field: str | None = None) -> NeuralPDEError:
        """Return the same error with a file and/or field filled in where they were missing."""
        return type(self)(self.message, file=self.file or file, field=self.field or field, fix=self.fix)


class CaseError(NeuralPDEError):
    """A case file (or an override) is malformed or inconsistent."""


class ExpressionError(NeuralPDEError):
    """A string expression could not be parsed or is not allowed."""


class MeshError(NeuralPDEError):
    """A mesh file is missing, unreadable or geometrically invalid."""


class SolverError(NeuralPDEError):
    """A solver failed (did not converge, produced NaN, ...)."""


class BackendUnavailable(NeuralPDEError):
    """An optional backend (dolfinx, pyvista, gmsh) was requested but is not installed."""
