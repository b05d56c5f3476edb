"""Charts and field panels as PNG (matplotlib, Agg, no screen), written atomically.

    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> out = Path(tempfile.mkdtemp())
    >>> line_plot({"CG": ([0, 1, 2], [1, 1e-3, 1e-6])}, out / "res.png", xlabel="iteration",
    ...           ylabel="residual", logy=True).name
    'res.png'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    plt = _pyplot()
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def _grid(n: int, size: float = 3.6) -> tuple[Any, Any]:
    plt = _pyplot()
    cols = min(n, 4)
    rows = -(-n // cols)
    # constrained layout: colorbars and tick labels of neighbouring panels do not overlap
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def image_panels(arrays: dict[str, np.ndarray], path: str | Path, *, title: str = "", cmap: str = "viridis",
                 extent: Any = None, vrange: tuple[float, float] | None = None) -> Path:
    """One panel per 2D array (``[i, j]`` = row i, drawn with the origin at the lower left); ``vrange`` = one
    colour range ``(vmin, vmax)`` for every panel (e.g. a truth and its reconstructions), default: each its own."""
    fig, axes = _grid(len(arrays))
    vmin, vmax = (None, None) if vrange is None else vrange
    for ax, (name, arr) in zip(axes, arrays.items(), strict=False):
        im = ax.imshow(np.asarray(arr), origin="lower", cmap=cmap, extent=extent, vmin=vmin, vmax=vmax)
        ax.set_title(name)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def line_plot(series: dict[str, tuple[Any, Any]], path: str | Path, *, xlabel: str, ylabel: str,
              logx: bool = False, logy: bool = False, title: str = "") -> Path:
    """Curves ``name -> (x, y)`` on one axis with a legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def tri_panels(points: np.ndarray, triangles: np.ndarray, fields: dict[str, np.ndarray], path: str | Path, *,
               title: str = "", overlays: dict[str, np.ndarray] | None = None, cmap: str = "viridis") -> Path:
    """One ``tripcolor`` panel per nodal field on a triangle mesh; ``overlays`` scatter points on a panel."""
    plt = _pyplot()
    import matplotlib.tri as mtri

    tri = mtri.Triangulation(points[:, 0], points[:, 1], np.asarray(triangles)[:, :3])
    fig, axes = _grid(len(fields))
    for ax, (name, values) in zip(axes, fields.items(), strict=False):
        pc = ax.tripcolor(tri, np.asarray(values), shading="gouraud", cmap=cmap)
        fig.colorbar(pc, ax=ax, fraction=0.046, pad=0.04)
        if overlays and name in overlays:
            pts = np.asarray(overlays[name])
            ax.scatter(pts[:, 0], pts[:, 1], s=2, c="red", alpha=0.6)
        ax.set_title(name)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    del plt
    return save_figure(fig, path)
