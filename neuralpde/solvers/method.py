"""The method contract: every method registers under its ``type`` name and implements ``run``.

    >>> from neuralpde.solvers.method import METHODS
    >>> "fem" in METHODS
    True
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import Strict
from ..progress import SILENT, Progress
from .fem.base import FEMSolution
from .fem.fields import FEField

__all__ = ["METHODS", "Method", "MethodConfig", "MethodResult", "RunContext", "Strict", "register"]


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
    #: the method's own plots the case asked for (names from ``Method.plot_names`` in ``output.plots``)
    plots: set[str] = field(default_factory=set)

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"


@dataclass
class MethodResult:
    """A method's answer: its field (own mesh or the reference's) and method-specific figures.

    ``files`` lists what the method wrote itself into ``ctx.out_dir`` (plots, checkpoints, datasets).
    """

    field: FEField | None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra_fields: dict[str, FEField] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


class Method(abc.ABC):
    """A method: ``config_model`` validates its section, ``run`` produces a :class:`MethodResult`."""

    name: ClassVar[str]
    config_model: ClassVar[type[MethodConfig]]
    #: PDE faces the method needs (checked before anything runs)
    faces: ClassVar[tuple[str, ...]] = ()
    #: False: the case may omit ``pde``/``domain`` (a toy problem); ``run`` then gets ``problem=None``
    needs_problem: ClassVar[bool] = True
    #: plot names, beyond the runner's, that a case may list in ``output.plots`` (passed as ``ctx.plots``)
    plot_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig):
        self.config = config

    @abc.abstractmethod
    def run(self, problem: Any, reference: FEMSolution | None, ctx: RunContext) -> MethodResult:
        """Solve ``problem``; ``reference`` is the FEM reference (``None`` with ``reference: none``)."""


class _Registry(MutableMapping):
    """The method registry. The built-in method modules (and torch with them) load on the first read, so
    ``import neuralpde`` stays fast; :func:`register` may add methods before or after that. Reads go through
    ``__getitem__``/``__iter__`` (``in``, ``get``, ``keys``, ``items`` ... are built on them)."""

    def __init__(self) -> None:
        self._methods: dict[str, type[Method]] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True         # set first: a module that reads the registry must not recurse
            for module in BUILTIN_METHOD_MODULES:
                importlib.import_module(f"{__package__}.{module}")

    def __getitem__(self, key: str) -> type[Method]:
        self._load()
        return self._methods[key]

    def __setitem__(self, key: str, value: type[Method]) -> None:
        self._methods[key] = value

    def __delitem__(self, key: str) -> None:
        del self._methods[key]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._methods)

    def __len__(self) -> int:
        self._load()
        return len(self._methods)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


METHODS: MutableMapping[str, type[Method]] = _Registry()


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


#: modules (relative to ``neuralpde.solvers``) whose methods register when the package loads
BUILTIN_METHOD_MODULES: tuple[str, ...] = (
    "fem.method",
    "pinn",
    "dcdm",
    "node",
    "odil",
    "gliodil",
    "operator_method",
    "inverse_problems",
    "mmpde",
    "mmpde_solver",
)

