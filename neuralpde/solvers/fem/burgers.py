"""A self-contained transient P1 reference for 2D viscous Burgers (scikit-fem), on any triangle mesh.

Semi-implicit backward Euler: the convection velocity is the previous step's ``u``, so each step is one linear
solve ``(M/dt + nu K + C(u^n)) u^{n+1} = M u^n / dt`` with ``C(w)_ij = int w (d_x phi_j + d_y phi_j) phi_i``;
Dirichlet data on the whole boundary (the exact solution, or a given expression)::

    >>> from neuralpde.meshes import rectangle
    >>> from neuralpde.pde.burgers import Burgers, travelling_wave
    >>> pde = Burgers(nu=0.05, t_end=0.2, exact=travelling_wave(nu=0.05))
    >>> sol = solve_burgers(pde, rectangle(cells=[16, 16]), dt=0.01)
    >>> bool(sol.field.errors(pde.exact, t=0.2)["rel_l2"] < 5e-3), len(sol.snapshots)
    (True, 2)
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...errors import CaseError, SolverError
from ...meshes.mesh import Mesh
from .base import FEMSolution, num_steps
from .fields import FEField


def solve_burgers(pde: Any, mesh: Mesh, *, dt: float = 0.01, boundary: Any = None, save_every: int = 0,
                  advance: Any = None) -> FEMSolution:
    """Solve :class:`~neuralpde.pde.burgers.Burgers` on ``mesh`` up to ``pde.t_end``.

    Args:
        pde: the Burgers PDE (``nu``, ``initial``, ``t_end``, ``exact``).
        mesh: a triangle mesh (uniform or moved).
        dt: time step (rounded so the steps land on ``t_end``).
        boundary: Dirichlet data (an expression in x, y, t); default the PDE's exact solution.
        save_every: keep a snapshot every N steps (0: only the first and last).
        advance: optional progress callback ``advance(n=1, **postfix)``.

    Returns:
        An :class:`FEMSolution` (``backend="scikit-fem (burgers)"``) with the final field and the snapshots.
    """
    import scipy.sparse.linalg as spla
    import skfem
    from skfem.models.poisson import laplace, mass

    g = boundary if boundary is not None else pde.exact
    if g is None:
        raise CaseError("Burgers needs boundary data: an exact solution or a boundary expression",
                        field="boundary", fix="add `exact:` to the case")
    if dt <= 0 or dt > pde.t_end:
        raise CaseError(f"dt must be in (0, t_end], got {dt}", field="reference.time.dt",
                        fix=f"e.g. dt: {pde.t_end / 100:g}")
    start = time.perf_counter()
    field = FEField(mesh, 1, np.zeros(mesh.num_points))
    basis = field.basis(4)
    M = mass.assemble(basis)
    K = laplace.assemble(basis)

    @skfem.BilinearForm
    def convection(u, v, w):
        return w.w * (u.grad[0] + u.grad[1]) * v

    boundary_dofs = basis.get_dofs().all()
    interior = basis.complement_dofs(boundary_dofs)
    xy = basis.doflocs
    u = np.asarray(pde.initial.numpy(xy, t=0.0), dtype=float)
    steps = num_steps(pde.t_end, dt)
    dt = pde.t_end / steps
    snapshots = [(0.0, u.copy())]
    for n in range(1, steps + 1):
        t = n * dt
        A = (M / dt + pde.nu * K + convection.assemble(basis, w=basis.interpolate(u))).tocsr()
        rhs = M @ u / dt
        new = np.zeros_like(u)
        new[boundary_dofs] = g.numpy(xy[:, boundary_dofs], t=t)
        rhs = rhs - A @ new
        new[interior] = spla.spsolve(A[interior][:, interior].tocsc(), rhs[interior])
        if not np.all(np.isfinite(new)):
            raise SolverError(f"the Burgers solution became non-finite at step {n} (t = {t:g})",
                              field="reference.time.dt", fix="reduce dt or refine the mesh")
        u = new
        if (save_every and n % save_every == 0) or n == steps:
            snapshots.append((t, u.copy()))
        if advance is not None:
            advance(1)
    elapsed = time.perf_counter() - start
    return FEMSolution(field=field.with_values(u), backend="scikit-fem (burgers)", num_dofs=basis.N,
                       timings={"mesh": 0.0, "assemble": 0.0, "solve": elapsed, "total": elapsed},
                       iterations=steps, snapshots=snapshots, linear_solver="lu")
