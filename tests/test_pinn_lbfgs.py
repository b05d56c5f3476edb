"""The L-BFGS finish of the PINN (``train.lbfgs_steps``): after the Adam stages, on the last stage's points."""

import numpy as np
import pytest

from neuralpde.meshes.domains import Rectangle
from neuralpde.pde import BoundaryCondition, Poisson, Problem
from neuralpde.solvers.method import RunContext
from neuralpde.solvers.pinn import PINNConfig, deepxde
from neuralpde.solvers.pinn_bridge import (
    Training,
    _callbacks,
    build_model,
    lbfgs_finish,
    region_for,
    sampler_for,
    train_pinn,
)


def _problem():
    # zero boundary data: u = D N with N smooth, the hard condition's natural case
    return Problem(Poisson(source="manufactured", exact="sin(pi*x)*sin(pi*y)", dim=2), Rectangle([[-1, 1], [-1, 1]]),
                   [BoundaryCondition("all", "dirichlet", "exact")])


def _config(sampler="uniform", lbfgs=0, **sampler_opts):
    return PINNConfig.model_validate({
        "type": "pinn", "network": {"layers": [8, 8]}, "eval_points": 2000, "hard_bc": True,
        "sampler": {"type": sampler, "points": 64, "stages": 2, "boundary_points": 0,
                    "flow": {"steps": 3, "batch": 64, "width": 8, "couplings": 2}, **sampler_opts},
        "train": {"adam_steps": 40, "lr": 5e-3, "lbfgs_steps": lbfgs, "display_every": 10}})


@pytest.mark.usefixtures("one_torch_thread")
def test_lbfgs_finish_trains_on_the_last_stage_points_and_weights_and_lowers_the_loss():
    """AAS with importance weights: L-BFGS sees exactly the points and 1/q weights of the last Adam stage (no
    resampling), takes at most the requested iterations (DeepXDE's own per-call cap is 1000) and lowers the loss."""
    dde = deepxde()
    pb, config = _problem(), _config("aas", importance_weights=True)
    region = region_for(pb.domain)
    sampler = sampler_for(config, region, 0)
    model = build_model(pb, config, region, sampler, 0)
    training = Training()
    callbacks = _callbacks(dde, sampler, pb, config, RunContext(), training, False, lambda *a, **k: None)
    model.compile("adam", lr=config.train.lr)
    model.train(iterations=80, display_every=10, callbacks=callbacks, verbose=0)
    last_x, last_w = np.array(model.data.train_x), np.array(model.data.train_aux_vars)
    assert len(training.stages) == 2 and np.allclose(last_x, training.stages[-1].points)
    assert last_w.std() > 0.01                         # the flow moved the points: the weights are not all 1

    seen = []

    class Record(dde.callbacks.Callback):
        def on_batch_begin(self):
            seen.append((np.array(self.model.train_state.X_train), np.array(self.model.train_state.train_aux_vars)))

    options = dict(dde.optimizers.config.LBFGS_options)
    out = lbfgs_finish(dde, model, 60, 10, [*callbacks[1:], Record()])
    assert dde.optimizers.config.LBFGS_options == options       # DeepXDE's global options as they were
    assert 0 < out["steps"] <= 60
    assert 80 < model.train_state.step <= 80 + out["steps"]      # after the Adam stages, counted on
    assert seen and all(np.array_equal(x, last_x) and np.array_equal(w, last_w) for x, w in seen)
    assert out["loss_after"] < 0.5 * out["loss_before"]


@pytest.mark.usefixtures("one_torch_thread")
def test_lbfgs_finish_lowers_the_reported_error():
    """The reported error is the one after L-BFGS: same seed and Adam stages, with and without the finish
    (measured: 1.05 after the Adam stages, 0.04 after 100 L-BFGS iterations)."""
    without = train_pinn(_problem(), None, _config(), RunContext(seed=0)).metrics
    with_ = train_pinn(_problem(), None, _config(lbfgs=100), RunContext(seed=0)).metrics
    assert "lbfgs" not in without and 0 < with_["lbfgs"]["steps"] <= 100
    assert with_["stage_loss"] == pytest.approx(without["stage_loss"])          # the same Adam stages before it
    assert with_["mc_vs_exact"]["rel_l2"] < 0.5 * without["mc_vs_exact"]["rel_l2"]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("hard_bc", [True, False])
def test_float64_finish_lowers_the_loss_and_leaves_float32_behind(hard_bc):
    """``lbfgs_float64``: the net, points and (soft) boundary data go to float64 for L-BFGS, and back after it."""
    import torch

    errors = []
    for lbfgs in (0, 100):
        config = _config(lbfgs=lbfgs)
        config.hard_bc = hard_bc
        config.sampler.boundary_points = 0 if hard_bc else 64
        config.train.lbfgs_float64 = True
        m = train_pinn(_problem(), None, config, RunContext(seed=0)).metrics
        assert torch.get_default_dtype() == torch.float32
        errors.append(m["mc_vs_exact"]["rel_l2"])
    assert 0 < m["lbfgs"]["steps"] <= 100 and m["lbfgs"]["loss_after"] < 0.1 * m["lbfgs"]["loss_before"]
    assert errors[1] < 0.5 * errors[0]           # measured: hard 1.05 -> 0.038, soft 2.2 -> 0.75
