"""DCDM training data: Ritz vectors of the system matrix from Lanczos with full reorthogonalisation.

As in the paper's ``datasetcreate.py``: Lanczos starts from ``A @ randn``; the Ritz pairs of the
tridiagonal matrix approximate the spectrum's ends; a training vector is ``b = sum_i c_i v_i`` with
``c_i ~ N(0, 1)``, the lowest ``m/2 + m/20`` modes weighted 9x (the hard, smooth part of the
spectrum for CG), normalised to unit length::

    >>> import scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30), format="csr")
    >>> ritz = RitzBasis.from_matrix(A, steps=30, seed=0)
    >>> bool(np.allclose(ritz.values, np.linalg.eigvalsh(A.toarray()), atol=1e-8))   # m = n: exact
    True
    >>> ritz.sample(4, np.random.default_rng(0)).shape
    (4, 30)

:meth:`RitzBasis.save` writes HDF5 (h5py) with the matrix fingerprint, so a dataset made for
another matrix is refused on :meth:`RitzBasis.load`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh_tridiagonal

from ..errors import SolverError
from ..fileio import atomic_output
from .krylov import check_system

#: Ritz values below this are dropped (as in the paper)
MIN_RITZ_VALUE = 1e-8


def matrix_fingerprint(A: Any) -> str:
    """A sha256 of the matrix's pattern and values (rounded to 10 significant digits, so two backends'
    assemblies of the same operator agree)."""
    A = sp.csr_matrix(A, dtype=float)
    A.sum_duplicates()
    A.sort_indices()
    scale = float(abs(A).max()) or 1.0
    h = hashlib.sha256()
    h.update(np.asarray(A.shape, dtype=np.int64).tobytes())
    h.update(A.indptr.astype(np.int64).tobytes())
    h.update(A.indices.astype(np.int64).tobytes())
    h.update(np.round(A.data / scale, 10).tobytes())
    return h.hexdigest()[:32]


def lanczos(A: Any, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``steps`` Lanczos steps with full reorthogonalisation, started from ``A @ randn``.

    Returns:
        ``(alpha, beta, Q)``: the tridiagonal matrix's diagonal and off-diagonal and the orthonormal
        basis (rows of ``Q``). Fewer rows than ``steps`` when an invariant subspace was found.
    """
    A = check_system(A)
    n = A.shape[0]
    steps = min(int(steps), n)
    q = A @ np.random.default_rng(seed).standard_normal(n)
    q /= np.linalg.norm(q)
    Q = np.zeros((steps, n))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    for j in range(steps):
        Q[j] = q
        w = A @ q
        alpha[j] = q @ w
        w -= alpha[j] * q + (beta[j - 1] * Q[j - 1] if j else 0.0)
        for _ in range(2):         # twice is enough (Kahan-Parlett) to keep Q orthonormal to machine precision
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        if beta[j] <= 1e-12 * abs(alpha[j]) or j == steps - 1:
            return alpha[: j + 1], beta[:j], Q[: j + 1]
        q = w / beta[j]
    raise AssertionError("unreachable")


@dataclass
class RitzBasis:
    """Ritz pairs (ascending values; vectors as rows) and the fingerprint of their matrix."""

    values: np.ndarray
    vectors: np.ndarray
    fingerprint: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_matrix(cls, A: Any, steps: int = 1000, seed: int = 0, progress: Any = None) -> RitzBasis:
        """Lanczos on ``A`` (``steps`` = the paper's m), Ritz values below 1e-8 dropped."""
        alpha, beta, Q = lanczos(A, steps, seed)
        values, Y = eigh_tridiagonal(alpha, beta)
        keep = values > MIN_RITZ_VALUE
        vectors = (Y[:, keep].T @ Q).astype(np.float32)
        return cls(values[keep], vectors, matrix_fingerprint(A), {"steps": len(alpha), "seed": seed})

    @property
    def num_low(self) -> int:
        """Modes weighted 9x: the lowest ``m/2 + m/20`` (the paper: m/2 + 500 of m = 10000)."""
        m = len(self.values)
        return min(m, m // 2 + m // 20)

    def sample(self, count: int, rng: np.random.Generator, low_weight: float = 9.0) -> np.ndarray:
        """``count`` unit right-hand sides ``sum_i c_i v_i`` (rows), float32."""
        c = rng.standard_normal((count, len(self.values))).astype(np.float32)
        c[:, : self.num_low] *= low_weight
        b = c @ self.vectors
        return b / np.linalg.norm(b, axis=1, keepdims=True)

    def save(self, path: str | Path, **attrs: Any) -> Path:
        """Write HDF5 (atomically): datasets ``values``, ``vectors``; attributes ``fingerprint`` and ``attrs``."""
        import h5py

        from .. import __version__

        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("values", data=self.values)
            f.create_dataset("vectors", data=self.vectors, compression="gzip", compression_opts=1)
            f.attrs["fingerprint"] = self.fingerprint
            f.attrs["neuralpde_version"] = __version__
            for key, value in {**self.attrs, **attrs}.items():
                f.attrs[key] = value
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None) -> RitzBasis:
        """Read a dataset; with ``fingerprint`` refuse one made for another matrix.

        Raises:
            SolverError: the file's matrix fingerprint differs from ``fingerprint``.
        """
        import h5py

        with h5py.File(path, "r") as f:
            stored = str(f.attrs["fingerprint"])
            if fingerprint is not None and stored != fingerprint:
                raise SolverError(f"{path} holds Ritz vectors of another matrix (fingerprint {stored}, "
                                  f"expected {fingerprint})", field="method.data",
                                  fix="delete the file so the dataset is rebuilt for this system")
            attrs = {k: v for k, v in f.attrs.items() if k != "fingerprint"}
            return cls(f["values"][()], f["vectors"][()], stored, attrs)
