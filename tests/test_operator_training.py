"""Operator datasets and the operator trainer: FEM data, resumption, bad input, checkpoints, DDP."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neuralpde.errors import CaseError, SolverError
from neuralpde.pde.darcy import Darcy, Helmholtz, gaussian_random_field, sample_rng
from neuralpde.solvers.datasets import GridSolver, generate_dataset, load_dataset
from neuralpde.solvers.operator_training import (
    TrainConfig,
    build_model,
    load_operator,
    model_config,
    rel_h1,
    rel_l2,
    train_operator,
)

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one torch thread per process is many times faster than two competing ones."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


TINY_MGNO = {"type": "mgno", "channels": 4, "num_layers": 2, "iterations": "10 20"}


def _toy_data(n: int = 9, count: int = 16, seed: int = 0):
    """Cheap smooth input/output pairs (no FEM): enough to exercise the trainer."""
    rng = np.random.default_rng(seed)
    a = np.stack([gaussian_random_field(rng, n) for _ in range(count)]).astype(np.float32)
    return a, np.cumsum(a, axis=1) / n


def _train(tmp: Path | None, epochs: int, resume: bool = True, **kw):
    a, u = _toy_data()
    torch.manual_seed(0)
    net = build_model(TINY_MGNO, grid=9)
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=3e-3, resume=resume, **kw)
    return train_operator(net, model_config(net, TINY_MGNO), (a[:12], u[:12]), (a[12:], u[12:]), cfg,
                          checkpoint_dir=tmp, seed=0)


def test_p1_grid_solver_matches_the_reference_backends():
    from neuralpde.meshes.domains import Rectangle
    from neuralpde.pde import BoundaryCondition, Problem
    from neuralpde.solvers.fem import get_backend

    n = 17
    pde = Darcy(grid=n, sample=2)
    u = GridSolver(pde, n).solve(pde.input)
    problem = Problem(pde, Rectangle(), [BoundaryCondition("all", "dirichlet", 0)])
    mesh = problem.domain.mesh(cells=[n - 1, n - 1])
    for backend in ("skfem", "auto"):           # auto: dolfinx where it is installed
        ref = get_backend(backend).solve(problem, mesh, 1)
        assert np.abs(ref.field.values - u.ravel()).max() < 1e-9 * np.abs(u).max(), backend
    assert 0.005 < u.max() < 0.03         # the papers file: max u about 0.012-0.015 for a in {3, 12}


def test_helmholtz_grid_solver_matches_the_scikit_fem_backend():
    from neuralpde.meshes.domains import Rectangle
    from neuralpde.pde import BoundaryCondition, Problem
    from neuralpde.solvers.fem import LinearSolverOptions, get_backend

    n = 17
    pde = Helmholtz(grid=n, omega=5.0)
    u = GridSolver(pde, n).solve(pde.input)
    problem = Problem(pde, Rectangle(), [BoundaryCondition("all", "dirichlet", 0)])
    ref = get_backend("skfem").solve(problem, problem.domain.mesh(cells=[n - 1, n - 1]), 1,
                                     solver=LinearSolverOptions(type="lu"))
    assert np.abs(ref.field.values - u.ravel()).max() < 1e-9 * np.abs(u).max()


def test_grf_threshold_splits_about_evenly_and_helmholtz_is_indefinite():
    frac = np.mean([(Darcy(grid=4).sample_input(sample_rng(0, i), 33) == 12).mean() for i in range(40)])
    assert 0.35 < frac < 0.65
    h = Helmholtz(grid=33)
    assert h.c.values.max() < 0 and np.all(h.k.values == 1)


def test_dataset_resumes_and_checks_attributes(tmp_path):
    path = tmp_path / "d.h5"
    generate_dataset(path, Darcy(), resolution=9, num_samples=6, seed=3, chunk=2)
    full = load_dataset(path, expect={"pde": "darcy", "resolution": 9, "seed": 3})
    with h5py.File(path, "a") as f:          # a generation killed during its last chunk
        f["done"][4:] = 0
        f["u"][4:] = 0
    with pytest.raises(CaseError, match="unfinished"):
        load_dataset(path)
    generate_dataset(path, Darcy(), resolution=9, num_samples=6, seed=3, chunk=2)
    again = load_dataset(path)
    np.testing.assert_array_equal(again.u, full.u)
    with pytest.raises(CaseError, match="resolution=9") as err:
        load_dataset(path, expect={"resolution": 17})
    assert err.value.field == "method.data.resolution"
    with pytest.raises(CaseError, match="pde"):
        load_dataset(path, expect={"pde": "helmholtz"})
    with pytest.raises(CaseError, match="seed"):
        generate_dataset(path, Darcy(), resolution=9, num_samples=6, seed=4, chunk=2)


def test_nan_sample_is_reported_by_index_or_skipped(tmp_path):
    path = tmp_path / "d.h5"
    generate_dataset(path, Darcy(), resolution=9, num_samples=4, seed=0, chunk=4)
    with h5py.File(path, "a") as f:
        f["u"][2, 3, 3] = np.nan
    with pytest.raises(SolverError, match=r"samples \[2\]") as err:
        load_dataset(path)
    assert err.value.field == "method.data.on_bad_sample"
    data = load_dataset(path, on_bad="skip")
    assert data.skipped == [2] and list(data.indices) == [0, 1, 3]


def test_losses():
    x = torch.rand(3, 16, 16) + 1
    assert float(rel_l2(x, x)) == 0 and float(rel_h1(x, x)) == 0
    assert abs(float(rel_l2(1.1 * x, x)) - 0.1) < 1e-6 and abs(float(rel_h1(1.1 * x, x)) - 0.1) < 1e-6
    wiggle = x + 0.01 * torch.sin(torch.arange(16.0) * 2.5)
    assert float(rel_h1(wiggle, x)) > float(rel_l2(wiggle, x))    # H1 weighs oscillations more


def test_training_learns_resumes_identically_and_rebuilds_from_checkpoint(tmp_path):
    straight = _train(None, 4)
    assert straight.history[-1]["train_loss"] < straight.history[0]["train_loss"]
    _train(tmp_path, 4, stop_after=2)            # a run stopped (or killed) after epoch 2 of 4
    resumed = _train(tmp_path, 4)                 # picks up ckpt_2 and runs epochs 3 and 4
    np.testing.assert_allclose([h["train_loss"] for h in resumed.history],
                               [h["train_loss"] for h in straight.history], rtol=1e-5)
    model, ck = load_operator(tmp_path / "best.pt")
    a, _ = _toy_data()
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.as_tensor(a[:2])).numpy(),
                                   resumed.model(torch.as_tensor(a[:2])).numpy(), atol=1e-6)
    assert ck["config"]["model"]["grid"] == [9, 9]


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    _train(tmp_path, 1)
    other = dict(TINY_MGNO, channels=6)
    with pytest.raises(SolverError, match="model") as err:
        load_operator(tmp_path / "best.pt", expect={"model": {**other, "grid": [9, 9]}})
    assert "best.pt" in str(err.value)
    a, u = _toy_data()
    net = build_model(other, grid=9)
    with pytest.raises(SolverError, match="model"):      # resuming into another architecture
        train_operator(net, model_config(net, other), (a[:12], u[:12]), (a[12:], u[12:]),
                       TrainConfig(epochs=3, batch_size=4), checkpoint_dir=tmp_path)


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np, torch
    sys.path.insert(0, {root!r})
    from neuralpde.pde.darcy import gaussian_random_field
    from neuralpde.solvers.operator_training import TrainConfig, build_model, model_config, train_operator
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    a = np.stack([gaussian_random_field(rng, 9) for _ in range(16)]).astype(np.float32)
    u = np.cumsum(a, axis=1) / 9
    torch.manual_seed(0)
    cfg = {cfg!r}
    net = build_model(cfg, grid=9)
    r = train_operator(net, model_config(net, cfg), (a[:12], u[:12]), (a[12:], u[12:]),
                       TrainConfig(epochs=3, batch_size=4, lr=3e-3), seed=0)
    if torch.distributed.is_initialized():
        # both ranks tear the gloo group down together: one rank exiting while the other still talks to it ends a
        # process with "terminate called without an active exception" (SIGABRT) now and then
        rank = torch.distributed.get_rank()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if rank != 0:
            os._exit(0)
    with open(sys.argv[1], "w") as f:
        json.dump([h["train_loss"] for h in r.history] + [h["val_rel_l2"] for h in r.history], f)
    # skip the interpreter's teardown: gloo's threads, destroyed there, still abort a rank now and then with
    # "terminate called without an active exception" after the group is gone (the result is written and closed)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
""")


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), cfg=TINY_MGNO))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env["USE_LIBUV"] = "0"      # Debian's torch is built without libuv (the TCP store's default otherwise)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], check=True, env=env, timeout=120)
    # two ranks started the way torchrun starts them (its own rendezvous store needs libuv, which Debian's
    # torch 2.6 lacks; the workers' env:// store honours USE_LIBUV=0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ranks = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "two.json")],
                              env={**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                                   "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=180) for p in ranks]
    for p, (_, err) in zip(ranks, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-7)


def test_case_refuses_a_dataset_made_for_another_resolution(tmp_path):
    import neuralpde as npde

    path = tmp_path / "other.h5"
    generate_dataset(path, Darcy(), resolution=9, num_samples=24, seed=0, chunk=8)
    case = ROOT / "cases" / "darcy_mgno.yaml"
    with pytest.raises(CaseError, match="resolution=9") as err:
        npde.run(case, smoke=True, out=tmp_path / "out", progress=False,
                 overrides=[f"method.data.path={path}", "method.data.generate=false"])
    assert err.value.field == "method.data.resolution" and "other.h5" in str(err.value)


@pytest.mark.slow
@pytest.mark.mpi
def test_dataset_generation_under_mpirun_matches_serial(tmp_path):
    import shutil

    if shutil.which("mpirun") is None:
        pytest.skip("needs mpirun")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from neuralpde.pde.darcy import Darcy; "
            "from neuralpde.solvers.datasets import generate_dataset; "
            "generate_dataset(sys.argv[1], Darcy(), resolution=9, num_samples=10, seed=5, chunk=2)")
    cmd = ["mpirun", "-n", "2", "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, sys.executable, "-c", code, str(tmp_path / "mpi.h5")], check=True, env=env, timeout=300)
    generate_dataset(tmp_path / "serial.h5", Darcy(), resolution=9, num_samples=10, seed=5, chunk=2)
    np.testing.assert_array_equal(load_dataset(tmp_path / "mpi.h5").u, load_dataset(tmp_path / "serial.h5").u)
