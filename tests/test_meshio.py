"""Mesh file reading/writing (neuralpde.meshes.io) and the gmsh L-shape (neuralpde.meshes.lshape)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import meshio
import numpy as np
import pytest

from neuralpde.errors import MeshError
from neuralpde.meshes.io import read, write
from neuralpde.meshes.mesh import Mesh

ROOT = Path(__file__).resolve().parents[1]
LSHAPE = ROOT / "meshes" / "lshape.msh"
HAVE_GMSH = importlib.util.find_spec("gmsh") is not None


@pytest.fixture(scope="module")
def lshape() -> Mesh:
    return read(LSHAPE)


def _facet_set(facets: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(sorted(f)) for f in np.asarray(facets).tolist()}


def _quad_mesh() -> Mesh:
    pts = [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]
    return Mesh(np.array(pts, float), np.array([[0, 1, 4, 3], [1, 2, 5, 4]]), "quadrilateral",
                facet_tags={1: [[3, 0]], 2: [[2, 5]]}, tag_names={"left": 1, "right": 2}).check()


def _interval_mesh() -> Mesh:
    return Mesh(np.array([[0.0], [0.25], [1.0]]), np.array([[0, 1], [1, 2]]), "interval",
                facet_tags={1: [[0]], 2: [[2]]}, tag_names={"left": 1, "right": 2}).check()


def _tet_mesh() -> Mesh:
    skfem = pytest.importorskip("skfem")
    sk = skfem.MeshTet().refined(1)
    m = Mesh(sk.p.T, sk.t.T, "tetrahedron")
    neg = m.cell_volumes() < 0  # scikit-fem does not orient its tetrahedra
    m.cells[neg] = m.cells[neg][:, [1, 0, 2, 3]]
    m.check()
    bf = m.boundary_facets()
    bottom = np.all(m.points[bf, 2] == 0, axis=1)
    m.facet_tags = {5: bf[bottom], 7: bf[~bottom]}
    m.tag_names = {"bottom": 5, "rest": 7}
    return m


def _assert_same(a: Mesh, b: Mesh) -> None:
    assert b.cell_type == a.cell_type
    assert b.points.shape == a.points.shape
    np.testing.assert_allclose(b.points, a.points, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(b.cells, a.cells)
    assert b.tag_names == a.tag_names
    assert sorted(b.facet_tags) == sorted(a.facet_tags)
    for tag, facets in a.facet_tags.items():
        np.testing.assert_array_equal(b.facet_tags[tag], facets)


# ------------------------------------------------------------------------------------ shipped mesh


def test_shipped_lshape(lshape: Mesh) -> None:
    m = lshape
    assert m.cell_type == "triangle" and m.gdim == 2 and m.tdim == 2
    assert 300 <= m.num_cells <= 2000
    assert m.tag_names == {"outer": 1, "corner": 2}
    assert abs(m.cell_volumes().sum() - 3.0) < 1e-12
    assert np.all(m.cell_volumes() > 0)
    m.check()
    # every boundary facet carries exactly one tag, and every tagged facet is on the boundary
    boundary = _facet_set(m.boundary_facets())
    outer, corner = _facet_set(m.facet_tags[1]), _facet_set(m.facet_tags[2])
    assert outer.isdisjoint(corner)
    assert outer | corner == boundary
    # the corner edges are (0,0)-(1,0) and (0,0)-(0,-1); all points used, none unused
    mid = m.facet_midpoints(m.facet_tags[2])
    assert np.all((np.isclose(mid[:, 1], 0) & (mid[:, 0] > 0)) | (np.isclose(mid[:, 0], 0) & (mid[:, 1] < 0)))
    assert len(np.unique(m.cells)) == m.num_points
    assert LSHAPE.stat().st_size < 300_000


def test_lshape_graded_toward_corner(lshape: Mesh) -> None:
    p, c = lshape.points, lshape.cells
    edge = np.linalg.norm(p[c[:, 0]] - p[c[:, 1]], axis=1)
    r = np.linalg.norm(p[c].mean(axis=1), axis=1)
    assert edge[r < 0.05].mean() < 0.3 * edge[r > 0.6].mean()


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".vtu", ".xdmf", ".msh"])
def test_round_trip_lshape(lshape: Mesh, tmp_path: Path, suffix: str) -> None:
    u = np.sin(lshape.points[:, 0]) * lshape.points[:, 1]
    grad = np.stack([lshape.points[:, 1], -lshape.points[:, 0]], axis=1)
    cell_data = None if suffix == ".msh" else {"k": np.arange(lshape.num_cells, dtype=float)}
    out = write(lshape, tmp_path / f"sub/l{suffix}", point_data={"u": u, "grad": grad},
                cell_data=cell_data)
    assert out == tmp_path / f"sub/l{suffix}" and out.is_file()
    _assert_same(lshape, read(out))

    raw = meshio.read(out)
    np.testing.assert_allclose(raw.point_data["u"], u)
    np.testing.assert_allclose(raw.point_data["grad"][:, :2], grad)
    if cell_data:
        np.testing.assert_allclose(raw.cell_data["k"][0], cell_data["k"])
    expected = {".vtu": {"l.vtu"}, ".xdmf": {"l.xdmf", "l.h5"}, ".msh": {"l.msh"}}[suffix]
    assert {f.name for f in out.parent.iterdir()} == expected  # no temporary leftovers


@pytest.mark.parametrize("suffix", [".vtu", ".xdmf", ".msh"])
@pytest.mark.parametrize("make", [_quad_mesh, _interval_mesh, _tet_mesh], ids=["quad", "interval", "tet"])
def test_round_trip_cell_types(tmp_path: Path, suffix: str, make) -> None:
    m = make()
    _assert_same(m, read(write(m, tmp_path / f"m{suffix}")))


@pytest.mark.parametrize("suffix", [".vtu", ".xdmf", ".msh"])
def test_named_tag_without_facets(tmp_path: Path, suffix: str) -> None:
    m = _quad_mesh()
    m.tag_names["top"] = 3  # a name whose facets are not in the mesh
    back = read(write(m, tmp_path / f"m{suffix}"))
    assert back.tag_names == {"left": 1, "right": 2, "top": 3}
    assert back.facet_tags[3].shape == (0, 2)


def test_xdmf_moved_with_its_h5(lshape: Mesh, tmp_path: Path) -> None:
    # the .xdmf refers to its .h5 by a relative name: moving both keeps the pair readable
    write(lshape, tmp_path / "a" / "m.xdmf")
    os.rename(tmp_path / "a", tmp_path / "b")
    assert read(tmp_path / "b" / "m.xdmf").num_cells == lshape.num_cells


@pytest.mark.skipif(not HAVE_GMSH, reason="gmsh not installed")
@pytest.mark.parametrize("version,binary", [(2.2, 0), (2.2, 1), (4.1, 0), (4.1, 1)])
def test_read_gmsh_versions(lshape: Mesh, tmp_path: Path, version: float, binary: int) -> None:
    import gmsh

    out = tmp_path / "l.msh"
    gmsh.initialize(readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.open(str(LSHAPE))
        gmsh.option.setNumber("Mesh.MshFileVersion", version)
        gmsh.option.setNumber("Mesh.Binary", binary)
        gmsh.write(str(out))
    finally:
        gmsh.finalize()
    m = read(out)
    assert m.tag_names == lshape.tag_names and m.num_cells == lshape.num_cells
    assert abs(m.cell_volumes().sum() - 3.0) < 1e-12
    for tag in (1, 2):
        assert _facet_set(m.points[m.facet_tags[tag]].round(12).reshape(-1, 4)) == _facet_set(
            lshape.points[lshape.facet_tags[tag]].round(12).reshape(-1, 4))


# ------------------------------------------------------------------------------- reading details


def test_unused_points_removed_and_renumbered(tmp_path: Path) -> None:
    pts = np.array([[9, 9, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]], float)  # point 0 is unused
    f = tmp_path / "u.msh"
    meshio.write(f, meshio.Mesh(pts, [("triangle", [[1, 2, 3]]), ("line", [[1, 2]])],
                                cell_data={"gmsh:physical": [[3], [4]], "gmsh:geometrical": [[1], [2]]},
                                field_data={"bottom": np.array([4, 1]), "dom": np.array([3, 2])}),
                 file_format="gmsh22", binary=False)
    m = read(f)
    np.testing.assert_array_equal(m.points, pts[1:, :2])
    np.testing.assert_array_equal(m.cells, [[0, 1, 2]])
    np.testing.assert_array_equal(m.facet_tags[4], [[0, 1]])
    assert m.tag_names == {"bottom": 4}


def test_dim_option(lshape: Mesh, tmp_path: Path) -> None:
    f = write(lshape, tmp_path / "l.vtu")
    assert read(f, dim=3).points.shape == (lshape.num_points, 3)
    assert read(f, dim=2).gdim == 2
    with pytest.raises(MeshError, match="dim"):
        read(f, dim=1)


def test_mixed_cell_types_rejected(tmp_path: Path) -> None:
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [2, 0], [2, 1]], float)
    f = tmp_path / "mixed.vtu"
    meshio.write(f, meshio.Mesh(np.pad(pts, ((0, 0), (0, 1))),
                                [("triangle", [[0, 1, 2], [0, 2, 3]]), ("quad", [[1, 4, 5, 2]])]))
    with pytest.raises(MeshError, match="mixes cell types") as err:
        read(f)
    assert err.value.fix


def test_higher_order_rejected(tmp_path: Path) -> None:
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0]], float)
    f = tmp_path / "p2.vtu"
    meshio.write(f, meshio.Mesh(pts, [("triangle6", [[0, 1, 2, 3, 4, 5]])]))
    with pytest.raises(MeshError, match="higher-order") as err:
        read(f)
    assert "ElementOrder 1" in err.value.fix


def test_no_cells(tmp_path: Path) -> None:
    f = tmp_path / "empty.vtu"
    meshio.write(f, meshio.Mesh(np.zeros((3, 3)), [("vertex", [[0], [1], [2]])]))
    with pytest.raises(MeshError, match="no cells"):
        read(f)


# --------------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "mesh.msh"
    with pytest.raises(MeshError) as err:
        read(missing)
    assert str(missing) in str(err.value)
    assert err.value.fix == "check the path; relative paths in case files are relative to the case file"


@pytest.mark.parametrize("suffix", [".msh", ".vtu", ".xdmf"])
def test_garbage_file(tmp_path: Path, suffix: str, capsys) -> None:
    f = tmp_path / f"garbage{suffix}"
    f.write_bytes(b"this is not a mesh\x00\x01\x02\n" * 10)
    with pytest.raises(MeshError, match="could not read") as err:
        read(f)
    assert err.value.fix and str(f) in str(err.value)
    assert capsys.readouterr().out == ""  # meshio's own reporting is kept quiet


def test_unknown_suffix(tmp_path: Path) -> None:
    f = tmp_path / "mesh.foo"
    f.write_text("x")
    with pytest.raises(MeshError, match="suffix"):
        read(f)


def test_inverted_cell(lshape: Mesh, tmp_path: Path) -> None:
    cells = lshape.cells.copy()
    cells[10, [0, 1]] = cells[10, [1, 0]]
    f = tmp_path / "inverted.msh"
    tags = {"gmsh:physical": [np.ones(len(cells), int)], "gmsh:geometrical": [np.ones(len(cells), int)]}
    meshio.write(f, meshio.Mesh(np.pad(lshape.points, ((0, 0), (0, 1))), [("triangle", cells)],
                                cell_data=tags), file_format="gmsh22", binary=False)
    with pytest.raises(MeshError, match="inverted"):
        read(f)


# ------------------------------------------------------------------------------------ atomic write


@pytest.mark.parametrize("suffix", [".vtu", ".xdmf"])
def test_failed_write_keeps_old_file(lshape: Mesh, tmp_path: Path, monkeypatch, suffix: str) -> None:
    dest = tmp_path / f"m{suffix}"
    dest.write_text("old contents")

    def broken_write(filename, mesh, *args, **kwargs):
        Path(filename).write_text("partial")  # a writer that dies half way
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(meshio, "write", broken_write)
    with pytest.raises(MeshError, match="disk on fire"):
        write(lshape, dest)
    assert dest.read_text() == "old contents"
    assert [f.name for f in tmp_path.iterdir()] == [dest.name]


def test_write_rejects_bad_input(lshape: Mesh, tmp_path: Path) -> None:
    with pytest.raises(MeshError, match="suffix"):
        write(lshape, tmp_path / "m.stl")
    with pytest.raises(MeshError, match="rows"):
        write(lshape, tmp_path / "m.vtu", point_data={"u": np.zeros(3)})
    with pytest.raises(MeshError, match="cell data"):
        write(lshape, tmp_path / "m.msh", cell_data={"k": np.zeros(lshape.num_cells)})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- gmsh


@pytest.mark.skipif(not HAVE_GMSH, reason="gmsh not installed")
def test_lshape_msh(tmp_path: Path) -> None:
    from neuralpde.meshes.lshape import lshape_msh

    out = lshape_msh(tmp_path / "deep" / "l.msh", h=0.3)
    assert out == tmp_path / "deep" / "l.msh"
    assert [f.name for f in out.parent.iterdir()] == ["l.msh"]
    assert out.read_text().startswith("$MeshFormat\n4.1 0")
    m = read(out)
    assert m.cell_type == "triangle" and m.tag_names == {"outer": 1, "corner": 2}
    assert abs(m.cell_volumes().sum() - 3.0) < 1e-12
    assert _facet_set(m.facet_tags[1]) | _facet_set(m.facet_tags[2]) == _facet_set(m.boundary_facets())
    # re-entrant corner at the origin, removed quadrant (0,1)x(-1,0)
    assert np.any(np.all(m.points == 0, axis=1))
    centroids = m.points[m.cells].mean(axis=1)
    assert not np.any((centroids[:, 0] > 0) & (centroids[:, 1] < 0))
    with pytest.raises(MeshError, match="positive"):
        lshape_msh(tmp_path / "x.msh", h=0)


def test_lshape_msh_without_gmsh(tmp_path: Path, monkeypatch) -> None:
    import sys

    from neuralpde.errors import BackendUnavailable
    from neuralpde.meshes.lshape import lshape_msh

    monkeypatch.setitem(sys.modules, "gmsh", None)  # makes `import gmsh` raise ImportError
    with pytest.raises(BackendUnavailable, match="gmsh is not installed") as err:
        lshape_msh(tmp_path / "l.msh")
    assert "meshes/lshape.msh" in err.value.fix
    assert list(tmp_path.iterdir()) == []
