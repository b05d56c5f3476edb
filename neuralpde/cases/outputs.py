"""Everything a run writes, each file atomically: resolved config, metrics, fields, pictures.

Fields go into one file on the reference mesh (``fields.xdmf`` + ``fields.h5``, or ``fields.vtu``)
with ``reference``, ``method``, ``error`` and ``exact`` point data, so ParaView shows them together.
P2 fields on simplices are written with quadratic cells.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import NeuralPDEError
from ..fileio import atomic_output, write_text
from ..solvers.fem.fields import FEField


def write_config(out_dir: Path, config: Any, case_path: Path | None = None) -> Path:
    """The validated case with every default filled in; a mesh path is made absolute so the file runs as is."""
    data = config.model_dump(mode="json")
    if (data.get("domain") or {}).get("type") == "file" and case_path is not None:
        data["domain"]["path"] = str((case_path.parent / data["domain"]["path"]).resolve())
    return write_text(out_dir / "config.resolved.yaml", yaml.safe_dump(data, sort_keys=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> Path:
    return write_text(out_dir / "metrics.json", json.dumps(_jsonable(metrics), indent=2) + "\n")


def field_data(reference: FEField, fields: dict[str, FEField]) -> tuple[np.ndarray, np.ndarray, str, dict]:
    """Points, cells, meshio cell type and point data of ``fields`` in the reference's output layout."""
    points, cells, cell_type = reference.cells_for_output()
    data = {name: f.on(reference).output_values() for name, f in fields.items()}
    return points, cells, cell_type, data


def hdf5_available() -> bool:
    """Whether h5py imports (XDMF needs it; a PyPI h5py beside Debian's dolfinx fails to load)."""
    try:
        import h5py  # noqa: F401
    except Exception:   # ImportError, or HDF5 library clashes that surface as ValueError
        return False
    return True


def write_fields(path: Path, points: np.ndarray, cells: np.ndarray, cell_type: str,
                 data: dict[str, np.ndarray]) -> Path:
    """Write point data on a mesh (XDMF + HDF5 or VTU, by suffix), atomically."""
    import meshio

    pts = np.zeros((len(points), 3))
    pts[:, : points.shape[1]] = points
    m = meshio.Mesh(pts, [(cell_type, np.asarray(cells, dtype=np.int64))],
                    point_data={k: np.ascontiguousarray(v, dtype=float) for k, v in data.items()})
    with atomic_output(path) as tmp:
        meshio.write(tmp, m)
    return path


def write_series(path: Path, reference: FEField, snapshots: list[tuple[float, np.ndarray]],
                 name: str = "reference") -> Path:
    """A time series (XDMF + HDF5) of a field's snapshots, for ParaView's time controls."""
    import meshio

    points, cells, cell_type = reference.cells_for_output()
    pts = np.zeros((len(points), 3))
    pts[:, : points.shape[1]] = points
    with atomic_output(path) as tmp, _working_directory(tmp.parent):
        # meshio's series writer puts its .h5 in the working directory, so write from inside the temp dir
        with meshio.xdmf.TimeSeriesWriter(tmp.name) as writer:
            writer.write_points_cells(pts, [(cell_type, cells)])
            for t, values in snapshots:
                writer.write_data(t, point_data={name: reference.with_values(values).output_values()})
    return path


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def safe_write(what: str, fn, *args, **kwargs) -> tuple[Any, str | None]:
    """Run an optional writer (a picture); a failure becomes a warning string, not a lost run."""
    try:
        return fn(*args, **kwargs), None
    except NeuralPDEError:
        raise
    except Exception as exc:   # a broken renderer must not cost the user the computed results
        return None, f"{what} not written: {type(exc).__name__}: {exc}"
