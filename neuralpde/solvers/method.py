"""The method contract: every method registers under its ``type`` name and implements ``run``.

    >>> from neuralpde.solvers.method import METHODS
    >>> "fem" in METHODS
    True
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..progress import SILENT, Progress
from .fem.base import FEMSolution
from .fem.fields import FEField


class Strict(BaseModel):
    """A case-file section: unknown keys are errors (with a did-you-mean from the loader)."""

    model_config = ConfigDict(extra="forbid")


class MethodConfig(Strict):
    """Base of the ``method:`` section; subclasses fix ``type`` to a literal."""

    type: str


@dataclass
class RunContext:
    """What a method gets besides the problem: device, seed, output folder, progress, checkpoints."""

    device: str = "cpu"
    seed: int = 0
    out_dir: Path | None = None
    progress: Progress = SILENT
    rank: int = 0

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"


@dataclass
class MethodResult:
    """A method's answer: its field (own mesh or the reference's) and method-specific figures."""

    field: FEField | None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra_fields: dict[str, FEField] = field(default_factory=dict)


class Method(abc.ABC):
    """A method: ``config_model`` validates its section, ``run`` produces a :class:`MethodResult`."""

    name: ClassVar[str]
    config_model: ClassVar[type[MethodConfig]]
    #: PDE faces the method needs (checked before anything runs)
    faces: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig):
        self.config = config

    @abc.abstractmethod
    def run(self, problem: Any, reference: FEMSolution, ctx: RunContext) -> MethodResult:
        """Solve ``problem``; ``reference`` is the FEM reference solution."""


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def _load_builtin_methods() -> None:
    from .fem import method as _fem  # noqa: F401


_load_builtin_methods()
