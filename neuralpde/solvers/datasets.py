"""Operator-learning datasets: random coefficients and their P1 finite-element solutions on a grid.

Sample ``i`` draws its coefficient from ``numpy.random.default_rng([seed, i])``, builds the structured
P1 mesh of the unit square whose vertices are the ``n x n`` grid (so nodal values are grid values),
and solves ``-div(k grad u) + c u = f`` with ``u = 0`` on the boundary, assembled with the same
scikit-fem form as the reference backend. Samples go to HDF5 chunk by chunk; a killed generation
resumes at the first unfinished chunk; chunks fan out over processes (``workers``) and MPI ranks::

    from neuralpde.pde.darcy import Darcy
    generate_dataset("darcy64.h5", Darcy(), resolution=64, num_samples=1200, seed=0, workers=2)
    data = load_dataset("darcy64.h5", expect={"pde": "darcy", "resolution": 64})
    data.a.shape, data.u.shape        # (1200, 64, 64) each
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, parallel
from ..errors import CaseError, SolverError
from ..progress import SILENT, Progress

FORMAT = "neuralpde-operator-dataset-1"


def build_pde(attributes: dict[str, Any], grid: int = 4) -> Any:
    """The PDE (sampler and coefficients) described by a dataset's generator attributes."""
    from ..pde import PDES

    name = attributes["pde"]
    if name not in PDES or not hasattr(PDES[name], "sample_input"):
        raise CaseError(f"{name!r} is not a PDE with a random-coefficient sampler", field="pde.type",
                        fix="use darcy or helmholtz")
    kwargs = {k: v for k, v in attributes.items() if k != "pde"}
    return PDES[name](**kwargs, grid=grid)


class GridSolver:
    """P1 solves on the ``n x n`` grid of the unit square (mesh, basis and load assembled once)."""

    def __init__(self, pde: Any, n: int):
        import skfem
        from skfem.models.poisson import mass

        from ..meshes import rectangle
        from ..meshes.convert import to_skfem

        self.pde, self.n = pde, n
        self.mesh = rectangle(cells=[n - 1, n - 1])
        skmesh = to_skfem(self.mesh)
        self.basis = skfem.Basis(skmesh, skfem.ElementTriP1(), intorder=3)   # exact for P1 k, c
        self.free = skmesh.interior_nodes()
        f = np.asarray(pde.f.numpy(self.mesh.points.T, params=pde.params), dtype=float)
        self.load = (mass.assemble(self.basis) @ np.broadcast_to(f, (self.basis.N,)))[self.free]

    def solve(self, a: np.ndarray) -> np.ndarray:
        """The nodal solution ``(n, n)`` for the input grid ``a`` ``(n, n)``."""
        import scipy.sparse.linalg as spla
        import skfem
        from skfem.helpers import dot, grad

        @skfem.BilinearForm
        def operator(u, v, w):
            return w.k * dot(grad(u), grad(v)) + w.c * u * v

        k, c = self.pde.nodal_coefficients(a)
        interp = self.basis.interpolate
        K = operator.assemble(self.basis, k=interp(k.ravel()), c=interp(c.ravel()))
        u = np.zeros(self.basis.N)
        u[self.free] = spla.spsolve(K[self.free][:, self.free].tocsc(), self.load)
        return u.reshape(self.n, self.n)


def _solve_chunk(attributes: dict[str, Any], n: int, seed: int, indices: list[int]) -> dict[str, np.ndarray]:
    """Worker: draw and solve samples ``indices`` (a top-level function so process pools can send it)."""
    from .datasets import GridSolver, build_pde, sample_rng_for

    pde = build_pde(attributes)
    solver = GridSolver(pde, n)
    a = np.empty((len(indices), n, n))
    u = np.empty_like(a)
    seconds = np.empty(len(indices))
    for j, i in enumerate(indices):
        a[j] = pde.sample_input(sample_rng_for(seed, i), n)
        t0 = time.perf_counter()
        u[j] = solver.solve(a[j])
        seconds[j] = time.perf_counter() - t0
    return {"indices": np.asarray(indices), "a": a, "u": u, "seconds": seconds}


def sample_rng_for(seed: int, index: int) -> np.random.Generator:
    from ..pde.darcy import sample_rng

    return sample_rng(seed, index)


def dataset_attributes(pde: Any, resolution: int, num_samples: int, seed: int) -> dict[str, Any]:
    """The attributes that identify a dataset (compared when a generation resumes or a case reuses it)."""
    return {"format": FORMAT, "resolution": int(resolution), "num_samples": int(num_samples), "seed": int(seed),
            "generator": json.dumps(pde.generator_attributes(), sort_keys=True), "pde": pde.name}


def generate_dataset(path: str | Path, pde: Any, *, resolution: int, num_samples: int, seed: int = 0,
                     chunk: int = 32, workers: int = 1, progress: Progress = SILENT) -> Path:
    """Generate (or finish) a dataset file.

    Args:
        path: the HDF5 file; if it exists with the same attributes, unfinished chunks are completed.
        pde: a PDE with ``sample_input``/``nodal_coefficients`` (:class:`~neuralpde.pde.darcy.Darcy`).
        resolution: grid nodes per side ``n``.
        num_samples: number of samples.
        seed: the sampler's seed.
        chunk: samples per HDF5 chunk (the unit of work and of resumption).
        workers: processes per MPI rank.
        progress: progress reporter.

    Returns:
        The path. Under MPI every rank computes chunks and rank 0 writes.

    Raises:
        CaseError: the file exists with other attributes (another PDE, resolution, seed or size).
    """
    path = Path(path)
    attrs = dataset_attributes(pde, resolution, num_samples, seed)
    gen = json.loads(attrs["generator"])
    rank, size = parallel.rank(), parallel.size()
    todo = None
    if rank == 0:
        todo = _open_for_writing(path, attrs, chunk)
    todo = parallel.bcast(todo)
    jobs = [list(range(c * chunk, min((c + 1) * chunk, num_samples))) for c in todo]
    if not jobs:
        return path
    with progress.task(f"dataset {path.name} ({num_samples} samples, {resolution}x{resolution})",
                       total=num_samples) as advance:
        advance(num_samples - sum(len(j) for j in jobs))
        for results in _compute(jobs, gen, resolution, seed, workers, rank, size):
            if rank == 0:
                _write_chunks(path, results)
                advance(sum(len(r["indices"]) for r in results))
    return path


def _compute(jobs: list[list[int]], gen: dict, n: int, seed: int, workers: int, rank: int, size: int):
    """Yield lists of finished chunks (on rank 0: everyone's chunks of one round; elsewhere: ``[]``)."""
    comm = parallel.comm()
    rounds = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    if size == 1 and workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(_solve_chunk, [gen] * len(jobs), [n] * len(jobs), [seed] * len(jobs), jobs):
                yield [result]
        return
    for batch in rounds:
        mine = _solve_chunk(gen, n, seed, batch[rank]) if rank < len(batch) else None
        gathered = [mine] if size == 1 else comm.gather(mine, root=0)
        yield [r for r in (gathered or []) if r is not None] if rank == 0 else []


def _open_for_writing(path: Path, attrs: dict[str, Any], chunk: int) -> list[int]:
    """Create the file, or check an existing one; return the chunks still to compute."""
    import h5py

    n, N = attrs["resolution"], attrs["num_samples"]
    if path.exists():
        with h5py.File(path, "r") as f:
            check_attributes(dict(f.attrs), attrs, file=str(path), keys=tuple(attrs))
            done = f["done"][:].astype(bool)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["version"] = __version__
            f.attrs["chunk"] = chunk
            for name in ("a", "u"):
                f.create_dataset(name, shape=(N, n, n), dtype="float32", chunks=(min(chunk, N), n, n))
            f.create_dataset("fem_seconds", shape=(N,), dtype="float64")
            f.create_dataset("done", shape=(N,), dtype="uint8")
        done = np.zeros(N, dtype=bool)
    chunk = int(chunk)
    return [c for c in range(-(-N // chunk)) if not done[c * chunk:(c + 1) * chunk].all()]


def _write_chunks(path: Path, results: list[dict[str, np.ndarray]]) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        for r in results:
            idx = r["indices"]
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            f["a"][sl] = r["a"]
            f["u"][sl] = r["u"]
            f["fem_seconds"][sl] = r["seconds"]
            f.flush()
            f["done"][sl] = 1           # last: a chunk killed mid-write is redone on resume


def check_attributes(have: dict[str, Any], want: dict[str, Any], *, file: str, keys: tuple[str, ...],
                     field_prefix: str = "method.data") -> None:
    """Raise a :class:`CaseError` naming the first key whose value differs."""
    for key in keys:
        if key not in want:
            continue
        got = have.get(key)
        if isinstance(got, bytes):
            got = got.decode()
        if isinstance(got, np.generic):
            got = got.item()
        if got != want[key]:
            raise CaseError(f"dataset has {key}={got!r}, the case needs {key}={want[key]!r}", file=file,
                            field=f"{field_prefix}.{key}" if key in ("resolution", "seed") else field_prefix,
                            fix="point method.data.path to a matching file, or delete it to regenerate")


@dataclass
class Dataset:
    """Inputs ``a`` and solutions ``u`` (``(N, n, n)`` float32) with the file's attributes."""

    a: np.ndarray
    u: np.ndarray
    attrs: dict[str, Any]
    indices: np.ndarray
    fem_seconds: np.ndarray
    skipped: list[int] = field(default_factory=list)


def load_dataset(path: str | Path, *, expect: dict[str, Any] | None = None, start: int = 0, stop: int | None = None,
                 on_bad: str = "error") -> Dataset:
    """Read samples ``start:stop`` of a dataset, checking its attributes and values.

    Args:
        path: the HDF5 file.
        expect: attribute values the caller needs (``pde``, ``resolution``, ``generator`` ...).
        start, stop: the sample range.
        on_bad: ``error`` (refuse a sample with NaN/inf, naming its index) or ``skip`` (drop it, listed in
            ``Dataset.skipped``).

    Raises:
        CaseError: missing file, unfinished generation, mismatched attributes, too few samples, bad values.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CaseError("dataset file not found", file=str(path), field="method.data.path",
                        fix="set method.data.generate: true, or run the generation first")
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
                 for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise CaseError("not a neuralpde operator dataset", file=str(path), field="method.data.path",
                            fix="point to a file written by neuralpde's dataset generator")
        check_attributes(attrs, expect or {}, file=str(path), keys=tuple((expect or {}).keys()))
        total = int(attrs["num_samples"])
        stop = total if stop is None else stop
        if stop > total:
            raise CaseError(f"dataset holds {total} samples, the case needs {stop}", file=str(path),
                            field="method.data", fix="generate a larger dataset or use fewer samples")
        done = f["done"][start:stop].astype(bool)
        if not done.all():
            raise CaseError(f"dataset generation is unfinished ({int((~done).sum())} samples missing)",
                            file=str(path), field="method.data.path",
                            fix="run the generation again: it resumes where it stopped")
        a, u = f["a"][start:stop], f["u"][start:stop]
        seconds = f["fem_seconds"][start:stop]
    indices = np.arange(start, stop)
    finite = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(u).all(axis=(1, 2))
    bad = indices[~finite].tolist()
    if bad and on_bad != "skip":
        raise SolverError(f"samples {bad[:10]}{' ...' if len(bad) > 10 else ''} contain NaN or inf",
                          file=str(path), field="method.data.on_bad_sample",
                          fix="regenerate them, or set method.data.on_bad_sample: skip")
    return Dataset(a[finite], u[finite], attrs, indices[finite], seconds[finite], bad)
