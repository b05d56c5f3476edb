"""The ``operator`` method: generate (or reuse) a dataset, train MgNO or FNO, evaluate on held-out samples.

The case's PDE (``darcy``, ``helmholtz``) supplies the coefficient sampler; its own instance (``pde.sample``)
is predicted and compared with the FEM reference by the runner. A case section::

    method:
      type: operator
      model: {type: mgno, channels: 16, num_layers: 3, iterations: "10 10 10 10 20"}
      data: {resolution: 64, n_train: 1000, n_val: 100, n_test: 100, seed: 0}
      train: {epochs: 100, batch_size: 8, lr: 1.0e-3, loss: h1}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field

from ..errors import CaseError
from .fem.fields import FEField
from .method import Method, MethodConfig, MethodResult, RunContext, Strict, register
from .operator_training import (
    Distributed,
    TrainConfig,
    build_model,
    evaluate,
    model_config,
    num_parameters,
    predict,
)


class MgNOModel(Strict):
    """MgNO (see ``neuralpde.operators.mgno``); ``iterations`` in the paper's spelling or as pairs."""

    type: Literal["mgno"]
    channels: int = Field(16, ge=1)
    num_layers: int = Field(3, ge=1)
    iterations: str | list[list[int]] = "10 10 10 10 20"
    padding_mode: Literal["zeros", "circular", "reflect", "replicate"] = "zeros"
    restrict_padding: Literal[0, 1] = 1
    use_res: bool = False
    variant: Literal["dc", "ns"] = "dc"


class FNOModel(Strict):
    """neuraloperator's FNO; ``modes`` per direction as in the FNO paper."""

    type: Literal["fno"]
    modes: int = Field(12, ge=1)
    width: int = Field(32, ge=1)
    layers: int = Field(4, ge=1)


class DataSection(Strict):
    """The dataset: ``path`` (default ``<out>/data/<pde>_n<res>_s<seed>_N<total>.h5``), split sizes, seed."""

    path: str | None = None
    generate: bool = True
    resolution: int | None = Field(None, ge=4)
    n_train: int = Field(1000, ge=1)
    n_val: int = Field(100, ge=1)
    n_test: int = Field(100, ge=1)
    seed: int = 0
    workers: int = Field(1, ge=1)
    chunk: int = Field(50, ge=1)
    on_bad_sample: Literal["error", "skip"] = "error"


class TrainSection(Strict):
    """Adam + OneCycle (stepped per epoch), relative L2 or H1 loss; ``budget_minutes`` caps wall-clock time."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["l2", "h1"] = "h1"
    pct_start: float = Field(0.2, gt=0, lt=1)
    div_factor: float = Field(2.0, gt=0)
    final_div_factor: float = Field(100.0, gt=0)
    budget_minutes: float | None = Field(None, gt=0)
    budget_clock: Literal["wall", "cpu"] = "wall"
    resume: bool = True
    threads: int | None = Field(None, ge=1)


class OperatorConfig(MethodConfig):
    type: Literal["operator"] = "operator"
    model: Annotated[MgNOModel | FNOModel, Field(discriminator="type")]
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    normalize_input: Literal["pointwise", "global", "none"] = "pointwise"
    normalize_output: Literal["pointwise", "global", "none"] = "pointwise"
    samples: int = Field(3, ge=0, le=20)


def grid_mesh(n: int):
    """The P1 mesh whose vertices are the ``n x n`` grid of the unit square (vertex ``j*n + i`` = grid ``[j, i]``)."""
    from ..meshes import rectangle

    return rectangle(cells=[n - 1, n - 1])


@register
class OperatorMethod(Method):
    """Neural operator learning on FEM-generated data (MgNO or FNO)."""

    name = "operator"
    config_model = OperatorConfig
    plot_names = ("samples",)

    def run(self, problem: Any, reference: Any, ctx: RunContext) -> MethodResult:
        from .datasets import generate_dataset, load_dataset

        cfg: OperatorConfig = self.config
        pde = problem.pde
        if not hasattr(pde, "sample_input"):
            raise CaseError(f"the operator method needs a PDE with a coefficient sampler, not {pde.name!r}",
                            field="pde.type", fix="use type: darcy or helmholtz")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        d = cfg.data
        n = d.resolution or pde.grid
        total = d.n_train + d.n_val + d.n_test
        out_dir = Path(ctx.out_dir or ".")
        path = Path(d.path) if d.path else out_dir / "data" / f"{pde.name}_n{n}_s{d.seed}_N{total}.h5"
        dist = Distributed.from_env(ctx.device)
        expect = {"pde": pde.name, "resolution": n, "seed": d.seed,
                  "generator": _generator_json(pde)}
        if d.generate and dist.rank == 0:
            if path.exists():
                load_attrs_only(path, expect)
            generate_dataset(path, pde, resolution=n, num_samples=max(total, _existing_size(path)), seed=d.seed,
                             chunk=d.chunk, workers=d.workers, progress=ctx.progress)
        if dist.world > 1:
            torch.distributed.barrier()
        split = np.cumsum([0, d.n_train, d.n_val, d.n_test])
        train, val, test = (load_dataset(path, expect=expect, start=int(split[i]), stop=int(split[i + 1]),
                                         on_bad=d.on_bad_sample) for i in range(3))
        torch.manual_seed(ctx.seed)
        spec = cfg.model.model_dump()
        net = build_model(spec, grid=n)
        t = cfg.train
        tc = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                         loss=t.loss, pct_start=t.pct_start, div_factor=t.div_factor,
                         final_div_factor=t.final_div_factor, normalize_input=cfg.normalize_input,
                         normalize_output=cfg.normalize_output,
                         budget_s=None if t.budget_minutes is None else 60 * t.budget_minutes,
                         budget_clock=t.budget_clock, resume=t.resume)
        from .operator_training import train_operator

        result = train_operator(net, model_config(net, spec), (train.a, train.u), (val.a, val.u), tc,
                                checkpoint_dir=ctx.checkpoint_dir, device=ctx.device, seed=ctx.seed,
                                progress=ctx.progress, extra_config={"data": expect})
        model = result.model
        a_test, u_test = torch.as_tensor(test.a), torch.as_tensor(test.u)
        test_l2, test_h1 = evaluate(model, a_test, u_test, device=ctx.device)
        infer_s = _inference_seconds(model, test.a, ctx.device)
        metrics = {"model": cfg.model.type, "parameters": num_parameters(net), "resolution": n,
                   "dataset": str(path), "n_train": len(train.a), "n_test": len(test.a),
                   "skipped_samples": train.skipped + val.skipped + test.skipped,
                   "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                   "val_rel_l2": result.best_val, "seconds_per_epoch": result.seconds_per_epoch,
                   "train_seconds": result.train_seconds, "test_rel_l2": test_l2, "test_rel_h1": test_h1,
                   "inference_s_per_sample": infer_s, "fem_s_per_sample": float(np.mean(test.fem_seconds)),
                   "history": result.history}
        if ctx.rank != 0:
            return MethodResult(field=None, metrics=metrics)
        files = [result.checkpoint] if result.checkpoint else []
        if dist.rank == 0:     # torchrun ranks > 0 return the same field (the runner writes it atomically)
            files += self._sample_outputs(model, test, n, out_dir, ctx)
        instance = predict(model, pde.input[None], device=ctx.device)[0]
        mesh = grid_mesh(pde.input.shape[0])
        field = FEField(mesh, 1, instance.astype(float).ravel(), name="u")
        coefficient = field.with_values(pde.input.ravel(), name="coefficient")
        return MethodResult(field=field, metrics=metrics, extra_fields={"coefficient": coefficient}, files=files)

    def _sample_outputs(self, model: Any, test: Any, n: int, out_dir: Path, ctx: RunContext) -> list[Path]:
        """Error fields of the first test samples as XDMF (ParaView) and, when asked, a PNG panel."""
        from ..cases import outputs

        k = min(self.config.samples, len(test.a))
        if k == 0:
            return []
        pred = predict(model, test.a[:k], device=ctx.device)
        mesh = grid_mesh(n)
        data: dict[str, np.ndarray] = {}
        for i in range(k):
            idx = int(test.indices[i])
            data[f"coefficient_{idx}"] = test.a[i].ravel()
            data[f"reference_{idx}"] = test.u[i].ravel()
            data[f"prediction_{idx}"] = pred[i].ravel()
            data[f"error_{idx}"] = (pred[i] - test.u[i]).ravel()
        suffix = "xdmf" if outputs.hdf5_available() else "vtu"
        files = [outputs.write_fields(out_dir / f"test_samples.{suffix}", mesh.points, mesh.cells, "triangle", data)]
        if "samples" in ctx.plots:
            from ..viz import image_panels

            for i in range(k):
                idx = int(test.indices[i])
                panels = {"coefficient": test.a[i], "FEM reference": test.u[i], "prediction": pred[i],
                          "error": pred[i] - test.u[i]}
                files.append(image_panels(panels, out_dir / f"sample_{idx}.png", extent=(0, 1, 0, 1),
                                          title=f"test sample {idx}"))
        return files


def _generator_json(pde: Any) -> str:
    import json

    return json.dumps(pde.generator_attributes(), sort_keys=True)


def _existing_size(path: Path) -> int:
    if not path.exists():
        return 0
    import h5py

    with h5py.File(path, "r") as f:
        return int(f.attrs.get("num_samples", 0))


def load_attrs_only(path: Path, expect: dict[str, Any]) -> None:
    """Check an existing file's attributes against the case before (re)using it."""
    import h5py

    from .datasets import check_attributes

    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    check_attributes(attrs, expect, file=str(path), keys=tuple(expect))


def _inference_seconds(model: Any, a: np.ndarray, device: str, batch_size: int = 32) -> float:
    """Seconds per sample of batched inference (after one warm-up batch)."""
    predict(model, a[:batch_size], device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    predict(model, a, device=device, batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / max(len(a), 1)

