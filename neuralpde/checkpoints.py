"""Self-describing checkpoints: what kind of model, the config that rebuilds it, and its state.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "net.pt"
    >>> _ = save_checkpoint(path, kind="demo", config={"width": 8}, state={"w": torch.ones(2)}, step=3)
    >>> ckpt = load_checkpoint(path, kind="demo", expect={"width": 8})
    >>> ckpt["config"]["width"], ckpt["step"]
    (8, 3)
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from .errors import SolverError
from .fileio import write_bytes


def save_checkpoint(path: str | Path, *, kind: str, config: dict[str, Any], state: dict[str, Any],
                    **extra: Any) -> Path:
    """Write a checkpoint atomically (a killed run never leaves a half file).

    Args:
        path: the file to write (``.pt``).
        kind: what the checkpoint holds (``"dcdm"``, ``"mgno"``, ...); checked when loading.
        config: JSON-like values that rebuild the model (architecture, grid size, normalisers).
        state: tensors, ``state_dict``s, optimizer states.
        extra: anything else to keep (step, epoch, loss history), JSON-like or tensors.

    Returns:
        The path written.
    """
    import torch

    buffer = io.BytesIO()
    torch.save({"kind": kind, "config": config, "state": state, **extra}, buffer)
    return write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: str | Path, *, kind: str, expect: dict[str, Any] | None = None,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Args:
        path: the checkpoint file.
        kind: the kind the caller can use.
        expect: config values that must match (e.g. ``{"grid": [64, 64]}``).
        map_location: device for the tensors.

    Raises:
        SolverError: the file is missing or unreadable, or holds another kind or config; the message
            names the file and the mismatched key.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise SolverError("checkpoint not found", file=str(path), fix="train first, or check the path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:    # pickle, zip and torch errors alike mean "not a usable checkpoint"
        raise SolverError(f"not a readable checkpoint ({type(exc).__name__}: {exc})", file=str(path),
                          fix="delete it and train again") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise SolverError("not a neuralpde checkpoint (no 'kind')", file=str(path),
                          fix="use a file written by neuralpde")
    if ckpt["kind"] != kind:
        raise SolverError(f"checkpoint holds a {ckpt['kind']!r} model, not {kind!r}", file=str(path),
                          field="kind", fix=f"point to a {kind} checkpoint")
    for key, want in (expect or {}).items():
        have = ckpt["config"].get(key)
        if _normal(have) != _normal(want):
            raise SolverError(f"checkpoint was made for {key}={have!r}, this run needs {key}={want!r}",
                              file=str(path), field=key,
                              fix=f"train a checkpoint for {key}={want!r} or change the case to match")
    return ckpt


def latest_checkpoint(folder: str | Path, prefix: str = "ckpt") -> Path | None:
    """The checkpoint ``<prefix>_<step>.pt`` in ``folder`` with the highest step, or ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.pt$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return max(found)[1] if found else None


def _normal(value: Any) -> Any:
    """Tuples and lists compare equal (JSON turns one into the other)."""
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    return value
