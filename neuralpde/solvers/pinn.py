"""PINNs on DeepXDE (PyTorch backend) with adaptive collocation: ``method: {type: pinn, sampler: {type: aas}}``.

The bridge turns a :class:`~neuralpde.Problem` into DeepXDE objects: a geometry (interval, rectangle,
cuboid, hypercube, polygon, or a mesh file as a point cloud), Dirichlet data as ``PointSetBC`` on boundary
points drawn from the boundary facets (so named boundaries and tags work as in the FEM reference), the
residual from ``PDE.residual``, an optional hard Dirichlet condition by output transform (boxes).
DeepXDE runs the training loop (Adam, then L-BFGS); a sampler (:mod:`.sampling`) changes the collocation
points at the end of every stage through ``replace_with_anchors`` / ``add_anchors``::

    neuralpde run cases/pinn_peak_aas.yaml --smoke
    neuralpde run cases/pinn_peak_aas.yaml --set method.sampler.type=uniform
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import SolverError
from .method import Method, MethodConfig, MethodResult, RunContext, Strict, register

log = logging.getLogger("neuralpde")


class NetworkConfig(Strict):
    """Fully connected network: hidden ``layers`` widths, the activation (DeepXDE names) and input ``features``.

    ``features: quadratic`` feeds ``[x, x*x]`` (2 d inputs) instead of ``x``: a Gaussian bump
    ``exp(-k |x - c|^2)`` (any centre, axis-aligned widths) is then a function of one linear combination of
    the inputs, which a tanh net builds with one neuron per layer instead of cancelling ridge functions over the
    whole domain (in 10D the plain 6x32 net fits ``exp(-10 |x|^2)`` by regression to 0.74 after 10 000 Adam
    steps, the quadratic one to 0.098; docs/results/pinn_sampling/highdim_quad).
    """

    layers: list[int] = Field([32] * 6, min_length=1)
    activation: Literal["tanh", "sin", "silu", "gelu", "sigmoid", "relu"] = "tanh"
    initializer: Literal["Glorot uniform", "Glorot normal", "He normal"] = "Glorot uniform"
    features: Literal["none", "quadratic"] = "none"


class FlowConfig(Strict):
    """The bounded normalizing flow of ``das``/``aas``: couplings, width, steps per stage, H1 weight beta."""

    couplings: int = Field(6, ge=1)
    width: int = Field(32, ge=2)
    steps: int = Field(300, ge=0)
    lr: float = Field(2e-3, gt=0)
    batch: int = Field(500, ge=8)
    beta: float | None = Field(None, ge=0)


class SamplerConfig(Strict):
    """Collocation sampling: ``points`` per stage, ``stages`` of ``train.adam_steps`` each, ``boundary_points``."""

    type: Literal["uniform", "fixed", "rar", "rad", "das", "aas"] = "uniform"
    points: int = Field(1000, ge=1)
    stages: int = Field(5, ge=1)
    boundary_points: int = Field(400, ge=0)
    candidates: int = Field(10000, ge=1)
    add: int = Field(100, ge=1)
    k: float = Field(1.0, ge=0)
    c: float = Field(1.0, ge=0)
    uniform_share: float | None = Field(None, ge=0, le=1)
    importance_weights: bool = False
    #: the weights are ``(1/q)^importance_power`` (normalised): 1 is DAS's unbiased ``mean(r^2/q)``; below 1 tempers
    #: them (in 10D the points near the bump hold 0.1 % of the 1/q-weighted loss, docs/pinn.md)
    importance_power: float = Field(1.0, gt=0, le=1)
    #: fresh points from the stage's distribution every this many Adam steps inside a stage (0: the stage keeps its
    #: points): uniform points for uniform, new flow samples (and uniform share) for DAS-R/AAS; in 10D a fixed set
    #: of 1000 points is fitted exactly and the net is wrong between them (docs/pinn.md)
    redraw_every: int = Field(0, ge=0)
    #: AAS: share of each stage's points drawn, in equal parts, from the earlier stages' flows (with two peaks the
    #: flow hops from one to the other between stages; the memory keeps the one it left covered)
    memory_share: float = Field(0.0, ge=0, lt=1)
    flow: FlowConfig = FlowConfig()

    @model_validator(mode="after")
    def _consistent(self) -> SamplerConfig:
        if self.redraw_every and self.type in ("fixed", "rar", "rad"):
            raise ValueError(f"redraw_every needs a sampler that defines a distribution (uniform, das, aas), not "
                             f"{self.type}: RAR and RAD choose their points from the residual once per stage; set "
                             f"method.sampler.redraw_every: 0")
        if self.memory_share and self.type != "aas":
            raise ValueError(f"memory_share keeps the earlier stages' AAS flows; sampler {self.type} has none: set "
                             "method.sampler.memory_share: 0 or type: aas")
        uniform = 0.2 if self.uniform_share is None else self.uniform_share    # 0.2: AASSampler's default
        if self.memory_share and uniform + self.memory_share >= 1:
            raise ValueError(f"uniform_share ({uniform:g}) + memory_share ({self.memory_share:g}) leave no points "
                             "for the current flow: keep their sum below 1")
        return self


class TrainConfig(Strict):
    """Adam steps *per stage*, learning rate, L-BFGS steps after the last stage (and its precision), loss display
    interval."""

    adam_steps: int = Field(2000, ge=1)
    lr: float = Field(1e-3, gt=0)
    lbfgs_steps: int = Field(0, ge=0)
    #: run the L-BFGS finish in float64 (net and points cast for it, back to float32 after): in float32 DeepXDE's
    #: L-BFGS stops at its tolerance after a few thousand iterations (docs/pinn.md)
    lbfgs_float64: bool = False
    display_every: int = Field(100, ge=1)


class PINNConfig(MethodConfig):
    type: Literal["pinn"] = "pinn"
    network: NetworkConfig = NetworkConfig()
    sampler: SamplerConfig = SamplerConfig()
    train: TrainConfig = TrainConfig()
    hard_bc: bool = False
    #: uniform points for the error estimate against ``exact`` when there is no reference mesh
    eval_points: int = Field(20000, ge=100)


def deepxde() -> Any:
    """Import DeepXDE on the PyTorch backend (the backend is read once, at import)."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    import deepxde as dde

    if dde.backend.backend_name != "pytorch":
        raise SolverError(f"DeepXDE was already imported with the {dde.backend.backend_name!r} backend",
                          fix="set DDE_BACKEND=pytorch before importing deepxde")
    return dde


@register
class PINNMethod(Method):
    """A PINN trained by DeepXDE with one of the samplers of :mod:`neuralpde.solvers.sampling`."""

    name = "pinn"
    config_model = PINNConfig
    faces = ("residual",)
    plot_names = ("samples", "pinn_error")

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        from .pinn_bridge import train_pinn

        return train_pinn(problem, reference, self.config, ctx)
