"""Read and write meshes (gmsh ``.msh``, ``.vtu``, ``.xdmf``, ...) through meshio.

:func:`read` turns any file meshio understands into a validated :class:`~neuralpde.meshes.mesh.Mesh`:
the highest-dimensional cells become the cells, gmsh physical groups of the facets become
``facet_tags``/``tag_names``, unused nodes are dropped and a flat z column is removed.
:func:`write` writes atomically, keeping the facet tags so that a ``write`` + ``read`` round trip
returns the same mesh::

    >>> from neuralpde.meshes.io import read, write
    >>> m = read("meshes/lshape.msh")                          # doctest: +SKIP
    >>> sorted(m.tag_names), m.cell_type                       # doctest: +SKIP
    (['corner', 'outer'], 'triangle')
    >>> write(m, "out/lshape.xdmf", point_data={"u": u})       # doctest: +SKIP
    PosixPath('out/lshape.xdmf')

Facet tags in ``.vtu``/``.xdmf`` files written here (the convention :func:`read` understands):
the tagged facets are extra cell blocks of the facet type (``line`` for triangles, ...) and the
integer cell data ``"facet_tag"`` holds their tag (``-1`` on the cells themselves); 1D meshes in
``.xdmf`` instead get the integer point data ``"facet_tag"`` (``-1``: untagged), as meshio cannot
read back vertex cells in a mixed XDMF topology. Tag names are
stored as meshio field data ``{name: [tag, facet_dim]}`` (the same layout gmsh's physical names have
in meshio), as ``<FieldData>`` in ``.vtu`` and as an ``<Information>`` element in ``.xdmf``, which
meshio's readers understand but its writers do not produce. ``.msh`` files are written in the gmsh
2.2 ASCII format with the tags as physical groups.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import meshio
import numpy as np

from ..errors import MeshError, NeuralPDEError
from ..fileio import atomic_output
from .mesh import CELL_TYPES, FACET_TYPES, Mesh

#: meshio cell type name of each neuralpde cell/facet type
_TO_MESHIO = {"vertex": "vertex", "interval": "line", "triangle": "triangle",
              "quadrilateral": "quad", "tetrahedron": "tetra", "hexahedron": "hexahedron"}
_FROM_MESHIO = {v: k for k, v in _TO_MESHIO.items() if k != "vertex"}
_VERTICES_PER_FACET = {"vertex": 1, "interval": 2, "triangle": 3, "quadrilateral": 4}

#: cell data holding the facet tags in .vtu/.xdmf files written by :func:`write`
FACET_TAG_KEY = "facet_tag"
_GMSH_PHYSICAL = "gmsh:physical"

#: formats :func:`write` produces, by suffix
_WRITE_FORMATS = {".vtu": "vtu", ".xdmf": "xdmf", ".msh": "gmsh22"}

_MISSING_FIX = "check the path; relative paths in case files are relative to the case file"


def read(path: str | os.PathLike, *, dim: int | None = None) -> Mesh:
    """Read a mesh file into a validated :class:`Mesh`.

    Args:
        path: a ``.msh`` (gmsh 2.2 or 4.1, ASCII or binary), ``.vtu``, ``.xdmf`` or any other file
            meshio reads.
        dim: geometric dimension of the result. By default trailing coordinate columns that are
            all zero are dropped down to the cells' topological dimension (a gmsh 2D mesh gets
            ``(n, 2)`` points); give ``dim`` to keep (or pad to) that many columns instead.

    Returns:
        The mesh: cells of the single highest-dimensional cell type, facet tags from gmsh physical
        groups (or the ``"facet_tag"`` cell data written by :func:`write`), unused points removed.

    Raises:
        MeshError: the file is missing or unreadable, has no cells, mixes cell types, has
            unsupported (e.g. second-order) cells, or fails :meth:`Mesh.check`.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a mesh file" if p.is_dir() else "mesh file not found"
        raise MeshError(what, file=str(p), fix=_MISSING_FIX)
    m = _meshio_read(p)

    blocks = [(i, b) for i, b in enumerate(m.cells) if len(b.data) > 0]
    if not blocks or max(b.dim for _, b in blocks) == 0:
        raise MeshError("the file has no cells (only points or vertices)", file=str(p),
                        fix="export the volume/surface elements too (gmsh: add a physical group for "
                            "the domain, or set Mesh.SaveAll 1)")
    tdim = max(b.dim for _, b in blocks)
    top = [(i, b) for i, b in blocks if b.dim == tdim]
    cell_type = _cell_type_of({b.type for _, b in top}, str(p))
    cells = np.concatenate([np.asarray(b.data, dtype=np.int64) for _, b in top], axis=0)

    facet_type = _TO_MESHIO[FACET_TYPES[cell_type]]
    facet_tags = _read_facet_tags(m, [(i, b) for i, b in blocks if b.type == facet_type])
    if facet_type == "vertex" and not facet_tags and FACET_TAG_KEY in m.point_data:
        # 1D meshes in .xdmf written by write() carry the tags of their facets (points) as point data
        vertex_tags = np.asarray(m.point_data[FACET_TAG_KEY]).reshape(-1).astype(np.int64)
        facet_tags = {int(t): np.flatnonzero(vertex_tags == t)[:, None]
                      for t in np.unique(vertex_tags) if t >= 0}
    tag_names = _read_tag_names(m.field_data, tdim - 1)
    nvf = _VERTICES_PER_FACET[FACET_TYPES[cell_type]]
    for tag in tag_names.values():
        # every named tag has an entry, possibly empty, so that code may index facet_tags by name
        facet_tags.setdefault(tag, np.zeros((0, nvf), dtype=np.int64))

    points, cells, facet_tags = _drop_unused_points(np.asarray(m.points, dtype=np.float64), cells,
                                                    facet_tags, str(p))
    points = _fit_dimension(points, CELL_TYPES[cell_type][0], dim, str(p))
    mesh = Mesh(points=points, cells=cells, cell_type=cell_type, facet_tags=facet_tags,
                tag_names=tag_names, source=str(p))
    return mesh.check()


def write(mesh: Mesh, path: str | os.PathLike, *, point_data: dict[str, np.ndarray] | None = None,
          cell_data: dict[str, np.ndarray] | None = None) -> Path:
    """Write a mesh (with optional point and cell data) atomically.

    The files are written into a temporary directory next to ``path`` and moved into place with
    :func:`os.replace` only once meshio has finished, so a failed write leaves neither a partial
    file nor a clobbered old one. An ``.xdmf`` file comes with its ``.h5`` data file (same stem).

    Args:
        mesh: the mesh; its facet tags and tag names are written too (see the module docstring).
        path: destination, ``.vtu``, ``.xdmf`` or ``.msh`` (gmsh 2.2 ASCII). Missing parent
            directories are created.
        point_data: arrays of shape ``(num_points, ...)``; in ``.msh`` files 2-component
            vectors get a zero third component (gmsh allows 1, 3 or 9 components).
        cell_data: arrays of shape ``(num_cells, ...)`` (the facet blocks get zeros); not for
            ``.msh`` files, which meshio cannot read back with cell data.

    Returns:
        The path written.

    Raises:
        MeshError: unsupported suffix, data of the wrong length, or meshio failed to write.
    """
    dest = Path(path)
    fmt = _WRITE_FORMATS.get(dest.suffix.lower())
    if fmt is None:
        raise MeshError(f"cannot write mesh files with suffix {dest.suffix!r}", file=str(dest),
                        fix=f"use one of {sorted(_WRITE_FORMATS)}")
    m = _to_meshio(mesh, fmt, point_data or {}, cell_data or {}, str(dest))

    with atomic_output(dest) as tmp:
        try:
            if fmt == "gmsh22":
                meshio.write(tmp, m, file_format=fmt, binary=False)
            else:
                meshio.write(tmp, m, file_format=fmt)
            if mesh.tag_names and fmt != "gmsh22":
                _add_tag_names(tmp, fmt, mesh.tag_names, mesh.tdim - 1)
        except NeuralPDEError:
            raise
        except Exception as exc:
            raise MeshError(f"could not write the mesh: {type(exc).__name__}: {exc}", file=str(dest),
                            fix="check the data arrays (gmsh allows 1, 3 or 9 components), that the "
                                "directory is writable and the disk not full") from exc
    return dest


# --------------------------------------------------------------------------------------------- read


def _meshio_read(p: Path) -> meshio.Mesh:
    """``meshio.read`` without its side effects, trying each format the suffix may mean.

    ``meshio.read`` prints the error of each format it tries and calls ``sys.exit(1)`` when none
    works (meshio 5.3), so the registered readers are called directly; ``.msh`` is tried as gmsh
    before ansys so that a broken gmsh file reports gmsh's error.
    """
    suffixes = ["".join(p.suffixes[i:]).lower() for i in range(len(p.suffixes))]
    formats = [f for ext in suffixes for f in meshio.extension_to_filetypes.get(ext, [])]
    formats.sort(key=lambda f: f != "gmsh")
    if not formats:
        raise MeshError(f"unknown mesh file suffix {''.join(p.suffixes)!r}", file=str(p),
                        fix="use a format meshio reads, e.g. .msh, .vtu or .xdmf")
    readers = getattr(getattr(meshio, "_helpers", None), "reader_map", None)
    if readers is None:
        formats, readers = ["<by suffix>"], {"<by suffix>": meshio.read}
    failures = []
    for fmt in formats:
        try:
            return readers[fmt](str(p))
        # meshio raises anything from ReadError to IndexError on bad input, SystemExit included
        except (Exception, SystemExit) as exc:
            failures.append(f"as {fmt}: {type(exc).__name__}: {exc}".rstrip(": "))
    raise MeshError(f"meshio could not read the file ({'; '.join(failures)})", file=str(p),
                    fix="check that the file is a complete mesh in a format meshio reads "
                        "(.msh 2.2/4.1, .vtu, .xdmf, ...); re-export it from the mesher")


def _cell_type_of(types: set[str], source: str) -> str:
    """The neuralpde cell type of the highest-dimensional blocks, or a MeshError saying why not."""
    if len(types) > 1:
        raise MeshError(f"the mesh mixes cell types {sorted(types)}", file=source,
                        fix="use one cell type, e.g. triangles only (gmsh: Mesh.RecombineAll 0) or "
                            "quadrilaterals only (Mesh.RecombineAll 1, Mesh.SubdivisionAlgorithm 1)")
    (t,) = types
    if t in _FROM_MESHIO:
        return _FROM_MESHIO[t]
    base = t.rstrip("0123456789")
    if base != t and base in _FROM_MESHIO:
        raise MeshError(f"higher-order cells {t!r} are not supported", file=source,
                        fix="write first-order elements (gmsh: Mesh.ElementOrder 1)")
    raise MeshError(f"unsupported cell type {t!r}", file=source,
                    fix=f"use one of {sorted(_FROM_MESHIO)} (meshio names)")


def _read_facet_tags(m: meshio.Mesh, facet_blocks: list) -> dict[int, np.ndarray]:
    """Facets by tag from gmsh physical tags or the ``facet_tag`` cell data of our own files."""
    if _GMSH_PHYSICAL in m.cell_data:
        key, untagged = _GMSH_PHYSICAL, 0  # gmsh writes physical tag 0 for untagged elements
    elif FACET_TAG_KEY in m.cell_data:
        key, untagged = FACET_TAG_KEY, -1
    else:
        return {}
    parts: dict[int, list[np.ndarray]] = {}
    for i, block in facet_blocks:
        tags = np.asarray(m.cell_data[key][i]).reshape(-1).astype(np.int64)
        data = np.asarray(block.data, dtype=np.int64)
        for t in np.unique(tags):
            if t > untagged:
                parts.setdefault(int(t), []).append(data[tags == t])
    return {t: np.concatenate(v, axis=0) for t, v in sorted(parts.items())}


def _read_tag_names(field_data: dict, facet_dim: int) -> dict[str, int]:
    """``{name: tag}`` of the field data entries shaped like gmsh physical names of facets."""
    names = {}
    for name, value in field_data.items():
        v = np.asarray(value).reshape(-1)
        # other producers put arbitrary arrays in field data; only [tag, dim] pairs are names
        if v.size == 2 and np.issubdtype(v.dtype, np.number) and np.all(v == np.round(v)):
            if int(v[1]) == facet_dim:
                names[str(name)] = int(v[0])
    return names


def _drop_unused_points(points: np.ndarray, cells: np.ndarray, facet_tags: dict[int, np.ndarray],
                        source: str) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Remove points no cell uses (gmsh keeps geometry points) and renumber cells and facets."""
    if cells.min() < 0 or cells.max() >= len(points):
        raise MeshError("cells refer to points that do not exist", file=source,
                        fix="re-export the mesh; the file is inconsistent")
    used = np.unique(cells)
    if len(used) == len(points):
        return points, cells, facet_tags
    new_index = np.full(len(points), -1, dtype=np.int64)
    new_index[used] = np.arange(len(used))
    out_tags = {}
    for tag, facets in facet_tags.items():
        renumbered = new_index[facets] if len(facets) else facets
        dangling = (renumbered < 0).any(axis=1) if len(facets) else np.zeros(0, dtype=bool)
        if dangling.any():
            # a facet that touches no cell cannot be a boundary facet of this mesh
            warnings.warn(f"{source}: dropped {int(dangling.sum())} facets of tag {tag} that lie on "
                          "no cell", stacklevel=3)
        out_tags[tag] = renumbered[~dangling]
    return points[used], new_index[cells], out_tags


def _fit_dimension(points: np.ndarray, tdim: int, dim: int | None, source: str) -> np.ndarray:
    """Drop all-zero trailing coordinate columns (down to ``tdim``), or fit to ``dim`` columns."""
    if dim is None:
        gdim = points.shape[1]
        while gdim > tdim and not np.any(points[:, gdim - 1]):
            gdim -= 1
        return points[:, :gdim]
    if not tdim <= dim <= 3:
        raise MeshError(f"dim={dim} does not fit cells of dimension {tdim}", file=source,
                        fix=f"use dim between {tdim} and 3")
    if dim < points.shape[1]:
        if np.any(points[:, dim:]):
            raise MeshError(f"dim={dim} would drop non-zero coordinates", file=source,
                            fix=f"use dim={points.shape[1]} or leave dim unset")
        return points[:, :dim]
    return np.pad(points, ((0, 0), (0, dim - points.shape[1])))


# -------------------------------------------------------------------------------------------- write


def _to_meshio(mesh: Mesh, fmt: str, point_data: dict, cell_data: dict, dest: str) -> meshio.Mesh:
    """The meshio mesh for ``fmt``: cells, one facet block per tag, tags as cell and field data."""
    facet_type = _TO_MESHIO[FACET_TYPES[mesh.cell_type]]
    tagged = [(t, f) for t, f in sorted(mesh.facet_tags.items()) if len(f)]
    out_point_data = {k: np.asarray(v) for k, v in point_data.items()}
    if fmt == "xdmf" and facet_type == "vertex":
        # meshio 5.3 writes vertex cells in a mixed XDMF topology in a layout its reader misparses,
        # so the facets (points) of 1D meshes get their tag as point data instead
        out_point_data[FACET_TAG_KEY] = _vertex_tags(mesh.num_points, tagged, dest)
        tagged = []
    blocks = [(_TO_MESHIO[mesh.cell_type], mesh.cells)] + [(facet_type, f) for _, f in tagged]
    # all formats get 3D points: VTU requires them, gmsh too, and read() drops a zero column again
    points = np.pad(mesh.points, ((0, 0), (0, 3 - mesh.gdim))) if mesh.gdim < 3 else mesh.points

    out_cell_data: dict[str, list[np.ndarray]] = {}
    field_data: dict[str, np.ndarray] = {}
    if fmt == "gmsh22":
        if any(t <= 0 for t, _ in tagged):
            raise MeshError("gmsh physical tags must be positive", file=dest,
                            fix="renumber the facet tags from 1, or write .vtu/.xdmf")
        # the cells get their own physical group (so that gmsh and dolfinx keep them) named "domain"
        domain_tag = max([t for t, _ in tagged] + list(mesh.tag_names.values()) + [0]) + 1
        out_cell_data[_GMSH_PHYSICAL] = [np.full(mesh.num_cells, domain_tag)] + [
            np.full(len(f), t) for t, f in tagged]
        out_cell_data["gmsh:geometrical"] = [np.full(len(d), i + 1) for i, (_, d) in enumerate(blocks)]
        field_data = {n: np.array([t, mesh.tdim - 1]) for n, t in mesh.tag_names.items()}
        if "domain" not in field_data:
            field_data["domain"] = np.array([domain_tag, mesh.tdim])
    else:
        out_cell_data[FACET_TAG_KEY] = [np.full(mesh.num_cells, -1)] + [
            np.full(len(f), t) for t, f in tagged]

    for name, values in point_data.items():
        values = np.asarray(values)
        if values.shape[:1] != (mesh.num_points,):
            raise MeshError(f"point data has {values.shape[:1]} rows, the mesh {mesh.num_points} points",
                            file=dest, field=name, fix="pass one value (row) per mesh point")
        if name == FACET_TAG_KEY:
            raise MeshError(f"point data name {name!r} is reserved for the facet tags", file=dest,
                            field=name, fix="rename the array")
    if cell_data and fmt == "gmsh22":
        # meshio 5.3 writes gmsh ElementData but fails to read it back (it splits the data by the
        # length of (type, data) tuples), so such a file could not be read by read()
        raise MeshError("cell data cannot be written to .msh files", file=dest,
                        field=next(iter(cell_data)), fix="write cell data to .vtu or .xdmf")
    for name, values in cell_data.items():
        values = np.asarray(values)
        if values.shape[:1] != (mesh.num_cells,):
            raise MeshError(f"cell data has {values.shape[:1]} rows, the mesh {mesh.num_cells} cells",
                            file=dest, field=name, fix="pass one value (row) per mesh cell")
        if name in out_cell_data:
            raise MeshError(f"cell data name {name!r} is reserved for the facet tags", file=dest,
                            field=name, fix="rename the array")
        # the facet blocks need values too; zeros mark "no data" there
        out_cell_data[name] = [values] + [np.zeros((len(f),) + values.shape[1:], values.dtype)
                                          for _, f in tagged]
    if fmt == "gmsh22":
        # gmsh data fields have 1, 3 or 9 components: write 2D vectors with a zero z component
        out_point_data = {k: _pad_vector(v) for k, v in out_point_data.items()}
        out_cell_data = {k: [_pad_vector(b) for b in v] for k, v in out_cell_data.items()}
    return meshio.Mesh(points, blocks, point_data=out_point_data, cell_data=out_cell_data,
                       field_data=field_data)


def _vertex_tags(num_points: int, tagged: list, dest: str) -> np.ndarray:
    """Per-point facet tag (-1: none) of a 1D mesh whose facets are single points."""
    tags = np.full(num_points, -1, dtype=np.int64)
    for t, facets in tagged:
        idx = np.asarray(facets).reshape(-1)
        if t < 0 or np.any((tags[idx] != -1) & (tags[idx] != t)):
            raise MeshError("1D facet tags in .xdmf must be >= 0 with one tag per point", file=dest,
                            fix="write .vtu or .msh instead")
        tags[idx] = t
    return tags


def _pad_vector(values: np.ndarray) -> np.ndarray:
    """``(n, 2)`` arrays padded to ``(n, 3)`` with zeros; everything else unchanged."""
    if values.ndim == 2 and values.shape[1] == 2:
        return np.pad(values, ((0, 0), (0, 1)))
    return values


def _add_tag_names(file: Path, fmt: str, tag_names: dict[str, int], facet_dim: int) -> None:
    """Store ``tag_names`` where meshio's reader finds them as field data (its writers do not)."""
    tree = ET.parse(file)
    root = tree.getroot()
    if fmt == "vtu":
        grid = root.find("UnstructuredGrid")
        field = ET.Element("FieldData")
        for name, tag in tag_names.items():
            array = ET.SubElement(field, "DataArray", type="Int64", Name=name, NumberOfTuples="2",
                                  format="ascii")
            array.text = f"{tag} {facet_dim}"
        grid.insert(0, field)  # VTK wants FieldData before the pieces
    else:
        grid = root.find("Domain/Grid")
        main = ET.Element("main")
        for name, tag in tag_names.items():
            ET.SubElement(main, "map", key=name, dim=str(facet_dim)).text = str(tag)
        info = ET.Element("Information", Name="Information", Value=str(len(tag_names)))
        info.text = ET.tostring(main, encoding="unicode")
        grid.insert(0, info)
    tree.write(file, encoding="utf-8", xml_declaration=True)
