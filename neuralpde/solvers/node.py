"""Regularised neural ODEs (ERNODE / SRNODE, Pal et al. 2021) on torchode's Tsit5 with a discrete adjoint.

A neural ODE learns ``dy/dt = f_theta(t, y)``. Adaptive solvers then pay for whatever dynamics training
produced; ERNODE adds the solver's own local error estimates (mean of EEst*dt over accepted steps) and
SRNODE its stiffness estimate (max of ``|k7 - k6| / |g7 - g6| / 3.5068``) to the loss, so the learnt
dynamics need fewer steps. Both come out of one solve: a wrapped step-size controller accumulates them,
differentiably, while ``AutoDiffAdjoint`` backpropagates through every accepted and rejected step::

    model = NeuralODE(ODEFunc(dim=2, width=50, cube_input=True), SolverSettings(rtol=1e-5, atol=1e-7))
    out = model(y0, t_eval, regulariser="ernode")       # y0 (B, d), t_eval (T,)
    loss = ((out.ys - target) ** 2).mean() + lam * out.regulariser
    out.nfe, out.n_accepted, out.n_rejected               # exact counts, rejected steps included

``train_node`` runs the optimisation (λ schedules, STEER end times, checkpoints, progress) and the
``node`` method puts both behind a case file (``cases/node_spiral.yaml``, ``cases/node_reaction_diffusion.yaml``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..config import Strict
from ..errors import CaseError, SolverError
from .method import Method, MethodConfig, MethodResult, RunContext, register

#: boundary of Tsit5's stability region on the negative real axis (OrdinaryDiffEq's stiffness test)
TSIT5_STABILITY_RADIUS = 3.5068
REGULARISERS = ("none", "ernode", "srnode", "both")
#: torchode's status codes (``torchode.status_codes``), repeated so this module imports without torchode
_INFINITE_NORM, _REACHED_MAX_STEPS, _REACHED_DT_MIN = 4, 3, 2


class NonFiniteStateError(SolverError):
    """The state (or its error estimate) became NaN/inf during a solve; ``t`` and ``step`` say where."""

    def __init__(self, message: str, *, t: float = math.nan, step: int = -1, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.t, self.step = t, step

    def located(self, *, file: str | None = None, field: str | None = None) -> NonFiniteStateError:
        return NonFiniteStateError(self.message, t=self.t, step=self.step, file=self.file or file,
                                   field=self.field or field, fix=self.fix)


@dataclass
class SolverSettings:
    """Tolerances and limits of the adaptive Tsit5 solve.

    Args:
        rtol: relative tolerance in ``[1e-13, 1)`` (float64 state).
        atol: absolute tolerance in ``[0, 1)``; ``rtol`` and ``atol`` cannot both be tiny.
        max_steps: steps (accepted + rejected) after which a solve stops with an error instead of running on.
        dt_min: smallest step size before the solve is declared stuck (``0``: no limit).
        differentiate_step_size: also backpropagate through the controller's step-size choices. Off by
            default: the solution barely depends on them, and their gradient (of truncation error) is noise
            that destabilised training here; R_E then gets its gradient through EEst, dt held fixed.
    """

    rtol: float = 1e-5
    atol: float = 1e-7
    max_steps: int = 5000
    dt_min: float = 0.0
    differentiate_step_size: bool = False

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)
        if self.max_steps < 1:
            raise CaseError(f"max_steps must be at least 1, got {self.max_steps}", field="method.solver.max_steps",
                            fix="e.g. max_steps: 5000")
        if self.dt_min < 0:
            raise CaseError(f"dt_min must be >= 0, got {self.dt_min}", field="method.solver.dt_min",
                            fix="use 0 (no limit) or a small positive step")


def check_tolerances(rtol: float, atol: float) -> None:
    """Reject tolerances an adaptive solve in float64 cannot meet (or that make it meaningless).

    Raises:
        CaseError: ``rtol`` outside ``[1e-13, 1)``, ``atol`` outside ``[0, 1)`` or both below 1e-13.
    """
    if not (math.isfinite(rtol) and 1e-13 <= rtol < 1):
        raise CaseError(f"rtol {rtol:g} is out of range [1e-13, 1)", field="method.solver.rtol",
                        fix="float64 cannot resolve less than ~1e-13; the paper uses 1.4e-8, 1e-5 is a fast choice")
    if not (math.isfinite(atol) and 0 <= atol < 1):
        raise CaseError(f"atol {atol:g} is out of range [0, 1)", field="method.solver.atol",
                        fix="use e.g. atol: 1.0e-7")


# --------------------------------------------------------------------------------------------------
# The solver pieces: a Tsit5 that remembers its stages, and a controller that accumulates R_E and R_S
# --------------------------------------------------------------------------------------------------

def _stage_recording_tsit5():
    """torchode's Tsit5, keeping the last step's stages for the stiffness estimate."""
    import torchode

    class StageRecordingTsit5(torchode.Tsit5):
        last_step: tuple | None = None

        def step(self, term, running, y0, t0, dt, state, *, stats, args):
            out = super().step(term, running, y0, t0, dt, state, stats=stats, args=args)
            interp = out[1]
            self.last_step = (interp.dt, interp.k)
            return out

    return StageRecordingTsit5()


class RegularisingController(nn.Module):
    """Wraps a torchode step-size controller; after each step it accumulates, per batch element:

    - ``error_sum``: sum over accepted steps of EEst*dt (differentiable), ``EEst`` being the RMS norm of
      ``error / (atol + rtol*max(|y0|, |y1|))`` (the same error ratio the controller accepts or rejects on);
    - ``stiff_max`` / ``stiff_sum``: max and sum over accepted steps of ``|k7 - k6| / |g7 - g6| / 3.5068``;
    - ``n_accepted`` / ``n_rejected``: steps of the still-running elements, as torchode counts them;
    - ``fail_t`` / ``fail_step``: time and step at which the state or its error estimate stopped being finite.

    Stepping of finished elements (torchode keeps calling the controller with ``dt = 0`` for them while
    others still run) is masked out, so the means are over each element's own steps.
    """

    def __init__(self, inner: nn.Module, step_method: Any, *, stiffness: bool):
        super().__init__()
        self.inner = inner
        self.step_method = step_method
        self.stiffness = stiffness
        self.reset(0, torch.float64, "cpu")

    def reset(self, batch: int, dtype: torch.dtype, device: Any) -> None:
        zeros = torch.zeros(batch, dtype=dtype, device=device)
        self.error_sum, self.stiff_max, self.stiff_sum = zeros, zeros, zeros
        self.n_accepted = torch.zeros(batch, dtype=torch.long, device=device)
        self.n_rejected = torch.zeros(batch, dtype=torch.long, device=device)
        self.iterations = 0
        self.fail_t: float | None = None
        self.fail_step = -1
        self._t_end = self._direction = None

    def init(self, term, problem, method_order, dt0, *, stats, args):
        self.reset(problem.batch_size, problem.data_dtype, problem.device)
        self._t_end, self._direction = problem.t_end, problem.time_direction.to(problem.t_start.dtype)
        return self.inner.init(term, problem, method_order, dt0, stats=stats, args=args)

    def merge_states(self, running, current, previous):
        return self.inner.merge_states(running, current, previous)

    def adapt_step_size(self, t0, dt, y0, step_result, state, stats):
        accept, dt_next, state_next, status = self.inner.adapt_step_size(t0, dt, y0, step_result, state, stats)
        self.iterations += 1
        running = (t0 - self._t_end) * self._direction < 0
        y1, err = step_result.y, step_result.error_estimate
        bounds = self.inner.atol + self.inner.rtol * torch.maximum(y0.abs(), y1.abs())
        # finished elements have dt = 0 and a zero error: a norm at 0 has an undefined gradient, so
        # those rows get a dummy 1 before the norm and are masked out after it
        scaled = torch.where(running[:, None], err / bounds, torch.ones_like(err))
        eest = torch.linalg.vector_norm(scaled, dim=1) / math.sqrt(err.shape[1])
        finite = torch.isfinite(eest) & torch.isfinite(y1).all(dim=1)
        if not bool(finite[running].all()):
            if self.fail_t is None:
                self.fail_t = float(t0[running & ~finite][0])
                self.fail_step = self.iterations
            status = torch.where(finite | ~running, status, torch.full_like(status, _INFINITE_NORM))
            return accept & finite, dt_next, state_next, status
        taken = accept & running
        dt_data = dt.to(err.dtype).abs()
        self.error_sum = self.error_sum + torch.where(taken, eest * dt_data, torch.zeros_like(eest))
        self.n_accepted = self.n_accepted + taken
        self.n_rejected = self.n_rejected + (running & ~accept)
        if self.stiffness:
            rho = self._stiffness(running) / TSIT5_STABILITY_RADIUS
            rho = torch.where(taken, rho, torch.zeros_like(rho))
            self.stiff_max = torch.maximum(self.stiff_max, rho)
            self.stiff_sum = self.stiff_sum + rho
        return accept, dt_next, state_next, status

    def _stiffness(self, running: torch.Tensor) -> torch.Tensor:
        """``|k7 - k6| / |g7 - g6|``: Tsit5's last two stages share c = 1, so this estimates |df/dy|."""
        step_dt, k = self.step_method.last_step
        a = self.step_method.tableau.a
        dt_data = step_dt.to(k.dtype)
        # g7 - g6 = dt * sum_j (a[6, j] - a[5, j]) k_j, from the stages torchode already computed
        dg = dt_data[:, None] * torch.einsum("s,sbf->bf", (a[6] - a[5]).to(k.dtype), k)
        dk = k[6] - k[5]
        ok = running & (dt_data != 0)
        num = torch.linalg.vector_norm(torch.where(ok[:, None], dk, torch.ones_like(dk)), dim=1)
        den = torch.linalg.vector_norm(torch.where(ok[:, None], dg, torch.ones_like(dg)), dim=1)
        return torch.where(ok, num / den.clamp_min(torch.finfo(k.dtype).tiny), torch.zeros_like(num))


@dataclass
class SolveOutput:
    """A batched solve: the states at ``t_eval`` and what the solve cost.

    Attributes:
        ys: ``(B, T, d)`` states at the evaluation times.
        regulariser: the requested regulariser, averaged over the batch (a scalar tensor, 0 for ``none``).
        error_term: R_E per element: mean over accepted steps of EEst*dt.
        stiffness_term: R_S per element: max over accepted steps of the stiffness estimate / 3.5068.
        nfe: vector-field evaluations of the batched solve (torchode's ``n_f_evals``; every step evaluates
            the whole batch, so this is the cost; rejected steps included).
        nfe_counted: evaluations counted independently by the dynamics wrapper (equals ``nfe``).
        n_steps: per element, steps taken (torchode's ``n_steps`` = accepted + rejected).
        n_accepted, n_rejected: per element, from the wrapped controller.
        iterations: solver loop iterations (the largest ``n_steps``).
    """

    ys: torch.Tensor
    regulariser: torch.Tensor
    error_term: torch.Tensor
    stiffness_term: torch.Tensor
    nfe: int
    nfe_counted: int
    n_steps: np.ndarray
    n_accepted: np.ndarray
    n_rejected: np.ndarray
    iterations: int
    stats: dict = field(default_factory=dict)


class CountingTerm(nn.Module):
    """The right-hand side as torchode sees it: counts every call (all stages of all steps)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, y)


class NeuralODE(nn.Module):
    """``dy/dt = func(t, y)`` solved by adaptive Tsit5 with a discrete adjoint (gradients through the solver).

    Args:
        func: the dynamics, called as ``func(t, y)`` with ``t`` of shape ``(B,)`` and ``y`` of shape ``(B, d)``.
        settings: tolerances and step limit.
    """

    def __init__(self, func: nn.Module, settings: SolverSettings | None = None):
        super().__init__()
        self.func = func
        self.settings = settings or SolverSettings()

    def forward(self, y0: torch.Tensor, t_eval: torch.Tensor, *, regulariser: str = "none",
                t_end: torch.Tensor | float | None = None, combined_weight: float = 0.1,
                dt0: float | None = None) -> SolveOutput:
        """Solve from ``y0`` at ``t_eval[..., 0]`` and return the states at ``t_eval``.

        Args:
            y0: ``(B, d)`` initial states.
            t_eval: ``(T,)`` shared or ``(B, T)`` per-element increasing evaluation times.
            regulariser: ``none``, ``ernode``, ``srnode`` or ``both`` (mean of EEst*dt + w*stiffness).
            t_end: integrate up to this time (STEER samples it); defaults to the last evaluation time.
            combined_weight: ``w`` of the combined regulariser (0.1 in the paper's code).
            dt0: first step size (default: torchode's Hairer-Wanner estimate, which costs 2 evaluations).

        Raises:
            NonFiniteStateError: the state became NaN/inf (message names the time and step reached).
            SolverError: the step limit or minimum step size was reached.
        """
        import torchode

        if regulariser not in REGULARISERS:
            raise CaseError(f"unknown regulariser {regulariser!r}", field="method.regulariser",
                            fix=f"use one of {list(REGULARISERS)}")
        s = self.settings
        batch = y0.shape[0]
        t_eval = t_eval.to(y0.dtype)
        if t_eval.ndim == 1:
            t_eval = t_eval.expand(batch, -1)
        t_start = t_eval[:, 0]
        t_stop = t_eval[:, -1] if t_end is None else torch.as_tensor(t_end, dtype=y0.dtype).expand(batch)
        term_fn = CountingTerm(self.func)
        term = torchode.ODETerm(term_fn)
        step_method = _stage_recording_tsit5()
        inner = torchode.IntegralController(atol=s.atol, rtol=s.rtol, term=term,
                                            dt_min=s.dt_min if s.dt_min > 0 else None)
        controller = RegularisingController(inner, step_method, stiffness=regulariser in ("srnode", "both"))
        solver = torchode.AutoDiffAdjoint(step_method, controller, max_steps=s.max_steps,
                                          backprop_through_step_size_control=s.differentiate_step_size)
        problem = torchode.InitialValueProblem(y0=y0, t_start=t_start, t_end=t_stop, t_eval=t_eval)
        first = None if dt0 is None else torch.full((batch,), float(dt0), dtype=y0.dtype, device=y0.device)
        sol = solver.solve(problem, term=term, dt0=first)
        self._check_status(sol, controller)
        n_acc = controller.n_accepted.clamp_min(1).to(y0.dtype)
        error_term = controller.error_sum / n_acc
        stiffness_term = controller.stiff_max
        if regulariser == "ernode":
            reg = error_term.mean()
        elif regulariser == "srnode":
            reg = stiffness_term.mean()
        elif regulariser == "both":
            reg = ((controller.error_sum + combined_weight * controller.stiff_sum) / n_acc).mean()
        else:
            reg = y0.new_zeros(())
        return SolveOutput(ys=sol.ys, regulariser=reg, error_term=error_term, stiffness_term=stiffness_term,
                           nfe=int(sol.stats["n_f_evals"].max()), nfe_counted=term_fn.calls,
                           n_steps=sol.stats["n_steps"].cpu().numpy(),
                           n_accepted=controller.n_accepted.cpu().numpy(),
                           n_rejected=controller.n_rejected.cpu().numpy(),
                           iterations=controller.iterations, stats=sol.stats)

    def _check_status(self, sol: Any, controller: RegularisingController) -> None:
        status = sol.status
        if bool((status == 0).all()):
            return
        s = self.settings
        if controller.fail_t is not None or bool((status == _INFINITE_NORM).any()):
            t = controller.fail_t if controller.fail_t is not None else math.nan
            raise NonFiniteStateError(
                f"the state became non-finite at t={t:.6g} (solver step {controller.fail_step})", t=t,
                step=controller.fail_step,
                fix="lower the learning rate, normalise the data or add a regulariser; the last checkpoint is kept")
        if bool((status == _REACHED_MAX_STEPS).any()):
            raise SolverError(
                f"step limit exceeded: {s.max_steps} steps (accepted + rejected) without reaching the end time",
                field="method.solver.max_steps",
                fix="raise method.solver.max_steps, loosen rtol/atol, or regularise (ernode) the dynamics")
        if bool((status == _REACHED_DT_MIN).any()):
            raise SolverError(f"the step size fell below dt_min={s.dt_min:g}", field="method.solver.dt_min",
                              fix="lower dt_min or loosen the tolerances; the dynamics may be stiff (try srnode)")
        raise SolverError(f"torchode stopped with status {status.tolist()}", fix="check the dynamics and tolerances")


# --------------------------------------------------------------------------------------------------
# The dynamics network
# --------------------------------------------------------------------------------------------------

_ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "silu": nn.SiLU, "relu": nn.ReLU}


class ODEFunc(nn.Module):
    """An MLP right-hand side ``f(t, y)``.

    Args:
        dim: state dimension.
        width: hidden width.
        depth: hidden layers.
        activation: ``tanh``, ``softplus``, ``silu`` or ``relu``.
        cube_input: feed ``y**3`` instead of ``y`` (the spiral model of the paper's SDE toy).
        time_input: append ``t`` to the input (non-autonomous dynamics, e.g. a forced PDE).
    """

    def __init__(self, dim: int, width: int = 50, depth: int = 1, activation: str = "tanh",
                 cube_input: bool = False, time_input: bool = False):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise CaseError(f"unknown activation {activation!r}", field="method.network.activation",
                            fix=f"use one of {sorted(_ACTIVATIONS)}")
        self.cube_input, self.time_input = cube_input, time_input
        layers: list[nn.Module] = []
        width_in = dim + int(time_input)
        for _ in range(depth):
            layers += [nn.Linear(width_in, width), _ACTIVATIONS[activation]()]
            width_in = width
        layers.append(nn.Linear(width_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y**3 if self.cube_input else y
        if self.time_input:
            x = torch.cat([x, t.to(y.dtype).expand(y.shape[0])[:, None]], dim=1)
        return self.net(x)


# --------------------------------------------------------------------------------------------------
# Training: λ schedules, STEER end times, checkpoints
# --------------------------------------------------------------------------------------------------

@dataclass
class LambdaSchedule:
    """``λ_e = start * exp(-k e)`` with ``k = ln(start / end) / epochs`` (the papers' decay; constant if equal)."""

    start: float
    end: float | None = None
    epochs: int = 1

    def __call__(self, epoch: int) -> float:
        end = self.start if self.end is None else self.end
        if self.start <= 0 or end <= 0 or end == self.start:
            return self.start
        return self.start * math.exp(-math.log(self.start / end) / max(self.epochs, 1) * epoch)


@dataclass
class TrainSettings:
    """Optimisation of a neural ODE on trajectories.

    Args:
        epochs: optimisation steps (each uses ``batch`` trajectories, all when 0).
        lr: Adam learning rate.
        lr_decay: ``cosine`` anneals the rate to ``lr / 20`` by the last epoch (the fit settles instead of
            ending on a noisy Adam step); ``none`` keeps it constant.
        regulariser: ``none``, ``ernode``, ``srnode`` or ``both``.
        lam: the regulariser's weight schedule.
        steer: STEER half-width ``b`` (0: off): each step integrates to ``t1 ~ U(T - b*T', T + b*T')``,
            ``T'`` the time span, and fits the observations up to ``t1``.
        batch: trajectories per step (0: all).
        checkpoint_every: epochs between checkpoints (the last one is always written).
    """

    epochs: int = 300
    lr: float = 1e-2
    lr_decay: str = "none"
    regulariser: str = "none"
    lam: LambdaSchedule = field(default_factory=lambda: LambdaSchedule(0.0))
    steer: float = 0.0
    batch: int = 0
    checkpoint_every: int = 50


@dataclass
class TrainResult:
    """History per epoch (``loss``, ``mse``, ``reg``, ``lam``, ``nfe``, ``seconds``), wall and CPU time.

    ``train_cpu_s`` is this process's CPU time (``time.process_time``) over the loop: on a shared machine
    it measures the work done, where the wall time also counts waiting for a core.
    """

    history: dict[str, list[float]]
    train_time_s: float
    epochs_done: int
    checkpoint: Path | None = None
    train_cpu_s: float = math.nan


def cosine_lr(lr: float, epoch: int, epochs: int, floor: float = 0.05) -> float:
    """``lr`` at epoch 0 annealed along a half cosine to ``floor * lr`` at ``epochs``."""
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1))))


def train_node(model: NeuralODE, t: torch.Tensor, ys: torch.Tensor, settings: TrainSettings, *,
               mask: torch.Tensor | None = None, seed: int = 0, progress: Any = None,
               checkpoint_path: Path | None = None, checkpoint_config: dict | None = None,
               resume: bool = False) -> TrainResult:
    """Fit ``model`` to trajectories ``ys`` (``(N, T, d)`` observed at ``t`` (``(T,)``), ``ys[:, 0]`` the start).

    Args:
        model: the neural ODE (float64 parameters).
        t: observation times; ``t[0]`` is the initial time.
        ys: observed states.
        settings: epochs, learning rate, regulariser, λ schedule, STEER.
        mask: ``(T,)`` bool, the times that enter the loss (default: all after ``t[0]``).
        seed: seeds the STEER end times and the trajectory batches.
        progress: a :class:`~neuralpde.progress.Progress` (shows loss, λ and NFE per epoch).
        checkpoint_path: where the last checkpoint goes (kept as it was if training fails).
        checkpoint_config: what rebuilds the model (stored in the checkpoint, checked on resume).
        resume: continue from ``checkpoint_path`` when it exists.

    Raises:
        NonFiniteStateError: the state or the loss became NaN/inf; names the epoch, time and solver step.
        SolverError: a solve hit the step limit.
    """
    from ..checkpoints import load_checkpoint, save_checkpoint
    from ..progress import SILENT

    progress = progress or SILENT
    if settings.regulariser not in REGULARISERS:
        raise CaseError(f"unknown regulariser {settings.regulariser!r}", field="method.regulariser",
                        fix=f"use one of {list(REGULARISERS)}")
    mask = torch.ones(len(t), dtype=torch.bool) if mask is None else mask.clone()
    mask[0] = False
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    history: dict[str, list[float]] = {k: [] for k in ("loss", "mse", "reg", "lam", "nfe", "seconds")}
    start_epoch = 0
    config = checkpoint_config or {}
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        ckpt = load_checkpoint(checkpoint_path, kind="node", expect=config)
        model.load_state_dict(ckpt["state"]["model"])
        opt.load_state_dict(ckpt["state"]["optimizer"])
        history = {k: list(v) for k, v in ckpt["history"].items()}
        start_epoch = int(ckpt["epoch"])
    gen = torch.Generator().manual_seed(seed)
    span = float(t[-1] - t[0])
    saved: Path | None = None

    def save(epoch: int) -> None:
        nonlocal saved
        if checkpoint_path is not None:
            saved = save_checkpoint(checkpoint_path, kind="node", config=config, epoch=epoch, history=history,
                                    state={"model": model.state_dict(), "optimizer": opt.state_dict()})

    tic, cpu_tic = time.perf_counter(), time.process_time()
    with progress.task(f"node ({settings.regulariser}{', steer' if settings.steer else ''})",
                       settings.epochs - start_epoch) as advance:
        for epoch in range(start_epoch, settings.epochs):
            step_tic = time.perf_counter()
            batch = ys
            if 0 < settings.batch < ys.shape[0]:
                batch = ys[torch.randperm(ys.shape[0], generator=gen)[: settings.batch]]
            t_obs, obs_mask, t_end = t, mask, None
            if settings.steer > 0:
                u = float(torch.rand((), generator=gen, dtype=torch.float64))
                t1 = float(t[-1]) + settings.steer * span * (2 * u - 1)
                keep = t <= t1
                keep[:2] = True
                t_obs, obs_mask, t_end = t[keep], mask[keep], max(t1, float(t[keep][-1]))
            lam = settings.lam(epoch) if settings.regulariser != "none" else 0.0
            if settings.lr_decay == "cosine":       # a function of the epoch alone, so a resumed run continues it
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(settings.lr, epoch, settings.epochs)
            try:
                out = model(batch[:, 0], t_obs, regulariser=settings.regulariser, t_end=t_end)
            except NonFiniteStateError as exc:
                raise _training_failed(exc, epoch, saved) from None
            mse = ((out.ys[:, obs_mask] - batch[:, : len(t_obs)][:, obs_mask]) ** 2).mean()
            loss = mse + lam * out.regulariser if lam else mse
            if not torch.isfinite(loss):
                raise _training_failed(NonFiniteStateError("the loss became non-finite", t=float(t_obs[-1]),
                                                           step=out.iterations), epoch, saved)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for key, value in (("loss", loss), ("mse", mse), ("reg", out.regulariser), ("lam", lam),
                               ("nfe", out.nfe), ("seconds", time.perf_counter() - step_tic)):
                history[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
            if (epoch + 1) % max(settings.checkpoint_every, 1) == 0 and epoch + 1 < settings.epochs:
                save(epoch + 1)
            advance(loss=float(loss.detach()), nfe=out.nfe)
    save(settings.epochs)
    return TrainResult(history=history, train_time_s=time.perf_counter() - tic, epochs_done=settings.epochs,
                       checkpoint=saved, train_cpu_s=time.process_time() - cpu_tic)


def _training_failed(exc: NonFiniteStateError, epoch: int, checkpoint: Path | None) -> NonFiniteStateError:
    kept = f"the last checkpoint is kept: {checkpoint}" if checkpoint else "no checkpoint had been written yet"
    return NonFiniteStateError(f"training stopped at epoch {epoch}: {exc.message}; {kept}", t=exc.t,
                               step=exc.step, fix="lower method.train.lr or regularise (ernode); "
                               "method.train.resume continues from the checkpoint")


@dataclass
class Evaluation:
    """Test error and cost of the trained model (no regulariser, no gradients)."""

    ys: torch.Tensor
    mse: float
    nfe: int
    n_steps_mean: float
    predict_time_s: float
    predict_cpu_s: float = math.nan


def evaluate_node(model: NeuralODE, t: torch.Tensor, ys: torch.Tensor, mask: torch.Tensor | None = None,
                  repeats: int = 3) -> Evaluation:
    """Roll out from ``ys[:, 0]`` over ``t``; MSE at the ``mask`` times; best-of-``repeats`` prediction time
    (wall and CPU)."""
    mask = torch.ones(len(t), dtype=torch.bool) if mask is None else mask.clone()
    mask[0] = False
    best = best_cpu = math.inf
    with torch.no_grad():
        for _ in range(max(repeats, 1)):
            tic, cpu_tic = time.perf_counter(), time.process_time()
            out = model(ys[:, 0], t)
            best = min(best, time.perf_counter() - tic)
            best_cpu = min(best_cpu, time.process_time() - cpu_tic)
    mse = float(((out.ys[:, mask] - ys[:, mask]) ** 2).mean())
    return Evaluation(ys=out.ys, mse=mse, nfe=out.nfe, n_steps_mean=float(np.mean(out.n_steps)),
                      predict_time_s=best, predict_cpu_s=best_cpu)


# --------------------------------------------------------------------------------------------------
# The `node` method: case-file sections and run
# --------------------------------------------------------------------------------------------------


class NetworkConfig(Strict):
    """The dynamics MLP."""

    width: int = Field(50, ge=1, le=4096)
    depth: int = Field(1, ge=1, le=16)
    activation: Literal["tanh", "softplus", "silu", "relu"] = "tanh"
    cube_input: bool = False
    time_input: bool = False


class SolverConfig(Strict):
    """Adaptive Tsit5: tolerances and the step limit (``rtol`` in [1e-13, 1), ``atol`` in [0, 1))."""

    rtol: float = Field(1e-5, ge=1e-13, lt=1)
    atol: float = Field(1e-7, ge=0, lt=1)
    max_steps: int = Field(5000, ge=1)
    dt_min: float = Field(0.0, ge=0)
    differentiate_step_size: bool = False


class LambdaConfig(Strict):
    """Regulariser weight ``start -> end`` decaying exponentially over the epochs (``end`` omitted: constant)."""

    start: float = Field(1.0, ge=0)
    end: float | None = Field(None, gt=0)


class TrainConfig(Strict):
    epochs: int = Field(300, ge=1)
    lr: float = Field(1e-2, gt=0, lt=10)
    lr_decay: Literal["none", "cosine"] = "none"
    batch: int = Field(0, ge=0)
    checkpoint_every: int = Field(50, ge=1)
    resume: bool = False


class SpiralDataConfig(Strict):
    """The cubic spiral ``u' = (u^3)^T A`` from ``u0 = [2, 0] + spread * N(0, I)``."""

    type: Literal["spiral"] = "spiral"
    trajectories: int = Field(16, ge=1)
    test_trajectories: int = Field(16, ge=1)
    points: int = Field(30, ge=2)
    t_end: float = Field(1.5, gt=0)
    spread: float = Field(0.2, ge=0)
    noise: float = Field(0.0, ge=0)


class ReducedFEMDataConfig(Strict):
    """POD coefficients of the FEM reference's snapshots (a transient PDE with ``reference.time.save_every``)."""

    type: Literal["fem_pod"] = "fem_pod"
    modes: int = Field(6, ge=1, le=64)
    holdout: Literal["odd", "none"] = "odd"


class NODEConfig(MethodConfig):
    type: Literal["node"] = "node"
    data: SpiralDataConfig | ReducedFEMDataConfig = Field(default_factory=SpiralDataConfig, discriminator="type")
    regulariser: Literal["none", "ernode", "srnode", "both"] = "none"
    lam: LambdaConfig = LambdaConfig()
    steer: float = Field(0.0, ge=0, lt=1)
    network: NetworkConfig = NetworkConfig()
    solver: SolverConfig = SolverConfig()
    train: TrainConfig = TrainConfig()


@register
class NODEMethod(Method):
    """A regularised neural ODE fitted to trajectories: the spiral toy, or POD coefficients of a FEM run."""

    name = "node"
    config_model = NODEConfig
    needs_problem = False
    plot_names = ("nfe", "trajectories")

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        from ..fileio import write_text
        from . import node_data

        cfg: NODEConfig = self.config
        pod = None
        if isinstance(cfg.data, SpiralDataConfig):
            d = cfg.data
            data = node_data.spiral_data(d.trajectories, d.test_trajectories, d.points, d.t_end, d.spread,
                                         d.noise, seed=ctx.seed)
        else:
            if reference is None:
                raise CaseError("data type fem_pod learns from the FEM reference's snapshots, but there is none",
                                field="method.data.type", fix="give the case a transient pde and a reference")
            times, values = node_data.heat_snapshots(reference)
            pod = node_data.POD.fit(values, cfg.data.modes)
            data = node_data.reduced_data(times, values, pod, cfg.data.holdout)
        dim = data.train.shape[2]
        net = cfg.network
        model = NeuralODE(ODEFunc(dim, net.width, net.depth, net.activation, net.cube_input, net.time_input),
                          SolverSettings(**cfg.solver.model_dump())).double().to(ctx.device)
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=ctx.device)  # noqa: E731
        t = as_t(data.t)
        settings = TrainSettings(epochs=cfg.train.epochs, lr=cfg.train.lr, lr_decay=cfg.train.lr_decay,
                                 regulariser=cfg.regulariser,
                                 lam=LambdaSchedule(cfg.lam.start, cfg.lam.end, cfg.train.epochs), steer=cfg.steer,
                                 batch=cfg.train.batch, checkpoint_every=cfg.train.checkpoint_every)
        ckpt = None if ctx.checkpoint_dir is None else ctx.checkpoint_dir / "node_last.pt"
        ckpt_config = {"dim": dim, "network": net.model_dump(), "data": cfg.data.model_dump()}
        trained = train_node(model, t, as_t(data.train), settings, mask=torch.as_tensor(data.train_mask),
                             seed=ctx.seed, progress=ctx.progress, checkpoint_path=ckpt,
                             checkpoint_config=ckpt_config, resume=cfg.train.resume)
        ev = evaluate_node(model, t, as_t(data.test), torch.as_tensor(data.test_mask))
        metrics: dict[str, Any] = {
            "regulariser": cfg.regulariser, "steer": cfg.steer, "test_mse": ev.mse, "test_nfe": ev.nfe,
            "test_steps_mean": ev.n_steps_mean, "predict_time_s": ev.predict_time_s,
            "predict_cpu_s": ev.predict_cpu_s,
            "train_time_s": trained.train_time_s, "train_cpu_s": trained.train_cpu_s, "epochs": trained.epochs_done,
            "train_nfe_first": trained.history["nfe"][0] if trained.history["nfe"] else None,
            "train_nfe_last": trained.history["nfe"][-1] if trained.history["nfe"] else None,
            "train_mse_last": trained.history["mse"][-1] if trained.history["mse"] else None}
        files: list[Path] = [] if trained.checkpoint is None else [trained.checkpoint]
        field_out = None
        if pod is not None:
            predicted = pod.reconstruct(ev.ys[0].cpu().numpy())
            truth = values
            mask = data.test_mask.copy()
            mask[0] = False
            rel = np.linalg.norm(predicted[mask] - truth[mask], axis=1) / np.maximum(
                np.linalg.norm(truth[mask], axis=1), np.finfo(float).tiny)
            projected = pod.reconstruct(pod.coefficients(truth))
            floor = np.linalg.norm(projected - truth, axis=1) / np.maximum(np.linalg.norm(truth, axis=1),
                                                                             np.finfo(float).tiny)
            metrics.update({"pod_modes": int(pod.modes.shape[1]), "pod_energy": pod.energy,
                            "test_rel_l2_dofs_mean": float(rel.mean()), "test_rel_l2_dofs_max": float(rel.max()),
                            "pod_projection_rel_l2_max": float(floor.max())})
            field_out = reference.field.with_values(predicted[-1], name="u")
        if ctx.out_dir is not None and ctx.rank == 0:
            import json

            files.append(write_text(ctx.out_dir / "node_history.json", json.dumps(trained.history)))
            files += _plots(ctx, trained.history, data, ev)
        return MethodResult(field=field_out, metrics=metrics, files=files)


def _plots(ctx: RunContext, history: dict[str, list[float]], data: Any, ev: Evaluation) -> list[Path]:
    from .. import viz

    out: list[Path] = []
    epochs = np.arange(1, len(history["nfe"]) + 1)
    if "nfe" in ctx.plots:
        out.append(viz.line_plot({"training NFE": (epochs, history["nfe"])}, ctx.out_dir / "node_nfe.png",
                                 xlabel="epoch", ylabel="NFE per forward solve", title="solver cost during training"))
    if "trajectories" in ctx.plots:
        pred = ev.ys.cpu().numpy()
        plt = viz._pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        phase = pred.shape[2] == 2
        curves = [(i, 0) for i in range(min(3, pred.shape[0]))] if phase else \
            [(0, j) for j in range(min(4, pred.shape[2]))]
        for n, (i, j) in enumerate(curves):
            color = f"C{n}"
            x_data, x_model = (data.test[i, :, 0], pred[i, :, 0]) if phase else (data.t, data.t)
            y_data, y_model = (data.test[i, :, 1], pred[i, :, 1]) if phase else (data.test[i, :, j], pred[i, :, j])
            label = f"trajectory {i}" if phase else f"mode {j}"
            ax.plot(x_data, y_data, "o", color=color, ms=3, label=f"{label}: data")
            ax.plot(x_model, y_model, "-", color=color, label=f"{label}: model")
        ax.set_xlabel("u1" if phase else "t")
        ax.set_ylabel("u2" if phase else "scaled POD coefficient")
        ax.set_title("test trajectories: data (dots) vs model (lines)")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
        out.append(viz.save_figure(fig, ctx.out_dir / "node_trajectories.png"))
    return out
