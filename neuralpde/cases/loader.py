"""Reading case files: YAML (``safe_load`` only), overrides, validation with errors that say where.

    >>> case = load_case_text("name: t\\npde: {type: poisson, source: 1}\\ndomain: {type: interval}\\n"
    ...                       "boundary: [{where: all, dirichlet: 0}]", overrides=["reference.degree=1"])
    >>> case.config.reference.degree
    1
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import CaseError, NeuralPDEError
from ..meshes.domains import Box, Hypercube, Interval, MeshFile, Polygon, Rectangle
from ..pde import PDES, BoundaryCondition, Problem
from ..pde.base import PDE
from ..solvers.method import METHODS
from .schema import RUNNER_PLOTS, case_model


@dataclass
class Case:
    """A validated case. Set ``pde`` to a :class:`~neuralpde.PDE` instance to run your own PDE."""

    config: Any
    path: Path | None = None
    pde: PDE | None = None
    raw: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "<case>"

    @property
    def has_reference(self) -> bool:
        """Whether the case asks for a FEM reference (``reference: none`` does not)."""
        return self.config.pde is not None and not isinstance(self.config.reference, str | None)

    def problem(self) -> Problem | None:
        """The :class:`~neuralpde.Problem` this case defines (``None`` for a case without ``pde``)."""
        cfg = self.config
        if cfg.pde is None and self.pde is None:
            return None
        try:
            domain = build_domain(cfg.domain, self.path)
            pde = self.pde or build_pde(cfg, domain.dim)
            bcs = []
            for b in cfg.boundary:
                if b.robin is not None:
                    bcs.append(BoundaryCondition(b.where, "robin", b.robin.value, b.robin.alpha))
                else:
                    kind = "dirichlet" if b.dirichlet is not None else "neumann"
                    bcs.append(BoundaryCondition(b.where, kind, getattr(b, kind)))
            exact = getattr(pde, "exact", None)
            if exact is None and cfg.exact is not None:
                from ..pde.expressions import Expression

                exact = Expression.parse(cfg.exact, getattr(pde, "params", {}), field="exact")
            return Problem(pde, domain, bcs, exact)
        except NeuralPDEError as exc:
            raise exc.located(file=self.source) from None


def build_domain(cfg: Any, case_path: Path | None):
    if cfg.type == "interval":
        return Interval(cfg.bounds)
    if cfg.type == "rectangle":
        return Rectangle(cfg.bounds, cfg.cell_type, cfg.diagonal)
    if cfg.type == "box":
        return Box(cfg.bounds, cfg.cell_type)
    if cfg.type == "hypercube":
        bounds = cfg.bounds * cfg.dim if cfg.dim is not None and len(cfg.bounds) == 1 else cfg.bounds
        if cfg.dim is not None and len(bounds) != cfg.dim:
            raise CaseError(f"{len(bounds)} bounds given for dim {cfg.dim}", field="domain.bounds",
                            fix="give one [lo, hi] (used for every dimension) or exactly `dim` of them")
        return Hypercube(bounds)
    if cfg.type == "polygon":
        return Polygon(cfg.vertices)
    path = Path(cfg.path).expanduser()
    if not path.is_absolute() and case_path is not None:
        path = case_path.parent / path
    if not path.exists():
        raise CaseError(f"mesh file {str(path)!r} does not exist", field="domain.path",
                        fix="check the path; a relative path is relative to the case file")
    return MeshFile(path)


def build_pde(cfg: Any, dim: int) -> PDE:
    return PDES[cfg.pde.type].from_config(cfg.pde, exact=cfg.exact, dim=dim)


def check_case(config: Any, src: str) -> None:
    """Checks across sections that the schema alone cannot express.

    Raises:
        CaseError: naming the field and the fix.
    """
    method = METHODS[config.method.type] if config.method is not None else None
    needs_problem = method is None or method.needs_problem
    if config.pde is None and needs_problem:
        raise CaseError("required key missing", file=src, field="pde",
                        fix="add `pde: {type: ...}` (see cases/poisson.yaml for a complete example)")
    if config.pde is not None and config.domain is None:
        raise CaseError("required key missing", file=src, field="domain",
                        fix="add `domain: {type: rectangle}` (or interval, box, file)")
    no_reference = isinstance(config.reference, str | None)
    pde_has_exact = config.pde is not None and getattr(PDES.get(config.pde.type), "has_exact", False)
    if config.pde is not None and no_reference and config.exact is None and not pde_has_exact:
        raise CaseError("reference: none leaves nothing to compare with", file=src, field="reference",
                        fix="give `exact:` or remove `reference: none`")
    known = (*RUNNER_PLOTS, *(method.plot_names if method is not None else ()))
    for i, name in enumerate(config.output.plots):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            raise CaseError(f"unknown plot {name!r}", file=src, field=f"output.plots.{i}",
                            fix=(f"did you mean {close[0]!r}? " if close else "") + f"known plots: {', '.join(known)}")


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}`` (values are YAML)."""
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CaseError(f"override {item!r} is not KEY=VALUE", field="--set", fix="e.g. --set reference.degree=1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())   # one line, not yaml's
            raise CaseError(f"the value of override {item!r} is not valid YAML ({problem})", field=key.strip(),
                            fix="quote strings, e.g. --set 'pde.source=\"sin(x)\"'") from None
    return out


def apply_overrides(raw: dict, overrides: dict[str, Any], origin: str = "--set") -> dict:
    """Set dotted keys in a copy of ``raw`` (``method.train.lr``); list items by index (``boundary.0.where``)."""
    data = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node: Any = data
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, ".".join(parts[: i + 1]), origin)
                continue
            if not isinstance(node, dict):
                raise CaseError(f"cannot set {dotted!r}: {'.'.join(parts[:i]) or 'the case'} is not a mapping",
                                field=dotted, fix=f"check the key path of the {origin} override")
            node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            idx = int(last) if last.isdigit() else None
            if idx is None or idx >= len(node):
                raise CaseError(f"{dotted!r}: no list item {last!r}", field=dotted, fix="use an existing index")
            node[idx] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise CaseError(f"cannot set {dotted!r}: its parent is not a mapping", field=dotted,
                            fix=f"check the key path of the {origin} override")
    return data


def _list_item(node: list, part: str, path: str, origin: str) -> Any:
    if not part.isdigit() or int(part) >= len(node):
        raise CaseError(f"{path!r}: no list item {part!r}", field=path, fix=f"use an index below {len(node)}")
    return node[int(part)]


def load_case(path: str | Path, overrides: list[str] | dict[str, Any] | None = None,
              smoke: bool = False) -> Case:
    """Read, override and validate a case file.

    Args:
        path: the YAML case file.
        overrides: ``["reference.degree=1"]`` or ``{"reference.degree": 1}``, applied last.
        smoke: apply the case's own ``smoke:`` overrides first (a run of seconds).

    Raises:
        CaseError: the file is missing, not YAML, or does not validate; the message names the
            file, the field path and a fix.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError("case file not found", file=str(path),
                        fix="check the path; `neuralpde list` shows the shipped cases")
    return load_case_text(path.read_text(encoding="utf-8"), overrides, smoke, path=path)


def load_case_text(text: str, overrides: list[str] | dict[str, Any] | None = None, smoke: bool = False,
                   path: Path | None = None) -> Case:
    """:func:`load_case` for YAML text."""
    src = str(path) if path else "<case>"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CaseError(f"not valid YAML: {where}{problem}", file=src,
                        fix="check indentation, colons and quotes around expressions") from None
    if not isinstance(raw, dict):
        raise CaseError("a case file must be a YAML mapping (key: value lines)", file=src,
                        fix="start from one of the files in cases/")
    data = raw
    try:
        if smoke:
            data = apply_overrides(data, raw.get("smoke") or {}, origin="smoke")
        data = apply_overrides(data, parse_overrides(overrides))
    except CaseError as exc:
        raise exc.located(file=src) from None
    model = case_model()
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, model, data, src) from None
    check_case(config, src)
    return Case(config=config, path=path, raw=raw)


def validation_error(exc: ValidationError, model: type[BaseModel], data: dict, src: str) -> CaseError:
    """The first pydantic error as a :class:`CaseError` with field path and a fix (did-you-mean)."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    field_ = _field_path(model, loc)    # as written in the file: without union labels ('pde.k')
    kind = err["type"]
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    if kind == "extra_forbidden":
        known = _known_keys(model, data, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        fix = (f"did you mean {close[0]!r}? " if close else "") + f"allowed keys here: {', '.join(known)}"
        parent = _field_path(model, loc[:-1])
        return CaseError(f"unknown key {loc[-1]!r}{more}", file=src, field=f"{parent}.{loc[-1]}" if parent else loc[-1],
                         fix=fix)
    if kind == "union_tag_invalid":
        expected = [t.strip(" '") for t in str(err["ctx"]["expected_tags"]).split(",")]
        tag = str(err["ctx"]["tag"])
        close = difflib.get_close_matches(tag, expected, n=1, cutoff=0.5)
        fix = (f"did you mean {close[0]!r}? " if close else "") + f"known types: {', '.join(expected)}"
        return CaseError(f"unknown type {tag!r}{more}", file=src, field=f"{field_}.type" if field_ else "type",
                         fix=fix)
    if kind == "literal_error" and loc[-1] == "type":
        # a union of one member (e.g. a single registered method) reports a literal, not a tag, error
        expected = re.findall(r"'([^']*)'", str(err["ctx"]["expected"]))
        tag = str(err.get("input"))
        close = difflib.get_close_matches(tag, expected, n=1, cutoff=0.5)
        fix = (f"did you mean {close[0]!r}? " if close else "") + f"known types: {', '.join(expected)}"
        return CaseError(f"unknown type {tag!r}{more}", file=src, field=field_, fix=fix)
    if kind == "missing":
        return CaseError(f"required key missing{more}", file=src, field=field_,
                         fix=f"add `{loc[-1]}:` (see cases/poisson.yaml for a complete example)")
    return CaseError(f"{err['msg']} (got {err.get('input')!r}){more}", file=src, field=field_,
                     fix="see the case-file reference in README.md")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    import typing

    stack, found = [annotation], []
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            found.append(a)
        else:
            stack.extend(typing.get_args(a))
    return found


def _field_path(model: type[BaseModel], loc: list[str]) -> str | None:
    """``loc`` without pydantic's union-member labels: ``pde.poisson.k.str`` -> ``pde.k``."""
    models: list[type[BaseModel]] = [model]
    out = []
    for part in loc:
        tagged = [m for m in models if part in _type_tags(m)] if len(models) > 1 else []
        if part.isdigit():                      # a list index
            out.append(part)
        elif tagged:                            # a tagged-union label ('fem'), even where a member has such a field
            models = tagged
        elif any(part in m.model_fields for m in models):
            out.append(part)
            models = _models_in(next(m for m in models if part in m.model_fields).model_fields[part].annotation)
        elif models:
            continue                            # a union member label ('poisson', 'FEMMethodConfig')
        elif not part.startswith(("function-", "str", "float", "int", "list[", "dict[")):
            out.append(part)                    # a key of a plain mapping (params, smoke)
    return ".".join(out) or None


def _type_tags(model: type[BaseModel]) -> tuple:
    import typing

    field_ = model.model_fields.get("type")
    return typing.get_args(field_.annotation) if field_ is not None else ()


def _known_keys(model: type[BaseModel], data: Any, loc: list[str]) -> list[str]:
    """Field names of the (sub)model at ``loc`` (following union tags through ``data``)."""
    current: Any = model
    node = data
    for part in loc:
        node = node[int(part)] if isinstance(node, list) and part.isdigit() else (
            node.get(part) if isinstance(node, dict) else None)
        if part.isdigit():
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            if isinstance(current, type) and issubclass(current, BaseModel):
                continue   # a union member label: the remaining parts decide
            return []
        current = _submodel(current.model_fields[part].annotation, node)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _submodel(annotation: Any, node: Any) -> Any:
    """The BaseModel inside an annotation, picking the union member whose ``type`` matches ``node``."""
    import typing

    candidates = _models_in(annotation)
    if isinstance(node, dict) and "type" in node:
        for c in candidates:
            field_ = c.model_fields.get("type")
            if field_ is not None and node["type"] in typing.get_args(field_.annotation):
                return c
    return candidates[0] if candidates else None
