"""The bounded normalizing flow: invertible, exact log-density, samples in the box; AAS-1 of the papers file."""

import math

import numpy as np
import pytest
import torch

from neuralpde.operators.flows import BoundedFlow, h1_penalty
from neuralpde.solvers.sampling import AASSampler, DASSampler, Region, collapsed


def _random_flow(bounds, seed=0, couplings=4):
    torch.manual_seed(seed)
    flow = BoundedFlow(bounds, couplings=couplings, width=16).double()
    with torch.no_grad():       # leave the identity start: random couplings and a shifted, scaled base
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("bounds", [[[-1, 1], [-1, 1]], [[0, 2], [-1, 0.5], [3, 4]], [[-1, 1]] * 10, [[0, 1]]])
def test_round_trip_and_inverse_logdet(bounds):
    flow = _random_flow(bounds)
    # the bulk of the base density (a logistic tail point beyond |z| ~ 30 maps onto the box face in float64)
    z = torch.randn(256, len(bounds), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, ld_fwd = flow(z)
    z_back, ld_inv = flow.inverse(x)
    x_back, _ = flow(z_back)
    assert torch.allclose(x_back, x, atol=1e-5, rtol=0)
    assert torch.allclose(ld_fwd + ld_inv, torch.zeros_like(ld_fwd), atol=1e-5)


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_logdet_equals_autograd_jacobian(dim):
    flow = _random_flow([[-1, 2]] * dim, seed=dim)
    z = 2 * torch.randn(6, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, logdet = flow(z)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        assert float(logdet[i].detach()) == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet), abs=1e-8)


def test_density_integrates_to_one_and_untrained_flow_is_uniform():
    flow = _random_flow([[-1, 1], [0, 2]])
    n = 400
    g = (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(-1 + 2 * g, 2 * g)
    pts = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1))
    mass = float(flow.log_prob(pts).detach().exp().mean()) * 4.0      # midpoint rule on the 2 x 2 box
    assert mass == pytest.approx(1.0, abs=0.02)
    fresh = BoundedFlow([[-1, 1], [0, 2]]).double()
    assert torch.allclose(fresh.log_prob(pts), torch.full((len(pts),), math.log(0.25), dtype=torch.float64), atol=1e-10)
    assert float(h1_penalty(fresh, pts[:100]).detach()) < 1e-16 < float(h1_penalty(flow, pts[:100]).detach())


def test_samples_stay_inside_even_when_saturated():
    flow = _random_flow([[-1, 1]] * 10)
    with torch.no_grad():
        flow.shift.add_(40.0)            # pushes everything against the upper faces
    x = flow.sample(5000, torch.Generator().manual_seed(3))
    assert torch.isfinite(x).all() and bool(((x >= -1) & (x <= 1)).all())
    assert torch.isfinite(flow.log_prob(x)).all()
    assert collapsed(x.numpy(), np.array([[-1, 1]] * 10))


# -------------------------------------------------------------------------- AAS-1: r = f fixed (u = 0)
def _peak_source(x):
    s = (x[:, 0] - 0.5) ** 2 + (x[:, 1] - 0.5) ** 2
    return 4000 * np.exp(-1000 * s) * (1 - 1000 * s)      # -laplace exp(-1000 |x - c|^2)


def _is_stats(flow, n=500, repeats=200, seed=5):
    x = flow.sample(n * repeats, torch.Generator().manual_seed(seed)).numpy()
    w = _peak_source(x) ** 2 / np.exp(flow.log_prob(torch.as_tensor(x)).detach().double().numpy())
    estimates = w.reshape(repeats, n).mean(axis=1)
    true = 4000 * math.pi                                # ||f||^2 on R^2 (the tail outside the box is < 1e-100)
    near = np.mean(np.linalg.norm(x - 0.5, axis=1) < 0.1)
    return estimates.std() / true, estimates.mean() / true, near


def _assert_aas1_after_4_stages(sampler):
    """AAS-1 of the papers file after 4 stages with r = f fixed: IS rel. std < 0.2 (unbiased within 10 %) and at
    least half of the samples within 0.1 of the peak."""
    x = sampler.initial()
    for stage in range(4):
        x = sampler.next_points(_peak_source, x, stage)
    rel_std, bias, near = _is_stats(sampler.flow)
    assert rel_std < 0.2, rel_std
    assert abs(bias - 1) < 0.1
    assert near >= 0.5, near


def test_aas1_uniform_baseline_matches_the_papers_file():
    flow = BoundedFlow([[-1, 1], [-1, 1]]).double()        # untrained = uniform
    rel_std, _, near = _is_stats(flow)
    assert 1.6 < rel_std < 3.2                               # 2.29 computed in the papers file
    assert near < 0.02


def test_aas1_das_kl_sampler():
    """DAS (KL form), r = f fixed: rel. std of the IS estimate < 0.2 and half the points near the peak."""
    _assert_aas1_after_4_stages(DASSampler(Region.box([[-1, 1], [-1, 1]]), points=500, seed=0, flow_steps=60,
                                           lr=5e-3, batch=500, uniform_share=0.0))


def test_aas1_adversarial_sampler():
    """AAS max form (log E_p[r^2] - beta E_p|grad log p|^2 by REINFORCE, beta 1e-3 = the default), r = f fixed:
    the AAS-1 targets of the papers file (IS rel. std < 0.2, at least half of the samples within 0.1 of the
    peak). Measured over seeds 0-2: rel. std 0.106-0.112 and 76-77 % near the peak after 4 stages, 0.10-0.14 at
    every stage from 1 to 8, so it settles rather than passing through. beta 3e-3 sits on the edge (rel. std
    0.17, 48 % near) and 3e-2 is too strong (0.43-0.53, 10 % near: p stays wide)."""
    sampler = AASSampler(Region.box([[-1, 1], [-1, 1]]), points=500, seed=0, flow_steps=100, lr=1e-3, batch=500,
                         uniform_share=0.0)
    assert sampler.beta == 1e-3
    _assert_aas1_after_4_stages(sampler)


def test_aas_flow_finds_a_10d_bump_that_uniform_points_miss():
    """The 10D problem's source f (u = exp(-10|x|^2) on [-1, 1]^10) as a fixed residual: u > 0.1 on 1.6e-6 of
    the cube, so uniform points almost never see it. One AAS stage (150 flow steps, the default beta) must put
    at least a third of the samples there (measured: 0.76 after 300 steps, seed 0) and the rest near it."""
    from neuralpde.pde.gaussian import GaussianPeaks

    f = GaussianPeaks([{"center": 0.0, "k": 10.0}], dim=10).f_numpy
    sampler = AASSampler(Region.box([[-1, 1]] * 10), points=1000, seed=0, flow_steps=150, lr=2e-3, batch=500,
                         uniform_share=0.0)
    x = sampler.next_points(f, sampler.initial(), 0)
    r2 = (x**2).sum(1)
    assert np.mean(np.exp(-10 * r2) > 0.1) > 0.33
    assert np.median(r2) < 0.5                               # uniform: 10/3


def _bump(centre, width):
    def r(x):
        return np.exp(-((x - centre) ** 2).sum(1) / (2 * width**2))
    return r


@pytest.mark.parametrize("memory", [0.0, 0.3])
def test_aas_memory_keeps_the_peak_the_flow_left(memory):
    """A residual on one peak, then on another (the hop AAS makes on the two-peak problem): with a memory share
    the previous stage's flow still puts its points on the first peak, and the importance weights' density q is
    the whole mixture (E_q[1/q] is the box's area, 4; without the memory's term its points near the first peak
    would weigh about 4 / 0.2 each).
    The memory is every earlier stage's flow, so the first peak keeps points after two stages on the other."""
    a, b = np.array([0.5, 0.5]), np.array([-0.5, -0.5])
    sampler = AASSampler(Region.box([[-1, 1], [-1, 1]]), points=1000, seed=0, flow_steps=100, lr=1e-3, batch=256,
                         uniform_share=0.2, memory_share=memory, importance_weights=True)
    x = sampler.next_points(_bump(a, 0.05), sampler.initial(), 0)
    x = sampler.next_points(_bump(b, 0.3), x, 1)       # wide: the flow sitting on a still sees its pull
    # stage 3 on b again: the memory holds the flows of stages 1 (uniform) and 2 (on a), half of it each
    x = sampler.next_points(_bump(b, 0.3), x, 2)
    near_a = np.mean(np.linalg.norm(x - a, axis=1) < 0.2)
    near_b = np.mean(np.linalg.norm(x - b, axis=1) < 0.2)
    assert near_b > 0.15
    assert np.mean(1 / sampler._q) == pytest.approx(4.0, rel=0.15)
    if memory:
        assert len(sampler.previous) == 3
        assert near_a > 0.07      # the stage-2 flow's half of the memory is 0.15 of the points (seed 0: 0.112)
    else:
        assert near_a < 0.03      # seed 0: 0.009
