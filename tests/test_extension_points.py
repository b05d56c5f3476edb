"""The case layer's extension points: registered PDEs and methods, `reference: none`, method plots,
cases without a PDE, and self-describing checkpoints."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest

from neuralpde import load_case_text, run
from neuralpde.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from neuralpde.errors import CaseError, SolverError
from neuralpde.pde import PDES, Poisson, register_pde
from neuralpde.pde.poisson import PoissonConfig
from neuralpde.solvers.fem.fields import FEField
from neuralpde.solvers.method import METHODS, Method, MethodConfig, MethodResult, register


class EchoConfig(MethodConfig):
    type: Literal["echo_test"]
    scale: float = 1.0


class Echo(Method):
    """Returns ``scale * exact`` on the reference mesh (or a scalar metric without a problem)."""

    name = "echo_test"
    config_model = EchoConfig
    needs_problem = False
    plot_names = ("echo_plot",)

    def run(self, problem, reference, ctx):
        if ctx.out_dir is not None and "echo_plot" in ctx.plots:
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
            (ctx.out_dir / "echo.txt").write_text("plot")
            files = [ctx.out_dir / "echo.txt"]
        else:
            files = []
        if problem is None:
            return MethodResult(None, metrics={"value": 42.0}, files=files)
        mesh = reference.field.mesh if reference is not None else problem.domain.mesh(cells=[32, 32])
        field = FEField.interpolate(mesh, 1, problem.exact)
        return MethodResult(field.with_values(field.values * self.config.scale), files=files)


@pytest.fixture
def echo():
    register(Echo)
    yield
    METHODS.pop("echo_test")


BASE = """name: ext
pde: {type: poisson, source: manufactured}
domain: {type: rectangle}
boundary: [{where: all, dirichlet: exact}]
exact: "sin(pi*x)*sin(pi*y)"
reference: {backend: skfem, degree: 1, cells: [8, 8]}
"""


def test_reference_none_compares_with_exact(echo, tmp_path):
    case = load_case_text(BASE + "method: {type: echo_test, scale: 1.1}\n", overrides={"reference": "none"})
    result = run(case, out=tmp_path, progress=False)
    assert "reference" not in result.metrics
    assert result.metrics["method"]["vs_exact"]["rel_l2"] == pytest.approx(0.1, rel=0.05)   # + P1 interpolation error
    assert "vs_reference" not in result.metrics["method"]
    assert (tmp_path / "metrics.json").exists()


def test_reference_none_needs_exact():
    with pytest.raises(CaseError, match="nothing to compare") as info:
        load_case_text(BASE.replace('exact: "sin(pi*x)*sin(pi*y)"', "") + "reference: none\n",
                       overrides={"pde.source": 1, "boundary.0.dirichlet": 0})
    assert info.value.field == "reference"


def test_case_without_pde_for_a_method_that_needs_none(echo, tmp_path):
    case = load_case_text("name: toy\nmethod: {type: echo_test}\noutput: {plots: [echo_plot]}\n")
    result = run(case, out=tmp_path, progress=False)
    assert result.metrics["method"]["value"] == 42.0
    assert json.loads((tmp_path / "metrics.json").read_text())["method"]["value"] == 42.0
    assert (tmp_path / "echo.txt") in result.files


def test_case_without_pde_for_a_method_that_needs_one():
    with pytest.raises(CaseError) as info:
        load_case_text("name: toy\nmethod: {type: fem}\n")
    assert info.value.field == "pde"


def test_unknown_plot_name_is_named(echo):
    with pytest.raises(CaseError, match="unknown plot") as info:
        load_case_text(BASE + "method: {type: echo_test}\noutput: {plots: [solution, echo_plto]}\n")
    assert info.value.field == "output.plots.1"
    assert "echo_plot" in info.value.fix


def test_registered_pde_becomes_a_case_type(tmp_path):
    class ScaledConfig(PoissonConfig):
        type: Literal["scaled_poisson_test"]  # type: ignore[assignment]
        factor: float = 2.0

    @register_pde
    class ScaledPoisson(Poisson):
        name = "scaled_poisson_test"
        config_model = ScaledConfig

        def __init__(self, factor: float = 2.0, **kwargs):
            super().__init__(**kwargs)
            self.f = self.f.__class__.from_sympy(self.f.sympy * factor)

    try:
        case = load_case_text(BASE.replace("type: poisson", "type: scaled_poisson_test, factor: 3.0"))
        ref = run(case, out=tmp_path, progress=False).reference
        base = run(load_case_text(BASE), out=tmp_path / "b", progress=False).reference
        assert np.allclose(ref.field.values, 3.0 * base.field.values)   # linear problem, zero BCs
    finally:
        PDES.pop("scaled_poisson_test")


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    import torch

    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "ckpt_5.pt", kind="lin", config={"grid": (64, 64)},
                           state={"model": net.state_dict()}, step=5)
    save_checkpoint(tmp_path / "ckpt_12.pt", kind="lin", config={"grid": [64, 64]}, state={}, step=12)
    assert latest_checkpoint(tmp_path).name == "ckpt_12.pt"
    ckpt = load_checkpoint(path, kind="lin", expect={"grid": [64, 64]})
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(ckpt["state"]["model"])
    assert torch.equal(other.weight, net.weight)
    with pytest.raises(SolverError, match="grid") as info:
        load_checkpoint(path, kind="lin", expect={"grid": [128, 128]})
    assert info.value.field == "grid" and str(path) in str(info.value)
    with pytest.raises(SolverError, match="'lin' model, not 'mgno'"):
        load_checkpoint(path, kind="mgno")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(SolverError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", kind="lin")


def test_import_is_light():
    """``import neuralpde`` must not pull in torch (or the method modules): the CLI's help and ``list`` and
    a user's ``import`` stay fast. The registry loads the built-in methods on its first read."""
    import subprocess
    import sys

    code = ("import sys, neuralpde; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'fem' in neuralpde.METHODS and 'pinn' in neuralpde.METHODS; print(len(neuralpde.METHODS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 9
