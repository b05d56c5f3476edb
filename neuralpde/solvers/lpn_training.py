"""Training a learned proximal network as a denoiser: ``y = x + sigma n``, loss on ``f(y) - x``.

The paper's schedule (:func:`paper_schedule`) is an L1 warm-up, then proximal matching
``mean[1 - exp(-(||f(y) - x|| / gamma)^2)]`` with ``gamma`` halved over four stages down to ``gamma_min``;
as ``gamma -> 0`` the network learns the MAP denoiser, i.e. the proximal operator of ``-log p``.
The constrained weights are clamped after every Adam step, training resumes from the last checkpoint,
and each step's noise comes from a generator seeded by ``(seed, step)``, so a resumed run equals an
uninterrupted one.

    >>> from neuralpde.operators.lpn import LPNDense
    >>> net = LPNDense(hidden=8, layers=2)
    >>> hist = train_lpn(net, laplace_sampler(1), sigma=1.0, batch=64, stages=[Stage("l1", 5, 1e-3)])
    >>> len(hist["loss"]), min(float(w.min()) for w in net.constrained_weights()) >= 0
    (5, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SolverError
from ..operators.lpn import LPN
from ..progress import SILENT, Progress

__all__ = ["Stage", "checkpoint_path", "field_schedule", "laplace_sampler", "load_lpn", "loss_value",
           "paper_schedule", "run_laplace1d", "toy_pm_schedule", "train_lpn"]

LOSSES = ("l1", "l2", "pm")
CHECKPOINT_KIND = "lpn"

Sampler = Callable[[int, torch.Generator], torch.Tensor]
#: ``posterior(noisy) -> (nodes, weights)``, each ``(batch, m)``: quadrature of the clean value given each noisy
#: 1D sample (weights summing to 1 per row); see :func:`laplace_posterior`
Posterior = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Stage:
    """``steps`` Adam steps at learning rate ``lr`` with ``loss`` (``l1``, ``l2`` or ``pm``; ``pm`` needs
    ``gamma``)."""

    loss: str
    steps: int
    lr: float
    gamma: float | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise SolverError(f"unknown loss {self.loss!r}", field="method.train.loss", fix=f"use one of {LOSSES}")
        if self.loss == "pm" and (self.gamma is None or self.gamma <= 0):
            raise SolverError("proximal matching needs gamma > 0", field="method.train.gamma_min",
                              fix="e.g. gamma_min: 0.08 * sqrt(number of pixels)")
        if self.steps < 0 or self.lr <= 0:
            raise SolverError(f"a stage needs steps >= 0 and lr > 0, got {self.steps}, {self.lr}",
                              field="method.train", fix="e.g. steps: 1000, lr: 1.0e-3")


def paper_schedule(steps: int, gamma_min: float, lr_l1: float = 1e-3, lr_pm: float = 1e-4,
                   l1_fraction: float = 0.5) -> list[Stage]:
    """The paper's schedule scaled to ``steps``: L1 for ``l1_fraction`` of them, then proximal matching
    in four equal stages with ``gamma = gamma_min * 8, 4, 2, 1`` (paper: 40k steps, half and half)."""
    l1 = int(round(steps * l1_fraction))
    pm = steps - l1
    stage = [pm // 4 + (1 if i < pm % 4 else 0) for i in range(4)]
    return [Stage("l1", l1, lr_l1)] + [Stage("pm", n, lr_pm, gamma_min * 2.0 ** (3 - i)) for i, n in enumerate(stage)]


def field_schedule(train: Any, pixels: int) -> list[Stage]:
    """The paper's schedule from a case's ``method.train`` (``gamma_min`` defaults to ``0.08 sqrt(pixels)``;
    ``l1_fraction`` is the share of L1 steps)."""
    gamma_min = train.gamma_min if train.gamma_min is not None else 0.08 * math.sqrt(pixels)
    return paper_schedule(train.steps, gamma_min, lr_l1=train.lr, lr_pm=train.lr / 10,
                          l1_fraction=train.l1_fraction)


def toy_pm_schedule(steps: int, lr: float = 1e-2) -> list[Stage]:
    """Proximal matching for the 1D toy, reduced: ``gamma`` 0.5, 0.3, 0.2, 0.1 over 2/9, 2/9, 2/9, 3/9 of
    ``steps`` at ``lr/10, lr/10, lr/30, lr/100`` (the paper: 0.5 ... 0.1 over 24k steps, lr 1e-3 ... 1e-6)."""
    parts = [(0.5, 2, 10), (0.3, 2, 10), (0.2, 2, 30), (0.1, 3, 100)]
    return [Stage("pm", steps * k // 9, lr / d, g) for g, k, d in parts]


def laplace_posterior(sigma: float = 1.0, scale: float = 1.0, half_width: float = 10.0,
                      nodes: int = 801) -> Posterior:
    """The posterior of ``x ~ Laplace(0, scale)`` given ``y = x + sigma n`` on a fixed grid of ``nodes`` points in
    ``[-half_width, half_width]`` (for :func:`train_lpn`'s ``posterior``; the toy's noisy samples lie well inside:
    the prior's tail beyond 10 has mass e^-10)."""
    grid = torch.linspace(-half_width, half_width, nodes)

    def posterior(noisy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = grid.to(noisy)
        logw = -0.5 * ((noisy.reshape(-1, 1) - g) / sigma) ** 2 - g.abs() / scale
        return g.expand(logw.shape[0], -1), torch.softmax(logw, dim=1)

    return posterior


def laplace_sampler(dim: int = 1, scale: float = 1.0) -> Sampler:
    """Samples of the Laplace(0, scale) distribution, shape ``(batch, dim)`` (the paper's 1D toy)."""
    def sample(batch: int, generator: torch.Generator) -> torch.Tensor:
        e = torch.rand(2, batch, dim, generator=generator).clamp_min(1e-12)
        return scale * (torch.log(e[0]) - torch.log(e[1]))      # difference of two exponentials

    return sample


def _pointwise_loss(kind: str, err: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """The loss of each error: ``e^2`` (l2), ``|e|`` (l1), ``1 - exp(-(e / gamma)^2)`` (pm, ``e`` a norm)."""
    if kind == "l2":
        return err.pow(2)
    if kind == "l1":
        return err.abs()
    return 1.0 - torch.exp(-(err / gamma) ** 2)


def loss_value(kind: str, denoised: torch.Tensor, clean: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
    """The training loss of one batch: ``l2`` (-> MMSE), ``l1`` (-> median), ``pm`` (-> MAP as gamma -> 0)."""
    err = (denoised - clean).flatten(1)
    return _pointwise_loss(kind, err.norm(dim=1) if kind == "pm" else err, gamma).mean()


def expected_loss(kind: str, denoised: torch.Tensor, nodes: torch.Tensor, weights: torch.Tensor,
                  gamma: float | None = None) -> torch.Tensor:
    """:func:`loss_value` of 1D samples averaged over the clean value given each noisy one: ``sum_j w_j l(f(y) -
    x_j)`` with the posterior's quadrature ``(nodes, weights)``, each ``(batch, m)``. Its expectation over ``y``
    is the sampled loss's expectation over ``(x, y)``, so the minimiser is the same; only the gradient noise from
    drawing one ``x`` per ``y`` is gone (Rao-Blackwellisation)."""
    err = denoised.reshape(-1, 1) - nodes
    return (weights * _pointwise_loss(kind, err, gamma)).sum(1).mean()


def train_lpn(net: LPN, sampler: Sampler, *, sigma: float, batch: int, stages: list[Stage], seed: int = 0,
              progress: Progress = SILENT, checkpoint_dir: str | Path | None = None, checkpoint_every: int = 500,
              description: str = "LPN training", device: str = "cpu",
              posterior: Posterior | None = None) -> dict[str, Any]:
    """Train ``net`` in place on ``y = x + sigma n``, ``x = sampler(batch, generator)``.

    Args:
        net: the network (moved to ``device``).
        sampler: draws clean samples shaped like the network's input.
        sigma: noise level of the training pairs.
        batch: samples per step.
        stages: the schedule (see :func:`paper_schedule`).
        seed: seeds the noise of each step (with the step number).
        progress: shows one bar over all steps.
        checkpoint_dir: when given, save ``lpn_<step>.pt`` there every ``checkpoint_every`` steps and at the
            end, and resume from the latest one found there.
        checkpoint_every: steps between checkpoints.
        description: the progress bar's label.
        device: torch device.
        posterior: 1D samples only: the loss of each noisy ``y`` is its expectation over the clean value given
            ``y`` (:func:`expected_loss`, e.g. with :func:`laplace_posterior`) instead of the loss at the drawn
            ``x``: the same objective with far less gradient noise (the 1D toy's proximal matching at small
            ``gamma``, where few drawn ``x`` fall within ``gamma`` of ``f(y)``).

    Returns:
        ``{"loss": [...], "stage": [...], "resumed_from": step or 0}`` (history of this call's steps).

    Raises:
        SolverError: the loss became NaN, or a checkpoint in ``checkpoint_dir`` is for another network.
    """
    if sigma < 0 or batch < 1:
        raise SolverError(f"need sigma >= 0 and batch >= 1, got {sigma}, {batch}", field="method.train",
                          fix="e.g. sigma: 0.1, batch: 32")
    net.to(device).train()
    total = sum(s.steps for s in stages)
    opt = torch.optim.Adam(net.parameters(), lr=stages[0].lr if stages else 1e-3)
    config = {"network": net.config(), "sigma": sigma, "batch": batch, "seed": seed,
              "stages": [asdict(s) for s in stages]}
    if posterior is not None:                   # a checkpoint of the sampled loss is not resumed with this one
        config["expected_loss"] = True
    start = _resume(net, opt, checkpoint_dir, config)
    history: dict[str, Any] = {"loss": [], "stage": [], "resumed_from": start}
    bounds = [0]
    for s in stages:
        bounds.append(bounds[-1] + s.steps)
    generator = torch.Generator()
    with progress.task(description, total=total) as advance:
        advance(start)
        for step in range(start, total):
            k = next(i for i in range(len(stages)) if step < bounds[i + 1])
            stage = stages[k]
            for group in opt.param_groups:
                group["lr"] = stage.lr
            generator.manual_seed(seed * 1_000_003 + step)
            clean = sampler(batch, generator).to(device)
            noisy = clean + sigma * torch.randn(clean.shape, generator=generator).to(device)
            if posterior is None:
                loss = loss_value(stage.loss, net(noisy), clean, stage.gamma)
            else:
                loss = expected_loss(stage.loss, net(noisy), *posterior(noisy), stage.gamma)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SolverError(f"the training loss became {value} at step {step}", field="method.train.lr",
                                  fix="lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            net.clamp_weights()
            history["loss"].append(value)
            history["stage"].append(k)
            advance(loss=value, stage=k)
            done = step + 1
            if checkpoint_dir is not None and (done % checkpoint_every == 0 or done == total):
                _save(net, opt, checkpoint_dir, config, done)
    net.eval()
    return history


def checkpoint_path(folder: str | Path, step: int) -> Path:
    """The file :func:`train_lpn` keeps in ``folder`` after ``step`` steps (load it with :func:`load_lpn`)."""
    return Path(folder) / f"lpn_{step:07d}.pt"


def _save(net: LPN, opt: torch.optim.Optimizer, folder: str | Path, config: dict, step: int) -> None:
    from ..checkpoints import save_checkpoint

    save_checkpoint(checkpoint_path(folder, step), kind=CHECKPOINT_KIND, config=config,
                    state={"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step})


def _resume(net: LPN, opt: torch.optim.Optimizer, folder: str | Path | None, config: dict) -> int:
    if folder is None:
        return 0
    from ..checkpoints import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(folder, "lpn")
    if path is None:
        return 0
    ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND, expect=config)
    net.load_state_dict(ckpt["state"]["model"])
    opt.load_state_dict(ckpt["state"]["optimizer"])
    return int(ckpt["state"]["step"])


def load_lpn(path: str | Path, *, expect: dict[str, Any] | None = None, map_location: str = "cpu") -> LPN:
    """A trained network from a checkpoint written by :func:`train_lpn`.

    Args:
        path: the checkpoint file.
        expect: network settings it must have, e.g. ``{"size": [32, 32]}`` (a mismatch is a clear error).
        map_location: torch device to load onto.
    """
    from ..checkpoints import load_checkpoint
    from ..operators.lpn import build_lpn

    ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND, map_location=map_location)
    network = ckpt["config"]["network"]
    for key, want in (expect or {}).items():
        have = network.get(key)
        if have != want:
            raise SolverError(f"checkpoint {path} is for {key}={have}, not {want}", field=f"method.network.{key}",
                              fix="train a network for this setting, or point to a matching checkpoint")
    net = build_lpn(network)
    net.load_state_dict(ckpt["state"]["model"])
    return net.eval()


#: the paper's 1D table (computed by quadrature): y, then MMSE (L2) and posterior median (L1)
TOY_Y = [-3.0, -2.0, -1.0, -0.5, 0.0, 1.0, 2.0, 3.0]
TOY_TARGETS = {"l2": [-2.026, -1.161, -0.503, -0.241, 0.0, 0.503, 1.161, 2.026],
               "l1": [-2.012, -1.107, -0.429, -0.190, 0.0, 0.429, 1.107, 2.012],
               "pm": [math.copysign(max(abs(y) - 1.0, 0.0), y) for y in TOY_Y]}


def run_laplace1d(cfg: Any, ctx: Any) -> Any:
    """The 1D Laplacian toy: L2, L1 and (from the L1 net) proximal-matching nets on ``x ~ Laplace(0, 1)``,
    ``sigma = 1``; reports each net against its target row and ``R - min R`` against ``|x|``."""
    from ..operators.lpn import LPNDense
    from .method import MethodResult

    t = cfg.train
    sample = laplace_sampler()
    ys = torch.tensor(TOY_Y)[:, None]
    grid = torch.linspace(-3, 3, 121)[:, None]
    metrics: dict[str, Any] = {"task": "laplace1d"}
    curves: dict[str, Any] = {}
    net = None
    folder = ctx.checkpoint_dir
    for i, loss in enumerate(("l2", "l1", "pm")):
        if loss != "pm":
            torch.manual_seed(ctx.seed + i)
            net = LPNDense(dim=1, hidden=cfg.network.hidden, layers=cfg.network.layers, beta=cfg.network.beta,
                           alpha=cfg.network.alpha or 0.0)
            stages = [Stage(loss, t.steps // 2, t.lr), Stage(loss, t.steps - t.steps // 2, t.lr / 10)]
            batch = t.batch
        else:
            stages, batch = toy_pm_schedule(t.pm_steps, t.lr), t.pm_batch or t.batch
        train_lpn(net, sample, sigma=1.0, batch=batch, stages=stages, seed=ctx.seed + i, progress=ctx.progress,
                  checkpoint_dir=None if folder is None else folder / loss, description=f"1D toy ({loss})",
                  checkpoint_every=max(1, sum(s.steps for s in stages) // 2),
                  posterior=laplace_posterior() if t.toy_loss == "expected" else None)
        with torch.no_grad():
            f = net(ys).squeeze(1)
            curves[loss] = net(grid).squeeze(1).tolist()
        target = torch.tensor(TOY_TARGETS[loss])
        metrics[loss] = {"f": [round(v, 4) for v in f.tolist()], "target": TOY_TARGETS[loss],
                         "max_error": float((f - target).abs().max())}
    x = torch.linspace(-4, 4, 81)[:, None]
    r = net.prior(x, tol=1e-6).double()
    inside = torch.isfinite(r)               # with alpha = 0, R is +inf outside the range of f
    r = r - r[inside].min() if bool(inside.any()) else r
    err = (r - x.squeeze(1).abs()).abs()[inside]
    metrics["prior_max_error_vs_abs"] = float(err.max()) if err.numel() else None
    metrics["prior_points_outside_range"] = int((~inside).sum())
    files = []
    if ctx.out_dir is not None and ctx.rank == 0:
        from ..viz import line_plot

        g = grid.squeeze(1).tolist()
        if "toy" in ctx.plots:
            series = {f"{k} net": (g, v) for k, v in curves.items()}
            series["soft threshold"] = (g, [math.copysign(max(abs(v) - 1, 0), v) for v in g])
            files.append(line_plot(series, ctx.out_dir / "toy.png", xlabel="y", ylabel="f(y)",
                                   title="1D Laplacian toy: learned denoisers"))
        if "prior" in ctx.plots:
            xs = x.squeeze(1).tolist()
            files.append(line_plot({"learned R - min R": (xs, r.tolist()), "|x|": (xs, [abs(v) for v in xs])},
                                   ctx.out_dir / "prior.png", xlabel="x", ylabel="R(x)",
                                   title="prior of the proximal-matching net"))
    return MethodResult(field=None, metrics=metrics, files=files)
