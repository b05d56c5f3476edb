"""The base of every case-file section: a pydantic model that rejects unknown keys.

    >>> class Train(Strict):
    ...     lr: float = 1e-3
    >>> Train(lr=0.1).lr
    0.1
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A case-file section: unknown keys are errors (with a did-you-mean from the loader)."""

    model_config = ConfigDict(extra="forbid")
