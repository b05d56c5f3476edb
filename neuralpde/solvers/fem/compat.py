"""Every difference between the FEniCSx versions we support (0.5.2 on Debian 12, 0.8-0.10), in one place.

Nothing else in the package looks at ``dolfinx.__version__``; code calls these helpers instead.

    >>> have_dolfinx() in (True, False)
    True
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

# dolfinx numbers quadrilateral and hexahedron vertices in tensor-product order, VTK goes around
_VTK_TO_DOLFINX = {"quadrilateral": [0, 1, 3, 2], "hexahedron": [0, 1, 3, 2, 4, 5, 7, 6]}


@functools.lru_cache(maxsize=1)
def have_dolfinx() -> bool:
    """Whether dolfinx (with petsc4py and mpi4py) imports."""
    try:
        import dolfinx  # noqa: F401
        import dolfinx.fem.petsc  # noqa: F401
        from mpi4py import MPI  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def version() -> tuple[int, int]:
    import dolfinx

    major, minor = dolfinx.__version__.split(".")[:2]
    return int(major), int(minor)


def function_space(msh: Any, element: tuple[str, int]) -> Any:
    """A scalar Lagrange space: ``fem.FunctionSpace`` (0.5-0.7) or ``fem.functionspace`` (0.8+)."""
    from dolfinx import fem

    if hasattr(fem, "functionspace"):
        return fem.functionspace(msh, element)
    return fem.FunctionSpace(msh, element)


def vector_function_space(msh: Any, degree: int, dim: int) -> Any:
    """A Lagrange space with ``dim`` components: ``VectorFunctionSpace`` (0.5-0.7) or a shaped element (0.8+)."""
    from dolfinx import fem

    if hasattr(fem, "functionspace"):
        return fem.functionspace(msh, ("Lagrange", degree, (dim,)))
    return fem.VectorFunctionSpace(msh, ("Lagrange", degree), dim=dim)


def coordinate_element(cell_type: str, gdim: int) -> Any:
    """The P1 vector element describing the geometry, as ``create_mesh`` wants it."""
    import ufl

    if version() >= (0, 8):
        import basix.ufl

        return ufl.Mesh(basix.ufl.element("Lagrange", cell_type, 1, shape=(gdim,)))
    return ufl.Mesh(ufl.VectorElement("Lagrange", ufl.Cell(cell_type, geometric_dimension=gdim), 1))


def create_mesh(comm: Any, mesh: Any) -> Any:
    """A distributed dolfinx mesh from a :class:`~neuralpde.meshes.Mesh` held on every rank.

    Rank 0 hands over all cells and points; dolfinx partitions them. The cells are handed over
    sorted by their lowest vertex number: dolfinx builds its topology markedly faster from cells in
    a local order (about 30% faster for :func:`~neuralpde.meshes.builtin.rectangle`, whose two
    triangles of a square lie in separate halves of the cell array). Only dolfinx's internal cell
    numbering depends on the order; it renumbers cells anyway.
    """
    from dolfinx import mesh as dmesh

    cells = mesh.cells
    if mesh.cell_type in _VTK_TO_DOLFINX:
        cells = cells[:, _VTK_TO_DOLFINX[mesh.cell_type]]
    if comm.rank != 0:
        cells = np.empty((0, cells.shape[1]), dtype=np.int64)
        points = np.empty((0, mesh.gdim))
    else:
        cells = cells[np.argsort(cells.min(axis=1), kind="stable")]
        points = mesh.points
    domain = coordinate_element(mesh.cell_type, mesh.gdim)
    return dmesh.create_mesh(comm, np.ascontiguousarray(cells, dtype=np.int64), np.ascontiguousarray(points), domain)


def petsc_vector(u: Any) -> Any:
    """The PETSc vector behind a Function: ``u.vector`` (<= 0.8) or ``u.x.petsc_vec`` (0.9+)."""
    x = u.x
    return x.petsc_vec if hasattr(x, "petsc_vec") else u.vector


def create_petsc_vector(form: Any) -> Any:
    """A PETSc vector for a compiled linear form (0.10 takes the form's function space)."""
    from dolfinx.fem import petsc

    try:
        return petsc.create_vector(form)
    except (TypeError, AttributeError):
        return petsc.create_vector(form.function_spaces[0])


def vtk_mesh(V: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``plot.create_vtk_mesh`` (0.5-0.6) or ``plot.vtk_mesh`` (0.7+)."""
    from dolfinx import plot

    fn = getattr(plot, "vtk_mesh", None) or plot.create_vtk_mesh
    return fn(V)


def meshtags(msh: Any, dim: int, entities: np.ndarray, values: np.ndarray) -> Any:
    """Mesh tags on local entities (sorted, as dolfinx requires)."""
    from dolfinx import mesh as dmesh

    order = np.argsort(entities)
    return dmesh.meshtags(msh, dim, np.asarray(entities, dtype=np.int32)[order],
                          np.asarray(values, dtype=np.int32)[order])


def gmsh_model_to_mesh(model: Any, comm: Any, rank: int = 0, gdim: int = 2) -> tuple[Any, Any, Any]:
    """``io.gmshio.model_to_mesh`` (0.5-0.9, a tuple) or ``io.gmsh.model_to_mesh`` (0.10, ``MeshData``).

    Returns:
        ``(mesh, cell_tags, facet_tags)``.
    """
    from dolfinx import io

    module = getattr(io, "gmsh", None) or io.gmshio
    out = module.model_to_mesh(model, comm, rank, gdim=gdim)
    if isinstance(out, tuple):
        return out[0], out[1], out[2]
    return out.mesh, out.cell_tags, out.facet_tags


def nonlinear_solve(F: Any, u: Any, bcs: list, rtol: float = 1e-10, max_it: int = 50) -> int:
    """Newton's method on ``F(u; v) = 0``; returns the number of Newton iterations.

    0.5-0.9 use ``nls.petsc.NewtonSolver``; 0.10 solves through SNES inside ``NonlinearProblem``.
    """
    from dolfinx.fem import petsc

    if version() >= (0, 10):
        problem = petsc.NonlinearProblem(F, u, bcs=bcs, petsc_options_prefix="neuralpde_newton_",
                                         petsc_options={"snes_type": "newtonls", "snes_rtol": rtol,
                                                        "snes_max_it": max_it, "ksp_type": "preonly",
                                                        "pc_type": "lu"})
        problem.solve()
        snes = problem.solver
        if snes.getConvergedReason() <= 0:
            raise RuntimeError(f"Newton did not converge (SNES reason {snes.getConvergedReason()})")
        return snes.getIterationNumber()
    import dolfinx.nls.petsc  # 0.9 no longer imports the submodule with dolfinx.nls

    solver = dolfinx.nls.petsc.NewtonSolver(u.function_space.mesh.comm, petsc.NonlinearProblem(F, u, bcs=bcs))
    solver.rtol, solver.max_it = rtol, max_it
    iterations, converged = solver.solve(u)
    if not converged:
        raise RuntimeError("Newton did not converge")
    return int(iterations)


def form(expr: Any) -> Any:
    """``fem.form`` with the JIT compiler's INFO chatter (setuptools/cffi build logs) muted."""
    import logging

    from dolfinx import fem

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        return fem.form(expr)
    finally:
        logging.disable(previous)
