"""Progress reporting for long work (time stepping, training): a thin layer over tqdm.

    >>> with Progress(enabled=False).task("steps", total=3) as advance:
    ...     for _ in range(3):
    ...         advance(loss=0.1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Progress:
    """Creates progress bars; disabled ones cost nothing (used on MPI ranks other than 0, in tests)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """A bar with ``total`` steps; yields ``advance(n=1, **postfix)``."""
        if not self.enabled:
            yield lambda n=1, **postfix: None
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, mininterval=0.5)

        def advance(n: int = 1, **postfix: float) -> None:
            if postfix:
                bar.set_postfix({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in postfix.items()},
                                refresh=False)
            bar.update(n)

        try:
            yield advance
        finally:
            bar.close()


SILENT = Progress(enabled=False)
