"""PINN inverse problems on DeepXDE: unknown PDE scalars (``dde.Variable``) fitted to point observations.

The PDE's own torch residual (:meth:`PDE.residual`) is evaluated with the unknown scalars substituted for
its named parameters (``Heat(k="kappa", params={"kappa": ...})``; ``FisherKPP``'s ``rho`` also works when it
is a number). Observations enter as a ``dde.icbc.PointSetBC``, the scalars through DeepXDE's
``external_trainable_variables``; a callback records their history::

    pde = Heat(k="kappa", initial="sin(pi*x)", t_end=0.5, params={"kappa": 0.05}, dim=1)
    result = solve_inverse(pde, [[0, 1]], (points_xt, values), {"kappa": 0.05}, iterations=5000)
    result.params["kappa"], result.history[-1], result.predict(points_xt)

Points are ``(N, dim + 1)`` arrays with time last (the convention of :meth:`PDE.residual`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CaseError, SolverError
from .pinn import deepxde
from .pinn_bridge import lbfgs_finish


@dataclass
class InverseResult:
    """A trained inverse PINN: the network, the final scalars and their history.

    ``history`` rows are ``{"step", "cpu_s", "loss", <name>: value, ...}`` every ``record_every`` steps;
    ``cpu_s`` is ``time.process_time()`` since the start of training (the fair clock on a shared machine).
    """

    net: Any
    params: dict[str, float]
    history: list[dict] = field(default_factory=list)
    time_s: float = 0.0
    stopped_early: bool = False

    def predict(self, points: np.ndarray) -> np.ndarray:
        """The network's ``u`` at ``(N, dim + 1)`` points, as a flat float64 array."""
        dtype = next(self.net.parameters()).dtype
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(points), dtype=dtype)
            return self.net(x).reshape(-1).double().numpy()


def _residual(pde: Any, unknowns: dict[str, Any]) -> Callable:
    """``pde.residual`` with the named scalars replaced by trainable tensors (a shallow copy of ``pde``)."""
    special = {}
    if "rho" in unknowns and "rho" not in getattr(pde, "params", {}) and hasattr(pde, "rho_value"):
        special["rho"] = unknowns["rho"]              # FisherKPP's rho given as a number: swap the reaction term
    names = [n for n in unknowns if n not in special]
    missing = [n for n in names if n not in getattr(pde, "params", {})]
    if missing:
        raise CaseError(f"unknown scalars {missing} are not parameters of the PDE (it has "
                        f"{sorted(getattr(pde, 'params', {}))})", field="method.infer",
                        fix="write the coefficient as a named parameter, e.g. k: kappa with params: {kappa: 0.1}")
    live = copy.copy(pde)

    def residual(x: Any, y: Any) -> Any:
        live.params = {**pde.params, **{n: unknowns[n] for n in names}}
        r = live.residual(x, y).reshape(-1, 1)
        if special:
            u = y.reshape(-1, 1)
            r = r + (pde.rho_value() - special["rho"]) * u * (1 - u)
        return r

    return residual


def solve_inverse(pde: Any, bounds: list[list[float]], observations: tuple[np.ndarray, np.ndarray],
                  unknowns: dict[str, float], *, boundary_value: float | None = 0.0, layers: list[int] | None = None,
                  activation: str = "tanh", points: int = 4096, boundary_points: int = 128, initial_points: int = 128,
                  weights: dict[str, float] | None = None, lr: float = 1e-3, iterations: int = 10000,
                  lbfgs_steps: int = 0, record_every: int = 100, seed: int = 0,
                  callback: Callable[[int, InverseResult], bool] | None = None) -> InverseResult:
    """Train a PINN on ``pde`` over ``bounds x (0, pde.t_end]`` to fit ``observations`` and infer ``unknowns``.

    Args:
        pde: a time-dependent PDE with ``residual`` (e.g. ``Heat``, ``FisherKPP``) and ``initial``.
        bounds: the space box, ``[[lo, hi], ...]`` (1D to 3D).
        observations: ``(points (N, dim + 1), values (N,))`` of ``u`` (time last).
        unknowns: name -> starting value; names are parameters of ``pde`` (or ``rho`` of ``FisherKPP``).
        boundary_value: Dirichlet value on the whole space boundary, or None for no boundary term.
        layers: hidden widths (default four of 32, the ODIL paper's PINN baseline).
        activation: DeepXDE activation name.
        points, boundary_points, initial_points: collocation points (pseudo-random, seeded, fixed).
        weights: loss weights of the groups ``pde``, ``bc``, ``ic``, ``data`` (default 1 each).
        lr: Adam learning rate.
        iterations: Adam steps.
        lbfgs_steps: L-BFGS steps after Adam (0: none).
        record_every: steps between history rows (and ``callback`` calls).
        seed: seeds the points and the network.
        callback: ``callback(step, partial_result) -> stop``; called at every history row.

    Returns:
        InverseResult with the network, final scalars and their history.

    Raises:
        SolverError: a NaN loss (the history so far is in the message).
    """
    dde = deepxde()
    obs_x, obs_u = (np.asarray(a, dtype=float) for a in observations)
    dim = len(bounds)
    if obs_x.ndim != 2 or obs_x.shape[1] != dim + 1 or len(obs_u.reshape(-1)) != len(obs_x):
        raise CaseError(f"observations must be points (N, {dim + 1}) with time last and N values, got "
                        f"{obs_x.shape} and {obs_u.shape}", field="method.data", fix="stack (x.., t) per point")
    if not unknowns:
        raise CaseError("no unknown scalars", field="method.infer", fix="name at least one, e.g. {kappa: 0.05}")
    dde.config.set_random_seed(seed)
    b = np.asarray(bounds, dtype=float)
    space = (dde.geometry.Interval(*b[0]) if dim == 1 else dde.geometry.Rectangle(b[:, 0], b[:, 1]) if dim == 2
             else dde.geometry.Cuboid(b[:, 0], b[:, 1]))
    geom = dde.geometry.GeometryXTime(space, dde.geometry.TimeDomain(0.0, float(pde.t_end)))
    variables = {name: dde.Variable(float(v)) for name, v in unknowns.items()}
    w = {"pde": 1.0, "bc": 1.0, "ic": 1.0, "data": 1.0, **(weights or {})}
    conditions, loss_weights = [], [w["pde"]]
    if boundary_value is not None:
        conditions.append(dde.icbc.DirichletBC(geom, lambda x: np.full((len(x), 1), boundary_value),
                                               lambda _, on_boundary: on_boundary))
        loss_weights.append(w["bc"])
    initial = pde.initial

    def u0(x: np.ndarray) -> np.ndarray:
        return np.asarray(initial.numpy(x[:, :dim].T), dtype=float).reshape(-1, 1) * np.ones((len(x), 1))

    conditions.append(dde.icbc.IC(geom, u0, lambda _, on_initial: on_initial))
    conditions.append(dde.icbc.PointSetBC(obs_x.astype(np.float32), obs_u.reshape(-1, 1).astype(np.float32)))
    loss_weights += [w["ic"], w["data"]]
    data = dde.data.TimePDE(geom, _residual(pde, variables), conditions, num_domain=points,
                            num_boundary=boundary_points if boundary_value is not None else 0,
                            num_initial=initial_points, train_distribution="pseudo")
    torch.manual_seed(seed)
    net = dde.nn.FNN([dim + 1, *(layers or [32] * 4), 1], activation, "Glorot uniform")
    model = dde.Model(data, net)
    result = InverseResult(net, {n: float(v) for n, v in unknowns.items()})
    order = list(variables)
    start = time.process_time()

    class Record(dde.callbacks.Callback):
        """A history row every ``record_every`` steps; NaN stop; user callback."""

        last = -record_every

        def on_epoch_end(self) -> None:
            state = self.model.train_state
            if state.step - self.last < record_every:      # L-BFGS may advance the step count by more than 1
                return
            self.last = state.step
            loss = float(np.sum(state.loss_train))
            # read the variables themselves: DeepXDE's VariableValue counts epochs on its own clock and can
            # report values one period old
            result.params = {n: float(variables[n].detach()) for n in order}
            result.history.append({"step": int(state.step), "cpu_s": time.process_time() - start, "loss": loss,
                                   **result.params})
            if not np.isfinite(loss):
                self.model.stop_training = True
            elif callback is not None and callback(int(state.step), result):
                result.stopped_early = True
                self.model.stop_training = True

    callbacks = [Record()]
    externals = [variables[n] for n in order]
    model.compile("adam", lr=lr, loss_weights=loss_weights, external_trainable_variables=externals)
    model.train(iterations=iterations, display_every=record_every, callbacks=callbacks, verbose=0)
    if lbfgs_steps and not result.stopped_early and np.isfinite(model.train_state.loss_train).all():
        # the bridge's finish: at most lbfgs_steps iterations (DeepXDE's own per-call count could run up to 1000),
        # and DeepXDE's global L-BFGS options restored afterwards
        lbfgs_finish(dde, model, lbfgs_steps, record_every, callbacks, loss_weights=loss_weights,
                     external_trainable_variables=externals)
    result.time_s = time.process_time() - start
    result.params = {n: float(variables[n].detach()) for n in order}
    final = {"step": int(model.train_state.step), "cpu_s": result.time_s,
             "loss": float(np.sum(model.train_state.loss_train)), **result.params}
    if result.history and result.history[-1]["step"] == final["step"]:
        result.history.pop()                         # L-BFGS may move the variables without advancing the step
    result.history.append(final)                     # the history ends with the returned values
    if not np.isfinite(np.sum(model.train_state.loss_train)):
        raise SolverError(f"the inverse PINN's loss became NaN at step {model.train_state.step}; history: "
                          f"{result.history[-3:]}", field="method.train.lr", fix="lower the learning rate")
    return result


__all__ = ["InverseResult", "solve_inverse"]
