"""Finite-element fields in one canonical layout, and the error norms computed from them.

Whatever produced a field (dolfinx in parallel, scikit-fem, a neural network evaluated at the
nodes), it is stored as Lagrange degrees of freedom in scikit-fem's numbering on a
:class:`~neuralpde.meshes.Mesh`: the first ``mesh.num_points`` values are the vertex values.

    >>> import numpy as np
    >>> from neuralpde.meshes import rectangle
    >>> from neuralpde.pde.expressions import Expression
    >>> exact = Expression.parse("x*y")
    >>> u = FEField.interpolate(rectangle(cells=[4, 4]), 2, exact)   # x*y lies in P2: reproduced exactly
    >>> bool(u.errors(exact)["rel_l2"] < 1e-12)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ...meshes.convert import to_skfem
from ...meshes.mesh import Mesh

_ELEMENTS = {
    ("interval", 1): "ElementLineP1", ("interval", 2): "ElementLineP2",
    ("triangle", 1): "ElementTriP1", ("triangle", 2): "ElementTriP2",
    ("quadrilateral", 1): "ElementQuad1", ("quadrilateral", 2): "ElementQuad2",
    ("tetrahedron", 1): "ElementTetP1", ("tetrahedron", 2): "ElementTetP2",
    ("hexahedron", 1): "ElementHex1", ("hexahedron", 2): "ElementHex2",
}


def skfem_element(cell_type: str, degree: int):
    """The scikit-fem Lagrange element of ``degree`` on ``cell_type``."""
    import skfem

    from ...errors import CaseError

    name = _ELEMENTS.get((cell_type, degree))
    if name is None:
        raise CaseError(f"no Lagrange element of degree {degree} on {cell_type} cells", field="degree",
                        fix="use degree 1 or 2")
    return getattr(skfem, name)()


@dataclass
class FEField:
    """Lagrange field of ``degree`` on ``mesh``; ``values`` in scikit-fem's dof numbering."""

    mesh: Mesh
    degree: int
    values: np.ndarray
    name: str = "u"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def interpolate(cls, mesh: Mesh, degree: int, expr: Any, t: float = 0.0, name: str = "u") -> FEField:
        """Nodal interpolant of an expression (anything with ``.numpy(coords, t)``)."""
        empty = cls(mesh, degree, np.zeros(0), name)
        return cls(mesh, degree, np.asarray(expr.numpy(empty.doflocs.T, t=t), dtype=float), name)

    def basis(self, intorder: int | None = None):
        """The scikit-fem basis (cached per quadrature order)."""
        import skfem

        intorder = intorder or 2 * self.degree + 3
        if intorder not in self._cache:
            self._cache[intorder] = skfem.Basis(self.skfem_mesh, skfem_element(self.mesh.cell_type, self.degree),
                                                intorder=intorder)
        return self._cache[intorder]

    @cached_property
    def skfem_mesh(self):
        return to_skfem(self.mesh)

    @property
    def doflocs(self) -> np.ndarray:
        """Coordinates of the degrees of freedom, shape ``(n_dofs, gdim)``."""
        return self.basis().doflocs.T

    @property
    def num_dofs(self) -> int:
        return self.basis().N

    @property
    def vertex_values(self) -> np.ndarray:
        return self.values[: self.mesh.num_points]

    def with_values(self, values: np.ndarray, name: str | None = None) -> FEField:
        """A field on the same mesh and space (sharing the cached bases)."""
        return FEField(self.mesh, self.degree, np.asarray(values, dtype=float), name or self.name, self._cache)

    def probe(self, points: np.ndarray) -> np.ndarray:
        """Values at arbitrary points ``(n, gdim)`` inside the mesh."""
        return self.basis().probes(np.ascontiguousarray(points.T)) @ self.values

    def on(self, target: FEField) -> FEField:
        """This field interpolated into ``target``'s space (identity when the spaces coincide)."""
        if self.same_space(target):
            return target.with_values(self.values, self.name)
        return target.with_values(self.probe(target.doflocs), self.name)

    def same_space(self, other: FEField) -> bool:
        return (self.degree == other.degree and self.mesh.cell_type == other.mesh.cell_type
                and self.mesh.points.shape == other.mesh.points.shape
                and self.mesh.cells.shape == other.mesh.cells.shape
                and np.array_equal(self.mesh.cells, other.mesh.cells)
                and np.allclose(self.mesh.points, other.mesh.points, rtol=0, atol=1e-14))

    def errors(self, exact: Any, t: float = 0.0) -> dict[str, float]:
        """Errors against an exact solution with a high-order quadrature.

        Returns:
            ``l2``, ``rel_l2``, ``h1`` (semi-norm of the error), ``rel_h1``, ``linf`` (at the dofs).
        """
        import skfem

        basis = self.basis(2 * self.degree + 4)
        coords = ("x", "y", "z")[: self.mesh.gdim]
        grads = [exact.diff(c) for c in coords]
        uh = basis.interpolate(self.values)

        @skfem.Functional
        def sq_err(w):
            return (w.uh - exact.numpy(w.x, t=t)) ** 2

        @skfem.Functional
        def sq_exact(w):
            return exact.numpy(w.x, t=t) ** 2

        @skfem.Functional
        def sq_grad_err(w):
            return sum((w.uh.grad[i] - g.numpy(w.x, t=t)) ** 2 for i, g in enumerate(grads))

        @skfem.Functional
        def sq_grad_exact(w):
            return sum(g.numpy(w.x, t=t) ** 2 for g in grads)

        l2 = float(np.sqrt(sq_err.assemble(basis, uh=uh)))
        h1 = float(np.sqrt(sq_grad_err.assemble(basis, uh=uh)))
        norm = float(np.sqrt(sq_exact.assemble(basis)))
        gnorm = float(np.sqrt(sq_grad_exact.assemble(basis)))
        linf = float(np.max(np.abs(self.values - exact.numpy(self.doflocs.T, t=t))))
        return {"l2": l2, "rel_l2": l2 / norm if norm > 0 else l2, "h1": h1,
                "rel_h1": h1 / gnorm if gnorm > 0 else h1, "linf": linf}

    def difference(self, reference: FEField) -> dict[str, float]:
        """Errors of this field against ``reference`` in the reference's space (mass/stiffness norms)."""
        import skfem
        from skfem.models.poisson import laplace, mass

        mine = self.on(reference)
        order = 2 * reference.degree + 1      # exact for the mass matrix
        basis = reference.basis(order)
        key = ("matrices", order)
        if key not in reference._cache:
            reference._cache[key] = (skfem.asm(mass, basis), skfem.asm(laplace, basis))
        M, K = reference._cache[key]
        err = mine.values - reference.values
        l2 = float(np.sqrt(max(err @ (M @ err), 0.0)))
        ref_l2 = float(np.sqrt(max(reference.values @ (M @ reference.values), 0.0)))
        h1 = float(np.sqrt(max(err @ (K @ err), 0.0)))
        ref_h1 = float(np.sqrt(max(reference.values @ (K @ reference.values), 0.0)))
        return {"l2": l2, "rel_l2": l2 / ref_l2 if ref_l2 > 0 else l2, "h1": h1,
                "rel_h1": h1 / ref_h1 if ref_h1 > 0 else h1,
                "linf": float(np.max(np.abs(err))) if err.size else 0.0}

    def cells_for_output(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Points, cells and meshio cell type to write this field with its full (P2) resolution.

        P1 fields use the mesh as it is. P2 fields on simplices are written as quadratic cells
        (``triangle6``, ``tetra10``, ``line3``) whose extra nodes are the edge dofs, so ParaView
        shows the quadratic field; other P2 fields fall back to vertex values.
        """
        meshio_type = {"interval": "line", "triangle": "triangle", "quadrilateral": "quad",
                       "tetrahedron": "tetra", "hexahedron": "hexahedron"}[self.mesh.cell_type]
        if self.degree == 1 or self.mesh.cell_type not in ("interval", "triangle", "tetrahedron"):
            return self.mesh.points, self.mesh.cells, meshio_type
        quad_type = {"interval": "line3", "triangle": "triangle6", "tetrahedron": "tetra10"}[self.mesh.cell_type]
        return self.doflocs, self.basis().element_dofs.T, quad_type

    def output_values(self) -> np.ndarray:
        """The values matching :meth:`cells_for_output`'s points."""
        pts, _, _ = self.cells_for_output()
        return self.values if len(pts) == len(self.values) else self.vertex_values
