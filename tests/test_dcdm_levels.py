"""Multilevel DCDM: lattice transfer, the Galerkin combination, and size-independent counts."""

import numpy as np
import pytest
import torch

from neuralpde.errors import SolverError
from neuralpde.meshes.domains import Box, Rectangle
from neuralpde.operators.dcdm_net import DCDMNet, GridMap
from neuralpde.pde import BoundaryCondition, Poisson, Problem
from neuralpde.solvers.dcdm import dcdm
from neuralpde.solvers.dcdm_levels import MultilevelDirection, coarsened, hierarchy, prolongation
from neuralpde.solvers.dcdm_train import NetworkDirection, train
from neuralpde.solvers.fem.base import LinearSolverOptions
from neuralpde.solvers.fem.skfem_backend import SkfemSolver
from neuralpde.solvers.krylov import pcg
from neuralpde.solvers.ritz import RitzBasis

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def system(n: int, dim: int = 2):
    domain = Rectangle() if dim == 2 else Box()
    pb = Problem(Poisson(source="1"), domain, [BoundaryCondition("all", "dirichlet", "0")])
    mesh = domain.mesh(cells=[n + 1] * dim)
    A, b, free, _ = SkfemSolver().linear_system(pb, mesh)
    return pb, mesh, A, b, GridMap.from_mesh(mesh, free), mesh.points[free]


@pytest.mark.parametrize("dim, n", [(2, 13), (2, 20), (3, 9)])
def test_prolongation_interpolates_multilinear_fields_and_keeps_dirichlet_zeros(dim, n):
    *_, fine, X = system(n, dim)
    coarse = coarsened(fine)
    assert all(c == -(-(s - 1) // 2) + 1 for c, s in zip(coarse.shape, fine.shape, strict=True))
    # the coarse free points are the interior of the coarse lattice (the boundary stays Dirichlet)
    assert len(coarse.index) == np.prod([s - 2 for s in coarse.shape])
    P = prolongation(coarse, fine)
    ijk = np.stack(np.unravel_index(coarse.index, tuple(reversed(coarse.shape)))[::-1], 1)
    Xc = ijk / (np.array(coarse.shape) - 1)
    # the hat function of one coarse node is multilinear in every coarse cell and zero on the boundary, so
    # interpolation must reproduce it exactly at the fine points
    j = len(coarse.index) // 2
    hat = np.zeros(len(coarse.index))
    hat[j] = 1.0
    h = 1.0 / (np.array(coarse.shape) - 1)
    expect = np.prod(np.clip(1 - np.abs(X - Xc[j]) / h, 0, None), axis=1)
    assert np.allclose(P @ hat, expect, atol=1e-12)
    # rows sum to one away from the boundary (partition of unity), below one next to it (zero Dirichlet values)
    sums = np.asarray(P.sum(1)).ravel()
    inner = np.all((X > h) & (X < 1 - h), axis=1)
    assert np.allclose(sums[inner], 1.0) and np.all(sums <= 1 + 1e-12)


def test_hierarchy_levels_and_bad_levels():
    *_, grid, _ = system(64)
    assert [g.shape for g, _ in hierarchy(grid, "auto")] == [(66, 66), (34, 34), (18, 18), (10, 10)]
    assert len(hierarchy(grid, 2)) == 2 and hierarchy(grid, 1)[0][1] is None
    with pytest.raises(SolverError, match="levels"):
        hierarchy(grid, 0)


@pytest.fixture(scope="module")
def net_at_16():
    """A net trained briefly on the 16^2 system (the test-sized counterpart of the benchmark's 64^2 one)."""
    _, _, A, _, grid, _ = system(16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # module fixtures run before the function-scoped one_torch_thread
    torch.manual_seed(0)
    net = DCDMNet(dim=2)
    train(net, A, grid, RitzBasis.from_matrix(A, steps=120, seed=0), steps=150, lr=2e-3, lr_final=1e-4, seed=0)
    torch.set_num_threads(threads)
    return net


def test_one_level_is_the_papers_direction_and_the_combination_is_a_galerkin_solve(net_at_16):
    _, _, A, b, grid, _ = system(32)
    one = dcdm(A, b, MultilevelDirection(net_at_16, grid, A, levels=1), rtol=1e-6, max_it=300)
    paper = dcdm(A, b, NetworkDirection(net_at_16, grid), rtol=1e-6, max_it=300)
    assert one.iterations == paper.iterations and np.allclose(one.residuals, paper.residuals)
    ml = MultilevelDirection(net_at_16, grid, A, levels="auto")
    r = np.random.default_rng(1).standard_normal(len(b))
    q = ml(r)
    Q = np.stack([d(r) if P is None else P @ d(P.T @ r / np.linalg.norm(P.T @ r)) for d, P in ml.levels], 1)
    # q = Q a with (Q^T A Q) a = Q^T r: the remaining residual is orthogonal to every candidate
    assert np.abs(Q.T @ (r - A @ q)).max() < 1e-8 * np.abs(Q.T @ r).max()


def test_multilevel_counts_stay_flat_from_the_training_size_to_4x_finer(net_at_16):
    """The point of the levels: the single net's count grows with the grid, the multilevel one's does not."""
    counts = {}
    for n in (16, 64):
        _, _, A, b, grid, _ = system(n)
        counts[n] = {lv: dcdm(A, b, MultilevelDirection(net_at_16, grid, A, levels=lv), rtol=1e-6,
                              max_it=500).iterations for lv in (1, "auto")}
        counts[n]["cg"] = pcg(A, b, rtol=1e-6).iterations
    assert counts[64]["auto"] <= 1.5 * counts[16]["auto"], counts
    assert counts[64][1] > 2 * counts[16][1] and counts[64]["cg"] > 2.5 * counts[16]["cg"], counts
    assert counts[64]["auto"] < 0.4 * counts[64][1], counts


def test_reference_coupling_takes_levels(net_at_16, tmp_path):
    from neuralpde.checkpoints import save_checkpoint
    from neuralpde.solvers.dcdm_train import KIND

    pb, mesh, *_ = system(40)
    ckpt = tmp_path / "net.pt"
    save_checkpoint(ckpt, kind=KIND, config={**net_at_16.config(), "grid": [18, 18], "fingerprint": "x"},
                    state={"net": net_at_16.state_dict()})
    lu = SkfemSolver().solve(pb, mesh, 1, solver=LinearSolverOptions(type="lu"))
    runs = {lv: SkfemSolver().solve(pb, mesh, 1, solver=LinearSolverOptions(type="dcdm", checkpoint=str(ckpt),
                                                                           rtol=1e-9, levels=lv))
            for lv in (1, "auto")}
    for sol in runs.values():
        assert np.abs(sol.field.values - lu.field.values).max() < 1e-7 * np.abs(lu.field.values).max()
    assert runs["auto"].iterations < runs[1].iterations


def test_method_trains_on_train_cells_and_solves_on_cells(tmp_path):
    import neuralpde as npde

    overrides = {"method.train_cells": [9, 9], "method.cells": [17, 17], "reference.cells": [17, 17], "pde.k": 1}
    m = npde.run("cases/dcdm_poisson2d.yaml", smoke=True, overrides=overrides, out=tmp_path, progress=False,
                 ).metrics["method"]
    assert m["train_grid"] == [10, 10] and m["grid"] == [18, 18]
    assert m["solvers"]["dcdm-ml"]["converged"] and m["vs_reference"]["rel_l2"] < 1e-4
