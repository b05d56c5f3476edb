"""Collocation samplers for PINNs: uniform resampling, RAR, RAD, DAS-R (KL form) and AAS (adversarial form).

Every sampler answers one question at the end of a training stage: *which points next?* It sees the
current points and a function returning the PDE residual at any points, and returns new points with a
``mode`` (``replace`` the PDE points, or ``add`` to them). :func:`deepxde_callback` hosts a sampler in
DeepXDE's training loop through ``data.replace_with_anchors`` / ``data.add_anchors``::

    >>> import numpy as np
    >>> region = Region.box([[-1, 1], [-1, 1]])
    >>> sampler = make_sampler("rad", region, points=200, seed=0)
    >>> x0 = sampler.initial()
    >>> x1 = sampler.next_points(lambda x: np.exp(-50 * ((x - 0.5) ** 2).sum(1)), x0, stage=0)
    >>> x1.shape, bool(np.linalg.norm(x1 - 0.5, axis=1).mean() < np.linalg.norm(x0 - 0.5, axis=1).mean())
    ((200, 2), True)

AAS (Tang et al., ICLR 2024) trains a bounded normalizing flow ``p`` to *maximise* the mean squared residual
under its own samples minus an H1 penalty, ``log E_p[r^2] - beta E_p |grad log p|^2`` (score-function
gradient; the log makes the step free of the residual's scale), while the PINN minimises the
residual on the flow's samples; a share of uniform points is always kept. DAS-R instead fits the flow to
``r^2 / Z`` by minimising the KL divergence with importance weights ``r^2 / q`` on the current points.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CaseError
from ..operators.flows import BoundedFlow, h1_penalty

log = logging.getLogger("neuralpde")

Residual = Callable[[np.ndarray], np.ndarray]
SAMPLERS = ("uniform", "rar", "rad", "das", "aas")
#: points on which the H1 penalty is estimated (its double backward costs ~10x a log-density)
H1_BATCH = 128


@dataclass
class Region:
    """Where collocation points may lie: a bounding box and an ``inside`` test (rejection for non-boxes)."""

    bounds: np.ndarray
    inside: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def box(cls, bounds: Any) -> Region:
        return cls(np.asarray(bounds, dtype=float))

    @property
    def dim(self) -> int:
        return self.bounds.shape[0]

    def keep(self, x: np.ndarray) -> np.ndarray:
        """The rows of ``x`` inside the region."""
        return x if self.inside is None else x[np.asarray(self.inside(x), dtype=bool)]

    def uniform(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` pseudo-random (never quasi-random: see DeepXDE #1306) uniform points in the region."""
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        out = np.empty((0, self.dim))
        for _ in range(1000):
            x = self.keep(lo + (hi - lo) * rng.random((max(2 * n, 64), self.dim)))
            out = np.vstack([out, x])
            if len(out) >= n:
                return out[:n]
        raise ValueError("the region's inside test rejects almost every point of its bounding box")


def collapsed(x: np.ndarray, bounds: np.ndarray, cells: int = 256, share: float = 0.95) -> bool:
    """Whether samples degenerated: non-finite, ``share`` of them in one of ``cells**d`` grid cells, or
    half of them pinned to the box boundary (a saturated bounded map)."""
    if len(x) == 0 or not np.isfinite(x).all():
        return True
    lo, span = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
    u = (x - lo) / span
    if np.mean(np.any((u < 1e-6) | (u > 1 - 1e-6), axis=1)) > 0.5:
        return True
    _, counts = np.unique(np.floor(u * cells).astype(np.int64), axis=0, return_counts=True)
    return counts.max() >= share * len(x)


@dataclass
class Sampler:
    """Base: uniform points at the start; subclasses choose the next points from the residual."""

    region: Region
    points: int = 1000
    seed: int = 0
    mode: str = "replace"
    rng: np.random.Generator = field(init=False, repr=False)
    #: importance weights ``1 / q`` of the current points, mean 1 (flow samplers with importance_weights), or None
    weights: np.ndarray | None = field(default=None, init=False, repr=False)
    history: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def initial(self) -> np.ndarray:
        return self.region.uniform(self.points, self.rng)

    def next_points(self, residual: Residual, current: np.ndarray, stage: int) -> np.ndarray:
        """The points for the next stage (``mode`` says whether they replace or join ``current``)."""
        return self.region.uniform(self.points, self.rng)

    def redraw(self, stage: int) -> np.ndarray:
        """Fresh points from the distribution of the current stage (no new residual): uniform here."""
        return self.region.uniform(self.points, self.rng)


def _no_redraw(name: str) -> CaseError:
    return CaseError(f"{name} chooses its points from the residual once per stage: there is no distribution to draw "
                     "fresh points from inside a stage", field="method.sampler.redraw_every",
                     fix="set redraw_every: 0, or use sampler type uniform, das or aas")


@dataclass
class RARSampler(Sampler):
    """Residual-based adaptive refinement (Lu et al. 2021): add the ``add`` worst of ``candidates`` points."""

    candidates: int = 10000
    add: int = 100
    mode: str = "add"

    def next_points(self, residual: Residual, current: np.ndarray, stage: int) -> np.ndarray:
        cand = self.region.uniform(self.candidates, self.rng)
        r = np.abs(residual(cand))
        return cand[np.argsort(-r)[: self.add]]

    def redraw(self, stage: int) -> np.ndarray:
        raise _no_redraw("RAR")


@dataclass
class RADSampler(Sampler):
    """Residual-based adaptive distribution (Wu et al. 2023): draw from ``|r|^k / mean|r|^k + c``."""

    candidates: int = 10000
    k: float = 1.0
    c: float = 1.0

    def next_points(self, residual: Residual, current: np.ndarray, stage: int) -> np.ndarray:
        cand = self.region.uniform(max(self.candidates, self.points), self.rng)
        err = np.abs(residual(cand)) ** self.k
        p = err / max(err.mean(), 1e-300) + self.c
        idx = self.rng.choice(len(cand), self.points, replace=False, p=p / p.sum())
        return cand[idx]

    def redraw(self, stage: int) -> np.ndarray:
        raise _no_redraw("RAD")


@dataclass
class FlowSampler(Sampler):
    """Shared part of DAS-R and AAS: a bounded flow on the region's box, a uniform share, collapse checks."""

    couplings: int = 6
    width: int = 32
    flow_steps: int = 300
    lr: float = 2e-3
    batch: int = 500
    beta: float = 0.0
    uniform_share: float = 0.2
    importance_weights: bool = False
    #: weights ``(1/q)^importance_power``: 1 unbiased (DAS), below 1 tempered
    importance_power: float = 1.0
    #: share of each stage's points drawn from the flows of the *earlier* stages (each frozen when the next stage's
    #: training starts; equal parts: stage k draws its memory from the k - 1 flows before it, the first of them the
    #: untrained, uniform one): the max form of AAS puts the flow on the largest residual, so with two peaks it hops
    #: from one to the other between stages and the peak it left loses its points; the memory keeps them (0: none)
    memory_share: float = 0.0
    flow: BoundedFlow = field(init=False, repr=False)
    previous: list[BoundedFlow] = field(default_factory=list, init=False, repr=False)
    _q: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.torch_gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.flow = BoundedFlow(self.region.bounds.tolist(), self.couplings, self.width)
        self.opt = torch.optim.Adam(self.flow.parameters(), lr=self.lr)
        self._volume = float(np.prod(self.region.bounds[:, 1] - self.region.bounds[:, 0]))

    def initial(self) -> np.ndarray:
        x = super().initial()
        self._q = np.full(len(x), 1.0 / self._volume)
        return x

    def log_prob(self, x: np.ndarray, flow: BoundedFlow | None = None) -> np.ndarray:
        """The log-density of ``flow`` (default: the current one) at the points ``x``."""
        with torch.no_grad():
            return (flow or self.flow).log_prob(torch.as_tensor(x, dtype=torch.float32)).double().numpy()

    def remember(self) -> None:
        """Freeze a copy of the current flow into the memory (called before a stage trains the flow)."""
        if self.memory_share > 0:
            self.previous.append(copy.deepcopy(self.flow).requires_grad_(False))

    def _samples(self, flow: BoundedFlow, n: int) -> np.ndarray:
        """``n`` samples of ``flow`` inside the region (fewer if it keeps missing the region)."""
        x_flow = np.empty((0, self.region.dim))
        for _ in range(50):
            if len(x_flow) >= n:
                break
            x_flow = np.vstack([x_flow, self.region.keep(flow.sample(2 * n, self.torch_gen).numpy())])
        return x_flow[:n]

    def _draw(self, stage: int) -> np.ndarray:
        """Flow samples inside the region plus the uniform share (and the memory's share, drawn in equal parts from
        the earlier stages' flows); on collapse, uniform only (and a reset)."""
        n_uniform = int(round(self.uniform_share * self.points))
        n_memory = int(round(self.memory_share * self.points)) if self.previous else 0
        n_flow = self.points - n_uniform - n_memory
        x_flow = self._samples(self.flow, n_flow)
        if len(x_flow) < n_flow or collapsed(x_flow, self.region.bounds):
            msg = (f"{type(self).__name__}: the flow collapsed at stage {stage} (its samples sit in one cell or "
                   "on the box boundary); this stage uses uniform points only and the flow restarts from uniform")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
            self.history.append({"stage": stage, "collapsed": True})
            self._reset_flow()
            x = self.region.uniform(self.points, self.rng)
            self._q = np.full(len(x), 1.0 / self._volume)
            self.weights = None if self.weights is None else np.ones(len(x))
            return x
        # equal parts of the memory's share from each earlier flow (a part a flow cannot fill: the current flow's)
        parts = [n_memory // len(self.previous) + (i < n_memory % len(self.previous))
                 for i in range(len(self.previous))] if n_memory else []
        memory = [self._samples(f, n) for f, n in zip(self.previous, parts, strict=True)]
        short = sum(parts) - sum(len(m) for m in memory)
        if short:
            x_flow = np.vstack([x_flow, self._samples(self.flow, short)])
            n_flow, n_memory = n_flow + short, n_memory - short
        x = np.vstack([x_flow, *memory, self.region.uniform(n_uniform, self.rng)])
        # the density the points were drawn from (the mixture), for the next importance weights
        share = n_uniform / self.points
        self._q = share / self._volume + (n_flow / self.points) * np.exp(self.log_prob(x))
        for f, m in zip(self.previous, memory, strict=False):      # no memory yet: memory == []
            self._q = self._q + (len(m) / self.points) * np.exp(self.log_prob(x, f))
        if self.importance_weights:
            # the DAS loss mean(r^2 / q) over x ~ q: an unbiased estimate of the integral of r^2 over the domain
            # (uniform measure), so concentrating points lowers its variance without re-weighting the loss
            # (importance_power < 1 tempers them: biased toward the flow's points, with a larger effective sample)
            w = self._q ** -self.importance_power
            self.weights = w / w.mean()
        return x

    def redraw(self, stage: int) -> np.ndarray:
        """Fresh samples of the current flow and uniform share, with their importance weights."""
        return self._draw(stage)

    def _reset_flow(self) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed + 7919)
            self.flow = BoundedFlow(self.region.bounds.tolist(), self.couplings, self.width)
        self.opt = torch.optim.Adam(self.flow.parameters(), lr=self.lr)


@dataclass
class DASSampler(FlowSampler):
    """DAS-R (Tang, Wan, Yang 2023): fit ``p`` to ``r^2 / Z`` by KL with weights ``r^2 / q`` on the current points."""

    uniform_share: float = 0.0

    def next_points(self, residual: Residual, current: np.ndarray, stage: int) -> np.ndarray:
        q = self._q if self._q is not None and len(self._q) == len(current) else np.full(len(current), 1 / self._volume)
        w = residual(current) ** 2 / q
        w = torch.as_tensor(w / max(w.mean(), 1e-300), dtype=torch.float32)
        x = torch.as_tensor(current, dtype=torch.float32)
        losses = []
        for _ in range(self.flow_steps):
            idx = torch.randint(len(x), (min(self.batch, len(x)),), generator=self.torch_gen)
            loss = -(w[idx] * self.flow.log_prob(x[idx])).mean()
            if self.beta:
                loss = loss + self.beta * h1_penalty(self.flow, x[idx[:H1_BATCH]])
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), 10.0)
            self.opt.step()
            losses.append(float(loss.detach()))
        self.history.append({"stage": stage, "flow_loss": losses[-1] if losses else None})
        return self._draw(stage)


@dataclass
class AASSampler(FlowSampler):
    """AAS: the flow maximises ``log E_p[r^2] - beta E_p|grad log p|^2`` on its own samples (REINFORCE)."""

    beta: float = 1e-3

    def next_points(self, residual: Residual, current: np.ndarray, stage: int) -> np.ndarray:
        self.remember()
        losses = []
        for _ in range(self.flow_steps):
            losses.append(adversarial_step(self.flow, self.opt, residual, self.batch, self.beta, self.torch_gen))
        self.history.append({"stage": stage, "flow_loss": losses[-1] if losses else None})
        return self._draw(stage)


def adversarial_step(flow: BoundedFlow, opt: torch.optim.Optimizer, residual: Residual, batch: int, beta: float,
                     generator: torch.Generator | None = None) -> float:
    """One ascent step of ``log E_p[r^2] - beta E_p|grad log p|^2`` in the flow's parameters; returns the loss.

    The gradient of the first term is ``E_p[r^2 grad log p] / E_p[r^2]`` (REINFORCE, self-normalised): the same
    direction as the gradient of ``E_p[r^2]`` but free of the residual's scale, which changes by orders of
    magnitude between stages, problems and dimensions. So ``beta`` has one meaning everywhere: for a residual
    bump of width ``s_r`` the flow settles at a width of about ``(beta s_r^2)^(1/4)`` per axis (docs/pinn.md).
    """
    x = flow.sample(batch, generator)
    r2 = torch.as_tensor(residual(x.double().numpy()) ** 2, dtype=x.dtype)
    logp = flow.log_prob(x)
    with torch.no_grad():
        rho = r2 / r2.mean().clamp_min(1e-300)
        advantage = rho - 1.0                         # minus the baseline 1 = mean(rho): less variance
    loss = -(advantage * logp).mean()
    if beta:
        loss = loss + beta * h1_penalty(flow, x[:H1_BATCH])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
    opt.step()
    return float(loss.detach())


_CLASSES: dict[str, type[Sampler]] = {"uniform": Sampler, "rar": RARSampler, "rad": RADSampler,
                                      "das": DASSampler, "aas": AASSampler}


def make_sampler(kind: str, region: Region, **options: Any) -> Sampler:
    """A sampler by name (``uniform``, ``rar``, ``rad``, ``das``, ``aas``) with its options."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}")
    return _CLASSES[kind](region, **options)
