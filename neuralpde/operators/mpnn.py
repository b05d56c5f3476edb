"""A compact MP-PDE-style message-passing network (Brandstetter et al. 2022) and MM-PDE's learned interpolation.

Nodes carry the state ``u`` (a time window of it), the position and a boundary flag; edges are the mesh's
(both directions). Each layer sends ``m_ij = phi(h_i, h_j, x_i - x_j, u_i - u_j)`` along every edge, averages
the messages at the receiver with ``index_add_`` and updates ``h_i <- h_i + psi(h_i, mean_j m_ij)``. A decoder
gives the update ``du`` per node. A batch shares the connectivity and may have its own positions per sample
(moved meshes)::

    >>> import torch
    >>> net = MPNN(MPNNConfig(hidden=8, layers=2))
    >>> edges = torch.tensor([[0, 1], [1, 0], [1, 2], [2, 1]])
    >>> u, pos = torch.zeros(4, 3, 1), torch.rand(4, 3, 2)          # (batch, nodes, ...)
    >>> net(u, pos, edges, torch.zeros(3, dtype=torch.bool)).shape
    torch.Size([4, 3, 1])

The network uses no node index and no absolute orientation beyond the position features, so permuting the
nodes (and relabelling the edges) permutes its output (tests/test_mmpde_solver.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class MPNNConfig:
    """Architecture (JSON-able: rebuilds the network from a checkpoint).

    Attributes:
        hidden: width of node features and messages.
        layers: message-passing layers (the receptive field in mesh hops).
        time_window: states of ``u`` per node (the input window; the output is one update per window step).
        scale: the decoder's output is multiplied by this (the typical size of an update, set from data).
        length: edge vectors are divided by this (the mesh spacing), so the message features are O(1).
    """

    hidden: int = 32
    layers: int = 4
    time_window: int = 1
    scale: float = 1.0
    length: float = 1.0


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MPNN(nn.Module):
    """Encoder, ``layers`` message-passing layers, decoder to ``du`` ``(batch, nodes, time_window)``."""

    def __init__(self, config: MPNNConfig):
        super().__init__()
        self.config = config
        h, tw = config.hidden, config.time_window
        self.encoder = _mlp([tw + 3, h, h])
        self.messages = nn.ModuleList(_mlp([2 * h + 2 + tw, h, h]) for _ in range(config.layers))
        self.updates = nn.ModuleList(_mlp([2 * h, h, h]) for _ in range(config.layers))
        self.decoder = _mlp([h, h, tw])

    def forward(self, u: torch.Tensor, pos: torch.Tensor, edges: torch.Tensor, boundary: torch.Tensor
                ) -> torch.Tensor:
        """The update ``du``.

        Args:
            u: states ``(B, N, time_window)``.
            pos: node positions ``(B, N, 2)`` (each sample its own mesh) or ``(N, 2)``.
            edges: directed edges ``(E, 2)`` as (sender, receiver), shared by the batch.
            boundary: ``(N,)`` bool, nodes on the boundary (a feature; the caller fixes their values).

        Returns:
            ``(B, N, time_window)``, already multiplied by ``config.scale``.
        """
        B, N, _ = u.shape
        if pos.dim() == 2:
            pos = pos[None].expand(B, -1, -1)
        flag = boundary.to(u.dtype)[None, :, None].expand(B, -1, -1)
        h = self.encoder(torch.cat([u, pos, flag], dim=-1))
        send, recv = edges[:, 0], edges[:, 1]
        degree = torch.zeros(N, dtype=u.dtype, device=u.device).index_add_(
            0, recv, torch.ones(len(recv), dtype=u.dtype, device=u.device)).clamp_min(1.0)
        rel_pos = (pos[:, recv] - pos[:, send]) / self.config.length
        rel_u = u[:, recv] - u[:, send]
        for message, update in zip(self.messages, self.updates, strict=True):
            m = message(torch.cat([h[:, recv], h[:, send], rel_pos, rel_u], dim=-1))
            agg = torch.zeros_like(h).index_add_(1, recv, m) / degree[None, :, None]
            h = h + update(torch.cat([h, agg], dim=-1))
        return self.decoder(h) * self.config.scale


@dataclass
class ItpNetConfig:
    """The learned interpolation: ``neighbours`` nearest source nodes, an MLP of ``hidden`` widths.

    Attributes:
        neighbours: source nodes each target node averages over.
        hidden: hidden widths of the weight MLP.
        length: relative positions are divided by this (the fixed mesh's spacing), so features are O(1).
        linear_exact: correct the softmax weights (least change) so that they also reproduce linear fields
            exactly: ``sum_j w_j (x_j - x_i) = 0`` besides ``sum_j w_j = 1``.
    """

    neighbours: int = 8
    hidden: tuple[int, ...] = (64, 64)
    length: float = 1.0
    linear_exact: bool = True


class ItpNet(nn.Module):
    """MM-PDE's learned interpolation from one node set (a moved mesh) to another (the fixed mesh).

    For each target node the ``neighbours`` nearest source nodes are found; an MLP of their positions relative
    to the target (nearest first) and of the target's position gives logits, and the softmax of them weights
    the source values (the paper's ItpNet): positive weights that sum to 1, so constants are reproduced exactly.
    With ``linear_exact`` the weights get the smallest (Euclidean) correction that makes them reproduce linear
    fields too (first moments zero), so the interpolation is second-order accurate whatever the MLP learned;
    they may then be slightly negative.
    """

    def __init__(self, config: ItpNetConfig):
        super().__init__()
        self.config = config
        k = config.neighbours
        self.mlp = _mlp([2 * k + 2, *config.hidden, k])

    def weights(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbour indices and weights ``(B, T, k)`` for source points ``(B, S, 2)``, targets ``(B, T, 2)``.

        Target points may also be shared, ``(T, 2)``.
        """
        if target.dim() == 2:
            target = target[None].expand(source.shape[0], -1, -1)
        k = self.config.neighbours
        dist = torch.cdist(target, source)
        idx = torch.topk(dist, k, dim=-1, largest=False).indices                  # nearest first
        nbrs = source[torch.arange(source.shape[0], device=source.device)[:, None, None], idx]     # (B, T, k, 2)
        rel = (nbrs - target[:, :, None]) / self.config.length
        w = torch.softmax(self.mlp(torch.cat([rel.flatten(2), target], dim=-1)), dim=-1)
        if self.config.linear_exact:
            # w + D^T lam with D = [1; dx; dy] (3 x k) solving D (w + D^T lam) = (1, 0, 0)
            D = torch.cat([torch.ones_like(rel[..., :1]), rel], dim=-1).transpose(-1, -2)      # (B, T, 3, k)
            gram = D @ D.transpose(-1, -2) + 1e-8 * torch.eye(3, dtype=w.dtype, device=w.device)
            want = torch.tensor([1.0, 0.0, 0.0], dtype=w.dtype, device=w.device)
            lam = torch.linalg.solve(gram, want - (D @ w[..., None])[..., 0])
            w = w + (D.transpose(-1, -2) @ lam[..., None])[..., 0]
        return idx, w

    def forward(self, values: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``values`` ``(B, S)`` at ``source`` ``(B, S, 2)`` interpolated to ``target``: ``(B, T)``."""
        idx, w = self.weights(source, target)
        picked = values[torch.arange(values.shape[0], device=values.device)[:, None, None], idx]
        return (w * picked).sum(-1)


def mesh_edges(cells: np.ndarray) -> np.ndarray:
    """The directed edges ``(E, 2)`` (each undirected edge both ways) of a triangle mesh, sorted."""
    cells = np.asarray(cells)
    pairs = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]])
    pairs = np.concatenate([pairs, pairs[:, ::-1]])
    return np.unique(pairs, axis=0)


__all__ = ["MPNN", "ItpNet", "ItpNetConfig", "MPNNConfig", "mesh_edges"]
