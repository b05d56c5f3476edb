"""The MM-PDE moving-mesh neural solver for 2D Burgers (Hu, Wang, Ma, ICLR 2024), and its fixed-mesh baseline.

The state lives on a fixed coarse ``n x n`` mesh of [0, 1]^2. For each state a frozen DMM moves that mesh (one
forward pass); the state is interpolated (P1) onto the moved nodes, a message-passing network ``model_b`` runs
there, a learned interpolation (ItpNet) brings its output back to the fixed nodes, and a second network
``model`` runs on the fixed mesh::

    u_next = u + Itp_back(model_b(u on the moved mesh)) + model(u on the fixed mesh)

Boundary values (time-independent Dirichlet data) are kept. Training minimises the one-step MSE against the FEM
trajectories (:mod:`~neuralpde.solvers.burgers_data`); prediction rolls out autoregressively. The baseline is
``u_next = u + model(u on the fixed mesh)`` trained the same way. Use from Python::

    metrics, states = train_and_evaluate(MMPDEConfig(), seed=0, folder=Path("out/mmpde"), progress=Progress())
    metrics["mmpde"]["rollout_rel_l2_final"], metrics["fixed"]["rollout_rel_l2_final"]

Choices where the paper is silent are listed in docs/mesh_movers.md ("MM-PDE solver").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..errors import CaseError, SolverError
from ..meshes.dmm import DMMMover
from ..meshes.quality import signed_areas
from ..operators.mpnn import MPNN, ItpNet, ItpNetConfig, MPNNConfig, mesh_edges
from .burgers_data import BurgersDataConfig, cache_key, info, load_or_generate
from .method import Method, MethodConfig, MethodResult, RunContext, Strict, register
from .mmpde import DMMFitConfig


def grid_p1(values: torch.Tensor, points: torch.Tensor, n: int) -> torch.Tensor:
    """P1 interpolation of nodal ``values`` ``(B, (n+1)^2)`` of the right-diagonal ``n x n`` unit-square mesh
    (``neuralpde.meshes.rectangle`` node order) at ``points`` ``(B, P, 2)``; returns ``(B, P)``."""
    s = torch.clamp(points, 0.0, 1.0) * n
    ij = torch.clamp(torch.floor(s.detach()), max=n - 1)
    f = s - ij
    i, j = ij[..., 0].long(), ij[..., 1].long()
    fx, fy = f[..., 0], f[..., 1]
    b = torch.arange(values.shape[0], device=values.device)[:, None]
    v0 = values[b, j * (n + 1) + i]
    v1 = values[b, j * (n + 1) + i + 1]
    v2 = values[b, (j + 1) * (n + 1) + i + 1]
    v3 = values[b, (j + 1) * (n + 1) + i]
    lower = v0 + fx * (v1 - v0) + fy * (v2 - v1)          # triangle (v0, v1, v2): fx >= fy
    upper = v0 + fy * (v3 - v0) + fx * (v2 - v3)          # triangle (v0, v2, v3): fy > fx
    return torch.where(fx >= fy, lower, upper)


class CoarseMesh:
    """The fixed ``n x n`` right-diagonal mesh of the unit square: nodes, cells, edges, boundary (torch)."""

    def __init__(self, n: int, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        from ..meshes import rectangle

        self.n = n
        self.mesh = rectangle(cells=[n, n])
        self.pos = torch.as_tensor(self.mesh.points, dtype=dtype, device=device)
        self.edges = torch.as_tensor(mesh_edges(self.mesh.cells), device=device)
        p = self.mesh.points
        self.boundary = torch.as_tensor(np.any((p < 1e-12) | (p > 1 - 1e-12), axis=1), device=device)

    def grids(self, u: np.ndarray) -> np.ndarray:
        """Nodal states ``(B, N)`` as ``(B, n+1, n+1)`` grids in ``ij`` indexing (the DMM's input)."""
        return u.reshape(len(u), self.n + 1, self.n + 1).transpose(0, 2, 1)


def move_batch(mover: DMMMover, coarse: CoarseMesh, u: np.ndarray) -> tuple[torch.Tensor, int]:
    """Moved node positions ``(B, N, 2)`` for states ``u`` ``(B, N)``: one batched DMM forward pass.

    A map that inverts a cell is not used: that sample keeps the fixed mesh (as :meth:`DMMMover.move` does).

    Returns:
        The positions and how many samples fell back to the fixed mesh.
    """
    if not np.all(np.isfinite(u)):
        raise SolverError("a state has NaN or infinite values", fix="check the data or the rollout")
    sols = coarse.grids(np.asarray(u, dtype=float))
    with torch.enable_grad():          # the map is the autograd gradient of the potential, also in a rollout
        features = mover.net.branch(mover._branch_input(sols))
        xi = coarse.pos.to(mover.dtype)[None].expand(len(u), -1, -1).clone()
        x, _ = mover._map(features, xi, hessian=False)
    x = x.detach().clamp(0.0, 1.0)
    on_side = coarse.boundary[None, :, None] & ((xi == 0) | (xi == 1))
    x = torch.where(on_side, xi, x).detach()                  # boundary nodes exactly on their side
    cells = coarse.mesh.cells
    fallback = 0
    for b in range(len(u)):
        if signed_areas(x[b].numpy().astype(float), cells).min() <= 0:
            x[b] = coarse.pos
            fallback += 1
    return x.to(coarse.pos.dtype), fallback


class FixedMeshSolver(nn.Module):
    """The baseline: ``u_next = u + model(u on the fixed mesh)`` (boundary values kept)."""

    variant = "fixed"

    def __init__(self, net: MPNNConfig, coarse: CoarseMesh):
        super().__init__()
        self.coarse = coarse
        self.model = MPNN(net)

    def forward(self, u: torch.Tensor, moved: torch.Tensor | None = None) -> torch.Tensor:
        c = self.coarse
        du = self.model(u[..., None], c.pos, c.edges, c.boundary)[..., 0]
        return u + torch.where(c.boundary[None], 0.0, du)


class MMPDESolver(nn.Module):
    """MM-PDE: ``u_next = u + Itp_back(model_b(u on the moved mesh)) + model(u on the fixed mesh)``."""

    variant = "mmpde"

    def __init__(self, net: MPNNConfig, itp: ItpNetConfig, coarse: CoarseMesh):
        super().__init__()
        self.coarse = coarse
        self.model = MPNN(net)
        self.model_b = MPNN(net)
        self.itp = ItpNet(itp)
        # the moved-mesh branch starts silent: MM-PDE starts as the fixed-mesh model and learns a correction
        nn.init.zeros_(self.model_b.decoder[-1].weight)
        nn.init.zeros_(self.model_b.decoder[-1].bias)

    def forward(self, u: torch.Tensor, moved: torch.Tensor | None = None) -> torch.Tensor:
        c = self.coarse
        du = self.model(u[..., None], c.pos, c.edges, c.boundary)[..., 0]
        u_moved = grid_p1(u, moved, c.n)
        du_moved = self.model_b(u_moved[..., None], moved, c.edges, c.boundary)[..., 0]
        du = du + self.itp(du_moved, moved, c.pos)
        return u + torch.where(c.boundary[None], 0.0, du)

    def reconstruct(self, u: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """Fixed -> moved (P1) -> fixed (ItpNet): the interpolation's pre-training task."""
        return self.itp(grid_p1(u, moved, self.coarse.n), moved, self.coarse.pos)


def build_solver(variant: str, net: MPNNConfig, itp: ItpNetConfig, coarse: CoarseMesh) -> nn.Module:
    """``mmpde``, or the fixed-mesh network for any other variant (``fixed``, ``fixed_wide``)."""
    return MMPDESolver(net, itp, coarse) if variant == "mmpde" else FixedMeshSolver(net, coarse)


def pretrain_itp(solver: MMPDESolver, states: torch.Tensor, moved: torch.Tensor, *, steps: int, lr: float,
                 batch: int, gen: torch.Generator, advance: Callable[..., None] | None = None) -> list[float]:
    """Pre-train the ItpNet by reconstruction (fixed -> moved -> fixed) on ``states`` ``(P, N)``."""
    opt = torch.optim.Adam(solver.itp.parameters(), lr=lr)
    history = []
    for step in range(steps):
        pick = torch.randint(len(states), (batch,), generator=gen)
        loss = torch.mean((solver.reconstruct(states[pick], moved[pick]) - states[pick]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            history.append(float(loss.detach()))
        if advance is not None:
            advance(1, loss=float(loss.detach()))
    return history


def train_solver(solver: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, moved: torch.Tensor | None, *,
                 epochs: int, batch: int, lr: float, weight_decay: float, milestones: list[float], gamma: float,
                 noise: float, gen: torch.Generator, start_epoch: int = 0, state: dict | None = None,
                 on_epoch: Callable[[int, dict], None] | None = None,
                 advance: Callable[..., None] | None = None) -> list[float]:
    """One-step MSE training (AdamW + MultiStep), from ``start_epoch`` (a resumed ``state``: opt + scheduler).

    ``on_epoch(epoch, state)`` is called after every epoch (for checkpoints). Returns the mean loss per epoch.
    """
    opt = torch.optim.AdamW(solver.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, sorted({max(1, int(m * epochs)) for m in milestones}),
                                                 gamma=gamma)
    history: list[float] = []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = list(state["history"])
    inner = ~solver.coarse.boundary[None]        # noise on interior nodes only: boundary values are data
    for epoch in range(start_epoch, epochs):
        order = torch.randperm(len(inputs), generator=gen)
        total = 0.0
        for k in range(0, len(order), batch):
            pick = order[k:k + batch]
            u = inputs[pick]
            if noise > 0:       # input noise: the net learns to correct its own rollout errors (stability)
                u = u + noise * torch.randn(u.shape, generator=gen, dtype=u.dtype) * inner
            pred = solver(u, None if moved is None else moved[pick])
            loss = torch.mean((pred - targets[pick]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(pick)
        sched.step()
        if not np.isfinite(total):
            raise SolverError(f"the training loss became {total} in epoch {epoch}", field="method.train.lr",
                              fix="lower the learning rate")
        history.append(total / len(inputs))
        if on_epoch is not None:
            on_epoch(epoch + 1, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                 "history": history})
        if advance is not None:
            advance(1, loss=history[-1])
    return history


@torch.no_grad()
def rollout(solver: nn.Module, initial: np.ndarray, steps: int, mover: DMMMover | None, coarse: CoarseMesh,
            uniform: bool = False) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Autoregressive rollout from ``initial`` ``(B, N)`` for ``steps`` steps.

    With ``uniform`` the MM-PDE moved branch gets the fixed (uniform) mesh instead of the DMM's: the ablation that
    shows whether the moving mesh itself matters.

    Returns:
        States ``(B, steps + 1, N)``, the last moved meshes ``(B, N, 2)`` (MM-PDE) and the DMM fallbacks.

    Raises:
        SolverError: a predicted state is not finite (names the step).
    """
    u = torch.as_tensor(initial, dtype=coarse.pos.dtype)
    if not torch.all(torch.isfinite(u)):
        raise SolverError("the rollout's initial state (step 0) has NaN or infinite values", field="method.data",
                          fix="check the initial conditions")
    states, moved, fallbacks = [u.numpy().copy()], None, 0
    for step in range(1, steps + 1):
        if solver.variant == "mmpde" and uniform:
            moved = coarse.pos[None].expand(len(u), -1, -1)
        elif solver.variant == "mmpde":
            moved, fb = move_batch(mover, coarse, u.numpy())
            fallbacks += fb
        u = solver(u, moved)
        if not torch.all(torch.isfinite(u)):
            raise SolverError(f"the {solver.variant} rollout became non-finite at step {step}",
                              field="method.train", fix="train longer, lower train.lr or add train.noise")
        states.append(u.numpy().copy())
    return np.stack(states, axis=1), None if moved is None else moved.numpy(), fallbacks


@torch.no_grad()
def diagnostics(solver: nn.Module, states: np.ndarray, mover: DMMMover | None, coarse: CoarseMesh) -> dict:
    """Where a rollout's error comes from, on trajectories ``states`` ``(B, S, N)``.

    Returns:
        ``teacher_forced_rel_l2``: the mean one-step error when every step starts from the true state (so no
        error accumulates); for MM-PDE also ``reconstruction_rel_l2`` (fixed -> P1 -> moved -> ItpNet -> fixed
        on the same states, interior nodes) and ``min_area_ratio`` / ``max_area_ratio`` (the moved meshes'
        smallest and largest cell over the uniform cell).
    """
    B, S, N = states.shape
    inputs = torch.as_tensor(states[:, :-1].reshape(-1, N), dtype=coarse.pos.dtype)
    moved = move_batch(mover, coarse, inputs.numpy())[0] if solver.variant == "mmpde" else None
    pred = solver(inputs, moved).reshape(B, S - 1, N).numpy()
    out = {"teacher_forced_rel_l2": float(rel_l2(pred, states[:, 1:]).mean())}
    if moved is not None:
        inner = ~coarse.boundary
        rec = solver.reconstruct(inputs, moved)
        out["reconstruction_rel_l2"] = float(((rec - inputs)[:, inner].norm(dim=1) / inputs.norm(dim=1)).mean())
        areas = np.array([signed_areas(m.numpy().astype(float), coarse.mesh.cells) for m in moved])
        out["min_area_ratio"] = float(areas.min() * 2 * coarse.n ** 2)
        out["max_area_ratio"] = float(areas.max() * 2 * coarse.n ** 2)
    return out


def rel_l2(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Nodal relative L2 error per trajectory and step: ``(B, S)`` for ``(B, S, N)`` arrays."""
    return np.linalg.norm(pred - ref, axis=-1) / np.maximum(np.linalg.norm(ref, axis=-1), 1e-12)


def configs_for_checkpoint(variant: str, net: MPNNConfig, itp: ItpNetConfig, n: int, data_key: str,
                           noise: float = 0.0) -> dict:
    """The JSON config stored in a solver checkpoint (rebuilds it; a mismatch is a clear error). The training
    noise is part of it, so a run with other noise does not resume from these weights."""
    return {"variant": variant, "net": asdict(net), "itp": {**asdict(itp), "hidden": list(itp.hidden)},
            "cells": n, "data": data_key, "noise": noise}


def save_solver(path: Path, solver: nn.Module, config: dict, epoch: int, state: dict, cpu_time_s: float) -> None:
    """A resumable checkpoint: the model, optimizer and scheduler states, the epoch, losses and CPU time so far."""
    from ..checkpoints import save_checkpoint

    save_checkpoint(path, kind="mmpde_solver", config=config,
                    state={"model": solver.state_dict(), **{k: v for k, v in state.items() if k != "history"}},
                    epoch=epoch, history=list(state["history"]), cpu_time_s=cpu_time_s)


def load_solver(path: Path, coarse: CoarseMesh, expect: dict) -> tuple[nn.Module, int, dict]:
    """Rebuild a solver from its checkpoint; returns it, the epoch reached and the optimizer state."""
    from ..checkpoints import load_checkpoint

    ckpt = load_checkpoint(path, kind="mmpde_solver", expect=expect)
    cfg = ckpt["config"]
    itp = ItpNetConfig(**{**cfg["itp"], "hidden": tuple(cfg["itp"]["hidden"])})
    solver = build_solver(cfg["variant"], MPNNConfig(**cfg["net"]), itp, coarse)
    solver.load_state_dict(ckpt["state"]["model"])
    state = {"optimizer": ckpt["state"]["optimizer"], "scheduler": ckpt["state"]["scheduler"],
             "history": ckpt["history"], "cpu_time_s": float(ckpt.get("cpu_time_s", 0.0))}
    return solver, int(ckpt["epoch"]), state


def check_problem(problem: Any) -> tuple[float, float] | None:
    """``(nu, t_end)`` from a case's Burgers problem on the unit square, ``None`` without a problem.

    Raises:
        CaseError: another PDE, or a domain that is not the unit square (the DMM and the data live there).
    """
    if problem is None:
        return None
    from ..meshes.domains import Rectangle
    from ..pde.burgers import Burgers

    if not isinstance(problem.pde, Burgers):
        raise CaseError(f"the mmpde solver learns 2D Burgers, got {type(problem.pde).__name__}", field="pde.type",
                        fix="use pde: {type: burgers} or leave pde out (the data family is in method.data)")
    dom = problem.domain
    if not isinstance(dom, Rectangle) or not np.allclose(np.asarray(dom.bounds, dtype=float), [[0, 1], [0, 1]]):
        raise CaseError(f"the mmpde solver needs the unit square, got {dom!r}", field="domain",
                        fix="use domain: {type: rectangle, bounds: [[0, 1], [0, 1]]} (the DMM maps the unit "
                            "square) or leave domain out")
    return problem.pde.nu, problem.pde.t_end


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the CPU time it took (process time: fair on a shared machine)."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


# ---- the case-file method ----------------------------------------------------------------------------------


class DMMSection(DMMFitConfig):
    """The frozen mesh mover: trained data-free on the training states (or loaded from ``checkpoint``); smaller
    and shorter than the mesh-mover benchmark's by default."""

    steps: int = Field(400, ge=1)
    width: int = Field(32, ge=4)
    trunk: list[int] = [32]
    decoder: list[int] = [32, 32]
    monitor: Literal["hessian", "arclength", "dmm"] = "hessian"
    monitor_resolution: int = Field(65, ge=17)


class NetworkSection(Strict):
    """Both message-passing networks (``model`` on the fixed mesh, ``model_b`` on the moved one)."""

    hidden: int = Field(32, ge=2)
    layers: int = Field(4, ge=1)


class ItpSection(Strict):
    """The learned interpolation (moved -> fixed) and its reconstruction pre-training."""

    neighbours: int = Field(8, ge=3)
    hidden: list[int] = [64, 64]
    linear_exact: bool = True
    pretrain_steps: int = Field(200, ge=0)
    lr: float = Field(2e-3, gt=0)


class TrainSection(Strict):
    """One-step training (AdamW, MultiStep decay by ``gamma`` at the ``milestones`` fractions of ``epochs``)."""

    epochs: int = Field(30, ge=1)
    batch: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    milestones: list[float] = [0.5, 0.75]
    gamma: float = Field(0.4, gt=0, le=1)
    noise: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(5, ge=1)
    baseline: bool = True


class MMPDEConfig(MethodConfig):
    type: Literal["mmpde"] = "mmpde"
    data: BurgersDataConfig = BurgersDataConfig()
    dmm: DMMSection = DMMSection()
    network: NetworkSection = NetworkSection()
    itp: ItpSection = ItpSection()
    train: TrainSection = TrainSection()


def fit_mover(cfg: DMMSection, grids: np.ndarray, seed: int, folder: Path | None, data_key: str,
              advance: Callable[..., None] | None = None) -> tuple[DMMMover, dict]:
    """The DMM for the coarse states: loaded (``cfg.checkpoint`` or a matching one in ``folder``) or trained."""
    from ..meshes.dmm import DMMConfig

    config = DMMConfig(grid=grids.shape[-1], width=cfg.width, trunk=tuple(cfg.trunk), decoder=tuple(cfg.decoder),
                       monitor=cfg.monitor, monitor_resolution=cfg.monitor_resolution)
    expect = {"grid": config.grid, "width": cfg.width, "trunk": cfg.trunk, "decoder": cfg.decoder,
              "monitor": cfg.monitor}
    if cfg.checkpoint:
        return DMMMover.load(cfg.checkpoint, expect=expect), {"checkpoint": f"loaded {cfg.checkpoint}"}
    path = None if folder is None else folder / f"dmm_burgers_{data_key}_s{seed}.pt"
    if path is not None and path.is_file():
        return DMMMover.load(path, expect=expect), {"checkpoint": f"loaded {path}"}
    mover = DMMMover(config, seed=seed)
    history, cpu = timed(lambda: mover.fit(list(grids), steps=cfg.steps, batch=cfg.batch, points=cfg.points,
                                           lr=cfg.lr, seed=seed, advance=advance))
    out = {"loss_first": history[0]["loss"], "loss_last": history[-1]["loss"], "cpu_time_s": round(cpu, 2)}
    if path is not None:
        mover.save(str(path), steps=cfg.steps)
        out["checkpoint"] = f"saved {path}"
    return mover, out


def train_variant(variant: str, cfg: MMPDEConfig, coarse: CoarseMesh, pairs: tuple[torch.Tensor, ...],
                  seed: int, folder: Path | None, data_key: str, progress: Any) -> tuple[nn.Module, dict]:
    """Train (or resume, or load when finished) the ``mmpde`` or ``fixed`` solver; returns it and its figures."""
    from ..checkpoints import latest_checkpoint

    inputs, targets, moved = pairs
    t = cfg.train
    n = coarse.n
    net = MPNNConfig(hidden=cfg.network.hidden, layers=cfg.network.layers,
                     scale=float((targets - inputs).std()), length=1.0 / n)
    itp = ItpNetConfig(neighbours=cfg.itp.neighbours, hidden=tuple(cfg.itp.hidden), length=1.0 / n,
                       linear_exact=cfg.itp.linear_exact)
    ckpt_config = configs_for_checkpoint(variant, net, itp, n, data_key, t.noise)
    prefix = f"{variant}_s{seed}"
    found = None if folder is None else latest_checkpoint(folder, prefix)
    figures: dict[str, Any] = {"cpu_time_s": 0.0}
    gen = torch.Generator().manual_seed(seed)
    if found is not None:
        solver, start, state = load_solver(found, coarse, expect=ckpt_config)
        figures["resumed_from"] = f"{found.name} (epoch {start})"
        figures["cpu_time_s"] = state["cpu_time_s"]             # CPU time of the earlier runs
    else:
        torch.manual_seed(seed)
        solver, start, state = build_solver(variant, net, itp, coarse), 0, None
        if variant == "mmpde" and cfg.itp.pretrain_steps:
            with progress.task("ItpNet pre-training (reconstruction)", total=cfg.itp.pretrain_steps) as advance:
                hist, cpu = timed(lambda: pretrain_itp(solver, inputs, moved, steps=cfg.itp.pretrain_steps,
                                                       lr=cfg.itp.lr, batch=t.batch, gen=gen, advance=advance))
            figures.update(itp_loss_first=hist[0], itp_loss_last=hist[-1], itp_cpu_time_s=round(cpu, 2))
            figures["cpu_time_s"] += cpu

    train_start = time.process_time()

    def on_epoch(epoch: int, st: dict) -> None:
        if folder is not None and (epoch % t.checkpoint_every == 0 or epoch == t.epochs):
            cpu_so_far = figures["cpu_time_s"] + time.process_time() - train_start
            save_solver(folder / f"{prefix}_{epoch}.pt", solver, ckpt_config, epoch, st, cpu_so_far)

    if start < t.epochs:
        with progress.task(f"training {variant} solver", total=t.epochs - start) as advance:
            history, cpu = timed(lambda: train_solver(
                solver, inputs, targets, moved if variant == "mmpde" else None, epochs=t.epochs, batch=t.batch,
                lr=t.lr, weight_decay=t.weight_decay, milestones=t.milestones, gamma=t.gamma, noise=t.noise,
                gen=gen, start_epoch=start, state=state, on_epoch=on_epoch, advance=advance))
        figures["cpu_time_s"] += cpu
    else:
        history = list(state["history"])
    figures.update(epochs=t.epochs, loss_first=history[0], loss_last=history[-1],
                   parameters=sum(p.numel() for p in solver.parameters()), loss_history=history)
    figures["cpu_time_s"] = round(figures["cpu_time_s"], 2)
    return solver.eval(), figures


def train_and_evaluate(cfg: MMPDEConfig, seed: int, folder: Path | None, progress: Any,
                       wide_hidden: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Everything of one run: data, DMM, both solvers, rollouts. Returns metrics and the rolled-out states.

    ``wide_hidden``: also train the fixed-mesh network with this many channels (``fixed_wide``; same data, epochs
    and optimiser), e.g. as many parameters as MM-PDE's two networks and ItpNet: does MM-PDE win by capacity?"""
    from ..runtime import seed_everything

    seed_everything(seed)
    with progress.task("Burgers FEM trajectories", total=cfg.data.trajectories + cfg.data.test_trajectories) as adv:
        data, how = load_or_generate(cfg.data, seed, folder, adv)
    key = cache_key(cfg.data, seed)
    coarse = CoarseMesh(cfg.data.cells)
    train_states = data.train.reshape(-1, data.train.shape[-1])
    with progress.task("DMM training (data-free)", total=cfg.dmm.steps) as advance:
        mover, dmm_figures = fit_mover(cfg.dmm, coarse.grids(train_states), seed, folder, key, advance)
    inputs = data.train[:, :-1].reshape(-1, data.train.shape[-1])
    targets = data.train[:, 1:].reshape(-1, data.train.shape[-1])
    moved, fallback = move_batch(mover, coarse, inputs)
    dmm_figures["fixed_mesh_fallbacks_train"] = fallback
    dmm_figures["max_node_displacement"] = float((moved - coarse.pos).abs().max())
    pairs = (torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32), moved)
    metrics: dict[str, Any] = {"data": {**info(data), "cache": how}, "dmm": dmm_figures}
    steps = data.test.shape[1] - 1
    states = {"fem": data.test}
    variants = ["mmpde", "fixed"] if cfg.train.baseline else ["mmpde"]
    if wide_hidden:
        variants.append("fixed_wide")
    for variant in variants:
        vcfg = cfg if variant != "fixed_wide" else cfg.model_copy(
            update={"network": cfg.network.model_copy(update={"hidden": wide_hidden})})
        solver, figures = train_variant(variant, vcfg, coarse, pairs, seed, folder, key, progress)
        (pred, last_moved, fb), cpu = timed(lambda s=solver: rollout(s, data.test[:, 0], steps, mover, coarse))
        err = rel_l2(pred, data.test)
        train_pred, _, _ = rollout(solver, data.train[:1, 0], steps, mover, coarse)
        figures.update(rollout_rel_l2_per_step=err.mean(axis=0).tolist(), rollout_rel_l2_final=float(err[:, -1].mean()),
                       rollout_rel_l2_mean=float(err[:, 1:].mean()), rollout_cpu_time_s=round(cpu, 3),
                       train_trajectory_rel_l2_final=float(rel_l2(train_pred, data.train[:1])[0, -1]),
                       **diagnostics(solver, data.test, mover, coarse))
        if variant == "mmpde":
            figures["dmm_fallbacks_rollout"] = fb
            uniform, _, _ = rollout(solver, data.test[:, 0], steps, mover, coarse, uniform=True)
            figures["uniform_mesh_rollout_rel_l2_final"] = float(rel_l2(uniform, data.test)[:, -1].mean())
            states["moved_points"] = last_moved
        metrics[variant] = figures
        states[variant] = pred
    zero = rel_l2(np.repeat(data.test[:, :1], steps + 1, axis=1), data.test)
    zero_train = rel_l2(np.repeat(data.train[:1, :1], steps + 1, axis=1), data.train[:1])
    metrics["zero_update"] = {"rollout_rel_l2_per_step": zero.mean(axis=0).tolist(),
                              "rollout_rel_l2_final": float(zero[:, -1].mean()),
                              "train_trajectory_rel_l2_final": float(zero_train[0, -1])}
    if "fixed" in metrics:
        metrics["target_met"] = bool(metrics["mmpde"]["rollout_rel_l2_final"]
                                     < metrics["fixed"]["rollout_rel_l2_final"])
    return metrics, states


@register
class MMPDEMethod(Method):
    """MM-PDE on 2D Burgers: DMM-moved mesh + fixed mesh message passing, vs the fixed-mesh network alone."""

    name = "mmpde"
    config_model = MMPDEConfig
    needs_problem = False
    plot_names = ("meshes", "rollout", "rollout_error")

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        from ..solvers.fem import FEField

        cfg = self.config
        given = check_problem(problem)
        if given is not None:
            try:
                cfg = cfg.model_copy(update={"data": BurgersDataConfig(
                    **{**cfg.data.model_dump(), "nu": given[0], "t_end": given[1]})})
            except ValueError as exc:
                raise CaseError(f"pde.t_end does not fit the data's time steps: {exc}", field="pde.t_end",
                                fix="make t_end a multiple of method.data.dt * save_every") from None
        folder = ctx.checkpoint_dir
        metrics, states = train_and_evaluate(cfg, ctx.seed, folder, ctx.progress)
        coarse = CoarseMesh(cfg.data.cells)
        base = FEField(coarse.mesh, 1, states["mmpde"][0, -1], name="u_mmpde")
        extra = {"u_fem": base.with_values(states["fem"][0, -1], "u_fem")}
        if "fixed" in states:
            extra["u_fixed_mesh"] = base.with_values(states["fixed"][0, -1], "u_fixed_mesh")
        for variant in ("mmpde", "fixed"):
            if variant in metrics:
                metrics[variant].pop("loss_history", None)
        files = self._plots(ctx, coarse, states, metrics) if ctx.out_dir is not None and ctx.rank == 0 else []
        metrics["note"] = "errors: nodal relative L2 on the coarse mesh vs the fine FEM trajectories (test split)"
        return MethodResult(field=base, metrics=metrics, extra_fields=extra, files=files)

    def _plots(self, ctx: RunContext, coarse: CoarseMesh, states: dict, metrics: dict) -> list[Path]:
        from ..viz import line_plot, tri_panels
        from .mmpde import plot_meshes

        files: list[Path] = []
        mesh = coarse.mesh
        fem = states["fem"][0, -1]
        if "meshes" in ctx.plots:
            moved = states["moved_points"][0]
            files.append(plot_meshes({"fixed mesh, FEM state": (mesh.points, mesh.cells, states["fem"][0, -2]),
                                      "DMM-moved mesh, MM-PDE state": (moved, mesh.cells, grid_p1(
                                          torch.as_tensor(states["mmpde"][:1, -2]),
                                          torch.as_tensor(moved[None]), coarse.n)[0].numpy())},
                                     ctx.out_dir / "meshes.png",
                                     title="input of the last rollout step, test trajectory 0"))
        if "rollout" in ctx.plots:
            panels = {"FEM": fem, "MM-PDE": states["mmpde"][0, -1]}
            if "fixed" in states:
                panels["fixed mesh only"] = states["fixed"][0, -1]
            for name in list(panels)[1:]:
                panels[f"{name} - FEM"] = panels[name] - fem
            files.append(tri_panels(mesh.points, mesh.cells, panels, ctx.out_dir / "rollout.png",
                                    title="final step, test trajectory 0"))
        if "rollout_error" in ctx.plots:
            series = {}
            for name, key in (("MM-PDE", "mmpde"), ("fixed mesh only", "fixed"), ("u = u0", "zero_update")):
                if key in metrics:
                    err = metrics[key]["rollout_rel_l2_per_step"]
                    series[name] = (list(range(len(err))), err)
            files.append(line_plot(series, ctx.out_dir / "rollout_error.png", xlabel="rollout step",
                                   ylabel="relative L2 error (test mean)"))
        return files


__all__ = ["CoarseMesh", "FixedMeshSolver", "MMPDEConfig", "MMPDEMethod", "MMPDESolver", "grid_p1", "move_batch",
           "rollout", "train_and_evaluate"]
