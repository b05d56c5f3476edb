"""Pictures of fields, rendered off-screen with PyVista (no display needed).

    plot_fields(points, cells, "triangle", {"reference": u, "error": e}, "out/case/fields.png")

Rendering runs in a child process: VTK's wheel and Debian's dolfinx load different C++ runtimes,
and VTK aborts when dolfinx was imported first; a child that never imports dolfinx is safe, and a
crashing renderer cannot take the run's results with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..fileio import atomic_output

log = logging.getLogger("neuralpde")

_VTK_TYPES = {"line": 3, "line3": 21, "triangle": 5, "triangle6": 22, "quad": 9, "tetra": 10, "tetra10": 24,
              "hexahedron": 12}


def _grid(points: np.ndarray, cells: np.ndarray, cell_type: str):
    import pyvista as pv

    pts = np.zeros((len(points), 3))
    pts[:, : points.shape[1]] = points
    conn = np.hstack([np.full((len(cells), 1), cells.shape[1]), cells]).ravel()
    types = np.full(len(cells), _VTK_TYPES[cell_type], dtype=np.uint8)
    return pv.UnstructuredGrid(conn, types, pts)


def plot_fields(points: np.ndarray, cells: np.ndarray, cell_type: str, fields: dict[str, np.ndarray],
                path: str | os.PathLike, title: str = "", timeout: float = 300) -> Path | None:
    """One PNG with a panel per field (same mesh), rendered in a child process.

    1D fields become line plots (matplotlib).

    Returns:
        The PNG path, or ``None`` when no plotting library is installed (a warning is logged).

    Raises:
        RuntimeError: the renderer failed (its last output lines are in the message).
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fields.npz"
        np.savez(data, points=points, cells=cells, cell_type=cell_type, title=title, path=str(path),
                 names=np.array(list(fields)), **{f"field_{i}": v for i, v in enumerate(fields.values())})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
        proc = subprocess.run([sys.executable, "-m", "neuralpde.cases.plotting", str(data)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode == 3:
        log.warning("%s", proc.stdout.strip())
        return None
    if proc.returncode != 0:
        # a renderer that crashed (VTK aborts) could not remove its half-written temporary file
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"the renderer exited with code {proc.returncode}: {tail}")
    return path


def _render(points: np.ndarray, cells: np.ndarray, cell_type: str, fields: dict[str, np.ndarray],
            path: Path, title: str) -> Path | None:
    if points.shape[1] == 1:
        return _plot_lines(points[:, 0], fields, path, title)
    try:
        import pyvista as pv
    except ImportError:
        log.warning("pyvista is not installed: no picture written (pip install -e .[viz])")
        return None
    pv.OFF_SCREEN = True
    grid = _grid(points, cells, cell_type)
    n = len(fields)
    plotter = pv.Plotter(off_screen=True, shape=(1, n), window_size=(420 * n, 420), border=False)
    for i, (name, values) in enumerate(fields.items()):
        plotter.subplot(0, i)
        g = grid.copy()
        g.point_data[name] = np.asarray(values, dtype=float)
        is_error = name.startswith("error")
        bound = float(np.max(np.abs(values))) if is_error and np.size(values) else None
        plotter.add_mesh(g, scalars=name, cmap="coolwarm" if is_error else "viridis", show_edges=False,
                         clim=(-bound, bound) if bound else None,
                         scalar_bar_args={"title": name, "vertical": False, "fmt": "%.2g", "n_labels": 3,
                                          "width": 0.7, "position_x": 0.15, "label_font_size": 12,
                                          "title_font_size": 14})
        plotter.add_text(f"{title} {name}".strip(), font_size=9)
        if points.shape[1] == 2:
            plotter.view_xy()
        else:
            plotter.view_isometric()
    with atomic_output(path) as tmp:
        plotter.screenshot(str(tmp))
    plotter.close()
    return path


def _plot_lines(x: np.ndarray, fields: dict[str, np.ndarray], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no picture written (pip install -e .[viz])")
        return None
    order = np.argsort(x)
    fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], fields.items(), strict=True):
        ax.plot(x[order], np.asarray(values)[order])
        ax.set_title(f"{title} {name}".strip())
        ax.set_xlabel("x")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _main(npz: str) -> int:
    data = np.load(npz)
    names = [str(n) for n in data["names"]]
    fields = {n: data[f"field_{i}"] for i, n in enumerate(names)}
    out = _render(data["points"], data["cells"], str(data["cell_type"]), fields, Path(str(data["path"])),
                  str(data["title"]))
    return 0 if out is not None else 3


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s", stream=sys.stdout)
    sys.exit(_main(sys.argv[1]))
