"""Poisson problems with Gaussian-peak solutions in any dimension: ``-laplace u = f``, ``u = sum a exp(-k|x-c|^2)``.

Case-file expressions know only ``x, y, z``, so problems in ``d > 3`` dimensions (the 10D AAS test
``u = exp(-10|x|^2)``) are written as peaks; ``f`` and the exact solution are closed forms::

    >>> import numpy as np
    >>> pde = GaussianPeaks(peaks=[{"center": 0.0, "k": 10.0}], dim=10)
    >>> float(pde.exact.numpy(np.zeros((10, 1)))[0]), float(pde.f_numpy(np.zeros((1, 10)))[0])   # f = 20 d at 0
    (1.0, 200.0)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..config import Strict
from .base import PDE, div, grad, register_pde


class PeakConfig(Strict):
    """``amplitude * exp(-k |x - center|^2)``; ``center`` is one number (all coordinates) or a list."""

    center: float | list[float] = 0.0
    k: float = Field(10.0, gt=0)
    amplitude: float = 1.0


class GaussianPeaksConfig(Strict):
    type: Literal["gaussian_peaks"]
    peaks: list[PeakConfig] = Field(min_length=1)


class PeaksExact:
    """The exact solution, evaluated like an :class:`~neuralpde.pde.expressions.Expression` (``numpy(coords)``)."""

    def __init__(self, centers: np.ndarray, ks: np.ndarray, amplitudes: np.ndarray):
        self.centers, self.ks, self.amplitudes = centers, ks, amplitudes
        self.is_constant = False

    def numpy(self, coords: Any, t: float = 0.0, params: Any = None) -> np.ndarray:
        """Values at ``coords`` of shape ``(d, n)`` (the Expression convention)."""
        x = np.asarray(coords, dtype=float).T
        d2 = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1)
        return (self.amplitudes * np.exp(-self.ks * d2)).sum(-1)

    def torch(self, x: Any, t: Any = None, params: Any = None) -> Any:
        """Values at torch points ``x`` of shape ``(n, d)``."""
        import torch

        c = torch.as_tensor(self.centers, dtype=x.dtype, device=x.device)
        k = torch.as_tensor(self.ks, dtype=x.dtype, device=x.device)
        a = torch.as_tensor(self.amplitudes, dtype=x.dtype, device=x.device)
        return (a * torch.exp(-k * ((x[:, None, :] - c[None]) ** 2).sum(-1))).sum(-1)


@register_pde
class GaussianPeaks(PDE):
    """``-laplace u = f`` in ``dim`` dimensions with ``f`` chosen so that the sum of peaks is the solution.

    Args:
        peaks: ``[{"center": c, "k": k, "amplitude": a}, ...]``.
        dim: the dimension (from the domain).
        exact: ignored (the peaks are the exact solution); accepted for the registry's ``from_config``.
    """

    name: ClassVar[str] = "gaussian_peaks"
    config_model = GaussianPeaksConfig
    #: the PDE carries its exact solution, so a case needs no ``exact:`` for ``reference: none``
    has_exact: ClassVar[bool] = True

    def __init__(self, peaks: list[dict[str, Any]], dim: int = 2, exact: Any = None):
        self.dim = dim
        centers = [np.broadcast_to(np.asarray(p["center"], dtype=float), (dim,)) for p in peaks]
        self.exact = PeaksExact(np.array(centers), np.array([float(p.get("k", 10.0)) for p in peaks]),
                                np.array([float(p.get("amplitude", 1.0)) for p in peaks]))

    def f_numpy(self, x: np.ndarray) -> np.ndarray:
        """The source at points ``x`` of shape ``(n, d)``: ``-laplace`` of each peak is ``u_i (2 k d - 4 k^2 r^2)``."""
        e = self.exact
        d2 = ((x[:, None, :] - e.centers[None]) ** 2).sum(-1)
        return (e.amplitudes * np.exp(-e.ks * d2) * (2 * e.ks * self.dim - 4 * e.ks**2 * d2)).sum(-1)

    def source_torch(self, x: Any) -> Any:
        import torch

        e = self.exact
        c = torch.as_tensor(e.centers, dtype=x.dtype, device=x.device)
        k = torch.as_tensor(e.ks, dtype=x.dtype, device=x.device)
        a = torch.as_tensor(e.amplitudes, dtype=x.dtype, device=x.device)
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        return (a * torch.exp(-k * d2) * (2 * k * self.dim - 4 * k**2 * d2)).sum(-1)

    def residual(self, x: Any, u: Any) -> Any:
        u = u.reshape(-1)
        return -div(grad(u, x), x) - self.source_torch(x)
