"""The case method's PnP settings (issue 8): converged convex baselines and where the learned prior starts."""

import pytest
import torch

from neuralpde.errors import CaseError
from neuralpde.solvers.inverse_problems import (
    LPNMethodConfig,
    blur_operator,
    make_priors,
    piecewise_constant_field,
    solve_all,
)
from neuralpde.solvers.pnp import tikhonov_direct

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = torch.float64
N = 12


class Identity:
    """A prior with ``R = 0`` standing in for a learned one: its prox returns its input."""

    def __call__(self, v, t):
        return v.clone()


@pytest.fixture
def blurred():
    gen = torch.Generator().manual_seed(3)
    truth = piecewise_constant_field(1, N, gen).to(D).reshape(-1)
    op = blur_operator(N, 1.5)
    y = op(truth) + 0.05 * torch.randn(N * N, generator=gen, dtype=D)
    return op, y


def _config(**pnp):
    return LPNMethodConfig.model_validate({"type": "lpn", "task": "deblur", "data": {"grid": N},
                                           "inverse": {"noise": 0.05}, "baselines": {"tikhonov": 0.03, "tv": 3e-3},
                                           "pnp": pnp})


def test_baselines_reach_the_minimiser_of_their_objective(blurred):
    """With the baseline defaults (rho 10, 50 iterations) Tikhonov equals the direct solve of its normal equations;
    with the learned prior's rho 0.1 and 30 iterations (the setting before issue 8) it was far from it."""
    op, y = blurred
    exact, = tikhonov_direct(op, [y], 0.03, (N, N))
    cfg = _config()
    priors = make_priors(cfg, {}, N)
    converged = solve_all(cfg, op, y, {"tikhonov": priors["tikhonov"]})["tikhonov"].x
    assert float((converged - exact).norm() / exact.norm()) < 1e-4
    old = solve_all(_config(baseline_rho=0.1, baseline_iters=30), op, y, {"tikhonov": priors["tikhonov"]})
    assert float((old["tikhonov"].x - exact).norm() / exact.norm()) > 1e-2


@pytest.mark.parametrize("start", ["tv", "tikhonov", "adjoint"])
def test_learned_prior_starts_where_configured(blurred, start):
    """With R = 0 and a negligible data weight ADMM stays at its start: the chosen baseline's answer or A^T y."""
    op, y = blurred
    cfg = _config(start=start, iters=3, baseline_iters=5)
    priors = {**make_priors(cfg, {}, N), "lpn": (Identity(), 1e-9)}
    out = solve_all(cfg, op, y, priors)
    begin = op.adjoint(y) if start == "adjoint" else out[start].x
    assert float((out["lpn"].x - begin).norm() / begin.norm()) < 1e-6
    others = [out[k].x for k in ("tv", "tikhonov") if k != start]
    assert all(float((out["lpn"].x - x).norm() / x.norm()) > 1e-3 for x in others)


def test_start_from_a_switched_off_baseline_is_a_clear_error(blurred):
    op, y = blurred
    cfg = LPNMethodConfig.model_validate({"type": "lpn", "task": "deblur", "data": {"grid": N},
                                          "baselines": {"tv": None}, "pnp": {"start": "tv", "baseline_iters": 5}})
    priors = {**make_priors(cfg, {}, N), "lpn": (Identity(), 1.0)}
    with pytest.raises(CaseError, match="switched off") as info:
        solve_all(cfg, op, y, priors)
    assert info.value.field == "method.pnp.start" and "adjoint" in info.value.fix


def _heat(steps: int = 4, observe: float = 0.5):
    from neuralpde.meshes.domains import Rectangle
    from neuralpde.solvers.inverse_problems import heat_operator

    return heat_operator(Rectangle().mesh(cells=[N - 1, N - 1]), 1.0, 0.002, steps, observe, seed=0)


def test_heat_operator_does_not_see_the_boundary_ring_of_u0():
    """u0's boundary values are overwritten by the Dirichlet value 0, so A maps a field living on the ring to 0 and
    A^T y is 0 there: the ring is not an unknown but known data (u0 = 0), and ``free`` marks the other pixels."""
    inverse = _heat()
    op = inverse.operator
    ring = torch.ones(N, N, dtype=D)
    ring[1:-1, 1:-1] = 0
    inside = 1 - ring
    assert torch.equal(inverse.free, inside.bool().reshape(-1))
    assert float(op(ring.reshape(-1)).abs().max()) == 0.0
    assert float(op(inside.reshape(-1)).abs().max()) > 1e-3          # the interior is seen
    aty = op.adjoint(torch.randn(op.shape[0], generator=torch.Generator().manual_seed(0), dtype=D)).reshape(N, N)
    assert float(aty[ring.bool()].abs().max()) == 0.0 and float(aty[inside.bool()].abs().max()) > 1e-3


def test_heat_fields_and_every_reconstruction_vanish_on_the_dirichlet_ring():
    """Issue 8: the heat problem's fields satisfy u0 = 0 on the ring (the same draws as the plain sampler inside),
    and every method (both baselines, the LPN and the unconstrained net) solves for the free pixels only: its ring is
    exactly 0 and Tikhonov is the minimiser over the free pixels. Without the constraint the ring is wrong."""
    from neuralpde.operators.lpn import LPNConv
    from neuralpde.solvers.inverse_problems import field_sampler
    from neuralpde.solvers.pnp import psnr

    inverse = _heat(steps=10, observe=0.5)
    op, free = inverse.operator, inverse.free
    fields = inverse.field_sampler("piecewise")(4, torch.Generator().manual_seed(1)).reshape(4, -1)
    plain = field_sampler("piecewise", N)(4, torch.Generator().manual_seed(1)).reshape(4, -1)
    assert float(fields[:, ~free].abs().max()) == 0.0 and float(plain[:, ~free].max()) == 1.0
    assert torch.equal(fields[:, free], plain[:, free])
    truth = fields[0].to(D)
    y = op(truth) + 0.01 * torch.randn(op.shape[0], generator=torch.Generator().manual_seed(2), dtype=D)
    cfg = LPNMethodConfig.model_validate({"type": "lpn", "task": "heat_inverse", "data": {"grid": N},
                                          "inverse": {"noise": 0.01}, "baselines": {"tikhonov": 1e-3, "tv": 3e-4},
                                          "pnp": {"iters": 5}})
    torch.manual_seed(0)
    nets = {"lpn": LPNConv(hidden=4, strides=(2,), size=[N, N]),
            "unconstrained": LPNConv(hidden=4, strides=(2,), size=[N, N], convex=False)}
    priors = make_priors(cfg, nets, N)
    out = solve_all(cfg, op, y, priors, truth=truth, free=free)
    assert set(out) == {"tikhonov", "tv", "lpn", "unconstrained"}
    for name, r in out.items():
        assert float(r.x[~free].abs().max()) == 0.0, name
        assert float(r.x[free].abs().max()) > 0.1, name
    exact, = tikhonov_direct(op, [y], 1e-3, (N, N), free)
    assert float((out["tikhonov"].x - exact).norm() / exact.norm()) < 1e-3
    unconstrained = solve_all(cfg, op, y, {"tv": priors["tv"]}, truth=truth)["tv"].x
    assert float(unconstrained[~free].abs().max()) > 0.1
    assert psnr(out["tv"].x, truth, 1.0) > psnr(unconstrained, truth, 1.0) + 1.0


def test_heat_case_method_scores_a_truth_that_satisfies_the_boundary_condition():
    """Through the case method (tiny training): the truth and every reconstruction are 0 on the ring."""
    import numpy as np

    from neuralpde.meshes.domains import Rectangle
    from neuralpde.pde import BoundaryCondition, Heat, Problem
    from neuralpde.solvers.inverse_problems import run_inverse
    from neuralpde.solvers.method import RunContext

    problem = Problem(Heat(k=1, source=0, initial="sin(pi*x)*sin(pi*y)", t_end=0.002), Rectangle(),
                      [BoundaryCondition("all", "dirichlet", 0)])
    cfg = LPNMethodConfig.model_validate({
        "type": "lpn", "task": "heat_inverse", "network": {"hidden": 4, "strides": [2], "position_bias": True},
        "train": {"steps": 4, "batch": 2}, "data": {"grid": N}, "pnp": {"iters": 5, "baseline_iters": 10}})
    result = run_inverse(cfg, problem, RunContext())
    m = result.metrics
    for name in ("lpn", "tikhonov", "tv"):
        assert m[name]["ring_max_abs"] == 0.0 and np.isfinite(m[name]["psnr_interior"])
    mesh = problem.domain.mesh(cells=[N - 1, N - 1])
    boundary = np.isclose(mesh.points[:, :2], 0).any(axis=1) | np.isclose(mesh.points[:, :2], 1).any(axis=1)
    for name in ("truth_u0", "lpn_u0", "tv_u0"):
        assert np.abs(result.extra_fields[name].values[boundary]).max() == 0.0
    assert np.abs(result.extra_fields["truth_u0"].values).max() == 1.0


def test_the_case_prior_is_trained_on_the_heat_truths_distribution(monkeypatch):
    """The case method trains its LPN on the fields the inverse problem draws its truths from: on heat, fields that
    vanish on the Dirichlet ring (a prior trained on plain fields would pull the ring's neighbours towards values
    the truth never has)."""
    from neuralpde.solvers import lpn_training
    from neuralpde.solvers.inverse_problems import field_lpn
    from neuralpde.solvers.method import RunContext

    seen = {}
    monkeypatch.setattr(lpn_training, "train_lpn", lambda net, sampler, **kw: seen.setdefault("sampler", sampler))
    free = _heat(steps=2, observe=0.5).free
    cfg = LPNMethodConfig.model_validate({"type": "lpn", "task": "heat_inverse", "data": {"grid": N},
                                          "network": {"hidden": 4, "strides": [2], "position_bias": True}})
    for mask, ring_max in ((free, 0.0), (None, 1.0)):
        net = field_lpn(cfg, RunContext(device="cpu", seed=0), free=mask)
        assert net.position_bias and tuple(net.pos[0].shape) == (4, N, N)      # the case's setting reaches the net
        draws = seen.pop("sampler")(8, torch.Generator().manual_seed(0)).reshape(8, -1)
        assert float(draws[:, ~free].abs().max()) == ring_max
        assert float(draws[:, free].max()) == 1.0


@pytest.mark.parametrize(("fraction", "l1"), [(0.5, 500), (0.3, 300), (1.0, 1000)])
def test_case_schedule_splits_l1_and_proximal_matching_as_configured(fraction, l1):
    """``train.l1_fraction`` sets the share of L1 steps of the paper's schedule (1: L1 only); the steps add up."""
    from neuralpde.solvers.lpn_training import field_schedule

    cfg = LPNMethodConfig.model_validate({"type": "lpn", "task": "heat_inverse",
                                          "train": {"steps": 1000, "l1_fraction": fraction}})
    stages = field_schedule(cfg.train, 32 * 32)
    assert sum(s.steps for s in stages) == 1000
    assert sum(s.steps for s in stages if s.loss == "l1") == l1
    assert [s.loss for s in stages if s.steps] == ["l1"] + ["pm"] * (4 if l1 < 1000 else 0)


def test_case_l1_fraction_outside_0_1_is_a_clear_error():
    from pathlib import Path

    from neuralpde.cases.loader import load_case

    case = Path(__file__).resolve().parent.parent / "cases" / "lpn_heat_inverse.yaml"
    with pytest.raises(CaseError) as info:
        load_case(case, overrides=["method.train.l1_fraction=1.5"])
    assert info.value.field == "method.train.l1_fraction" and "lpn_heat_inverse.yaml" in str(info.value)


@pytest.mark.parametrize("symmetry", ["none", "d4"])
def test_case_symmetry_setting_reaches_the_prior(symmetry):
    """``pnp.symmetry: d4`` makes the case's learned prox commute with the square's rotations (the network's psi
    averaged over them); ``none`` (the default) leaves the trained network as it is (a position bias breaks it)."""
    from neuralpde.operators.lpn import LPNConv

    torch.manual_seed(0)
    net = LPNConv(hidden=4, strides=(2,), size=[N, N], position_bias=True).double()
    with torch.no_grad():
        for p in net.pos:
            p.normal_()
    prox, _ = make_priors(_config(symmetry=symmetry), {"lpn": net}, N)["lpn"]
    v = torch.rand(N * N, generator=torch.Generator().manual_seed(5), dtype=D)

    def turn(x):
        return torch.rot90(x.reshape(N, N), 1).reshape(-1)

    gap = float((prox(turn(v), 1.0) - turn(prox(v, 1.0))).abs().max())
    assert (gap < 1e-6) == (symmetry == "d4"), gap
    assert net.symmetry == (None if symmetry == "none" else "d4")
