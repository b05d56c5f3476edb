"""Training data for the MM-PDE solver: 2D Burgers trajectories from the FEM reference, cached as ``.npz``.

The paper's initial-condition generator was not retrieved, so the family is ours: each initial condition is a
sum of 1 to ``max_bumps`` Gaussian bumps ``a exp(-|x - c|^2 / (2 s^2))`` on [0, 1]^2 with a random sign and
``|a|`` in ``amplitude``, centre ``c`` in [0.3, 0.7]^2 and width ``s`` in ``width``. The Dirichlet data on the
whole boundary is the initial condition's boundary value, held fixed in time. With ``u (u_x + u_y)`` the bumps
travel along the diagonal and steepen into fronts of width about ``nu / |a|``. Each trajectory is solved by
:func:`~neuralpde.solvers.fem.burgers.solve_burgers` on a fine ``fine_cells x fine_cells`` P1 mesh and sampled
every ``save_every`` steps at the nodes of the coarse ``cells x cells`` mesh (a sub-grid of the fine one, so the
coarse states are the fine nodal values, not an interpolation)::

    >>> cfg = BurgersDataConfig(trajectories=2, test_trajectories=1, t_end=0.04, dt=0.01, save_every=2,
    ...                         fine_cells=8, cells=4)
    >>> data = generate(cfg, seed=0)
    >>> data.train.shape, data.test.shape        # (trajectories, states, coarse nodes)
    ((2, 3, 25), (1, 3, 25))
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..config import Strict
from ..errors import CaseError, SolverError
from ..fileio import write_bytes


class BurgersDataConfig(Strict):
    """The trajectory family (see the module docstring) and its discretisation."""

    trajectories: int = Field(24, ge=1)
    test_trajectories: int = Field(6, ge=1)
    nu: float = Field(0.005, gt=0)
    t_end: float = Field(0.5, gt=0)
    dt: float = Field(0.005, gt=0)
    save_every: int = Field(5, ge=1)
    fine_cells: int = Field(48, ge=2)
    cells: int = Field(24, ge=2)
    max_bumps: int = Field(3, ge=1)
    amplitude: tuple[float, float] = (0.5, 1.0)
    width: tuple[float, float] = (0.08, 0.15)

    @model_validator(mode="after")
    def _nested(self) -> BurgersDataConfig:
        if self.fine_cells % self.cells:
            raise ValueError(f"fine_cells ({self.fine_cells}) must be a multiple of cells ({self.cells}), so the "
                             "coarse nodes are fine nodes")
        steps = round(self.t_end / self.dt)
        if abs(steps * self.dt - self.t_end) > 1e-9 * self.t_end or steps % self.save_every:
            raise ValueError(f"t_end / dt = {self.t_end / self.dt:g} must be a whole multiple of save_every "
                             f"({self.save_every})")
        return self


@dataclass
class BurgersData:
    """Coarse-node states ``(trajectories, states, nodes)`` (rectangle node order), times and the ICs."""

    train: np.ndarray
    test: np.ndarray
    times: np.ndarray
    initial_conditions: list[str]
    fine_time_s: float


def initial_condition(rng: np.random.Generator, cfg: BurgersDataConfig) -> str:
    """One random member of the family, as an expression string."""
    terms = []
    for _ in range(int(rng.integers(1, cfg.max_bumps + 1))):
        a = rng.choice([-1.0, 1.0]) * rng.uniform(*cfg.amplitude)
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        s = rng.uniform(*cfg.width)
        terms.append(f"{a:.6g}*exp(-((x-{cx:.6g})**2 + (y-{cy:.6g})**2)/{2 * s * s:.6g})")
    return " + ".join(terms)


def coarse_nodes(fine_cells: int, cells: int) -> np.ndarray:
    """Indices of the ``cells x cells`` rectangle's nodes among the ``fine_cells x fine_cells`` one's."""
    stride = fine_cells // cells
    j, i = np.meshgrid(np.arange(0, fine_cells + 1, stride), np.arange(0, fine_cells + 1, stride), indexing="ij")
    return (j * (fine_cells + 1) + i).ravel()


def solve_trajectory(expression: str, cfg: BurgersDataConfig) -> np.ndarray:
    """The FEM trajectory of one initial condition at the coarse nodes, shape ``(states, coarse nodes)``."""
    from ..meshes import rectangle
    from ..pde.burgers import Burgers
    from ..pde.expressions import Expression
    from .fem.burgers import solve_burgers

    pde = Burgers(nu=cfg.nu, initial=expression, t_end=cfg.t_end)
    boundary = Expression.parse(expression, field="method.data")
    sol = solve_burgers(pde, rectangle(cells=[cfg.fine_cells] * 2), dt=cfg.dt, boundary=boundary,
                        save_every=cfg.save_every)
    keep = coarse_nodes(cfg.fine_cells, cfg.cells)
    return np.stack([values[keep] for _, values in sol.snapshots])


def generate(cfg: BurgersDataConfig, seed: int = 0, advance: Callable[..., None] | None = None) -> BurgersData:
    """Solve the train and test trajectories (the split is by trajectory; ICs drawn from ``seed``)."""
    import time

    rng = np.random.default_rng(seed)
    total = cfg.trajectories + cfg.test_trajectories
    expressions = [initial_condition(rng, cfg) for _ in range(total)]
    start = time.process_time()
    states = []
    for expr in expressions:
        states.append(solve_trajectory(expr, cfg))
        if advance is not None:
            advance(1)
    states = np.stack(states)
    if not np.all(np.isfinite(states)):
        raise SolverError("a Burgers trajectory became non-finite", field="method.data.dt", fix="reduce dt")
    times = np.linspace(0.0, cfg.t_end, states.shape[1])
    return BurgersData(states[: cfg.trajectories], states[cfg.trajectories:], times, expressions,
                       time.process_time() - start)


def cache_key(cfg: BurgersDataConfig, seed: int) -> str:
    """A short hash of everything that defines the data."""
    text = json.dumps({"config": cfg.model_dump(mode="json"), "seed": seed, "version": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_or_generate(cfg: BurgersDataConfig, seed: int, folder: Path | None,
                     advance: Callable[..., None] | None = None) -> tuple[BurgersData, str]:
    """The data from ``folder/burgers_<key>.npz`` when present, else generated (and cached there).

    Returns:
        The data and what happened (``"loaded <path>"``, ``"generated"`` or ``"generated, cached <path>"``).
    """
    path = None if folder is None else Path(folder) / f"burgers_{cache_key(cfg, seed)}.npz"
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as f:
            data = BurgersData(f["train"], f["test"], f["times"], [str(s) for s in f["initial_conditions"]],
                               float(f["fine_time_s"]))
        if data.train.shape[:2] != (cfg.trajectories, round(cfg.t_end / cfg.dt) // cfg.save_every + 1):
            raise CaseError(f"cached data {path} does not match the config", field="method.data",
                            fix="delete the file to regenerate it")
        return data, f"loaded {path}"
    data = generate(cfg, seed, advance)
    if path is None:
        return data, "generated"
    buffer = io.BytesIO()
    np.savez(buffer, train=data.train, test=data.test, times=data.times,
             initial_conditions=np.array(data.initial_conditions), fine_time_s=data.fine_time_s,
             config=json.dumps(cfg.model_dump(mode="json")), seed=seed)
    write_bytes(path, buffer.getvalue())
    return data, f"generated, cached {path}"


def info(data: BurgersData) -> dict[str, Any]:
    """Sizes and the FEM cost, for metrics."""
    return {"train_trajectories": int(data.train.shape[0]), "test_trajectories": int(data.test.shape[0]),
            "states_per_trajectory": int(data.train.shape[1]), "coarse_nodes": int(data.train.shape[2]),
            "fem_cpu_time_s": round(data.fine_time_s, 3)}
