"""Learned proximal networks (Fang, Buchanan & Sulam, ICLR 2024): ``f = grad psi`` with ``psi`` input-convex.

``psi`` is an input-convex network (ICNN): non-negative weights on every layer after the first (clamped
after each optimizer step by :meth:`LPN.clamp_weights`), convex non-decreasing softplus-beta activations,
unconstrained skips from the input, plus ``alpha ||x||^2`` for strong convexity. Its gradient ``f`` is
then the proximal operator of a prior ``R`` that :meth:`LPN.prior` evaluates exactly (up to a constant)
by inverting ``f``: ``R(x) = <y, x> - ||x||^2 / 2 - psi(y)`` with ``f(y) = x``.

    >>> import torch
    >>> net = LPNDense(dim=1, hidden=8, layers=2, alpha=0.1).double()
    >>> x = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None]
    >>> y = net.invert(net(x))                  # f is invertible: alpha > 0 makes psi strongly convex
    >>> bool(torch.allclose(y, x, atol=1e-6))
    True
    >>> net.prior(x).shape
    torch.Size([5])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SolverError

__all__ = ["LPN", "LPNConv", "LPNDense", "build_lpn"]


def _constrained_init(weight: torch.Tensor) -> None:
    """Non-negative weights start tiny and positive, as in the paper's code: ``exp(N(-10, 0.1))``."""
    with torch.no_grad():
        weight.copy_(torch.exp(torch.randn_like(weight) * 0.1 - 10.0))


class LPN(nn.Module):
    """Base class: subclasses define :meth:`psi` and list their constrained layers in ``_constrained``.

    Attributes:
        convex: ``False`` builds the same network without the weight clamp (an unconstrained ablation).
    """

    kind: ClassVar[str]

    def __init__(self, beta: float, alpha: float, convex: bool = True):
        super().__init__()
        if beta <= 0:
            raise SolverError(f"softplus beta must be positive, got {beta}", field="method.network.beta",
                              fix="e.g. beta: 10")
        if alpha < 0:
            raise SolverError(f"alpha must be >= 0, got {alpha}", field="method.network.alpha",
                              fix="use 0 (no strong convexity) or a small positive value such as 0.01")
        self.beta, self.alpha, self.convex = float(beta), float(alpha), bool(convex)
        self._constrained: list[nn.Module] = []

    # ------------------------------------------------------------------ to be provided by subclasses
    def psi(self, x: torch.Tensor) -> torch.Tensor:
        """The convex potential, one value per sample, shape ``(batch,)``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able init arguments (plus ``kind``) that rebuild this network with :func:`build_lpn`."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- shared machinery
    def act(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=self.beta)

    def quadratic(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x.flatten(1).pow(2).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x) = grad psi(x)``; differentiable (for training) when called with grad enabled."""
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xin = x if x.requires_grad else x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.psi(xin).sum(), xin, create_graph=outer)
        return g if outer else g.detach()

    def constrained_weights(self) -> list[torch.Tensor]:
        """The weights that must stay non-negative for ``psi`` to be convex."""
        return [m.weight for m in self._constrained]

    @torch.no_grad()
    def clamp_weights(self) -> None:
        """Project the constrained weights onto ``>= 0`` (call after every optimizer step)."""
        if self.convex:
            for w in self.constrained_weights():
                w.clamp_(min=0.0)

    def invert(self, x: torch.Tensor, y0: torch.Tensor | None = None, max_iter: int = 500,
               tol: float = 1e-6) -> torch.Tensor:
        """Solve ``f(y) = x`` as the convex problem ``min_y psi(y) - <x, y>`` (L-BFGS, warm-started).

        Args:
            x: points in the range of ``f``, shaped like the network's input.
            y0: starting point (default ``x``, which the paper uses too).
            max_iter: L-BFGS iterations at most.
            tol: stop when ``max |f(y) - x| < tol`` (scaled by ``max(1, max |x|)``).

        Returns:
            ``y`` (detached) with ``f(y) ~ x``.
        """
        x = x.detach()
        y = (x if y0 is None else y0).detach().clone().requires_grad_(True)
        scale = max(1.0, float(x.abs().max())) if x.numel() else 1.0
        opt = torch.optim.LBFGS([y], lr=1.0, max_iter=max_iter, tolerance_grad=tol * scale * 1e-2,
                                tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe")
        residual = [float("inf")]

        def closure() -> torch.Tensor:
            with torch.enable_grad():
                objective = self.psi(y).sum() - (x * y).sum()
                (g,) = torch.autograd.grad(objective, y)
            y.grad = g.contiguous()       # L-BFGS views it flat (rot90 and flip give strided gradients)
            residual[0] = float(g.abs().max())
            return objective.detach()

        for _ in range(5):       # L-BFGS may stop on a flat line search; restarting clears its history
            try:
                opt.step(closure)
            except RuntimeError as exc:      # the objective ran off to -inf: x is outside the range of f
                raise SolverError(f"inverting the LPN diverged ({exc})", field="method.network.alpha",
                                  fix="use alpha > 0 (then f is onto), or evaluate R only on the range of f") from None
            if residual[0] < tol * scale:
                break
        return y.detach()

    def prior(self, x: torch.Tensor, y0: torch.Tensor | None = None, **invert_options: Any) -> torch.Tensor:
        """The learned prior ``R(x)`` (up to an additive constant), one value per sample.

        ``f`` is the proximal operator of ``R``: ``f(y) = argmin_z ||y - z||^2 / 2 + R(z)``.
        """
        y = self.invert(x, y0=y0, **invert_options)
        with torch.no_grad():
            return (y * x).flatten(1).sum(1) - 0.5 * x.flatten(1).pow(2).sum(1) - self.psi(y)


class LPNDense(LPN):
    """ICNN on vectors ``(batch, dim)``: ``z1 = s(W0 x)``, ``z_{k+1} = s(W_k z_k + R_k x)``,
    ``psi = w . z_L + r . x + alpha ||x||^2`` with ``W_k, w >= 0`` (the paper's 1D toy has ``alpha = 0``).

    Args:
        dim: input dimension.
        hidden: width of each layer.
        layers: number of hidden layers (>= 1).
        beta: softplus sharpness.
        alpha: weight of the strongly convex term.
        convex: clamp the constrained weights (``False``: the unconstrained ablation).
    """

    kind = "lpn_dense"

    def __init__(self, dim: int = 1, hidden: int = 50, layers: int = 4, beta: float = 10.0, alpha: float = 0.0,
                 convex: bool = True):
        super().__init__(beta, alpha, convex)
        if layers < 1 or hidden < 1 or dim < 1:
            raise SolverError(f"dim, hidden and layers must be >= 1, got {dim}, {hidden}, {layers}",
                              field="method.network", fix="e.g. hidden: 50, layers: 4")
        self.dim, self.hidden, self.layers = dim, hidden, layers
        self.first = nn.Linear(dim, hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers - 1))
        self.skips = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, 1, bias=False)
        self.out_skip = nn.Linear(dim, 1)
        self._constrained = [*self.hidden_layers, self.out]
        for w in self.constrained_weights():
            _constrained_init(w)

    def psi(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(self.first(x))
        for layer, skip in zip(self.hidden_layers, self.skips, strict=True):
            z = self.act(layer(z) + skip(x))
        return (self.out(z) + self.out_skip(x)).squeeze(1) + self.quadratic(x)

    def invert(self, x: torch.Tensor, y0: torch.Tensor | None = None, max_iter: int = 500,
               tol: float = 1e-6) -> torch.Tensor:
        """In 1D ``f`` is non-decreasing: bisection, robust even with ``alpha = 0``; points outside the range of
        ``f`` get NaN (their prior is +inf). Higher dimensions use :meth:`LPN.invert`."""
        if self.dim != 1:
            return super().invert(x, y0=y0, max_iter=max_iter, tol=tol)
        x = x.detach()
        bound = 100.0 * max(1.0, float(x.abs().max())) if x.numel() else 1.0
        lo, hi = torch.full_like(x, -bound), torch.full_like(x, bound)
        with torch.no_grad():
            outside = (self(lo) > x) | (self(hi) < x)
            for _ in range(max(60, min(max_iter, 200))):
                mid = 0.5 * (lo + hi)
                below = self(mid) < x
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
                if float((hi - lo).max()) < tol * 1e-3:
                    break
        return torch.where(outside, torch.full_like(x, float("nan")), 0.5 * (lo + hi))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "hidden": self.hidden, "layers": self.layers,
                "beta": self.beta, "alpha": self.alpha, "convex": self.convex}


class LPNConv(LPN):
    """Convolutional ICNN on images ``(batch, channels, H, W)`` (the paper's MNIST/128^2 design, reduced).

    ``z1 = s(W0 x)`` (3x3 conv), then 3x3 convs ``W_k >= 0`` with ``strides`` plus unconstrained convs
    ``R_k`` on ``x`` bilinearly resized to each layer's grid, then the spatial sum (``readout="sum"``), a
    non-negative linear layer, a linear skip on the mean of ``x``, and ``alpha ||x||^2``.

    The read-out is a sum, as the paper's dense read-outs (``Linear(3136 -> 64)`` on MNIST, a full-size valid
    conv at 128^2) are: ``psi`` must grow like ``||x||^2 / 2`` for ``f`` to reach the identity, and with a
    spatial *mean* the non-negative output weights have to become (number of positions) times larger, which
    Adam needs thousands of extra steps for (issue 8: 600 steps left the denoiser worse than the noisy input).
    ``readout="mean"`` keeps the old behaviour (and is what checkpoints without the key were trained with).
    ``readout="dense"`` is the paper's MNIST read-out itself, which knows *where* a feature is (a boundary, say):
    the last feature map flattened into a non-negative ``Linear(hidden * h * w -> dense)``, plus an unconstrained
    ``Linear(h * w * channels -> dense)`` on ``x`` resized to ``h x w``, softplus, then the non-negative
    ``Linear(dense -> 1)``; it needs ``size``.

    ``symmetry="d4"`` averages ``psi`` over the eight rotations and reflections of the square:
    ``psi(x) = mean_g psi_0(g x)``. Each ``psi_0(g .)`` is convex (``g`` is a permutation of the pixels), so the mean
    is too, and ``f = grad psi = mean_g g^T f_0(g x)`` is still an exact prox, now of a prior that is invariant
    under the group, as the fields' distribution is when it is isotropic. It costs eight evaluations, and can be
    switched on for a network trained without it (issue 8, on the LPN benchmark's trained priors: the held-out PnP
    margin rose in 19 of 20 heat and 20 of 20 deblurring configurations, by 0.18 and 0.60 dB on average; see
    docs/results/lpn_symmetry.md). Square images only.

    ``position_bias=True`` adds a learned bias per channel and position to the first layer and to every skip
    (``z_{k+1} = s(W_k z_k + R_k x_k + b_k(p))``). A bias is constant in ``x``, so ``psi`` stays convex and ``f`` an
    exact prox; the convolutions stay shared, but the network can tell where it is. It is for field distributions
    that are not translation invariant, e.g. fields that vanish on a Dirichlet boundary ring (issue 8: on the heat
    inverse problem it took PnP-LPN from +1.14 to +2.14 dB over TV on the validation fields, +1.06 to +1.43 on the
    test fields). It needs ``size``.

    Args:
        channels: input channels.
        hidden: feature channels.
        strides: one stride per constrained conv layer.
        beta: softplus sharpness.
        alpha: weight of the strongly convex term.
        size: the image size ``[H, W]`` the network is trained for (stored in checkpoints).
        convex: clamp the constrained weights (``False``: the unconstrained ablation).
        readout: ``"sum"`` (default) or ``"mean"`` over the last layer's positions, or ``"dense"``.
        dense: width of the dense read-out's hidden layer (the paper's 64; only with ``readout="dense"``).
        position_bias: a learned bias per channel and position in every layer (see above).
        symmetry: ``None`` or ``"d4"`` (average ``psi`` over the square's symmetries, see above).
    """

    kind = "lpn_conv"

    def __init__(self, channels: int = 1, hidden: int = 32, strides: tuple[int, ...] | list[int] = (2, 1, 2),
                 beta: float = 10.0, alpha: float = 0.01, size: tuple[int, int] | list[int] | None = None,
                 convex: bool = True, readout: str = "sum", dense: int = 64,
                 position_bias: bool = False, symmetry: str | None = None):
        super().__init__(beta, alpha, convex)
        self.symmetry = symmetry
        if readout not in ("sum", "mean", "dense"):
            raise SolverError(f"unknown read-out {readout!r}", field="method.network", fix="use sum, mean or dense")
        self.readout, self.dense, self.position_bias = readout, int(dense), bool(position_bias)
        if self.size_bound and size is None:
            what = "the dense read-out" if readout == "dense" else "a bias per position"
            raise SolverError(f"{what} needs the image size", field="method.network.size",
                              fix="give size: [H, W] (the training resolution)")
        self.channels, self.hidden, self.strides = channels, hidden, [int(s) for s in strides]
        self.size = None if size is None else [int(s) for s in size]
        self.first = nn.Conv2d(channels, hidden, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, stride=s, padding=1, bias=False)
                                   for s in self.strides)
        self.skips = nn.ModuleList(nn.Conv2d(channels, hidden, 3, padding=1) for _ in self.strides)
        self.out_skip = nn.Linear(channels, 1)
        grids = [tuple(self.size or (0, 0))]        # each layer's grid: 3x3 convs with padding 1
        for s in self.strides:
            grids.append(((grids[-1][0] - 1) // s + 1, (grids[-1][1] - 1) // s + 1))
        self._last = grids[-1]
        if self.position_bias:
            self.pos = nn.ParameterList(nn.Parameter(torch.zeros(hidden, *hw)) for hw in grids)
        if readout == "dense":
            h, w = self._last
            self.dense_in = nn.Linear(hidden * h * w, self.dense, bias=False)
            self.dense_skip = nn.Linear(channels * h * w, self.dense)
            self.out = nn.Linear(self.dense, 1, bias=False)
            self._constrained = [*self.convs, self.dense_in, self.out]
        else:
            self.out = nn.Linear(hidden, 1, bias=False)
            self._constrained = [*self.convs, self.out]
        for w in self.constrained_weights():
            _constrained_init(w)

    SYMMETRIES: ClassVar[tuple[str | None, ...]] = (None, "d4")

    @property
    def symmetry(self) -> str | None:
        """``None`` or ``"d4"``; may be set on a trained network (see the class docstring)."""
        return self._symmetry

    @symmetry.setter
    def symmetry(self, value: str | None) -> None:
        if value not in self.SYMMETRIES:
            raise SolverError(f"unknown symmetry {value!r}", field="method.pnp.symmetry",
                              fix="use d4 (rotations and reflections of the square) or leave it out")
        self._symmetry = value

    def psi(self, x: torch.Tensor) -> torch.Tensor:
        if self._symmetry is None:
            return self._psi(x)
        if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
            raise SolverError(f"symmetry d4 needs square images, got shape {tuple(x.shape)}",
                              field="method.pnp.symmetry",
                              fix="use symmetry: none (None in Python) for non-square fields")
        turns = [torch.rot90(x, k, (2, 3)) for k in range(4)]
        images = torch.cat(turns + [torch.flip(t, (3,)) for t in turns])
        return self._psi(images).reshape(8, x.shape[0]).mean(0)

    def _psi(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise SolverError(f"expected images (batch, {self.channels}, H, W), got shape {tuple(x.shape)}",
                              field="method", fix="reshape the field to (batch, channels, H, W)")
        if self.size_bound and list(x.shape[-2:]) != self.size:
            raise SolverError(f"this network was built for {self.size[0]} x {self.size[1]} images, got "
                              f"{x.shape[-2]} x {x.shape[-1]}", field="method.network.size",
                              fix="use a network trained at this resolution")
        pos = list(self.pos) if self.position_bias else [0.0] * (len(self.convs) + 1)
        z = self.act(self.first(x) + pos[0])
        for conv, skip, p in zip(self.convs, self.skips, pos[1:], strict=True):
            z_lin = conv(z)
            x_small = F.interpolate(x, size=z_lin.shape[-2:], mode="bilinear", align_corners=False)
            z = self.act(z_lin + skip(x_small) + p)
        if self.readout == "dense":
            x_small = F.interpolate(x, size=self._last, mode="bilinear", align_corners=False)
            h = self.act(self.dense_in(z.flatten(1)) + self.dense_skip(x_small.flatten(1)))
            return (self.out(h) + self.out_skip(x.mean(dim=(2, 3)))).squeeze(1) + self.quadratic(x)
        pooled = z.sum(dim=(2, 3)) if self.readout == "sum" else z.mean(dim=(2, 3))
        return (self.out(pooled) + self.out_skip(x.mean(dim=(2, 3)))).squeeze(1) + self.quadratic(x)

    @property
    def size_bound(self) -> bool:
        """Whether the network only takes images of its ``size`` (the dense read-out, the position bias)."""
        return self.readout == "dense" or self.position_bias

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "hidden": self.hidden, "strides": self.strides,
                "beta": self.beta, "alpha": self.alpha, "size": self.size, "convex": self.convex,
                "readout": self.readout, **({"dense": self.dense} if self.readout == "dense" else {}),
                **({"position_bias": True} if self.position_bias else {}),
                **({"symmetry": self.symmetry} if self.symmetry else {})}


_KINDS: dict[str, type[LPN]] = {LPNDense.kind: LPNDense, LPNConv.kind: LPNConv}


def build_lpn(config: dict[str, Any]) -> LPN:
    """Rebuild a network from :meth:`LPN.config` (a checkpoint's ``config``)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in _KINDS:
        raise SolverError(f"unknown LPN kind {kind!r}", field="method.network",
                          fix=f"use one of {sorted(_KINDS)}")
    if kind == LPNConv.kind:
        config.setdefault("readout", "mean")       # checkpoints written before the key existed used the mean
    return _KINDS[kind](**config)
