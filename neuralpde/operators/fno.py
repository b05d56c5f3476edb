"""The FNO baseline, taken from the neuraloperator package (imported lazily; not rewritten here).

``modes`` follows the FNO paper (Fourier modes kept per direction, positive frequencies); neuraloperator
counts positive and negative frequencies, so it gets ``n_modes = 2 * modes`` per direction::

    net = build_fno(modes=12, width=32, layers=4)       # the FNO paper's Darcy model
    net(torch.zeros(8, 1, 85, 85)).shape                # (8, 1, 85, 85)
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendUnavailable, CaseError


def build_fno(modes: int = 12, width: int = 32, layers: int = 4, in_channels: int = 1,
              out_channels: int = 1, **options: Any) -> Any:
    """A 2D ``neuralop.models.FNO``.

    Args:
        modes: Fourier modes per direction (FNO paper convention).
        width: hidden channels.
        layers: Fourier layers.
        in_channels, out_channels: channels of input and output functions.
        options: further keyword arguments of ``neuralop.models.FNO`` (e.g. ``positional_embedding``).

    Raises:
        BackendUnavailable: neuraloperator is not installed.
        CaseError: non-positive sizes.
    """
    if min(modes, width, layers) < 1:
        raise CaseError(f"FNO sizes must be positive (modes={modes}, width={width}, layers={layers})",
                        field="method.model", fix="e.g. modes: 12, width: 32, layers: 4")
    try:
        from neuralop.models import FNO
    except ImportError:
        raise BackendUnavailable("the FNO baseline needs neuraloperator", field="method.model.type",
                                 fix="pip install neuraloperator (the [operators] extra), or use type: mgno") from None
    return FNO(n_modes=(2 * modes, 2 * modes), in_channels=in_channels, out_channels=out_channels,
               hidden_channels=width, n_layers=layers, **options)
