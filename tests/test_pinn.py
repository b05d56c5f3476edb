"""The DeepXDE bridge: points really change (DeepXDE #1306), samplers, bad input, an end-to-end run."""

import os
import warnings

import numpy as np
import pytest
import torch

import neuralpde as npde
from neuralpde.errors import CaseError, MeshError, SolverError
from neuralpde.meshes.domains import Hypercube, MeshFile, Polygon, Rectangle
from neuralpde.pde import BoundaryCondition, Poisson, Problem
from neuralpde.solvers.method import RunContext
from neuralpde.solvers.pinn import NetworkConfig, PINNConfig, deepxde
from neuralpde.solvers.pinn_bridge import (
    boundary_lift,
    boundary_points,
    boundary_samples,
    build_model,
    build_net,
    geometry_for,
    region_for,
    sampler_for,
    train_pinn,
)
from neuralpde.solvers.sampling import DASSampler, Region, collapsed, make_sampler

ROOT = os.path.dirname(os.path.dirname(__file__))


def _problem(source="2", exact="1 - x**2"):
    return Problem(Poisson(source=source, exact=exact, dim=2), Rectangle([[-1, 1], [-1, 1]]),
                   [BoundaryCondition("all", "dirichlet", "exact")])


def _config(sampler="uniform", **over):
    cfg = {"type": "pinn", "network": {"layers": [8, 8]}, "eval_points": 500,
           "sampler": {"type": sampler, "points": 64, "stages": 3, "boundary_points": 32, "candidates": 500,
                       "add": 16, "flow": {"steps": 3, "batch": 64, "width": 8, "couplings": 2}},
           "train": {"adam_steps": 4, "display_every": 2}}
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return PINNConfig.model_validate(cfg)


def _train_recording(problem, config, seed=0):
    """Train with an extra callback that records the PDE points DeepXDE actually trains on at every step."""
    dde = deepxde()
    region = region_for(problem.domain)
    sampler = sampler_for(config, region, seed)
    model = build_model(problem, config, region, sampler, seed)
    seen = []

    class Record(dde.callbacks.Callback):
        def on_batch_begin(self):
            n_bc = sum(model.data.num_bcs)
            seen.append(np.array(self.model.train_state.X_train[n_bc:]))

    from neuralpde.solvers.pinn_bridge import Training, _callbacks

    callbacks = _callbacks(dde, sampler, problem, config, RunContext(), Training(), False, lambda *a, **k: None)
    model.compile("adam", lr=1e-3)
    total = config.train.adam_steps * config.sampler.stages
    model.train(iterations=total, display_every=2, callbacks=[*callbacks, Record()], verbose=0)
    return seen, model


@pytest.mark.parametrize("kind", ["uniform", "rad", "das", "aas"])
def test_training_points_really_change_every_stage(kind):
    """DeepXDE #1306: a resampler that redraws quasi-random points trains on the same points forever."""
    config = _config(kind)
    seen, _ = _train_recording(_problem(), config)
    steps = config.train.adam_steps
    # DeepXDE sets the next batch before each step; the callback's new points arrive one step after a stage ends
    per_stage = [seen[s * steps + 1] for s in range(config.sampler.stages)]
    for a, b in zip(per_stage, per_stage[1:], strict=False):
        assert a.shape == b.shape == (64, 2)
        assert not np.allclose(a, b)                 # new points
    for s in range(config.sampler.stages):             # ... and fixed within a stage
        assert np.array_equal(seen[s * steps + 1], seen[s * steps + steps - 1])


@pytest.mark.parametrize("kind", ["uniform", "aas"])
def test_redraw_gives_fresh_points_inside_a_stage(kind):
    """``redraw_every``: new points from the stage's distribution every 2 steps, the flow's weights with them."""
    config = _config(kind, **{"sampler.redraw_every": 2, "sampler.importance_weights": kind == "aas",
                              "train.adam_steps": 6})
    seen, model = _train_recording(_problem(), config)
    # steps 1..6 of stage 1: redraws after steps 2 and 4 arrive at steps 3 and 5; the stage's own at step 7
    blocks = [seen[1:3], seen[3:5], seen[5:7]]
    for block in blocks:
        assert np.array_equal(block[0], block[1])         # kept for redraw_every steps
    for a, b in zip(blocks, blocks[1:], strict=False):
        assert a[0].shape == b[0].shape == (64, 2)
        assert not np.allclose(a[0], b[0])                # then fresh
    if kind == "aas":
        # the loss weights 1/q belong to the points trained on: recomputed from the flow for the last redraw
        # (the first entries belong to the 32 boundary points: weight 1)
        w = np.asarray(model.data.train_aux_vars).reshape(-1)
        assert w.shape == (32 + 64,) and np.all(w[:32] == 1)
        assert w[32:].mean() == pytest.approx(1.0, rel=1e-5) and w[32:].std() > 0


@pytest.mark.parametrize("kind", ["rar", "rad"])
def test_redraw_is_refused_for_residual_pickers(kind):
    with pytest.raises(Exception, match="redraw_every"):
        _config(kind, **{"sampler.redraw_every": 2})


def test_memory_share_is_for_aas_and_leaves_points_for_the_current_flow():
    for kind in ("uniform", "rar", "das"):
        with pytest.raises(Exception, match="memory_share"):
            _config(kind, **{"sampler.memory_share": 0.3})
    with pytest.raises(Exception, match="below 1"):
        _config("aas", **{"sampler.memory_share": 0.8})            # + the default uniform share 0.2
    sampler = sampler_for(_config("aas", **{"sampler.memory_share": 0.3}), Region.box([[-1, 1], [-1, 1]]), 0)
    assert sampler.memory_share == 0.3


def test_deepxde_own_resampler_repeats_quasi_random_points():
    """The bug we guard against, shown on DeepXDE itself: Hammersley 'resampling' returns the same points."""
    dde = deepxde()
    geom = dde.geometry.Rectangle([-1, -1], [1, 1])
    data = dde.data.PDE(geom, lambda x, y: y, [], num_domain=50)
    before = np.array(data.train_x_all)
    data.resample_train_points()
    assert np.array_equal(before, data.train_x_all)
    sampler = make_sampler("uniform", Region.box([[-1, 1], [-1, 1]]), points=50, seed=0)
    assert not np.allclose(sampler.next_points(None, before, 0), sampler.next_points(None, before, 1))


def test_rar_adds_points():
    config = _config("rar")
    seen, _ = _train_recording(_problem(), config)
    steps = config.train.adam_steps
    sizes = [len(seen[s * steps + 1]) for s in range(config.sampler.stages)]
    assert sizes == [64, 80, 96]


def test_boundary_points_follow_named_boundaries_and_values():
    """Each boundary point takes the condition the FEM reference applies there: the later one where two overlap,
    but never a flux condition over a Dirichlet one."""
    bcs = [BoundaryCondition("all", "dirichlet", "x*y"), BoundaryCondition("left", "dirichlet", 1)]
    pb = Problem(Poisson(source=0, dim=2), Rectangle([[0, 2], [0, 1]]), bcs)
    (rest, g_rest), (left, g_left) = boundary_points(pb, 600, np.random.default_rng(0))
    assert np.allclose(left[:, 0], 0) and np.allclose(g_left, 1)
    assert np.allclose(g_rest[:, 0], rest[:, 0] * rest[:, 1])
    on_box = np.isclose(rest[:, 0], 2) | np.isclose(rest[:, 1], 0) | np.isclose(rest[:, 1], 1)
    assert on_box.all() and len(left) + len(rest) == 600
    assert 0.25 < len(left) / 600 / (1 / 6) < 1.75             # the left side is 1/6 of the perimeter
    # the other order: "all" covers "left"
    (everything, _), = boundary_points(Problem(pb.pde, pb.domain, bcs[::-1]), 600, np.random.default_rng(0))
    assert len(everything) == 600
    # a Neumann condition listed after a Dirichlet one does not take its points
    mixed = Problem(pb.pde, pb.domain, [bcs[1], BoundaryCondition("all", "neumann", 0)])
    _, owner, _ = boundary_samples(mixed, 600, np.random.default_rng(0))
    assert np.array_equal(owner == 0, np.isclose(boundary_samples(mixed, 600, np.random.default_rng(0))[0][:, 0], 0))


def test_geometries_deepxde_cannot_sample_are_clear_errors(tmp_path):
    with pytest.raises(MeshError) as err:
        Polygon([[0, 0], [1, 1]])
    assert err.value.field == "domain.vertices"
    import meshio

    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    path = tmp_path / "tet.vtu"
    meshio.write(path, meshio.Mesh(pts, [("tetra", np.array([[0, 1, 2, 3]]))]))
    with pytest.raises(CaseError) as err:
        geometry_for(MeshFile(path))
    assert err.value.field == "domain.path"
    with pytest.raises(MeshError) as err:
        Hypercube([[-1, 1]] * 10).mesh()
    assert err.value.field == "reference" and "reference: none" in str(err.value)
    with pytest.raises(CaseError) as err:
        npde.load_case_text("name: h\npde: {type: gaussian_peaks, peaks: [{center: 0}]}\n"
                            "domain: {type: hypercube, dim: 3, bounds: [[0, 1], [0, 1]]}\nreference: none\n"
                            "boundary: [{where: all, dirichlet: exact}]").problem()
    assert err.value.field == "domain.bounds"


def test_lshape_mesh_as_point_cloud():
    domain = MeshFile(os.path.join(ROOT, "meshes", "lshape.msh"))
    region = region_for(domain)
    x = region.uniform(2000, np.random.default_rng(0))
    assert not np.any((x[:, 0] > 1e-9) & (x[:, 1] < -1e-9))     # nothing in the cut-out quadrant
    assert type(geometry_for(domain)).__name__ == "PointCloud"


class _NaNAfter(Poisson):
    """A residual that turns NaN after ``calls`` evaluations (a blow-up in the middle of training)."""

    def __init__(self, calls, **kw):
        super().__init__(**kw)
        self.calls, self.count = calls, 0

    def residual(self, x, u):
        self.count += 1
        r = super().residual(x, u)
        return r * torch.nan if self.count > self.calls else r


def test_nan_residual_stops_names_the_stage_and_keeps_the_best_checkpoint(tmp_path):
    pde = _NaNAfter(calls=14, source="2", exact="1 - x**2", dim=2)
    pb = Problem(pde, Rectangle([[-1, 1], [-1, 1]]), [BoundaryCondition("all", "dirichlet", "exact")])
    ctx = RunContext(out_dir=tmp_path)
    with pytest.raises(SolverError) as err:
        train_pinn(pb, None, _config("uniform"), ctx)
    assert "stage 2 of 3" in str(err.value) and err.value.field == "method.train.lr"
    from neuralpde.checkpoints import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "checkpoints" / "pinn_best.pt", kind="pinn", expect={"layers": [8, 8]})
    assert 0 < ckpt["step"] < 8 and all(torch.isfinite(v).all() for v in ckpt["state"]["net"].values())


def test_flow_collapse_is_detected_and_falls_back_to_uniform():
    sampler = DASSampler(Region.box([[-1, 1], [-1, 1]]), points=300, seed=0, flow_steps=0)
    x0 = sampler.initial()
    with torch.no_grad():
        sampler.flow.log_scale.fill_(-40.0)             # every sample on one point
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = sampler.next_points(lambda p: np.ones(len(p)), x0, stage=1)
    assert any("collapsed at stage 1" in str(w.message) for w in caught)
    assert not collapsed(x, sampler.region.bounds) and x.std(axis=0).min() > 0.4   # uniform spread
    assert sampler.history[-1]["collapsed"]
    assert float(sampler.flow.log_scale.abs().max()) == 0.0                          # the flow restarted


@pytest.mark.usefixtures("one_torch_thread")
def test_importance_weights_make_the_loss_an_unbiased_domain_average():
    """DAS's loss mean(r^2/q) over x ~ q: the weights are 1/q (normalised), so a weighted mean over the adapted
    points estimates the *domain* average of any function, here of 1 + x^2 (exactly 4/3 on [-1, 1]^2). AAS keeps
    a uniform share, which bounds the weights (DAS-R without one: effective sample size ~10 of 4000)."""
    sampler = make_sampler("aas", Region.box([[-1, 1], [-1, 1]]), points=4000, seed=0, flow_steps=40,
                           importance_weights=True)
    x = sampler.next_points(lambda p: np.exp(-10 * ((p - 0.5) ** 2).sum(1)), sampler.initial(), stage=0)
    w = sampler.weights
    assert len(w) == len(x) and w.mean() == pytest.approx(1.0) and w.std() > 0.1      # the points moved
    # so the plain mean is off: by > 4 sigma of a uniform sample's mean (std of x^2 + 1 is 0.30, / sqrt(4000))
    assert abs(np.mean(x[:, 0] ** 2 + 1) - 4 / 3) > 0.02
    ess = w.sum() ** 2 / (w**2).sum()                                                      # measured ~940
    assert ess > 300
    assert np.mean(w * (x[:, 0] ** 2 + 1)) == pytest.approx(4 / 3, abs=3 * 0.30 / np.sqrt(ess))   # 3 sigma


def test_tempered_importance_weights_are_a_power_of_one_over_q():
    """``importance_power`` p: weights (1/q)^p, normalised; the same points and q as with p = 1 (same seed)."""
    out = {}
    for power in (1.0, 0.5):
        sampler = make_sampler("aas", Region.box([[-1, 1], [-1, 1]]), points=500, seed=0, flow_steps=20,
                               importance_weights=True, importance_power=power)
        x = sampler.next_points(lambda p: np.exp(-10 * ((p - 0.5) ** 2).sum(1)), sampler.initial(), stage=0)
        out[power] = (x, sampler.weights, sampler._q)
    (x1, w1, q1), (x2, w2, q2) = out[1.0], out[0.5]
    assert np.array_equal(x1, x2) and np.allclose(q1, q2)
    assert w2.mean() == pytest.approx(1.0) and np.allclose(w2 / w2[0], np.sqrt(w1 / w1[0]), rtol=1e-6)
    ess = [w.sum() ** 2 / (w**2).sum() for w in (w1, w2)]
    assert ess[1] > ess[0]                  # tempering spreads the loss over more of the points


def test_hard_bc_output_transform_is_exact_on_the_boundary():
    config = _config("uniform", hard_bc=True)
    pb = _problem(exact="1 + x*y")
    region = region_for(pb.domain)
    model = build_model(pb, config, region, sampler_for(config, region, 0), 0)
    xb = np.array([[-1.0, 0.3], [1.0, -0.7], [0.2, 1.0], [0.5, -1.0]], dtype=np.float32)
    u = model.net(torch.as_tensor(xb)).detach().numpy().ravel()
    assert np.allclose(u, 1 + xb[:, 0] * xb[:, 1], atol=1e-6)


def test_hard_bc_lift_reads_the_data_only_on_the_boundary():
    """With ``dirichlet: exact`` the lift must not be the exact solution inside (that hands the net the answer):
    the peak's boundary values are ~1e-109, so the lift is ~0 at the peak while the exact solution is 1."""
    config = _config("uniform", hard_bc=True)
    pb = _problem(exact="exp(-1000*((x - 0.5)**2 + (y - 0.5)**2))")
    net = build_model(pb, config, region_for(pb.domain), sampler_for(config, region_for(pb.domain), 0), 0).net
    with torch.no_grad():
        for p in net.parameters():          # N = 0: the output is the lift alone
            p.zero_()
    x = torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.9, 0.2]])
    assert float(net(x).abs().max()) < 1e-6
    # and on a box face the lift is the data: g = 1 + x y on x = 1 and y = -1
    lift = boundary_lift(lambda p: 1 + p[:, 0] * p[:, 1], torch.tensor([[1.0, 0.3], [0.2, -1.0], [0.0, 0.0]]),
                         torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]))
    assert torch.allclose(lift[:2], torch.tensor([1.3, 0.8]), atol=1e-6)
    assert abs(float(lift[2]) - 1.0) < 1e-6      # by symmetry the four faces' 1 +- y, 1 +- x average to 1


def test_quadratic_features_feed_x_and_its_square():
    """``network.features: quadratic``: the first layer sees [x, x*x]; with its weights on x zeroed the net is even
    in every coordinate, and the PINN's residual (second derivatives) goes through the map."""
    torch.manual_seed(0)
    net = build_net(3, NetworkConfig(layers=[8, 8], features="quadratic"))
    first = net.linears[0]
    assert first.in_features == 6 and build_net(3, NetworkConfig(layers=[8])).linears[0].in_features == 3
    with torch.no_grad():
        first.weight[:, :3] = 0
    x = torch.tensor([[0.3, -0.5, 0.9], [-0.1, 0.2, 0.0]])
    flips = torch.tensor([[-1.0, 1.0, 1.0], [1.0, -1.0, -1.0]])
    assert torch.allclose(net(x), net(x * flips), atol=1e-7)
    assert not torch.allclose(net(x), net(x + 0.1), atol=1e-4)
    # d/dx_0 of the output at x_0 = 0 vanishes for an even function: the gradient goes through x*x
    x0 = torch.tensor([[0.0, 0.4, -0.2]], requires_grad=True)
    (g,) = torch.autograd.grad(net(x0).sum(), x0, create_graph=True)
    (h,) = torch.autograd.grad(g[0, 1], x0)
    assert abs(g[0, 0].item()) < 1e-7 and h.abs().sum().item() > 0
    with pytest.raises(Exception, match="features"):
        _config(**{"network.features": "cubic"})


def _small_pinn_case(tmp_path, exact, boundary, *, boundary_points=60, steps=200, output="", network=""):
    """A 16x16 RAD PINN for -laplace u = 2 on [-1, 1]^2 (3 stages of ``steps``), run end to end: its metrics."""
    case = npde.load_case_text(
        "name: small\npde: {type: poisson, source: 2}\ndomain: {type: rectangle, bounds: [[-1, 1], [-1, 1]]}\n"
        f"exact: '{exact}'\nboundary:\n{boundary}reference: {{cells: [8, 8]}}\n"
        f"method: {{type: pinn, network: {{layers: [16, 16]{network}}}, eval_points: 2000,\n"
        f"  sampler: {{type: rad, points: 150, stages: 3, boundary_points: {boundary_points}, candidates: 1000}},\n"
        f"  train: {{adam_steps: {steps}, lr: 0.005, display_every: 50}}}}\n{output}seed: 1\n")
    return npde.run(case, out=tmp_path, progress=False).metrics["method"]


@pytest.mark.usefixtures("one_torch_thread")
def test_pinn_solves_a_smooth_problem_end_to_end(tmp_path):
    """-laplace u = 2 on [-1, 1]^2 with u = 1 - x^2: a small PINN gets within a few percent (vs exact and FEM)."""
    m = _small_pinn_case(tmp_path, "1 - x**2", "  - {where: all, dirichlet: exact}\n",
                         output="output: {plots: [error, samples, pinn_error]}\n")
    assert m["vs_reference"]["rel_l2"] < 0.08 and m["mc_vs_exact"]["rel_l2"] < 0.08
    assert m["collocation_points"] == [150, 150, 150]
    assert (tmp_path / "samples.png").stat().st_size > 1000 and (tmp_path / "error.png").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_pinn_with_quadratic_features_solves_the_smooth_problem(tmp_path):
    """The same problem with ``network.features: quadratic`` (u = 1 - x^2 is linear in the features)."""
    m = _small_pinn_case(tmp_path, "1 - x**2", "  - {where: all, dirichlet: exact}\n", network=", features: quadratic")
    assert m["vs_reference"]["rel_l2"] < 0.08 and m["mc_vs_exact"]["rel_l2"] < 0.08


def test_boundary_normals_point_outward_on_boxes_polygons_and_hypercubes():
    rng = np.random.default_rng(0)
    for domain in (Rectangle([[-1, 1], [0, 2]]), Polygon([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]]),
                   Hypercube([[-1, 1]] * 4)):
        pb = Problem(Poisson(source=1, dim=domain.dim), domain, [BoundaryCondition("all", "neumann", 0)])
        x, owner, n = boundary_samples(pb, 400, rng)
        assert (owner == 0).all() and np.allclose(np.linalg.norm(n, axis=1), 1)
        region = region_for(domain)
        lo, hi = region.bounds[:, 0], region.bounds[:, 1]
        inside = region.inside or (lambda p, lo=lo, hi=hi: np.all((p >= lo) & (p <= hi), axis=1))
        assert not inside(x + 1e-3 * n).any() and inside(x - 1e-3 * n).all(), type(domain).__name__


@pytest.mark.usefixtures("one_torch_thread")
def test_pinn_with_neumann_and_robin_conditions_matches_the_fem_reference(tmp_path):
    """-laplace u = 2, u = 1 + x - x^2: u = -1 at x = -1, du/dn = 0 at y = +-1, du/dn + 2 u = 1 at x = 1."""
    m = _small_pinn_case(tmp_path, "1 + x - x**2", "  - {where: left, dirichlet: -1}\n  - {where: top, neumann: 0}\n"
                         "  - {where: bottom, neumann: 0}\n  - {where: right, robin: {value: 1, alpha: 2}}\n",
                         boundary_points=120, steps=300)
    assert m["vs_reference"]["rel_l2"] < 0.08 and m["mc_vs_exact"]["rel_l2"] < 0.08


def test_polygon_domain_meshes_with_named_edges_and_samples_inside():
    poly = Polygon([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]])          # an L-shape of area 3
    mesh = poly.mesh(cells=8)
    assert mesh.cell_volumes().sum() == pytest.approx(3.0) and sorted(mesh.tag_names)[:2] == ["edge0", "edge1"]
    x = region_for(poly).uniform(1000, np.random.default_rng(0))
    assert not np.any((x[:, 0] > 1) & (x[:, 1] > 1))
    assert type(geometry_for(poly)).__name__ == "Polygon"
