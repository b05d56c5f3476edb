"""The PINN sampling benchmark's own measurement code: the 10D error estimate, its mixture density, the protocol
that ``--resume`` matches, and one tiny run end to end."""

import argparse
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    spec = importlib.util.spec_from_file_location("pinn_sampling_benchmark", ROOT / "benchmarks" / "pinn_sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw_mixture(rng, n, sigma, share, d=10):
    g = rng.normal(0, sigma, (4 * n, d))
    g = g[np.all(np.abs(g) <= 1, axis=1)][: int(share * n)]
    return np.vstack([g, rng.uniform(-1, 1, (n - len(g), d))])


def test_core_mixture_density_is_normalised_on_the_cube(bench):
    # E_q[1/q] is the cube's volume 2^10 for a density q on it; the uniform share bounds 1/q, so the estimate's
    # relative std with 20 000 points is below 1 % (the mixture's 1/q <= 2^10 / 0.2)
    rng = np.random.default_rng(0)
    sigma = 1.2 * np.sqrt(1 / 40)
    x = draw_mixture(rng, 20000, sigma, 0.8)
    volume = np.mean(1 / bench.core_mixture_density(x, sigma, 0.8))
    assert volume == pytest.approx(2.0**10, rel=0.03)


def test_highdim_error_is_zero_for_the_exact_solution_and_one_for_zero(bench):
    pb = bench.problem("highdim")
    exact = bench.highdim_error(lambda x: pb.exact.numpy(x.T), pb.exact)
    assert exact["rel_l2_is"] == 0.0
    zero = bench.highdim_error(lambda x: np.zeros(len(x)), pb.exact)
    # u = 0 has relative error 1 exactly; the importance-sampling estimate with 20 000 + 20 000 points is within 2 %
    assert zero["rel_l2_is"] == pytest.approx(1.0, rel=0.02)
    assert zero["rel_l2_near"] ** 2 + zero["rel_l2_far"] ** 2 == pytest.approx(zero["rel_l2_is"] ** 2, rel=1e-9)
    half = bench.highdim_error(lambda x: 0.5 * pb.exact.numpy(x.T), pb.exact)
    assert half["rel_l2_is"] == pytest.approx(0.5 * zero["rel_l2_is"], rel=1e-9)


def args(**kw):
    base = {"quick": False, "seeds": None, "steps": None, "points": None, "soft_bc": False, "lbfgs": None,
            "lbfgs_float32": False, "redraw": 0, "weight_power": 1.0, "memory": 0.0,
            "features": "none"}
    return argparse.Namespace(**{**base, **kw})


def test_protocol_keys_appear_only_when_used_so_earlier_results_stay_resumable(bench):
    plain = bench.protocol_from(args())
    assert plain == {**bench.FULL, "hard_bc": True}
    adam_only = bench.protocol_from(args(lbfgs=0, steps=8000, redraw=50, weight_power=0.5))
    assert "lbfgs" not in adam_only and "lbfgs_float64" not in adam_only
    assert (adam_only["steps"], adam_only["redraw"], adam_only["weight_power"]) == (8000, 50, 0.5)
    memory = bench.protocol_from(args(memory=0.3))
    assert memory["memory"] == 0.3 and bench.config("aas", memory, 1e-3).sampler.memory_share == 0.3
    assert bench.config("uniform", memory, 1e-3).sampler.memory_share == 0.0
    quad = bench.protocol_from(args(features="quadratic"))
    assert quad["features"] == "quadratic" and "features" not in plain
    assert {bench.config(s, quad, 1e-3).network.features for s in bench.SAMPLERS} == {"quadratic"}
    assert "[x, x*x]" in bench.protocol_line(quad, 1e-3, [0])
    # the seed count aside (a run depends on its own seed): --seeds 3 resumes what --seeds 1 measured
    assert bench.same_protocol({**quad, "seeds": 1}, {**quad, "seeds": 3})
    assert not bench.same_protocol(plain, quad) and not bench.same_protocol(None, quad)


def test_a_tiny_highdim_run_reports_every_field_with_finite_errors(bench):
    p = {**bench.QUICK, "layers": [8, 8], "stages": 2, "steps": 3, "points": 40, "boundary": 20, "flow_steps": 2,
         "hard_bc": False, "redraw": 2, "weight_power": 0.5}    # soft conditions: no 10D derivative cache (~1 s a set)
    p.pop("lbfgs")
    p.pop("lbfgs_float64")
    run = bench.run_one("highdim", "aas", 0, p, 1e-3, None, None)
    assert run["points_last_stage"] == 40 and run["collapses"] == 0
    for key in ("rel_l2_mc", "rel_l2_is", "rel_l2_near", "rel_l2_far", "cpu_s", "flow_s"):
        assert np.isfinite(run[key]), key
    assert run["flow_s"] > 0


def report(runs, protocol, seeds):
    return {"protocol": protocol, "lr": 1e-3, "seeds": seeds, "date": "d", "command": "c", "machine": "m",
            "runs": [{"problem": "highdim", "sampler": s, "seed": k, "rel_l2_is": e} for s, k, e in runs]}


def test_combine_adds_the_other_folders_runs_of_the_same_protocol_only(bench, tmp_path):
    protocol = {**bench.FULL, "hard_bc": True, "redraw": 50}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(report([("uniform", 0, 1.0), ("aas", 0, 9.9), ("uniform", 1, 1.1)], protocol, [0, 1])))
    mine = bench.combine(report([("aas", 0, 0.4)], protocol, [0]), other)
    assert sorted((r["sampler"], r["seed"], r["rel_l2_is"]) for r in mine["runs"]) == [
        ("aas", 0, 0.4), ("uniform", 0, 1.0), ("uniform", 1, 1.1)]      # its own aas seed 0 kept
    assert mine["seeds"] == [0, 1] and mine["combined"][0]["source"] == str(other)
    with pytest.raises(SystemExit, match="another protocol"):
        bench.combine(report([], {**protocol, "redraw": 10}, [0]), other)
    assert "every 50 Adam steps" in bench.protocol_line(protocol, 1e-3, [0])
