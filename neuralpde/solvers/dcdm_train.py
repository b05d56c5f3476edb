"""Training the DCDM network with the paper's scale-invariant loss; checkpointed and resumable.

Per sample, ``f = net(b)``, ``x~ = f (f^T b) / (f^T A f)`` (the exact line search) and the loss is
``||b - A x~||^2``: it needs no solutions, and multiplying ``f`` by any ``c != 0`` leaves it unchanged::

    >>> import torch, scipy.sparse as sp
    >>> A = torch_sparse(sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(8, 8)))
    >>> b, f = torch.rand(2, 8), torch.rand(2, 8)
    >>> bool(torch.isclose(dcdm_loss(A, b, f), dcdm_loss(A, b, -7.5 * f)))
    True

:func:`train` draws unit right-hand sides from a :class:`~neuralpde.solvers.ritz.RitzBasis`, runs
Adam, shows progress and writes a checkpoint every ``checkpoint_every`` steps; started again with
the same checkpoint path it resumes where the last one stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import load_checkpoint, save_checkpoint
from ..errors import SolverError
from ..operators.dcdm_net import DCDMNet, GridMap
from ..progress import SILENT
from .ritz import RitzBasis

#: the ``kind`` of DCDM checkpoints
KIND = "dcdm"


def torch_sparse(A: Any, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    """A scipy sparse matrix as a coalesced torch COO tensor (autograd flows through ``torch.sparse.mm``)."""
    coo = A.tocoo()
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    return torch.sparse_coo_tensor(idx, torch.as_tensor(coo.data, dtype=dtype), coo.shape, device=device,
                                   check_invariants=False).coalesce()


def dcdm_loss(A: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||b - A f (f^T b)/(f^T A f)||^2``; ``b``, ``f``: ``(batch, n)``."""
    Af = torch.sparse.mm(A, f.T).T
    scale = (f * b).sum(1, keepdim=True) / (f * Af).sum(1, keepdim=True)
    return ((b - scale * Af) ** 2).sum(1).mean()


def checkpoint_config(net: DCDMNet, grid: GridMap, fingerprint: str) -> dict[str, Any]:
    """What a DCDM checkpoint records: the net's init arguments, its grid and the matrix it was trained on."""
    return {**net.config(), "grid": list(grid.shape), "fingerprint": fingerprint}


def train(net: DCDMNet, A: Any, grid: GridMap, ritz: RitzBasis, *, steps: int, batch: int = 10, lr: float = 1e-4,
          lr_final: float | None = None, seed: int = 0, checkpoint: str | Path | None = None,
          checkpoint_every: int = 200,
          progress: Any = None, device: str = "cpu") -> dict[str, Any]:
    """Train ``net`` on ``A`` (scipy, free dofs) in place.

    Args:
        net: the network (its ``dim`` must match the grid's).
        A: the system matrix the Ritz vectors come from; grid: where its free dofs sit.
        ritz: training directions; steps: total Adam steps (counting those of a resumed checkpoint).
        batch, lr: batch size and Adam's learning rate (paper: 10 and 1e-4).
        lr_final: when given, the rate follows a cosine from ``lr`` to ``lr_final`` over ``steps``
            (a function of the step only, so resuming keeps the schedule).
        seed: the batch of step ``s`` is drawn from ``default_rng([seed, s])``, so a resumed run
            sees the same data as an uninterrupted one.
        checkpoint: file to resume from (when it exists) and to write; checkpoint_every: steps between writes.
        progress: a :class:`~neuralpde.progress.Progress`; device: torch device.

    Returns:
        ``{"loss": [...], "steps": ..., "time_s": ..., "resumed_from": ...}``.

    Raises:
        SolverError: a grid/net dimension mismatch, a checkpoint of another net, grid or matrix,
            or a NaN loss.
    """
    if grid.dim != net.dim:
        raise SolverError(f"a {net.dim}D network cannot train on a {grid.dim}D grid", field="method.network",
                          fix="build the network with dim equal to the domain's dimension")
    progress = progress or SILENT
    config = checkpoint_config(net, grid, ritz.fingerprint)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses: list[float] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        ckpt = load_checkpoint(checkpoint, kind=KIND, expect=config, map_location=device)
        net.load_state_dict(ckpt["state"]["net"])
        opt.load_state_dict(ckpt["state"]["optimizer"])
        start, losses = int(ckpt["step"]), list(ckpt["loss"])
    A_t = torch_sparse(A, device=device)
    vectors = torch.as_tensor(ritz.vectors, device=device)
    weights = torch.ones(len(ritz.values), device=device)
    weights[: ritz.num_low] = 9.0
    t0 = time.perf_counter()
    net.train()

    def save(step: int) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, kind=KIND, config=config, step=step, loss=losses,
                            state={"net": net.state_dict(), "optimizer": opt.state_dict()})

    with progress.task(f"DCDM training ({net.num_parameters()} parameters)", total=steps) as advance:
        advance(start)
        for step in range(start, steps):
            if lr_final is not None:
                for group in opt.param_groups:
                    group["lr"] = float(lr_final + 0.5 * (lr - lr_final) * (1 + np.cos(np.pi * step / steps)))
            gen = torch.Generator(device="cpu").manual_seed(int(np.random.default_rng([seed, step]).integers(2**62)))
            c = torch.randn(batch, len(weights), generator=gen).to(device) * weights
            b = c @ vectors
            b = b / b.norm(dim=1, keepdim=True)
            f = grid.from_grid(net(grid.to_grid(b)))
            loss = dcdm_loss(A_t, b, f)
            if not torch.isfinite(loss):
                raise SolverError(f"the DCDM loss is {loss.item()} at step {step}", field="method.train.lr",
                                  fix="lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            advance(loss=losses[-1])
            if checkpoint_every and (step + 1) % checkpoint_every == 0:
                save(step + 1)
    if start < steps:
        save(steps)
    net.eval()
    return {"loss": losses, "steps": steps, "time_s": time.perf_counter() - t0, "resumed_from": start}


def load_network(path: str | Path, *, dim: int, grid: tuple[int, ...] | None = None,
                 device: str = "cpu") -> tuple[DCDMNet, dict[str, Any]]:
    """A trained net from a checkpoint.

    Args:
        path: the checkpoint; dim: the dimension the caller needs (a mismatch is an error).
        grid: when given, the checkpoint must have been trained on exactly this lattice; ``None``
            accepts any grid of the right dimension (the fully convolutional net transfers across sizes).

    Raises:
        SolverError: a missing/foreign file, another dimension, or (with ``grid``) another grid.
    """
    expect: dict[str, Any] = {"dim": dim}
    if grid is not None:
        expect["grid"] = list(grid)
    ckpt = load_checkpoint(path, kind=KIND, expect=expect, map_location=device)
    cfg = ckpt["config"]
    net = DCDMNet(dim=cfg["dim"], filters=cfg["filters"], blocks=tuple(cfg["blocks"]))
    net.load_state_dict(ckpt["state"]["net"])
    return net.to(device).eval(), cfg


class NetworkDirection:
    """``r -> net(r)`` on the free dofs, float64 in and out (the ``direction`` of :func:`dcdm`)."""

    def __init__(self, net: DCDMNet, grid: GridMap, device: str = "cpu"):
        if grid.dim != net.dim:
            raise SolverError(f"a {net.dim}D network cannot solve a {grid.dim}D system", field="method.checkpoint",
                              fix="use a checkpoint trained in this dimension")
        self.net, self.grid, self.device = net.eval(), grid, device

    @torch.no_grad()
    def __call__(self, r: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(r, dtype=torch.float32, device=self.device)[None]
        return self.grid.from_grid(self.net(self.grid.to_grid(x)))[0].double().cpu().numpy()
