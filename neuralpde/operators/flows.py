"""A normalizing flow with bounded support: RealNVP affine couplings followed by a sigmoid map onto a box.

``z`` (standard logistic) -> elementwise affine -> ``couplings`` affine couplings (alternating masks) ->
``y`` -> ``x = lo + (hi - lo) * sigmoid(y)``. Every step is invertible with a closed-form log-determinant,
so ``log_prob(x)`` is exact and every sample lies strictly inside the box ``[lo, hi]``. The logistic base
makes the untrained flow (all layers the identity) exactly the uniform density on the box, the natural
start of adaptive sampling::

    >>> import torch
    >>> flow = BoundedFlow([[-1, 1], [-1, 1]], couplings=4, width=16)
    >>> x = flow.sample(100)
    >>> bool(((x > -1) & (x < 1)).all()), round(float(flow.log_prob(x).exp().mean()), 6)   # uniform: 1/4
    (True, 0.25)

The H1 (Sobolev) penalty ``mean |grad_x log p(x)|^2`` keeps the density smooth when an adversary pushes it
toward the maxima of a residual (AAS).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AffineCoupling(nn.Module):
    """``y = x_a + (1 - m) * (x_b * exp(s(x_a)) + t(x_a))`` with ``s = scale_bound * tanh(.)`` (masked input kept)."""

    def __init__(self, mask: torch.Tensor, width: int, scale_bound: float = 2.0):
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float())
        self.scale_bound = scale_bound
        self.net = nn.Sequential(nn.Linear(dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, 2 * dim))
        # start at the identity map: the flow begins as its base density pushed through the box map
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, x_masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(x_masked).chunk(2, dim=-1)
        free = 1 - self.mask
        return self.scale_bound * torch.tanh(s) * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._st(x * self.mask)
        return x * torch.exp(s) + t, s.sum(dim=-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._st(y * self.mask)
        return (y - t) * torch.exp(-s), -s.sum(dim=-1)


class BoundedFlow(nn.Module):
    """Density on the box ``bounds`` (``[[lo, hi], ...]``, any dimension) with exact ``log_prob``.

    Args:
        bounds: the support, one ``[lo, hi]`` per dimension.
        couplings: number of affine coupling layers (masks alternate between the two halves of the
            coordinates; in 1D the conditioner sees nothing and the layer is a learned affine map).
        width: hidden width of each coupling's two-layer tanh MLP.
        scale_bound: ``|log scale|`` per coupling is at most this (``tanh``-bounded, for stability).
    """

    def __init__(self, bounds: Any, couplings: int = 6, width: int = 32, scale_bound: float = 2.0):
        super().__init__()
        b = torch.as_tensor(bounds, dtype=torch.get_default_dtype())
        if b.ndim != 2 or b.shape[1] != 2 or not bool((b[:, 1] > b[:, 0]).all()):
            raise ValueError(f"bounds must be [[lo, hi], ...] with lo < hi, got {bounds!r}")
        self.dim = b.shape[0]
        self.config = {"bounds": b.tolist(), "couplings": int(couplings), "width": int(width),
                       "scale_bound": float(scale_bound)}
        self.register_buffer("lo", b[:, 0].clone())
        self.register_buffer("span", (b[:, 1] - b[:, 0]).clone())
        # a learned elementwise affine first: it moves and shrinks the whole density cheaply
        self.shift = nn.Parameter(torch.zeros(self.dim))
        self.log_scale = nn.Parameter(torch.zeros(self.dim))
        first = torch.arange(self.dim) % 2 == 0
        layers = []
        for k in range(couplings):
            mask = first if k % 2 == 0 else ~first
            if self.dim == 1:
                mask = torch.zeros(1, dtype=torch.bool)
            layers.append(AffineCoupling(mask, width, scale_bound))
        self.layers = nn.ModuleList(layers)

    # z -> y (unbounded) -> x (box)
    def _to_y(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = z * torch.exp(self.log_scale) + self.shift
        logdet = self.log_scale.sum().expand(z.shape[0])
        for layer in self.layers:
            y, ld = layer(y)
            logdet = logdet + ld
        return y, logdet

    def _from_y(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        for layer in reversed(self.layers):
            y, ld = layer.inverse(y)
            logdet = logdet + ld
        z = (y - self.shift) * torch.exp(-self.log_scale)
        return z, logdet - self.log_scale.sum()

    def _box_logdet(self, y: torch.Tensor) -> torch.Tensor:
        # d/dy sigmoid(y) = sigmoid(y) sigmoid(-y); logsigmoid keeps it finite far in the tails
        return (torch.nn.functional.logsigmoid(y) + torch.nn.functional.logsigmoid(-y)
                + torch.log(self.span)).sum(dim=-1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map base points ``z`` to ``x`` in the box; returns ``(x, log|det dx/dz|)``."""
        y, logdet = self._to_y(z)
        return self.lo + self.span * torch.sigmoid(y), logdet + self._box_logdet(y)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map box points ``x`` back to ``z``; returns ``(z, log|det dz/dx|)``."""
        info = torch.finfo(x.dtype)        # 1 - 1e-12 is 1 in float32: log1p(-1) would be -inf
        u = ((x - self.lo) / self.span).clamp(info.tiny, 1 - info.eps)
        y = torch.log(u) - torch.log1p(-u)
        z, logdet = self._from_y(y)
        return z, logdet - self._box_logdet(y)

    @staticmethod
    def base_log_prob(z: torch.Tensor) -> torch.Tensor:
        """Log-density of the standard logistic base, summed over coordinates."""
        return (torch.nn.functional.logsigmoid(z) + torch.nn.functional.logsigmoid(-z)).sum(dim=-1)

    def base_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, self.dim, generator=generator, dtype=self.lo.dtype, device=self.lo.device)
        eps = torch.finfo(u.dtype).eps
        u = u.clamp(eps, 1 - eps)
        return torch.log(u) - torch.log1p(-u)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density at ``x`` (shape ``(N, d)``); returns shape ``(N,)``."""
        z, logdet = self.inverse(x)
        return self.base_log_prob(z) + logdet

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples (no gradient), strictly inside the box."""
        with torch.no_grad():
            return self.forward(self.base_sample(n, generator))[0]

    def rsample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` reparameterised samples and their log-density (differentiable in the parameters)."""
        z = self.base_sample(n, generator)
        x, logdet = self.forward(z)
        return x, self.base_log_prob(z) - logdet


def h1_penalty(flow: BoundedFlow, x: torch.Tensor) -> torch.Tensor:
    """The Sobolev penalty ``mean |grad_x log p(x)|^2`` at the points ``x`` (differentiable in the flow)."""
    x = x.detach().requires_grad_(True)
    logp = flow.log_prob(x)
    g = torch.autograd.grad(logp.sum(), x, create_graph=True)[0]
    return (g**2).sum(dim=-1).mean()
