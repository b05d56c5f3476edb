"""Pictures of a PINN run: collocation points over the residual at every stage, and the error field.

    plot_stages(training.stages, region, "out/samples.png")
    plot_error(region, exact, predict, "out/error.png")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .sampling import Region

GRID = 128


def grid(region: Region, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Points of an ``n x n`` grid over the region's box in the first two coordinates (others at their
    centre), and the mask of those inside the region."""
    b = region.bounds
    xs, ys = (np.linspace(b[i, 0], b[i, 1], n) for i in (0, 1))
    xx, yy = np.meshgrid(xs, ys)
    pts = np.tile(b.mean(axis=1), (n * n, 1))
    pts[:, 0], pts[:, 1] = xx.ravel(), yy.ravel()
    inside = np.ones(n * n, dtype=bool) if region.inside is None else np.asarray(region.inside(pts), dtype=bool)
    return pts, inside


def plot_stages(stages: list[Any], region: Region, path: str | Path, max_points: int = 2000) -> Path:
    """One panel per stage: ``|residual|`` (log colour scale) with that stage's collocation points on top."""
    from matplotlib.colors import LogNorm

    from ..viz import _pyplot, save_figure

    plt = _pyplot()
    n = max(len(stages), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.4 * rows), squeeze=False)
    _, inside = grid(region)
    b = region.bounds
    for ax, rec in zip(axes.ravel(), stages, strict=False):
        if rec.grid_residual is not None:
            img = np.where(inside, rec.grid_residual, np.nan).reshape(GRID, GRID)
            positive = img[np.isfinite(img) & (img > 0)]
            norm = (LogNorm(vmin=max(positive.min(), positive.max() * 1e-6), vmax=positive.max())
                    if positive.size else None)
            im = ax.imshow(img, origin="lower", extent=(b[0, 0], b[0, 1], b[1, 0], b[1, 1]), cmap="magma", norm=norm)
            fig.colorbar(im, ax=ax, shrink=0.8)
        pts = rec.points[:max_points]
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="cyan", linewidths=0)
        ax.set_title(f"stage {rec.stage + 1}: |r|, {len(rec.points)} points", fontsize=9)
        ax.set_aspect("equal")
    for ax in axes.ravel()[len(stages):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_error(region: Region, exact: Any, predict: Callable[[np.ndarray], np.ndarray], path: str | Path) -> Path:
    """PINN solution, exact solution and error on the grid (a 2D slice through the centre in higher dimensions)."""
    from ..viz import image_panels

    pts, inside = grid(region)
    u = predict(pts)
    ue = np.asarray(exact.numpy(pts.T), dtype=float)
    shape = (GRID, GRID)
    panels = {name: np.where(inside, v, np.nan).reshape(shape) for name, v in
              (("pinn", u), ("exact", ue), ("error", u - ue))}
    b = region.bounds
    title = "" if region.dim == 2 else f"slice x2..x{region.dim} = centre"
    return image_panels(panels, path, title=title, extent=(b[0, 0], b[0, 1], b[1, 0], b[1, 1]))
