"""Plot helpers: what the panels show."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from neuralpde import viz  # noqa: E402


def _images(monkeypatch, **kwargs):
    seen = {}

    def capture(fig, path, dpi=120):
        seen["clims"] = [ax.images[0].get_clim() for ax in fig.axes if ax.images]
        viz._pyplot().close(fig)
        return path

    monkeypatch.setattr(viz, "save_figure", capture)
    arrays = {"truth": np.zeros((4, 4)), "reconstruction": np.full((4, 4), 2.0)}
    arrays["truth"][0, 0], arrays["reconstruction"][0, 0] = 1.0, 3.0
    viz.image_panels(arrays, "unused.png", **kwargs)
    return seen["clims"]


def test_image_panels_share_a_colour_range_when_asked(monkeypatch):
    assert _images(monkeypatch, vrange=(-0.5, 1.5)) == [(-0.5, 1.5), (-0.5, 1.5)]


def test_image_panels_scale_each_panel_by_default(monkeypatch):
    assert _images(monkeypatch) == [(0.0, 1.0), (2.0, 3.0)]
