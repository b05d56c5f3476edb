"""The :class:`PDE` base class and the torch differential operators used by its residuals.

A PDE offers up to three *faces*; a method asks only for the one it needs:

- ``residual(x, u)``: strong-form residual in torch (PINN, AAS, MM-PDE);
- ``weak_form(u, v, x)``: a UFL form ``F(u; v)`` for the FEniCSx reference;
- ``discrete_residual(grid, u)``: a finite-difference stencil in torch (ODIL).

    >>> import torch
    >>> x = torch.rand(5, 2, requires_grad=True)
    >>> u = (x ** 2).sum(dim=1)                     # u = x^2 + y^2, so laplace(u) = 4
    >>> torch.allclose(div(grad(u, x), x), torch.full((5,), 4.0))
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..config import Strict
from ..errors import CaseError

FACES = ("residual", "weak_form", "discrete_residual")


def grad(u: Any, x: Any) -> Any:
    """Gradient of ``u`` (shape ``(N,)`` or ``(N, 1)``) w.r.t. the points ``x`` (shape ``(N, d)``)."""
    import torch

    return torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u), create_graph=True)[0]


def div(field: Any, x: Any) -> Any:
    """Divergence of a vector field ``field`` (shape ``(N, d)``) w.r.t. ``x``; returns shape ``(N,)``."""
    import torch

    out = torch.zeros(field.shape[0], dtype=field.dtype, device=field.device)
    for i in range(field.shape[1]):
        out = out + grad(field[:, i], x)[:, i]
    return out


class PDE:
    """Base class of all PDEs. Subclasses implement the faces they support.

    Attributes:
        name: the registry name (``type:`` in a case file).
        time_dependent: whether the last coordinate of a point is time.
    """

    name: ClassVar[str] = "pde"
    time_dependent = False
    #: the ``pde:`` section of a case file for this PDE (a :class:`~neuralpde.config.Strict` model whose
    #: ``type`` is ``Literal[name]``); ``None`` for a PDE used only from Python
    config_model: ClassVar[type[Strict] | None] = None

    @classmethod
    def from_config(cls, section: Strict, *, exact: Any = None, dim: int = 2) -> PDE:
        """Build the PDE from its validated case-file section (``exact``: the case's exact solution)."""
        kwargs = {k: v for k, v in section.model_dump().items() if k != "type"}
        return cls(**kwargs, exact=exact, dim=dim)

    def residual(self, x: Any, u: Any) -> Any:
        """Strong-form residual at points ``x`` (torch, ``requires_grad``) for the field ``u(x)``."""
        raise NotImplementedError

    def weak_form(self, u: Any, v: Any, x: Any) -> Any:
        """UFL residual form ``F(u; v)`` (``F = 0`` defines the solution; nonlinear in ``u`` allowed)."""
        raise NotImplementedError

    def discrete_residual(self, grid: Any, u: Any) -> Any:
        """Finite-difference residual of grid values ``u`` (torch)."""
        raise NotImplementedError

    def faces(self) -> set[str]:
        """The faces this PDE implements."""
        return {f for f in FACES if getattr(type(self), f) is not getattr(PDE, f)}

    def require(self, face: str, by: str) -> None:
        """Fail early, naming the missing face, when the method ``by`` needs it.

        Raises:
            CaseError: the PDE does not implement ``face``.
        """
        if face not in self.faces():
            raise CaseError(f"method {by!r} needs the PDE's {face}() face, which {type(self).__name__} "
                            "does not implement", field="pde",
                            fix=f"implement {type(self).__name__}.{face}() or choose another method")


#: PDE classes by the ``type`` name used in case files
PDES: dict[str, type[PDE]] = {}


def register_pde(cls: type[PDE]) -> type[PDE]:
    """Class decorator: make ``cls`` available in case files as ``pde: {type: <cls.name>}``."""
    if cls.config_model is None:
        raise TypeError(f"{cls.__name__} needs a config_model to be registered")
    PDES[cls.name] = cls
    return cls
