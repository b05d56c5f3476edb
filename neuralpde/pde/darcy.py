"""Darcy flow and Helmholtz with random coefficients given as grid values (the operator-learning PDEs).

``-div(a grad u) = f`` with ``a`` a thresholded Gaussian random field (12 where ``psi >= 0``, else 3),
and ``-laplace(u) - (omega n)^2 u = f`` with a random wavenumber ``n``. A coefficient is a
:class:`GridCoefficient`: nodal values on a uniform grid of the unit square, which both FEM
backends interpolate like any expression::

    >>> import numpy as np
    >>> pde = Darcy(grid=16, sample=3)
    >>> a = pde.k.values
    >>> a.shape, sorted(np.unique(a).tolist())
    ((16, 16), [3.0, 12.0])
    >>> bool(float(pde.k.numpy(np.array([[0.0], [0.0]]))[0]) == a[0, 0])
    True
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import Strict
from ..errors import CaseError
from .base import register_pde
from .poisson import Expr, Poisson


def gaussian_random_field(rng: np.random.Generator, n: int, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """A sample of ``N(0, (-laplace + tau^2)^(-alpha))`` on an ``n x n`` grid (FNO's GRF.m, cosine basis).

    The DCT-II modes ``k`` get the weight ``tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2)``; the
    constant mode is dropped, so the field has zero mean and a threshold at 0 splits it about evenly.
    """
    from scipy.fft import idctn

    k1, k2 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    coef = tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2)
    modes = n * coef * rng.standard_normal((n, n))
    modes[0, 0] = 0.0
    return idctn(modes, type=2, norm="ortho")


class GridCoefficient:
    """A coefficient given by nodal values on a uniform grid of a rectangle (row = y, column = x).

    It quacks like an :class:`~neuralpde.pde.expressions.Expression` where the FEM backends need it
    (``numpy``, ``torch``, ``is_constant``, ``depends_on_time``): between nodes it takes the value of
    the nearest node, so on the grid's own P1 mesh its interpolant is the nodal array itself.
    """

    is_constant = False
    depends_on_time = False
    params: dict[str, float] = {}

    def __init__(self, values: np.ndarray, bounds: Any = ((0.0, 1.0), (0.0, 1.0))):
        self.values = np.asarray(values, dtype=float)
        if self.values.ndim != 2 or min(self.values.shape) < 2:
            raise CaseError(f"a grid coefficient needs a 2D array of at least 2x2 values, got {self.values.shape}",
                            field="pde", fix="give the values as an (ny, nx) array")
        self.bounds = np.asarray(bounds, dtype=float)

    def _index(self, x: np.ndarray, axis: int) -> np.ndarray:
        lo, hi = self.bounds[axis]
        n = self.values.shape[1 - axis]
        return np.clip(np.rint((x - lo) / (hi - lo) * (n - 1)), 0, n - 1).astype(np.int64)

    def numpy(self, coords: Any, t: float = 0.0, params: dict[str, float] | None = None) -> np.ndarray:
        """Values at points ``coords`` of shape ``(2, N)``."""
        coords = np.asarray(coords, dtype=float)
        return self.values[self._index(coords[1], 1), self._index(coords[0], 0)]

    def torch(self, coords: Any, t: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Values at torch points ``(N, 2)`` (piecewise constant: no derivative across a jump)."""
        import torch

        pts = coords.detach().cpu().numpy().T
        return torch.as_tensor(self.numpy(pts), dtype=coords.dtype, device=coords.device)

    def ufl(self, x: Any, t: Any = None, params: dict[str, Any] | None = None) -> Any:
        raise CaseError("a grid coefficient has no UFL expression; the dolfinx backend interpolates it through "
                        "numpy() instead", field="pde", fix="use the linear path (k, c, f) of the backends")


class _Sampled(Poisson):
    """A linear PDE ``-div(k grad u) + c u = f`` whose random coefficient is drawn from a seeded sampler."""

    def __init__(self, source: Any = 1, grid: int = 64, seed: int = 0, sample: int = 0,
                 exact: Any = None, dim: int = 2, params: dict[str, float] | None = None):
        if dim != 2:
            raise CaseError(f"{self.name} is defined on the unit square (dim 2), not dim {dim}", field="domain",
                            fix="use domain: {type: rectangle}")
        if grid < 4:
            raise CaseError(f"grid must be at least 4 nodes per side, got {grid}", field="pde.grid",
                            fix="e.g. grid: 64")
        super().__init__(k=1, c=0, source=source, exact=exact, params=params, dim=dim)
        self.grid, self.seed, self.sample = int(grid), int(seed), int(sample)
        self.set_input(self.sample_input(sample_rng(seed, sample), grid))

    def sample_input(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The network input (the random coefficient) on an ``n x n`` grid."""
        raise NotImplementedError

    def nodal_coefficients(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(k, c)`` nodal values for the input ``a``."""
        raise NotImplementedError

    def set_input(self, a: np.ndarray) -> None:
        """Make ``a`` (an ``(n, n)`` grid) the coefficient of this instance."""
        k, c = self.nodal_coefficients(np.asarray(a, dtype=float))
        self.input = np.asarray(a, dtype=float)
        self.k, self.c = GridCoefficient(k), GridCoefficient(c)

    def generator_attributes(self) -> dict[str, Any]:
        """What defines the data distribution (stored with a dataset and compared with a case)."""
        return {"pde": self.name, "source": self.f.text, **self._sampler_attributes()}

    def _sampler_attributes(self) -> dict[str, Any]:
        return {}


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``: independent of how samples are split over workers or resumed."""
    return np.random.default_rng([int(seed), int(index)])


class DarcyConfig(Strict):
    """``-div(a grad u) = source`` on the unit square; ``a`` = ``high`` where a GRF is >= 0, else ``low``."""

    type: Literal["darcy"]
    source: Expr = 1
    high: float = Field(12.0, gt=0)
    low: float = Field(3.0, gt=0)
    alpha: float = Field(2.0, gt=0)
    tau: float = Field(3.0, gt=0)
    grid: int = Field(64, ge=4)
    seed: int = 0
    sample: int = Field(0, ge=0)


@register_pde
class Darcy(_Sampled):
    """Darcy flow with a piecewise-constant permeability from a thresholded Gaussian random field.

    Args:
        source: ``f`` (expression; 1 in the FNO/MgNO benchmark).
        high, low: the two permeability values (12 and 3).
        alpha, tau: the GRF's smoothness and length scale (2 and 3).
        grid: nodes per side of the coefficient grid of this instance.
        seed, sample: which sample of the seeded sampler this instance holds.
    """

    name = "darcy"
    config_model = DarcyConfig

    def __init__(self, source: Any = 1, high: float = 12.0, low: float = 3.0, alpha: float = 2.0,
                 tau: float = 3.0, grid: int = 64, seed: int = 0, sample: int = 0, exact: Any = None,
                 dim: int = 2, params: dict[str, float] | None = None):
        self.high, self.low, self.alpha, self.tau = float(high), float(low), float(alpha), float(tau)
        super().__init__(source=source, grid=grid, seed=seed, sample=sample, exact=exact, dim=dim, params=params)

    def sample_input(self, rng: np.random.Generator, n: int) -> np.ndarray:
        psi = gaussian_random_field(rng, n, self.alpha, self.tau)
        return np.where(psi >= 0, self.high, self.low)

    def nodal_coefficients(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return a, np.zeros_like(a)

    def _sampler_attributes(self) -> dict[str, Any]:
        return {"high": self.high, "low": self.low, "alpha": self.alpha, "tau": self.tau}


class HelmholtzConfig(Strict):
    """``-laplace(u) - (omega n)^2 u = source``; ``n = 1 + amplitude tanh(GRF)`` is the random input."""

    type: Literal["helmholtz"]
    source: Expr = 1
    omega: float = Field(5.0, gt=0)
    amplitude: float = Field(0.5, ge=0, lt=1)
    alpha: float = Field(2.5, gt=0)
    tau: float = Field(3.0, gt=0)
    grid: int = Field(64, ge=4)
    seed: int = 0
    sample: int = Field(0, ge=0)


@register_pde
class Helmholtz(_Sampled):
    """Helmholtz with a variable wavenumber ``n(x) = 1 + amplitude tanh(psi)`` (``psi`` a smooth GRF).

    The reaction ``c = -(omega n)^2`` is negative, so the system is indefinite: solve it directly (LU),
    and keep ``omega`` below the square's first Dirichlet eigenvalue scale unless a resonance is wanted.
    """

    name = "helmholtz"
    config_model = HelmholtzConfig

    def __init__(self, source: Any = 1, omega: float = 5.0, amplitude: float = 0.5, alpha: float = 2.5,
                 tau: float = 3.0, grid: int = 64, seed: int = 0, sample: int = 0, exact: Any = None,
                 dim: int = 2, params: dict[str, float] | None = None):
        self.omega, self.amplitude, self.alpha, self.tau = float(omega), float(amplitude), float(alpha), float(tau)
        super().__init__(source=source, grid=grid, seed=seed, sample=sample, exact=exact, dim=dim, params=params)

    def sample_input(self, rng: np.random.Generator, n: int) -> np.ndarray:
        psi = gaussian_random_field(rng, n, self.alpha, self.tau)
        return 1.0 + self.amplitude * np.tanh(psi / max(float(np.std(psi)), 1e-12))

    def nodal_coefficients(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones_like(a), -(self.omega * a) ** 2

    def _sampler_attributes(self) -> dict[str, Any]:
        return {"omega": self.omega, "amplitude": self.amplitude, "alpha": self.alpha, "tau": self.tau}
