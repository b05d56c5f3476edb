"""The MM-PDE moving-mesh neural solver (type: mmpde): message passing, interpolations, the case end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import neuralpde as npde
from neuralpde.errors import CaseError, SolverError
from neuralpde.meshes import rectangle
from neuralpde.operators.mpnn import MPNN, ItpNetConfig, MPNNConfig, mesh_edges
from neuralpde.solvers.fem import FEField
from neuralpde.solvers.mmpde_solver import (
    CoarseMesh,
    FixedMeshSolver,
    MMPDESolver,
    check_problem,
    configs_for_checkpoint,
    diagnostics,
    grid_p1,
    load_solver,
    pretrain_itp,
    rel_l2,
    rollout,
    save_solver,
    train_solver,
)

CASE = Path(__file__).parent.parent / "cases" / "mmpde_burgers.yaml"


def _moved(coarse: CoarseMesh, amplitude: float = 0.3) -> torch.Tensor:
    """A valid smooth deformation of the unit square fixing its sides (nodes slide along them)."""
    p = coarse.pos.double()
    shift = amplitude / (2 * np.pi) * torch.sin(2 * np.pi * p)
    return (p + shift)[None].float()


def test_message_passing_is_permutation_equivariant():
    torch.manual_seed(0)
    mesh = rectangle(cells=[4, 4])
    edges = torch.as_tensor(mesh_edges(mesh.cells))
    net = MPNN(MPNNConfig(hidden=16, layers=3, length=0.25)).double()
    n = mesh.num_points
    u, pos = torch.randn(2, n, 1, dtype=torch.float64), torch.rand(2, n, 2, dtype=torch.float64)
    boundary = torch.as_tensor(np.any((mesh.points == 0) | (mesh.points == 1), axis=1))
    out = net(u, pos, edges, boundary)
    rng = np.random.default_rng(1)
    perm = torch.as_tensor(rng.permutation(n))
    new_label = torch.argsort(perm)                     # old node perm[k] is new node k
    edge_order = torch.as_tensor(rng.permutation(len(edges)))
    out_perm = net(u[:, perm], pos[:, perm], new_label[edges][edge_order], boundary[perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=0)
    assert out.abs().max() > 1e-3                       # not trivially zero


def test_grid_p1_is_the_p1_interpolant():
    coarse = CoarseMesh(6)
    pts = torch.rand(1, 200, 2, dtype=torch.float64)
    u = np.sin(3 * coarse.mesh.points[:, 0]) * np.cos(2 * coarse.mesh.points[:, 1])
    ours = grid_p1(torch.as_tensor(u)[None], pts, 6)[0].numpy()
    skfem = FEField(coarse.mesh, 1, u).probe(pts[0].numpy())
    np.testing.assert_allclose(ours, skfem, atol=1e-12)


def test_itp_is_exact_for_linear_fields_with_untrained_weights():
    torch.manual_seed(0)
    coarse = CoarseMesh(8)
    solver = MMPDESolver(MPNNConfig(hidden=8, layers=1), ItpNetConfig(neighbours=8, length=1 / 8), coarse)
    moved = _moved(coarse)
    _, w = solver.itp.weights(moved, coarse.pos)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-5, rtol=0)
    abc = torch.randn(4, 3)
    linear = abc[:, :1] + abc[:, 1:2] * coarse.pos[:, 0] + abc[:, 2:] * coarse.pos[:, 1]
    with torch.no_grad():
        back = solver.reconstruct(linear, moved.expand(4, -1, -1))
    torch.testing.assert_close(back, linear, atol=1e-5, rtol=0)


def test_linear_exact_itp_is_second_order():
    def error(n: int, linear_exact: bool) -> float:
        torch.manual_seed(0)
        coarse = CoarseMesh(n)
        itp = ItpNetConfig(neighbours=8, length=1 / n, linear_exact=linear_exact)
        solver = MMPDESolver(MPNNConfig(hidden=8, layers=1), itp, coarse)
        smooth = torch.sin(3 * coarse.pos[:, 0]) * torch.cos(2 * coarse.pos[:, 1])
        with torch.no_grad():    # fixed -> P1 -> moved -> ItpNet -> fixed, untrained weights
            back = solver.reconstruct(smooth[None], _moved(coarse))[0]
        return float(torch.linalg.norm(back - smooth) / torch.linalg.norm(smooth))

    coarse_err, fine_err = error(8, True), error(16, True)
    assert fine_err < 0.3 * coarse_err, (coarse_err, fine_err)          # measured ratio 0.24 (h^2: 0.25)
    assert fine_err < 0.5 * error(16, False)                           # softmax alone: first order


def test_softmax_itp_is_a_partition_of_unity_and_pretraining_learns_linear_fields():
    torch.manual_seed(0)
    coarse = CoarseMesh(8)
    net = MPNNConfig(hidden=8, layers=1, length=1 / 8)
    itp = ItpNetConfig(neighbours=6, hidden=(32, 32), length=1 / 8, linear_exact=False)
    solver = MMPDESolver(net, itp, coarse)
    moved = _moved(coarse)
    _, w = solver.itp.weights(moved, coarse.pos)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-6, rtol=0)
    assert torch.all(w >= 0)
    ones = torch.ones(1, coarse.pos.shape[0])
    torch.testing.assert_close(solver.reconstruct(ones, moved), ones, atol=1e-6, rtol=0)

    def linear(g):      # random linear fields a + b x + c y at the fixed nodes
        abc = torch.randn(16, 3, generator=g)
        return abc[:, :1] + abc[:, 1:2] * coarse.pos[:, 0] + abc[:, 2:] * coarse.pos[:, 1]

    gen = torch.Generator().manual_seed(0)
    test = linear(torch.Generator().manual_seed(99))
    many_moved = moved.expand(16, -1, -1)

    def error():
        with torch.no_grad():
            return float(torch.linalg.norm(solver.reconstruct(test, many_moved) - test) / torch.linalg.norm(test))

    before = error()
    pretrain_itp(solver, linear(gen), many_moved, steps=300, lr=3e-3, batch=16, gen=gen)
    after = error()
    assert after < 0.02 and after < 0.3 * before, (before, after)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmpde_burgers")
    return out, npde.run(CASE, smoke=True, out=out, progress=False)


def test_smoke_case_runs_end_to_end(smoke):
    out, result = smoke
    m = json.loads((out / "metrics.json").read_text())["method"]
    steps = m["data"]["states_per_trajectory"]
    for variant in ("mmpde", "fixed", "zero_update"):
        assert len(m[variant]["rollout_rel_l2_per_step"]) == steps
        assert m[variant]["rollout_rel_l2_per_step"][0] < 1e-6     # the rollout starts from the FEM state (float32)
    assert m["mmpde"]["parameters"] > m["fixed"]["parameters"]
    assert m["dmm"]["max_node_displacement"] > 1e-3                  # the mesh really moves
    for name in ("fields.xdmf", "meshes.png", "rollout.png", "rollout_error.png", "config.resolved.yaml"):
        assert (out / name).is_file(), name
    assert result.method.field.mesh.num_points == m["data"]["coarse_nodes"]
    assert {"u_fem", "u_fixed_mesh"} <= set(result.method.extra_fields)


def test_trained_rollout_beats_the_zero_update_on_training_data(smoke):
    m = smoke[1].metrics["method"]
    zero = m["zero_update"]["train_trajectory_rel_l2_final"]
    for variant in ("mmpde", "fixed"):
        assert m[variant]["train_trajectory_rel_l2_final"] < 0.8 * zero, (variant, m[variant], zero)


def test_rerun_resumes_from_checkpoints_and_reproduces(smoke):
    out, first = smoke
    again = npde.run(CASE, smoke=True, out=out, progress=False).metrics["method"]
    assert again["data"]["cache"].startswith("loaded")
    assert again["dmm"]["checkpoint"].startswith("loaded")
    for variant in ("mmpde", "fixed"):
        assert "resumed_from" in again[variant]
        assert again[variant]["rollout_rel_l2_final"] == pytest.approx(
            first.metrics["method"][variant]["rollout_rel_l2_final"], rel=1e-6)


def test_bad_input_nan_state_and_domain():
    coarse = CoarseMesh(4)
    solver = FixedMeshSolver(MPNNConfig(hidden=4, layers=1, scale=float("nan")), coarse)
    u0 = np.zeros((1, coarse.pos.shape[0]))
    with pytest.raises(SolverError, match="non-finite at step 1"):
        rollout(solver, u0, 3, None, coarse)
    u0[0, 12] = np.nan
    with pytest.raises(SolverError, match="step 0"):
        rollout(solver, u0, 3, None, coarse)
    text = CASE.read_text().replace("reference: none", "reference: none\npde: {type: burgers, initial: '0'}\n"
                                    "exact: '0'\ndomain: {type: rectangle, bounds: [[0, 2], [0, 1]]}")
    case = npde.load_case_text(text)
    with pytest.raises(CaseError) as err:
        check_problem(case.problem())
    assert err.value.field == "domain"
    assert check_problem(None) is None


def test_diagnostics_teacher_forcing_reconstruction_and_mesh_quality():
    from neuralpde.meshes.dmm import DMMConfig, DMMMover

    torch.manual_seed(0)
    coarse = CoarseMesh(6)
    x, y = coarse.pos[:, 0].numpy(), coarse.pos[:, 1].numpy()
    steps = np.linspace(0.0, 0.2, 4)
    # linear states: the linear-exact ItpNet reconstructs them exactly on any (valid) moved mesh
    states = np.stack([np.stack([1 + a + 2 * x - y for a in steps]), np.stack([x + (3 - a) * y for a in steps])])
    silent = FixedMeshSolver(MPNNConfig(hidden=4, layers=1, scale=0.0), coarse)      # u_next = u
    got = diagnostics(silent, states, None, coarse)
    assert got["teacher_forced_rel_l2"] == pytest.approx(float(rel_l2(states[:, :-1], states[:, 1:]).mean()),
                                                         rel=1e-5)
    assert "reconstruction_rel_l2" not in got
    mover = DMMMover(DMMConfig(grid=7, width=8, trunk=(8,), decoder=(8,), monitor_resolution=17), seed=0)
    mm = MMPDESolver(MPNNConfig(hidden=4, layers=1), ItpNetConfig(length=1 / 6), coarse)
    got = diagnostics(mm, states, mover, coarse)
    assert got["reconstruction_rel_l2"] < 1e-5
    assert 0 < got["min_area_ratio"] <= 1 <= got["max_area_ratio"]


def test_training_noise_is_part_of_the_checkpoint_and_keeps_boundary_values(tmp_path):
    torch.manual_seed(0)
    coarse = CoarseMesh(4)
    net, itp = MPNNConfig(hidden=4, layers=1), ItpNetConfig(length=1 / 4)
    solver = FixedMeshSolver(net, coarse)
    n = coarse.pos.shape[0]
    seen = []
    original = solver.forward
    solver.forward = lambda u, moved=None: (seen.append(u.detach().clone()), original(u, moved))[1]
    inputs = torch.zeros(4, n)
    state = {}
    train_solver(solver, inputs, inputs, None, epochs=1, batch=4, lr=1e-3, weight_decay=0.0, milestones=[0.5],
                 gamma=0.5, noise=0.1, gen=torch.Generator().manual_seed(0),
                 on_epoch=lambda epoch, st: state.update(st))
    assert torch.all(seen[0][:, coarse.boundary] == 0) and seen[0][:, ~coarse.boundary].abs().min() > 0
    save_solver(tmp_path / "fixed_s0_1.pt", solver, configs_for_checkpoint("fixed", net, itp, 4, "k", 0.1), 1,
                state, 0.0)
    load_solver(tmp_path / "fixed_s0_1.pt", coarse, expect=configs_for_checkpoint("fixed", net, itp, 4, "k", 0.1))
    with pytest.raises(SolverError, match="noise"):
        load_solver(tmp_path / "fixed_s0_1.pt", coarse, expect=configs_for_checkpoint("fixed", net, itp, 4, "k"))


def test_uniform_mesh_ablation_runs_the_moved_branch_on_the_fixed_mesh():
    torch.manual_seed(0)
    coarse = CoarseMesh(6)
    mm = MMPDESolver(MPNNConfig(hidden=4, layers=1, scale=0.1), ItpNetConfig(length=1 / 6), coarse).eval()
    torch.nn.init.normal_(mm.model_b.decoder[-1].weight)          # a live moved branch (it starts silent)
    x, y = coarse.pos[:, 0], coarse.pos[:, 1]
    u0 = torch.tanh((x + y - 1) / 0.1)[None].numpy()
    got, _, fallbacks = rollout(mm, u0, 2, None, coarse, uniform=True)          # no DMM needed
    assert fallbacks == 0
    u = torch.as_tensor(u0)
    with torch.no_grad():
        for step in (1, 2):
            u = mm(u, coarse.pos[None])
            np.testing.assert_allclose(got[:, step], u.numpy(), rtol=1e-6, atol=1e-7)
        # the same model on a moved mesh predicts something else: the ablation isolates the mesh's effect
        first = mm(torch.as_tensor(u0), _moved(coarse)).numpy()
    assert np.abs(first - got[:, 1]).max() > 1e-4


def test_wide_fixed_baseline_has_its_own_width_and_checkpoints(tmp_path):
    """The capacity check: ``fixed_wide`` is the fixed-mesh network with more channels, trained on the same data;
    its checkpoints do not collide with the ``fixed`` ones (a rerun resumes both and reproduces)."""
    from neuralpde.progress import Progress
    from neuralpde.solvers.mmpde_solver import MMPDEConfig, train_and_evaluate

    cfg = MMPDEConfig(data={"trajectories": 2, "test_trajectories": 1, "fine_cells": 12, "cells": 6, "t_end": 0.1,
                            "dt": 0.01, "save_every": 2},
                      dmm={"steps": 5}, itp={"pretrain_steps": 2}, train={"epochs": 2, "batch": 4},
                      network={"hidden": 4, "layers": 1})
    off = Progress(enabled=False)
    first, _ = train_and_evaluate(cfg, 0, tmp_path, off, wide_hidden=8)
    assert first["fixed_wide"]["parameters"] > 2 * first["fixed"]["parameters"]
    assert any(tmp_path.glob("fixed_wide_s0_*.pt")) and any(tmp_path.glob("fixed_s0_*.pt"))
    again, _ = train_and_evaluate(cfg, 0, tmp_path, off, wide_hidden=8)
    for variant in ("fixed", "fixed_wide"):
        assert "resumed_from" in again[variant]
        assert again[variant]["rollout_rel_l2_final"] == pytest.approx(first[variant]["rollout_rel_l2_final"],
                                                                       rel=1e-6)
