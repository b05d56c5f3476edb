"""MPI helpers that also work without mpi4py (then there is one rank)."""

from __future__ import annotations

from typing import Any


def comm() -> Any | None:
    """``MPI.COMM_WORLD`` when mpi4py is importable, else ``None``."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


def rank() -> int:
    c = comm()
    return 0 if c is None else c.rank


def size() -> int:
    c = comm()
    return 1 if c is None else c.size


def bcast(value: Any, root: int = 0) -> Any:
    """Broadcast from ``root`` (a no-op in a serial run)."""
    c = comm()
    return value if c is None or c.size == 1 else c.bcast(value, root=root)
