"""The L-shaped domain ``(-1, 1)^2 \\ [0, 1) x (-1, 0]`` meshed with gmsh.

The re-entrant corner (interior angle ``3*pi/2``) sits at the origin, where solutions of the
Poisson problem have the singular behaviour ``r^(2/3)``; the mesh is graded toward it::

    >>> from neuralpde.meshes.lshape import lshape_msh
    >>> lshape_msh("lshape.msh", h=0.1)                           # doctest: +SKIP
    PosixPath('lshape.msh')

Physical groups: the surface ``"domain"`` (tag 3), the curves ``"outer"`` (tag 1: the four edges
away from the origin) and ``"corner"`` (tag 2: the edges ``(0,0)-(1,0)`` and ``(0,0)-(0,-1)``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from ..errors import BackendUnavailable, MeshError

#: physical tags of the groups (distinct across dimensions so that a tag alone names a group)
OUTER, CORNER, DOMAIN = 1, 2, 3


def lshape_msh(path: str | os.PathLike, h: float = 0.1) -> Path:
    """Mesh the L-shaped domain with triangles and write it as gmsh 4.1 ASCII, atomically.

    Args:
        path: destination ``.msh`` file (missing parent directories are created).
        h: mesh size away from the corner; the size is ``h/8`` at the origin and grows linearly to
            ``h`` at distance 0.5.

    Returns:
        The path written.

    Raises:
        BackendUnavailable: gmsh is not installed.
        MeshError: ``h`` is not positive.
    """
    try:
        import gmsh
    except ImportError as exc:  # gmsh is an optional dependency (extra "fem")
        raise BackendUnavailable("gmsh is not installed",
                                 fix="pip install gmsh, or use the shipped meshes/lshape.msh") from exc
    if not h > 0:
        raise MeshError(f"mesh size h={h} must be positive", fix="use e.g. h=0.1")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)

    # gmsh is process-global: only initialize/finalize it if nobody else already has
    owner = not gmsh.isInitialized()
    if owner:
        # gmsh installs a SIGINT handler, which Python only allows in the main thread
        gmsh.initialize(readConfigFiles=False,
                        interruptible=threading.current_thread() is threading.main_thread())
    # a temporary directory (not mkstemp, whose 0600 mode would stick to the file) next to dest,
    # so that os.replace is atomic; gmsh picks the format from the ".msh" suffix
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp = tmpdir / dest.name
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("lshape")
        _build(gmsh, h)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("Mesh.Binary", 0)
        gmsh.write(str(tmp))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        if owner:
            gmsh.finalize()
        else:
            gmsh.model.remove()
    return dest


def _build(gmsh, h: float) -> None:
    """Geometry, physical groups, size field and the 2D mesh of the current gmsh model."""
    geo = gmsh.model.geo
    # counter-clockwise, starting at the re-entrant corner
    xy = [(0, 0), (1, 0), (1, 1), (-1, 1), (-1, -1), (0, -1)]
    pts = [geo.addPoint(x, y, 0, h) for x, y in xy]
    lines = [geo.addLine(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
    loop = geo.addCurveLoop(lines)
    surface = geo.addPlaneSurface([loop])
    geo.synchronize()

    # lines[0] = (0,0)-(1,0) and lines[5] = (0,-1)-(0,0) meet at the origin
    gmsh.model.addPhysicalGroup(1, lines[1:5], OUTER, name="outer")
    gmsh.model.addPhysicalGroup(1, [lines[0], lines[5]], CORNER, name="corner")
    gmsh.model.addPhysicalGroup(2, [surface], DOMAIN, name="domain")

    # grade the mesh toward the singularity: size h/8 at the origin, h from distance 0.5 on
    field = gmsh.model.mesh.field
    dist = field.add("Distance")
    field.setNumbers(dist, "PointsList", [pts[0]])
    thr = field.add("Threshold")
    field.setNumber(thr, "InField", dist)
    field.setNumber(thr, "SizeMin", h / 8)
    field.setNumber(thr, "SizeMax", h)
    field.setNumber(thr, "DistMin", 0.0)
    field.setNumber(thr, "DistMax", 0.5)
    field.setAsBackgroundMesh(thr)
    # let the field alone decide the size (gmsh's advice for background fields)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("General.NumThreads", 1)  # reproducible meshes
    gmsh.model.mesh.generate(2)
