"""PnP-ADMM/PGD, the proximal baselines, the adjoint check, the two PDE inverse problems and LPN checkpoints."""

import numpy as np
import pytest
import torch

from neuralpde.errors import CaseError, SolverError
from neuralpde.meshes.domains import Rectangle
from neuralpde.operators.lpn import LPNConv
from neuralpde.pde import BoundaryCondition, Heat, Problem
from neuralpde.solvers.fem.base import TimeOptions
from neuralpde.solvers.fem.skfem_backend import SkfemSolver
from neuralpde.solvers.inverse_problems import blur_operator, heat_operator, piecewise_constant_field
from neuralpde.solvers.lpn_training import Stage, load_lpn, train_lpn
from neuralpde.solvers.pnp import (
    LinearOperator,
    LPNProx,
    Tikhonov,
    TotalVariation,
    as_operator,
    check_adjoint,
    pnp_admm,
    pnp_pgd,
)

D = torch.float64


@pytest.fixture
def least_squares():
    gen = np.random.default_rng(0)
    A = gen.standard_normal((12, 8))
    y = gen.standard_normal(12)
    lam = 0.7
    exact = np.linalg.solve(A.T @ A + lam * np.eye(8), A.T @ y)
    return A, y, lam, exact


def test_admm_and_pgd_reach_the_tikhonov_solution(least_squares):
    A, y, lam, exact = least_squares
    admm = pnp_admm(A, y, Tikhonov(lam), rho=1.0, iters=300, cg_tol=1e-12, cg_iter=50)
    assert np.allclose(admm.x.numpy(), exact, atol=1e-7)
    step = 1.0 / np.linalg.norm(A, 2) ** 2
    pgd = pnp_pgd(LinearOperator.from_matrix(torch.tensor(A)), y, Tikhonov(lam), step=step, iters=3000)
    assert np.allclose(pgd.x.numpy(), exact, atol=1e-6)


def test_fixed_entries_stay_at_their_values_and_the_rest_is_the_constrained_minimiser(least_squares):
    """With ``free``, ADMM and PGD minimise over the x whose other entries equal ``fixed`` (issue 8: the Dirichlet
    ring of the heat problem's u0); the answer is the constrained least-squares solution, not the free one."""
    A, y, lam, free_exact = least_squares
    free = np.array([True, False, True, True, False, True, True, True])
    fixed = np.array([0.0, 0.5, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0])       # entries at free positions are ignored
    Af = A[:, free]
    exact = fixed.copy()
    exact[free] = np.linalg.solve(Af.T @ Af + lam * np.eye(free.sum()), Af.T @ (y - A @ fixed))
    mask, values = torch.tensor(free), torch.tensor(fixed) + 9.0 * torch.tensor(free)
    admm = pnp_admm(A, y, Tikhonov(lam), rho=1.0, iters=300, cg_tol=1e-12, cg_iter=50, free=mask, fixed=values)
    step = 1.0 / np.linalg.norm(A, 2) ** 2
    pgd = pnp_pgd(A, y, Tikhonov(lam), step=step, iters=3000, free=mask, fixed=values)
    for x in (admm.x.numpy(), pgd.x.numpy()):
        assert np.array_equal(x[~free], fixed[~free])
        assert np.allclose(x, exact, atol=1e-6)
    assert np.abs(exact - free_exact).max() > 0.1          # the constraint matters here
    with pytest.raises(SolverError, match="mask") as info:
        pnp_admm(A, y, Tikhonov(lam), rho=1.0, free=mask[:5])
    assert info.value.field == "free"


def test_callables_and_matrix_give_the_same_operator(least_squares):
    A, y, lam, _ = least_squares
    At = torch.tensor(A)
    op = as_operator((lambda x: At @ x, lambda r: At.T @ r), n=8)
    assert op.shape == (12, 8)
    a = pnp_admm(op, y, Tikhonov(lam), rho=1.0, iters=20).x
    b = pnp_admm(A, y, Tikhonov(lam), rho=1.0, iters=20).x
    assert torch.allclose(a, b, atol=1e-12)


def test_wrong_adjoint_is_a_clear_error():
    M = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=D)
    bad = LinearOperator(lambda x: M @ x, lambda r: 1.1 * (M.T @ r), (6, 5))
    with pytest.raises(SolverError, match="dot-product test") as info:
        check_adjoint(bad)
    assert info.value.field == "operator" and "transpose" in info.value.fix
    assert check_adjoint(LinearOperator.from_matrix(M)) < 1e-12


def test_observation_of_the_wrong_shape():
    op = LinearOperator.from_matrix(np.eye(4))
    with pytest.raises(SolverError, match="observation has 3 values") as info:
        pnp_admm(op, np.zeros(3), Tikhonov(1.0), rho=1.0)
    assert info.value.field == "observation"
    with pytest.raises(SolverError, match="needs the size n"):
        as_operator((lambda x: x, lambda x: x))


def test_tv_prox_lowers_its_objective_below_nearby_points():
    gen = torch.Generator().manual_seed(1)
    truth = piecewise_constant_field(1, 16, gen).to(D).reshape(-1)
    v = truth + 0.2 * torch.randn(256, generator=gen, dtype=D)
    prox = TotalVariation(0.1, (16, 16), iters=300)
    z = prox(v, 1.0)

    def objective(u):
        from neuralpde.solvers.pnp import _grad
        gx, gy = _grad(u.reshape(16, 16))
        return 0.5 * float(((u - v) ** 2).sum()) + 0.1 * float(torch.sqrt(gx**2 + gy**2).sum())

    best = objective(z)
    assert best < objective(v) and best < objective(truth)
    for _ in range(20):
        assert best <= objective(z + 1e-3 * torch.randn(256, generator=gen, dtype=D)) + 1e-9
    assert float((z - truth).norm()) < float((v - truth).norm())     # it denoises


def test_pnp_admm_with_an_lpn_converges():
    """ADMM with the prox of a convex R converges (the paper's guarantee), for any fixed data weight."""
    torch.manual_seed(0)
    net = LPNConv(hidden=6, strides=(2,), alpha=0.05, size=[12, 12]).double()
    with torch.no_grad():
        for w in net.constrained_weights():
            w.copy_(torch.rand(w.shape, dtype=D) * 0.3)
    op = blur_operator(12, 1.0)
    truth = piecewise_constant_field(1, 12, torch.Generator().manual_seed(2)).to(D).reshape(-1)
    y = op(truth)
    r = pnp_admm(op, y, LPNProx(net, (1, 12, 12)), rho=1.0, scale=1.0, iters=80)
    change = r.history["change"]
    assert change[-1] < 1e-4 and change[-1] < 1e-2 * change[0]


def test_heat_operator_is_the_fem_time_stepper():
    """A applied to an initial condition equals the scikit-fem reference's u(T), and A^T passes the dot test."""
    pde = Heat(k=1, source=0, initial="sin(pi*x)*sin(pi*y) + x*y", t_end=0.01)
    problem = Problem(pde, Rectangle(), [BoundaryCondition("all", "dirichlet", 0)])
    mesh = Rectangle().mesh(cells=[9, 9])
    inverse = heat_operator(mesh, pde.k, pde.t_end, steps=5, observe=0.5, seed=0)
    assert check_adjoint(inverse.operator) < 1e-12
    u0 = np.asarray(pde.initial.numpy(mesh.points.T), dtype=float)
    reference = SkfemSolver().solve(problem, mesh, 1, time=TimeOptions(dt=0.002, theta=1.0))
    assert np.allclose(inverse.stepper.forward_dofs(u0), reference.field.values, atol=1e-12)
    grid = torch.from_numpy(inverse.stepper.to_grid(u0).reshape(-1).copy())
    assert np.allclose(inverse.operator(grid).numpy(), reference.field.values[inverse.observed], atol=1e-12)
    with pytest.raises(CaseError, match="observe"):
        heat_operator(mesh, 1.0, 0.01, 5, observe=0.0)


def test_checkpoint_resume_and_resolution_mismatch(tmp_path):
    def sampler(batch, gen):
        return piecewise_constant_field(batch, 8, gen)

    stages = [Stage("l1", 3, 1e-3), Stage("pm", 3, 1e-4, gamma=1.0)]

    def fresh():
        torch.manual_seed(0)
        return LPNConv(hidden=4, strides=(2,), size=[8, 8])

    straight = fresh()
    train_lpn(straight, sampler, sigma=0.1, batch=2, stages=stages, checkpoint_dir=tmp_path / "a", checkpoint_every=3)
    interrupted = fresh()
    train_lpn(interrupted, sampler, sigma=0.1, batch=2, stages=stages, checkpoint_dir=tmp_path / "b",
              checkpoint_every=3)
    (tmp_path / "b" / "lpn_0000006.pt").unlink()          # as if killed between steps 3 and 6
    resumed = fresh()
    hist = train_lpn(resumed, sampler, sigma=0.1, batch=2, stages=stages, checkpoint_dir=tmp_path / "b",
                     checkpoint_every=3)
    assert hist["resumed_from"] == 3 and len(hist["loss"]) == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    loaded = load_lpn(tmp_path / "a" / "lpn_0000006.pt", expect={"size": [8, 8]})
    assert torch.equal(loaded(torch.ones(1, 1, 8, 8)), straight.eval()(torch.ones(1, 1, 8, 8)))
    with pytest.raises(SolverError, match="size") as info:
        load_lpn(tmp_path / "a" / "lpn_0000006.pt", expect={"size": [32, 32]})
    assert "train" in info.value.fix
    with pytest.raises(SolverError, match="network"):           # another architecture in the same folder
        other = LPNConv(hidden=5, strides=(2,), size=[8, 8])
        train_lpn(other, sampler, sigma=0.1, batch=2, stages=stages, checkpoint_dir=tmp_path / "a")


def test_deblur_task_through_the_method_and_a_checkpoint_of_another_grid(tmp_path):
    from neuralpde.solvers.inverse_problems import LPNMethodConfig, run_inverse
    from neuralpde.solvers.method import RunContext

    cfg = LPNMethodConfig.model_validate({
        "type": "lpn", "task": "deblur", "network": {"hidden": 4, "strides": [2]},
        "train": {"steps": 4, "batch": 2}, "data": {"grid": 8}, "pnp": {"iters": 5},
        "inverse": {"noise": 0.05, "blur": 1.0}})
    result = run_inverse(cfg, None, RunContext(out_dir=tmp_path, plots={"reconstructions"}))
    m = result.metrics
    assert m["adjoint_mismatch"] < 1e-12 and m["observations"] == 64
    assert all(np.isfinite(m[k]["psnr"]) for k in ("lpn", "tikhonov", "tv"))
    assert (tmp_path / "reconstructions.png").exists() and result.field is None
    ckpt = sorted((tmp_path / "checkpoints" / "lpn").glob("lpn_*.pt"))[-1]
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"grid": 16}),
                                   "train": cfg.train.model_copy(update={"checkpoint": str(ckpt)})})
    with pytest.raises(SolverError, match="size") as info:
        run_inverse(other, None, RunContext())
    assert info.value.field == "method.network.size"
