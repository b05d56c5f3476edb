"""MgNO, the multigrid neural operator (He, Liu, Xu, ICLR 2024; code xlliu2017/MgNO).

Each layer is ``u <- GELU(MgConv(u) + Conv1x1(u) + bias)``; MgConv is a V-cycle whose smoother
``u <- u + S(f - A u)`` has learnable 3x3 convolutions ``A`` and ``S``, whose restrictions are stride-2
3x3 convolutions and whose prolongations are transposed convolutions with kernels derived from the
level sizes (``k = n_fine - 2 (n_coarse - 1) + 2 p``). The paper's smooth-Darcy model::

    >>> import torch
    >>> net = MgNO(grid=(211, 211), channels=24, num_layers=5, iterations=parse_iterations("10 10 10 10 10 20"))
    >>> net.num_parameters(), net.transposed_kernels()
    (678093, [3, 4, 3, 3, 4])
    >>> small = MgNO(grid=(64, 64), channels=4, num_layers=1, iterations="10 10 20")
    >>> small(torch.zeros(2, 1, 85, 85)).shape           # any grid size in, the same size out
    torch.Size([2, 1, 85, 85])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CaseError

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
VARIANTS = ("dc", "ns")


def parse_iterations(spec: str | Sequence[Any]) -> list[tuple[int, int]]:
    """Smoothing counts ``(pre, post)`` per level, from the paper's command-line spelling or from pairs.

    The official scripts parse ``--num_iteration`` with ``type=list``, so the token ``"10"`` is the
    pair (1 pre-smoothing, 0 post-smoothing), not ten iterations. ``"10 10 10 10 10 20"`` means six
    levels with pre-smoothing ``[1, 1, 1, 1, 1, 2]``::

        >>> parse_iterations("10 10 20")
        [(1, 0), (1, 0), (2, 0)]
        >>> parse_iterations([[1, 1], [2, 0]])
        [(1, 1), (2, 0)]

    Raises:
        CaseError: a token that is not two digits, or a pair that is not two non-negative integers.
    """
    if isinstance(spec, str):
        tokens = spec.split()
        if not tokens or any(len(t) != 2 or not t.isdigit() for t in tokens):
            raise CaseError(f"iterations {spec!r}: each level is two digits 'pre post' (the paper's '10')",
                            field="method.model.iterations", fix='e.g. "10 10 10 10 20" or [[1, 0], [2, 0]]')
        return [(int(t[0]), int(t[1])) for t in tokens]
    pairs = []
    for p in spec:
        if isinstance(p, str):
            pairs.extend(parse_iterations(p))
            continue
        if len(p) != 2 or any(int(v) != v or v < 0 for v in p):
            raise CaseError(f"iterations: {p!r} is not a (pre, post) pair of counts",
                            field="method.model.iterations", fix="e.g. [[1, 0], [2, 0]]")
        pairs.append((int(p[0]), int(p[1])))
    if not pairs or pairs[0][0] < 1:
        raise CaseError("iterations: the finest level needs at least one pre-smoothing step",
                        field="method.model.iterations", fix='e.g. "10 10 20"')
    return pairs


def coarse_size(n: int, padding: int) -> int:
    """Size after a stride-2 3x3 convolution with ``padding``."""
    return (n + 2 * padding - 3) // 2 + 1


def level_sizes(n: int, levels: int, padding: int = 1) -> list[int]:
    """Grid sizes of a ``levels``-level hierarchy from ``n`` (211 -> 211, 106, 53, 27, 14, 7)."""
    sizes = [n]
    for _ in range(levels - 1):
        sizes.append(coarse_size(sizes[-1], padding))
    return sizes


def transposed_kernel(n_fine: int, n_coarse: int, padding: int = 1) -> int:
    """Kernel of the stride-2 transposed convolution that maps ``n_coarse`` exactly back to ``n_fine``."""
    return n_fine - 2 * (n_coarse - 1) + 2 * padding


def _conv(c_in: int, c_out: int, padding_mode: str, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=padding, bias=False, padding_mode=padding_mode)


class Smoother(nn.Module):
    """One smoothing step ``u <- u + S(f - A u)``; without ``A`` it is the first step ``u = S(f)``."""

    def __init__(self, cu: int, cf: int, padding_mode: str, first: bool = False):
        super().__init__()
        self.A = None if first else _conv(cu, cf, padding_mode)
        self.S = _conv(cf, cu, padding_mode)

    def forward(self, u: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        if self.A is None or u is None:
            return self.S(f)
        return u + self.S(f - self.A(u))


class Prolongation(nn.Module):
    """Stride-2 transposed convolution back to the fine grid.

    At other sizes than its construction size it fits the fine grid with ``output_padding`` (one extra
    row/column) or by dropping its last row/column. With ``periodic`` the contributions that fall
    outside the grid wrap around (the exact transpose of a circular stride-2 convolution), so the
    operator commutes with shifts; torch's ConvTranspose2d only knows zero padding.
    """

    def __init__(self, channels: int, kernel: int, padding: int, periodic: bool = False):
        super().__init__()
        if kernel < 1:
            raise CaseError(f"level sizes give a transposed-conv kernel of {kernel}", field="method.model.grid",
                            fix="use fewer levels for this grid size")
        self.conv = nn.ConvTranspose2d(channels, channels, kernel, stride=2, padding=padding, bias=False)
        self.periodic = periodic

    def forward(self, u: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        k, p = self.conv.kernel_size[0], self.conv.padding[0]
        if self.periodic:
            out = F.conv_transpose2d(u, self.conv.weight, stride=2)
            for dim, n in ((-2, shape[0]), (-1, shape[1])):
                index = (torch.arange(out.shape[dim], device=out.device) - p) % n
                folded = out.new_zeros(*out.shape[:dim], n, *out.shape[dim:][1:])
                out = folded.index_add_(out.dim() + dim, index, out)
            return out
        natural = [2 * (n - 1) - 2 * p + k for n in u.shape[-2:]]
        extra = [min(max(want - nat, 0), 1) for want, nat in zip(shape, natural, strict=True)]
        out = F.conv_transpose2d(u, self.conv.weight, stride=2, padding=p, output_padding=tuple(extra))
        out = out[..., : shape[0], : shape[1]]
        if tuple(out.shape[-2:]) != tuple(shape):      # more than one row short: the grid is too coarse
            out = F.pad(out, (0, shape[1] - out.shape[-1], 0, shape[0] - out.shape[-2]))
        return out


class MgConv(nn.Module):
    """One V-cycle from ``f`` (``cf`` channels) to ``u`` (``cu`` channels) on ``len(iterations)`` levels.

    Args:
        cu: channels of ``u``.
        cf: channels of ``f``.
        iterations: ``(pre, post)`` smoothing counts per level, finest first.
        grid: the construction grid ``(ny, nx)``; it fixes the transposed-conv kernels (and the NS norms).
        padding_mode: padding of ``A`` and ``S`` (and of the restrictions when ``restrict_padding`` is 1).
        restrict_padding: padding of the stride-2 convolutions (1, or 0 with zero padding as in Helmholtz).
        use_res: restrict the residual ``f - A u`` instead of ``f`` (off in all the paper's configs).
        layer_norm: the NS variant's LayerNorm over ``[cu, n_j, n_j]`` after each ascending add.
    """

    def __init__(self, cu: int, cf: int, iterations: Sequence[tuple[int, int]], grid: Sequence[int],
                 padding_mode: str = "zeros", restrict_padding: int = 1, use_res: bool = False,
                 layer_norm: bool = False):
        super().__init__()
        self.iterations = [tuple(p) for p in iterations]
        levels = len(self.iterations)
        rmode = padding_mode if restrict_padding else "zeros"
        sizes = [level_sizes(n, levels, restrict_padding) for n in grid]
        self.sizes = list(zip(*sizes, strict=True))
        if min(min(s) for s in sizes) < 1:
            raise CaseError(f"grid {tuple(grid)} is too small for {levels} levels", field="method.model.levels",
                            fix="use fewer levels")
        self.pre = nn.ModuleList()
        self.post = nn.ModuleList()
        for level, (pre, post) in enumerate(self.iterations):
            self.pre.append(nn.ModuleList(Smoother(cu, cf, padding_mode, first=(level == 0 and i == 0))
                                          for i in range(pre)))
            self.post.append(nn.ModuleList(Smoother(cu, cf, padding_mode) for _ in range(post)))
        self.Pi = nn.ModuleList(_conv(cu, cu, rmode, 2, restrict_padding) for _ in range(levels - 1))
        self.R = nn.ModuleList(_conv(cf, cf, rmode, 2, restrict_padding) for _ in range(levels - 1))
        self.A_res = nn.ModuleList(_conv(cu, cf, padding_mode) for _ in range(levels - 1)) if use_res else None
        kernels = [transposed_kernel(self.sizes[j][0], self.sizes[j + 1][0], restrict_padding)
                   for j in range(levels - 1)]
        kernels_x = [transposed_kernel(self.sizes[j][1], self.sizes[j + 1][1], restrict_padding)
                     for j in range(levels - 1)]
        if kernels != kernels_x:
            raise CaseError(f"grid {tuple(grid)}: both directions must give the same transposed-conv kernels "
                            f"({kernels} vs {kernels_x})", field="method.model.grid", fix="use a square grid")
        self.kernels = kernels
        periodic = padding_mode == "circular" and restrict_padding == 1
        self.RT = nn.ModuleList(Prolongation(cu, k, restrict_padding, periodic) for k in kernels)
        self.norms = (nn.ModuleList(nn.LayerNorm([cu, *self.sizes[j]]) for j in range(levels - 1))
                      if layer_norm else None)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        states: list[tuple[torch.Tensor, torch.Tensor]] = []
        u: torch.Tensor | None = None
        for level in range(len(self.iterations)):
            if level > 0:
                if self.A_res is not None:
                    f = self.R[level - 1](f - self.A_res[level - 1](u))
                else:
                    f = self.R[level - 1](f)
                u = self.Pi[level - 1](u)
            for smoother in self.pre[level]:
                u = smoother(u, f)
            states.append((u, f))
        for j in range(len(self.iterations) - 2, -1, -1):
            u_j, f_j = states[j]
            u_j = u_j + self.RT[j](states[j + 1][0], u_j.shape[-2:])
            if self.norms is not None:
                u_j = self.norms[j](u_j)
            for smoother in self.post[j]:
                u_j = smoother(u_j, f_j)
            states[j] = (u_j, f_j)
        return states[0][0]


class MgNO(nn.Module):
    """The multigrid neural operator: ``num_layers`` MgConv layers, each with a 1x1 bypass, then 1x1 out.

    Args:
        in_channels: channels of the input function (``num_channel_f``; 1 for a Darcy coefficient).
        out_channels: channels of the output.
        channels: ``cu``, the width.
        num_layers: number of MgConv layers.
        iterations: ``(pre, post)`` per level (see :func:`parse_iterations`); its length is the level count.
        grid: construction grid ``(ny, nx)``; the transposed-conv kernels are derived from it.
        padding_mode: ``zeros`` (Dirichlet), ``circular`` (periodic), ``reflect`` (Helmholtz).
        restrict_padding: 1, or 0 for the Helmholtz configuration (stride-2 convs without padding).
        use_res: restrict residuals (off in the paper's configurations).
        variant: ``dc`` (Darcy) or ``ns`` (LayerNorm after each ascending add, output + input).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 24, num_layers: int = 5,
                 iterations: Sequence[Any] | str = "10 10 10 10 10 20", grid: Sequence[int] = (211, 211),
                 padding_mode: str = "zeros", restrict_padding: int = 1, use_res: bool = False,
                 variant: str = "dc"):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise CaseError(f"unknown padding_mode {padding_mode!r}", field="method.model.padding_mode",
                            fix=f"use one of {list(PADDING_MODES)}")
        if variant not in VARIANTS:
            raise CaseError(f"unknown MgNO variant {variant!r}", field="method.model.variant",
                            fix=f"use one of {list(VARIANTS)}")
        if variant == "ns" and in_channels != out_channels:
            raise CaseError("the ns variant adds its input to the output, so in and out channels must match",
                            field="method.model.variant", fix="use variant: dc")
        grid = [int(grid), int(grid)] if isinstance(grid, int) else [int(n) for n in grid]
        its = parse_iterations(iterations)
        self._config = {"in_channels": in_channels, "out_channels": out_channels, "channels": channels,
                        "num_layers": num_layers, "iterations": [list(p) for p in its], "grid": grid,
                        "padding_mode": padding_mode, "restrict_padding": restrict_padding,
                        "use_res": use_res, "variant": variant}
        ln = variant == "ns"
        self.convs = nn.ModuleList(
            MgConv(channels, in_channels if i == 0 else channels, its, grid, padding_mode, restrict_padding,
                   use_res, ln) for i in range(num_layers))
        self.bypass = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else channels, channels, 1, bias=True)
                                    for i in range(num_layers))
        self.last_layer = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.variant = variant

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able): ``MgNO(**net.config)`` rebuilds the architecture."""
        return dict(self._config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def transposed_kernels(self) -> list[int]:
        return list(self.convs[0].kernels)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """``a``: ``(batch, in_channels, ny, nx)`` -> ``(batch, out_channels, ny, nx)`` (any ``ny, nx``)."""
        u = a
        for conv, bypass in zip(self.convs, self.bypass, strict=True):
            u = F.gelu(conv(u) + bypass(u))
        out = self.last_layer(u)
        return out + a if self.variant == "ns" else out
