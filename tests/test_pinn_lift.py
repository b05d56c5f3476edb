"""The cached hard-BC output transform: the same values and derivatives as autograd, and never stale."""

import pytest
import torch

from neuralpde.errors import SolverError
from neuralpde.meshes.domains import Box, Hypercube
from neuralpde.pde import BoundaryCondition, Poisson, Problem
from neuralpde.pde.base import div, grad
from neuralpde.pde.gaussian import GaussianPeaks
from neuralpde.solvers.cached_field import CachedField, derivatives, derivatives_autograd, product_derivatives
from neuralpde.solvers.pinn_bridge import _hard_bc_transform


def _problem(dim):
    bc = [BoundaryCondition("all", "dirichlet", "exact")]     # a fresh one: a Problem binds "exact" to it
    if dim == 3:     # an expression (the case-file kind of data) that is far from 0 on the boundary
        return Problem(Poisson(source="manufactured", exact="1 + x*y*z + sin(2*x) + y**2", dim=3),
                       Box([[-1, 1], [-1, 2], [0, 1]]), bc)
    return Problem(GaussianPeaks([{"center": 0.3, "k": 0.5}], dim=10), Hypercube([[-1, 1]] * 10), bc)


def _net(dim):
    torch.manual_seed(dim)
    return torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()


def _points(pb, n, seed):
    b = torch.tensor(pb.domain.bounds, dtype=torch.float64)
    return b[:, 0] + (b[:, 1] - b[:, 0]) * torch.rand(n, len(b), generator=torch.Generator().manual_seed(seed),
                                                      dtype=torch.float64)


def _derivatives(transform, net, x):
    """u, grad u, laplace u and the parameter gradient of mean(laplace u ^ 2) (a third derivative in x)."""
    x = x.clone().requires_grad_(True)
    u = transform(x, net(x)).reshape(-1)
    g = grad(u, x)
    lap = div(g, x)
    net.zero_grad()
    (lap**2).mean().backward()
    return [u.detach(), g.detach(), lap.detach(), x.grad.clone(), *[p.grad.clone() for p in net.parameters()]]


@pytest.mark.parametrize("dim", [3, 10])
def test_cached_transform_matches_autograd(dim):
    pb, net = _problem(dim), _net(dim)
    cached, plain = _hard_bc_transform(pb, cache=True), _hard_bc_transform(pb, cache=False)
    x = _points(pb, 40, 0)
    want = _derivatives(plain, net, x)
    for _ in range(2):        # the second time from the cache
        got = _derivatives(cached, net, x)
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()))
    assert float(want[2].abs().max()) > 1e-2 and float(want[3].abs().max()) > 1e-3    # a real test: not all 0


@pytest.mark.parametrize("dim", [1, 3, 5])
def test_product_derivatives_equal_autograd_to_rounding(dim):
    """The closed form for separable products (the hard-BC distance) against backward passes, up to order 3."""
    lo = torch.linspace(-1.0, -0.2, dim, dtype=torch.float64)
    hi = torch.linspace(0.5, 2.0, dim, dtype=torch.float64)

    def f(x):
        return torch.prod((x - lo) * (hi - x) * torch.exp(x), dim=1)

    def factors(x):     # s = (x - lo)(hi - x) e^x and its first three derivatives
        p, dp = (x - lo) * (hi - x), lo + hi - 2 * x
        e = torch.exp(x)
        return [p * e, (p + dp) * e, (p + 2 * dp - 2) * e, (p + 3 * dp - 6) * e]

    x = lo + (hi - lo) * torch.rand(7, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64)
    for got, want in zip(product_derivatives(factors, x, 3), derivatives_autograd(f, x, 3), strict=True):
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_cache_is_never_stale():
    """New points, or the same tensor changed in place, give the new points' values: a miss, not a hit."""
    pb, net = _problem(3), _net(3)
    cached, plain = _hard_bc_transform(pb, cache=True), _hard_bc_transform(pb, cache=False)
    x = _points(pb, 30, 1)
    _derivatives(cached, net, x)
    y = _points(pb, 30, 2)
    for a, b in zip(_derivatives(cached, net, y), _derivatives(plain, net, y), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
    x[3, 1] += 0.25                    # in place: same object, same shape
    for a, b in zip(_derivatives(cached, net, x), _derivatives(plain, net, x), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_cached_field_counts_hits_and_refuses_order_four():
    field = CachedField(lambda p: torch.exp(-(p**2).sum(dim=1)), size=2)
    x = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        field(x)
    assert (field.hits, field.misses) == (2, 1)
    field(x + 1)
    assert field.misses == 2 and len(field.entries) == 2
    u = field(x)
    g = grad(u, x)
    lap = div(g, x)
    d3 = grad(lap, x)                                       # third derivatives: cached
    with pytest.raises(SolverError, match="order 4"):
        div(d3, x)


def test_derivatives_by_torch_func_and_by_backward_passes_agree():
    x = torch.rand(7, 4, dtype=torch.float64)

    def f(p):
        return torch.sin(p[:, 0] * p[:, 1]) + p[:, 2] ** 3 * torch.exp(p[:, 3])

    for a, b in zip(derivatives(f, x, 3), derivatives_autograd(f, x, 3), strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-12)
