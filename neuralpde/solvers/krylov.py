"""Classical Krylov baselines in one harness: CG, Jacobi-PCG, IC(0)-PCG and AMG-PCG.

Every solver returns a :class:`LinearSolveReport` (iterations, residual history, times), the same
record :func:`neuralpde.solvers.dcdm.dcdm` returns, so the baselines and DCDM compare one to one.
All stop on ``||r|| <= max(rtol * ||b||, atol)`` starting from ``x0 = 0``.

    >>> import scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
    >>> rep = pcg(A, np.ones(50), rtol=1e-8)
    >>> rep.converged, rep.iterations <= 25          # CG on a 1D Laplacian with a symmetric RHS
    (True, True)
    >>> pcg(A, np.ones(50), preconditioner("ic0", A), rtol=1e-8).iterations    # IC(0) is exact for a tridiagonal A
    1

IC(0) and AMG come from PETSc (``icc``, hypre BoomerAMG) through petsc4py when dolfinx is installed,
else from a Python IC(0) factor with scipy triangular solves and pyamg smoothed aggregation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import SolverError

Preconditioner = Callable[[np.ndarray], np.ndarray]

#: the baselines the benchmark and the method compare against
BASELINES = ("cg", "jacobi", "ic0", "amg")


@dataclass
class LinearSolveReport:
    """One linear solve.

    Attributes:
        method: ``cg``, ``jacobi``, ``ic0``, ``amg``, ``sgs``, ``dcdm`` ...
        x: the solution.
        iterations: iterations done (0 when ``b`` already met the tolerance).
        converged: whether the tolerance was met within ``max_it``.
        residuals: ``||r_k||`` for ``k = 0 .. iterations`` (``r_0 = b``).
        time_s: seconds of the iteration; ``setup_s``: seconds to build the preconditioner or load a network.
        info: anything method-specific (backend of the preconditioner, network cost per iteration ...).
    """

    method: str
    x: np.ndarray
    iterations: int
    converged: bool
    residuals: list[float]
    time_s: float
    setup_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def relative_residual(self) -> float:
        return self.residuals[-1] / self.residuals[0] if self.residuals[0] > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able figures (no vectors)."""
        return {"method": self.method, "iterations": self.iterations, "converged": self.converged,
                "relative_residual": self.relative_residual, "time_s": self.time_s, "setup_s": self.setup_s,
                **self.info}


def check_system(A: Any, b: np.ndarray | None = None, *, field: str = "A") -> sp.csr_matrix:
    """``A`` as CSR after checking that it is square, finite, symmetric and has a positive diagonal.

    Raises:
        SolverError: a non-square, non-finite or non-symmetric matrix, a non-positive diagonal entry
            (so ``A`` is not SPD), or a right-hand side of the wrong length.
    """
    A = sp.csr_matrix(A, dtype=float)
    if A.shape[0] != A.shape[1]:
        raise SolverError(f"the matrix is not square ({A.shape[0]}x{A.shape[1]})", field=field,
                          fix="pass the square system matrix with the Dirichlet rows and columns removed")
    if not np.all(np.isfinite(A.data)):
        raise SolverError("the matrix contains NaN or Inf", field=field, fix="check the coefficients")
    scale = abs(A).max() if A.nnz else 0.0
    if scale == 0.0:
        raise SolverError("the matrix is zero", field=field, fix="check the assembly")
    asym = abs(A - A.T).max() if A.nnz else 0.0
    if asym > 1e-10 * scale:
        raise SolverError(f"the matrix is not symmetric (max |A - A^T| = {asym:.2e}); CG and DCDM need SPD",
                          field=field, fix="use a symmetric (self-adjoint) problem, or a direct solver")
    if A.diagonal().min() <= 0:
        raise SolverError("the matrix has a non-positive diagonal entry, so it is not SPD", field=field,
                          fix="check the sign of k and c, and that each free dof has a Dirichlet path")
    if b is not None and np.shape(b) != (A.shape[0],):
        raise SolverError(f"the right-hand side has shape {np.shape(b)}, expected ({A.shape[0]},)",
                          field="b", fix="pass b on the free dofs of the same system")
    return A


def not_spd(curvature: float, iteration: int) -> SolverError:
    """The error both CG and DCDM raise when ``p^T A p <= 0`` shows the matrix is not positive definite."""
    return SolverError(f"p^T A p = {curvature:.3e} <= 0 at iteration {iteration}: the matrix is not positive "
                       "definite", field="A", fix="CG and DCDM need an SPD matrix; check the coefficients' signs")


def start(b: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float], float]:
    """The common start of the Krylov loops here: ``(b, x0 = 0, r0 = b, [||r0||], stopping norm)``, the stopping
    norm being ``max(rtol ||b||, atol)`` on the true residual."""
    b = np.asarray(b, dtype=float)
    norms = [float(np.linalg.norm(b))]
    return b, np.zeros_like(b), b.copy(), norms, max(rtol * norms[0], atol)


def pcg(A: Any, b: np.ndarray, M: Preconditioner | None = None, *, rtol: float = 1e-6, atol: float = 0.0,
        max_it: int = 1000, method: str | None = None, setup_s: float = 0.0) -> LinearSolveReport:
    """Preconditioned CG from ``x0 = 0`` with the recursive residual (as scipy's ``cg``).

    Args:
        A: SPD matrix; b: right-hand side; M: ``r -> M^{-1} r`` (SPD) or ``None`` for plain CG.
        rtol, atol: stop when ``||r|| <= max(rtol * ||b||, atol)``.
        max_it: iteration limit; method: the name in the report.

    Returns:
        The :class:`LinearSolveReport` (``converged=False`` when ``max_it`` was reached).
    """
    A = check_system(A, b)
    t0 = time.perf_counter()
    b, x, r, norms, target = start(b, rtol, atol)
    z = M(r) if M else r
    p = z.copy()
    rz = float(r @ z)
    k = 0
    while norms[-1] > target and k < max_it:
        Ap = A @ p
        pAp = float(p @ Ap)
        if pAp <= 0:
            raise not_spd(pAp, k)
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        k += 1
        norms.append(float(np.linalg.norm(r)))
        if norms[-1] <= target:
            break
        z = M(r) if M else r
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    return LinearSolveReport(method or ("cg" if M is None else "pcg"), x, k, norms[-1] <= target, norms,
                             time.perf_counter() - t0, setup_s)


def solve(A: Any, b: np.ndarray, method: str = "cg", *, rtol: float = 1e-6, atol: float = 0.0, max_it: int = 1000,
          backend: str = "auto") -> LinearSolveReport:
    """A baseline by name: ``cg``, ``jacobi``, ``ic0``, ``amg`` or ``sgs`` (symmetric Gauss-Seidel)."""
    A = check_system(A, b)
    t0 = time.perf_counter()
    M, used = (None, "numpy") if method == "cg" else _preconditioner(method, A, backend)
    rep = pcg(A, b, M, rtol=rtol, atol=atol, max_it=max_it, method=method, setup_s=time.perf_counter() - t0)
    rep.info["backend"] = used
    return rep


def preconditioner(name: str, A: Any, backend: str = "auto") -> Preconditioner:
    """``r -> M^{-1} r`` for ``jacobi``, ``ic0``, ``amg`` or ``sgs``; ``backend``: ``auto``, ``petsc`` or ``scipy``."""
    return _preconditioner(name, check_system(A), backend)[0]


def _preconditioner(name: str, A: sp.csr_matrix, backend: str) -> tuple[Preconditioner, str]:
    if name == "jacobi":
        inv = 1.0 / A.diagonal()
        return (lambda r: inv * r), "numpy"
    if name == "sgs":
        return _sgs(A), "scipy"
    if name not in ("ic0", "amg"):
        raise SolverError(f"unknown baseline {name!r}", field="method.baselines",
                          fix="use cg, jacobi, ic0, amg or sgs")
    if backend == "petsc" or (backend == "auto" and _have_petsc()):
        return _petsc_pc(A, "icc" if name == "ic0" else "hypre"), "petsc"
    if name == "ic0":
        return _ic0_scipy(A), "scipy"
    import pyamg

    ml = pyamg.smoothed_aggregation_solver(A)
    op = ml.aspreconditioner(cycle="V")
    return op.matvec, "pyamg"


def _have_petsc() -> bool:
    from .fem import compat

    if not compat.have_dolfinx():
        return False
    try:
        import petsc4py  # noqa: F401
    except ImportError:
        return False
    return True


def _petsc_pc(A: sp.csr_matrix, kind: str) -> Preconditioner:
    from petsc4py import PETSc

    comm = PETSc.COMM_SELF
    mat = PETSc.Mat().createAIJ(size=A.shape, csr=(A.indptr.astype(PETSc.IntType), A.indices.astype(PETSc.IntType),
                                                   A.data), comm=comm)
    mat.assemble()
    pc = PETSc.PC().create(comm)
    pc.setOperators(mat)
    pc.setType(kind)
    if kind == "hypre":
        pc.setHYPREType("boomeramg")
    pc.setUp()
    x, y = mat.createVecs()

    def apply(r: np.ndarray) -> np.ndarray:
        x.array[:] = r
        pc.apply(x, y)
        return y.array.copy()

    apply.petsc_objects = (pc, mat, x, y)  # keep them alive as long as the callable
    return apply


def ic0_factor(A: sp.csr_matrix) -> sp.csr_matrix:
    """Lower factor ``L`` of the zero-fill incomplete Cholesky ``A ~ L L^T`` (pattern of ``tril(A)``).

    Raises:
        SolverError: a non-positive pivot (the factorisation breaks down: ``A`` is not an M-matrix-like SPD).
    """
    low = sp.tril(A, format="csr")
    low.sort_indices()
    indptr, indices, data = low.indptr, low.indices, low.data.copy()
    rows: list[dict[int, float]] = []
    for i in range(A.shape[0]):
        cols, vals = indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]]
        row: dict[int, float] = {}
        for c, v in zip(cols[:-1], vals[:-1], strict=True):   # strictly lower part, ascending columns
            rk = rows[c]
            s = v - sum(lv * rk.get(j, 0.0) for j, lv in row.items())
            row[int(c)] = s / rk[int(c)]
        pivot = vals[-1] - sum(v * v for v in row.values())
        if cols[-1] != i or pivot <= 0:
            raise SolverError(f"IC(0) breaks down at row {i} (pivot {pivot:.3e})", field="A",
                              fix="use the jacobi or amg baseline for this matrix")
        row[i] = float(np.sqrt(pivot))
        rows.append(row)
        data[indptr[i]:indptr[i + 1]] = [row[int(c)] for c in cols]
    return sp.csr_matrix((data, indices, indptr), shape=A.shape)


def _ic0_scipy(A: sp.csr_matrix) -> Preconditioner:
    from scipy.sparse.linalg import spsolve_triangular

    L = ic0_factor(A)
    LT = L.T.tocsr()
    return lambda r: spsolve_triangular(LT, spsolve_triangular(L, r, lower=True), lower=False)


def _sgs(A: sp.csr_matrix) -> Preconditioner:
    """Symmetric Gauss-Seidel: ``M = (D + L) D^{-1} (D + U)``, SPD for SPD ``A``."""
    from scipy.sparse.linalg import spsolve_triangular

    lower, upper = sp.tril(A, format="csr"), sp.triu(A, format="csr")
    d = A.diagonal()
    return lambda r: spsolve_triangular(upper, d * spsolve_triangular(lower, r, lower=True), lower=False)
