"""One trainer for any neural operator on grid data: losses, normalisers, Adam + OneCycle, checkpoints, DDP.

Inputs and outputs are ``(N, n, n)`` arrays (a coefficient and its solution). The trainer normalises
them, trains with the relative L2 or H1 loss on the decoded output, keeps the weights with the best
validation error, resumes from its last checkpoint, and runs data-parallel under ``torchrun``
(gloo on CPU, nccl on GPU; each rank takes its share of the same global batch)::

    model = build_model({"type": "mgno", "channels": 16, "num_layers": 3, "iterations": "10 10 10 20"}, grid=64)
    result = train_operator(model, model_config, train=(a, u), val=(a_val, u_val),
                            config=TrainConfig(epochs=100), checkpoint_dir=Path("out/ckpt"))
    model, normalisers, ckpt = load_operator("out/ckpt/best.pt")   # no case file needed
"""

from __future__ import annotations

import atexit
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from ..errors import CaseError, SolverError
from ..progress import SILENT, Progress

KIND = "operator"


# ---------------------------------------------------------------- losses
def rel_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||pred - target|| / ||target||`` (per sample, over the grid)."""
    diff = (pred - target).flatten(1).norm(dim=1)
    return (diff / target.flatten(1).norm(dim=1).clamp_min(1e-30)).mean()


def _h1_weight(shape: tuple[int, int], cutoff: int, device: Any, dtype: Any) -> torch.Tensor:
    ky, kx = (torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype) for n in shape)
    ky, kx = ky.abs().clamp_max(cutoff)[:, None], kx.abs().clamp_max(cutoff)[None, :]
    return torch.sqrt(1 + kx**2 + ky**2)


def rel_h1(pred: torch.Tensor, target: torch.Tensor, cutoff: int = 20) -> torch.Tensor:
    """Relative H1 error in Fourier space (the MgNO/FNO ``HsLoss``): weight ``sqrt(1 + kx^2 + ky^2)``,
    integer frequencies capped at ``cutoff`` (our reading of the paper's ``|k| < 20`` truncation)."""
    w = _h1_weight(tuple(pred.shape[-2:]), cutoff, pred.device, pred.dtype)
    e = torch.fft.fft2(pred - target) * w
    t = torch.fft.fft2(target) * w
    return (e.abs().flatten(1).norm(dim=1) / t.abs().flatten(1).norm(dim=1).clamp_min(1e-30)).mean()


LOSSES = {"l2": rel_l2, "h1": rel_h1}


# ---------------------------------------------------------------- normalisers
class Normaliser(nn.Module):
    """``(x - mean) / std`` pointwise (FNO's UnitGaussianNormalizer, the paper's 'PGN'), globally, or not at all.

    Pointwise statistics live on the training grid; on another grid they are interpolated (bilinear,
    grid nodes at the corners), so a model also runs zero-shot at other resolutions.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, kind: str):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def fit(cls, data: torch.Tensor, kind: str = "pointwise", eps: float = 1e-5) -> Normaliser:
        """Statistics of ``data`` ``(N, n, n)``."""
        if kind == "pointwise":
            return cls(data.mean(0)[None, None], data.std(0)[None, None] + eps, kind)
        if kind == "global":
            return cls(data.mean().reshape(1, 1, 1, 1), data.std().reshape(1, 1, 1, 1) + eps, kind)
        if kind == "none":
            return cls(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), kind)
        raise CaseError(f"unknown normalisation {kind!r}", field="method.normalize_input",
                        fix="use pointwise, global or none")

    @classmethod
    def empty(cls, kind: str, shape: tuple[int, ...]) -> Normaliser:
        """A placeholder with the right buffer shapes, to load a state dict into."""
        return cls(torch.zeros(shape), torch.ones(shape), kind)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean.shape[-2:] == x.shape[-2:] or self.mean.shape[-1] == 1:
            return self.mean, self.std
        import torch.nn.functional as F

        size = tuple(x.shape[-2:])
        return (F.interpolate(self.mean, size=size, mode="bilinear", align_corners=True),
                F.interpolate(self.std, size=size, mode="bilinear", align_corners=True))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean


class OperatorModel(nn.Module):
    """A network with its normalisers: physical input ``(B, n, n)`` -> physical output ``(B, n, n)``."""

    def __init__(self, net: nn.Module, x_norm: Normaliser, y_norm: Normaliser):
        super().__init__()
        self.net, self.x_norm, self.y_norm = net, x_norm, y_norm

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        x = self.x_norm.encode(a[:, None])
        return self.y_norm.decode(self.net(x))[:, 0]


# ---------------------------------------------------------------- models
def build_model(config: dict[str, Any], grid: int | None = None) -> nn.Module:
    """The network described by ``config`` (``type``: ``mgno`` or ``fno``, plus its arguments).

    For MgNO, ``grid`` (nodes per side) fixes the transposed-conv kernels unless ``config`` has one.
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind == "mgno":
        from ..operators.mgno import MgNO

        if "grid" not in cfg:
            if grid is None:
                raise CaseError("MgNO needs the grid size", field="method.model.grid", fix="set the data resolution")
            cfg["grid"] = [grid, grid]
        return MgNO(**cfg)
    if kind == "fno":
        from ..operators.fno import build_fno

        return build_fno(**cfg)
    raise CaseError(f"unknown operator model {kind!r}", field="method.model.type", fix="use mgno or fno")


def model_config(net: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able config that rebuilds ``net`` (MgNO adds its resolved grid and iterations)."""
    if config.get("type") == "mgno":
        return {"type": "mgno", **net.config}
    return dict(config)


def num_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------- distributed
@dataclass
class Distributed:
    """Rank and world size under torchrun (``WORLD_SIZE`` > 1), else a single process."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
            # tear the group down before the interpreter does: a live gloo group at exit ends the process with
            # "terminate called without an active exception" (SIGABRT) now and then
            atexit.register(_destroy_group)
        return cls(dist.get_rank(), dist.get_world_size())

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Training settings (the case file's ``method.train``)."""

    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "h1"
    pct_start: float = 0.2
    div_factor: float = 2.0
    final_div_factor: float = 100.0
    normalize_input: str = "pointwise"
    normalize_output: str = "pointwise"
    budget_s: float | None = None       # time budget: epochs are cut to what fits after the first epoch
    budget_clock: str = "wall"          # "wall", or "cpu" (process time: an equal compute budget on a shared machine)
    resume: bool = True
    checkpoint_every: int = 1
    stop_after: int | None = None       # end this invocation after that many epochs (resume later)


@dataclass
class TrainResult:
    model: OperatorModel
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.inf
    epochs_run: int = 0
    seconds_per_epoch: float = 0.0
    train_seconds: float = 0.0
    checkpoint: Path | None = None


class CoupledAdam(torch.optim.Adam):
    """Adam with L2 weight decay added to the gradient (FNO's Adam.py, which MgNO uses), i.e. torch's Adam."""


def train_operator(net: nn.Module, net_config: dict[str, Any], train: tuple[np.ndarray, np.ndarray],
                   val: tuple[np.ndarray, np.ndarray], config: TrainConfig, *, checkpoint_dir: Path | None = None,
                   device: str = "cpu", seed: int = 0, progress: Progress = SILENT,
                   extra_config: dict[str, Any] | None = None) -> TrainResult:
    """Train ``net`` on ``train = (a, u)`` and keep the weights with the best validation rel. L2.

    Args:
        net: the network (channels in = out = 1).
        net_config: what rebuilds it (:func:`model_config`), stored in checkpoints.
        train, val: ``(inputs, outputs)`` arrays of shape ``(N, n, n)``.
        config: the settings.
        checkpoint_dir: where ``ckpt_<epoch>.pt`` and ``best.pt`` go (rank 0); resumed from when ``config.resume``.
        device: torch device.
        seed: seeds the initial weights (by the caller) and the per-epoch shuffles.
        progress: progress reporter (epochs).
        extra_config: more JSON-able facts to store (data attributes, resolution).

    Returns:
        A :class:`TrainResult` holding the best model (with its normalisers), on ``device``.
    """
    if config.budget_clock not in ("wall", "cpu"):
        raise CaseError(f"unknown budget clock {config.budget_clock!r}", field="method.train.budget_clock",
                        fix="use wall or cpu")
    clock = time.process_time if config.budget_clock == "cpu" else time.perf_counter
    if config.loss not in LOSSES:
        raise CaseError(f"unknown loss {config.loss!r}", field="method.train.loss", fix="use l2 or h1")
    dist = Distributed.from_env(device)
    if config.batch_size % dist.world:
        raise CaseError(f"batch_size {config.batch_size} is not divisible by the {dist.world} DDP ranks",
                        field="method.train.batch_size", fix=f"use a multiple of {dist.world}")
    a_tr, u_tr = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in train)
    a_va, u_va = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in val)
    model = OperatorModel(net, Normaliser.fit(a_tr, config.normalize_input),
                          Normaliser.fit(u_tr, config.normalize_output)).to(device)
    ckpt_config = {"model": net_config, "normalize_input": config.normalize_input,
                   "normalize_output": config.normalize_output, "x_norm_shape": list(model.x_norm.mean.shape),
                   "y_norm_shape": list(model.y_norm.mean.shape),
                   **(extra_config or {})}
    wrapped: nn.Module = model
    if dist.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(model)
    opt = CoupledAdam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = LOSSES[config.loss]
    start, epochs = 0, config.epochs
    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = math.inf, 0, None
    opt_state = sched_state = None
    train_seconds = 0.0
    latest = latest_checkpoint(checkpoint_dir, "ckpt") if (checkpoint_dir and config.resume) else None
    if latest is not None:
        ck = load_checkpoint(latest, kind=KIND, expect={"model": net_config})
        model.load_state_dict(ck["state"]["model"])
        opt_state, sched_state = ck["state"]["optimizer"], ck["state"]["scheduler"]
        start, epochs, history = int(ck["epoch"]), int(ck["epochs"]), list(ck["history"])
        best_val, best_epoch, train_seconds = float(ck["best_val"]), int(ck["best_epoch"]), float(ck["train_seconds"])
        best_state = ck["state"]["best"]
    if start == 0:
        for g in opt.param_groups:      # OneCycle starts at max_lr / div_factor; its length is known after epoch 1
            g["lr"] = config.lr / config.div_factor
    scheduler = None
    if start > 0:
        scheduler = _one_cycle(opt, config, epochs, sched_state, opt_state)
    n, local = len(a_tr), config.batch_size // dist.world
    steps = max(n // config.batch_size, 1)
    with progress.task(f"training ({num_parameters(net):,} parameters)", total=epochs) as advance:
        advance(start)
        epoch = start
        stop = epochs if config.stop_after is None else min(epochs, start + config.stop_after)
        while epoch < stop:
            t0, c0 = time.perf_counter(), clock()
            wrapped.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            total = 0.0
            for step in range(steps):
                batch = order[step * config.batch_size:(step + 1) * config.batch_size]
                mine = batch[dist.rank * local:(dist.rank + 1) * local]
                a, u = a_tr[mine].to(device), u_tr[mine].to(device)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(wrapped(a), u)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            train_loss = dist.mean(total / steps)
            if not math.isfinite(train_loss):
                raise SolverError(f"training diverged at epoch {epoch + 1} (loss {train_loss})",
                                  field="method.train.lr", fix="lower the learning rate")
            val_l2, val_h1 = evaluate(model, a_va, u_va, device=device)
            epoch += 1
            train_seconds += clock() - c0
            if scheduler is None:
                if config.budget_s is not None:
                    epochs = max(1, min(epochs, int(config.budget_s // max(train_seconds, 1e-9))))
                    stop = min(stop, epochs)
                scheduler = _one_cycle(opt, config, epochs)
            if epoch < epochs:
                with warnings.catch_warnings():     # built after optimizer steps on purpose (see above)
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    scheduler.step()
            history.append({"epoch": epoch, "train_loss": train_loss, "val_rel_l2": val_l2, "val_rel_h1": val_h1,
                            "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                            "budget_seconds": clock() - c0})
            if val_l2 < best_val:
                best_val, best_epoch = val_l2, epoch
                best_state = tensor_state(model)
            if checkpoint_dir is not None and dist.rank == 0 and (epoch % config.checkpoint_every == 0
                                                                 or epoch == epochs):
                _save(checkpoint_dir, model, opt, scheduler, ckpt_config, epoch, epochs, history, best_val,
                      best_epoch, train_seconds, best_state)
            advance(train=train_loss, val=val_l2)
    if best_state is not None:
        model.load_state_dict(best_state)
    result = TrainResult(model, history, best_epoch, best_val, epoch, train_seconds / max(epoch - start, 1)
                         if epoch > start else 0.0, train_seconds)
    if checkpoint_dir is not None and dist.rank == 0:
        result.checkpoint = save_checkpoint(Path(checkpoint_dir) / "best.pt", kind=KIND, config=ckpt_config,
                                            state={"model": tensor_state(model)}, epoch=best_epoch,
                                            val_rel_l2=best_val)
    return result


def tensor_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, copied to the CPU: neuraloperator adds a ``_metadata`` entry holding
    Python objects, which ``weights_only`` loading refuses (the config rebuilds the model instead)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}


def _one_cycle(opt: torch.optim.Optimizer, config: TrainConfig, epochs: int, state: dict | None = None,
               opt_state: dict | None = None) -> Any:
    """OneCycle over ``epochs`` steps; on resume the optimizer state is loaded after the schedule is
    built, because building it resets the learning rate and Adam's beta1 (cycled momentum)."""
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(epochs, 2),
                                                pct_start=config.pct_start, div_factor=config.div_factor,
                                                final_div_factor=config.final_div_factor)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    if state is not None:
        sched.load_state_dict(state)
    return sched


def _save(folder: Path, model: nn.Module, opt: Any, sched: Any, config: dict, epoch: int, epochs: int,
          history: list, best_val: float, best_epoch: int, train_seconds: float, best_state: dict | None) -> None:
    folder = Path(folder)
    state = {"model": tensor_state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "best": best_state}
    save_checkpoint(folder / f"ckpt_{epoch}.pt", kind=KIND, config=config, state=state, epoch=epoch, epochs=epochs,
                    history=history, best_val=best_val, best_epoch=best_epoch, train_seconds=train_seconds)
    for old in folder.glob("ckpt_*.pt"):           # keep the newest only: a checkpoint per epoch is enough
        if old.name != f"ckpt_{epoch}.pt":
            old.unlink(missing_ok=True)


@torch.no_grad()
def evaluate(model: nn.Module, a: torch.Tensor, u: torch.Tensor, *, device: str = "cpu",
             batch_size: int = 32) -> tuple[float, float]:
    """Mean relative L2 and H1 errors of ``model`` on ``(a, u)``."""
    model.eval()
    l2 = h1 = 0.0
    for i in range(0, len(a), batch_size):
        pred = model(a[i:i + batch_size].to(device))
        target = u[i:i + batch_size].to(device)
        l2 += float(rel_l2(pred, target)) * len(pred)
        h1 += float(rel_h1(pred, target)) * len(pred)
    return l2 / max(len(a), 1), h1 / max(len(a), 1)


@torch.no_grad()
def predict(model: nn.Module, a: np.ndarray, *, device: str = "cpu", batch_size: int = 32) -> np.ndarray:
    model.eval()
    x = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    return np.concatenate([model(x[i:i + batch_size].to(device)).cpu().numpy() for i in range(0, len(x), batch_size)])


def load_operator(path: str | Path, *, expect: dict[str, Any] | None = None,
                  device: str = "cpu") -> tuple[OperatorModel, dict[str, Any]]:
    """Rebuild a trained operator (with normalisers) from a checkpoint alone.

    Raises:
        SolverError: not an operator checkpoint, or ``expect`` (e.g. ``{"model": {...}}``) does not match.
    """
    ck = load_checkpoint(path, kind=KIND, expect=expect)
    cfg = ck["config"]
    net = build_model(cfg["model"])
    model = OperatorModel(net, Normaliser.empty(cfg["normalize_input"], tuple(cfg["x_norm_shape"])),
                          Normaliser.empty(cfg["normalize_output"], tuple(cfg["y_norm_shape"])))
    try:
        model.load_state_dict(ck["state"]["model"])
    except RuntimeError as exc:
        raise SolverError(f"checkpoint weights do not fit its own model config ({str(exc)[:200]})", file=str(path),
                          fix="train again") from None
    return model.to(device), ck
