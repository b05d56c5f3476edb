"""Trajectory data for neural ODEs: the paper's cubic spiral, and a POD-reduced FEM reaction–diffusion run.

    >>> data = spiral_data(n_train=2, n_test=1, points=5, spread=0.1, seed=0)
    >>> data.train.shape, data.test.shape, bool(np.allclose(data.train[0, 0], [2.0, 0.0]))
    ((2, 5, 2), (1, 5, 2), True)

A reduced model (:class:`POD`) turns FEM snapshots into a few coefficients per time; a neural ODE
learns their dynamics and :meth:`POD.reconstruct` puts a rolled-out state back on the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CaseError

#: the spiral's matrix: u' = (u**3)^T A (DiffEqFlux / RegNeuralDE toy)
SPIRAL_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


@dataclass
class TrajectoryData:
    """Trajectories observed at shared times.

    Attributes:
        t: ``(T,)`` observation times, ``t[0]`` the initial time.
        train: ``(N, T, d)`` training trajectories.
        test: ``(M, T, d)`` test trajectories (rolled out from ``test[:, 0]``).
        train_mask: ``(T,)`` times that enter the training loss.
        test_mask: ``(T,)`` times scored as test error.
    """

    t: np.ndarray
    train: np.ndarray
    test: np.ndarray
    train_mask: np.ndarray
    test_mask: np.ndarray


def spiral_rhs(_t: float, u: np.ndarray) -> np.ndarray:
    """``u' = (u**3)^T A``."""
    return (u**3) @ SPIRAL_A


def spiral_data(n_train: int = 1, n_test: int = 16, points: int = 30, t_end: float = 1.5,
                spread: float = 0.2, noise: float = 0.0, seed: int = 0) -> TrajectoryData:
    """Trajectories of the cubic spiral from ``u0 = [2, 0] + spread * N(0, I)``.

    The first training trajectory starts exactly at ``[2, 0]`` (the paper's single-trajectory task when
    ``n_train=1``); test trajectories start at other draws. Solved with DOP853 at ``rtol=1e-10``.

    Args:
        n_train, n_test: numbers of trajectories.
        points: observation times, evenly spaced on ``[0, t_end]``.
        t_end: final time.
        spread: standard deviation of the initial-state perturbation.
        noise: standard deviation of observation noise added to the training data.
        seed: random seed of the draws.
    """
    from scipy.integrate import solve_ivp

    if n_train < 1 or n_test < 1 or points < 2:
        raise CaseError("the spiral needs at least 1 training and 1 test trajectory and 2 points",
                        field="method.data", fix="e.g. trajectories: 16, test_trajectories: 16, points: 30")
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, t_end, points)
    u0 = np.array([2.0, 0.0]) + spread * rng.standard_normal((n_train + n_test, 2))
    u0[0] = [2.0, 0.0]
    ys = np.stack([solve_ivp(spiral_rhs, (0.0, t_end), y0, method="DOP853", t_eval=t, rtol=1e-10,
                             atol=1e-12).y.T for y0 in u0])
    train = ys[:n_train] + noise * rng.standard_normal(ys[:n_train].shape)
    train[:, 0] = ys[:n_train, 0]
    everywhere = np.ones(points, dtype=bool)
    return TrajectoryData(t=t, train=train, test=ys[n_train:], train_mask=everywhere, test_mask=everywhere.copy())


@dataclass
class POD:
    """Proper orthogonal decomposition of snapshots ``u(t_i)``: ``u ≈ mean + modes @ (scale * a)``.

    Attributes:
        mean: ``(n,)`` mean snapshot.
        modes: ``(n, r)`` orthonormal modes (Euclidean on the dof vector).
        scale: one number making the coefficients O(1) (their largest standard deviation).
        energy: fraction of the snapshot variance the ``r`` modes keep.
    """

    mean: np.ndarray
    modes: np.ndarray
    scale: float
    energy: float

    @classmethod
    def fit(cls, snapshots: np.ndarray, rank: int) -> POD:
        """Modes of ``snapshots`` (``(T, n)``) by an SVD of the centred snapshot matrix."""
        if snapshots.ndim != 2 or snapshots.shape[0] < 3:
            raise CaseError(f"need at least 3 snapshots for a reduced model, got {snapshots.shape[0]}",
                            field="reference.time.save_every", fix="store more snapshots, e.g. save_every: 2")
        rank = min(rank, snapshots.shape[0] - 1)
        mean = snapshots.mean(axis=0)
        u, s, vt = np.linalg.svd(snapshots - mean, full_matrices=False)
        modes = vt[:rank].T
        coeffs = (snapshots - mean) @ modes
        scale = float(coeffs.std(axis=0).max()) or 1.0
        energy = float((s[:rank] ** 2).sum() / max((s**2).sum(), np.finfo(float).tiny))
        return cls(mean=mean, modes=modes, scale=scale, energy=energy)

    def coefficients(self, snapshots: np.ndarray) -> np.ndarray:
        """Scaled coefficients ``(T, r)`` of snapshots ``(T, n)``."""
        return (snapshots - self.mean) @ self.modes / self.scale

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        """Dof vectors ``(..., n)`` from scaled coefficients ``(..., r)``."""
        return self.mean + (np.asarray(coefficients) * self.scale) @ self.modes.T


def reduced_data(times: np.ndarray, snapshots: np.ndarray, pod: POD, holdout: str = "odd") -> TrajectoryData:
    """One trajectory of POD coefficients; training on even-indexed times, test error on the odd ones.

    Args:
        times: ``(T,)`` snapshot times.
        snapshots: ``(T, n)`` dof vectors.
        pod: the reduced basis.
        holdout: ``odd`` (interpolation: score the odd-indexed times) or ``none`` (score all times).
    """
    coeffs = pod.coefficients(snapshots)[None]
    index = np.arange(len(times))
    train_mask = index % 2 == 0 if holdout == "odd" else np.ones(len(times), dtype=bool)
    test_mask = ~train_mask if holdout == "odd" else train_mask.copy()
    return TrajectoryData(t=np.asarray(times, dtype=float), train=coeffs, test=coeffs.copy(),
                          train_mask=train_mask, test_mask=test_mask)


def heat_snapshots(reference) -> tuple[np.ndarray, np.ndarray]:
    """``(times, values)`` of a transient FEM reference (its ``snapshots``), checked for use as data."""
    snaps = list(getattr(reference, "snapshots", None) or [])
    if len(snaps) < 3:
        raise CaseError(f"the FEM reference stored {len(snaps)} snapshots; a reduced model needs at least 3",
                        field="reference.time.save_every",
                        fix="set reference.time.save_every (e.g. 2) on a time-dependent PDE such as heat")
    times = np.array([t for t, _ in snaps], dtype=float)
    values = np.stack([np.asarray(v, dtype=float) for _, v in snaps])
    return times, values
