"""Math strings from case files, parsed safely and compiled to numpy, torch and UFL.

The string is never passed to ``eval``/``sympify``: Python's ``ast`` parses it, a whitelist checks every
node, and a sympy expression is built from the checked tree. Evaluation walks that sympy tree::

    >>> f = parse("exp(-k*((x-0.5)**2 + (y-0.5)**2))", {"k": 1000.0})
    >>> sorted(f.free_coords), f.depends_on_time
    (['x', 'y'], False)
    >>> float(f.numpy(np.array([[0.5], [0.5]]))[0])
    1.0
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from functools import reduce
from typing import Any

import numpy as np
import sympy as sp

from neuralpde.errors import ExpressionError

COORDS = ("x", "y", "z", "t")
_SYM = {n: sp.Symbol(n, real=True) for n in COORDS}
SYMBOLS = _SYM  #: the sympy symbols of x, y, z, t (real), for building expressions in code
_FUNCS: dict[str, tuple[Callable[..., Any], int, int | None]] = {  # name -> (builder, min args, max args)
    "exp": (sp.exp, 1, 1), "sin": (sp.sin, 1, 1), "cos": (sp.cos, 1, 1), "tan": (sp.tan, 1, 1),
    "tanh": (sp.tanh, 1, 1), "sinh": (sp.sinh, 1, 1), "cosh": (sp.cosh, 1, 1), "sqrt": (sp.sqrt, 1, 1),
    "log": (sp.log, 1, 1), "abs": (sp.Abs, 1, 1), "min": (sp.Min, 2, None), "max": (sp.Max, 2, None),
    "atan2": (sp.atan2, 2, 2), "arctan": (sp.atan, 1, 1), "atan": (sp.atan, 1, 1),
    "where": (lambda c, a, b: sp.Piecewise((a, c), (b, True)), 3, 3),
    "heaviside": (lambda s: sp.Heaviside(s, 0), 1, 1),  # H(0) = 0: "1 if s > 0 else 0"
}
ALLOWED_FUNCTIONS: tuple[str, ...] = tuple(_FUNCS)
_FIX = (f"use numbers, x, y, z, t, pi, parameters, + - * / **, and {', '.join(ALLOWED_FUNCTIONS)}; "
        "comparisons and and/or/not only inside where(condition, a, b)")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_CMPS = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq, ast.NotEq: sp.Ne}
_TOKENS = {ast.Lambda: "lambda", ast.IfExp: "if", ast.NamedExpr: ":=", ast.JoinedStr: "f-string",
           ast.Starred: "*", ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitAnd: "&",
           ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~",
           ast.Not: "not", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
           ast.And: "and", ast.Or: "or", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
           ast.Eq: "==", ast.NotEq: "!="}
_MAX_LEN = 5000  # long enough for any sane formula; keeps the parser and sympy away from pathological input


class _Builder:
    """Turns a checked ``ast`` tree into sympy; every rejection names the column and the token."""

    def __init__(self, text: str, params: dict[str, float], file: str | None, field: str | None):
        self.text, self.raw, self.params, self.file, self.field = text, text.encode(), params, file, field

    def fail(self, offset: int, token: str, why: str = "is not allowed") -> ExpressionError:
        col = len(self.raw[:offset].decode(errors="ignore")) + 1  # ast offsets are UTF-8 bytes
        names = f"; parameters: {', '.join(self.params)}" if self.params else ""
        return ExpressionError(f"column {col}: '{token}' {why} in expression {self.text!r}",
                               file=self.file, field=self.field, fix=_FIX + names)

    def fail_node(self, node: ast.AST, why: str = "is not allowed") -> ExpressionError:
        token = _TOKENS.get(type(node)) or ast.get_source_segment(self.text, node) or type(node).__name__
        return self.fail(node.col_offset, token[:30], why)

    def fail_between(self, left: ast.AST, right: ast.AST, token: str, why: str) -> ExpressionError:
        """Locate an operator token, which ast only places implicitly (between its operands)."""
        start = left.end_col_offset or 0
        return self.fail(start + max(self.raw[start:right.col_offset].find(token.encode()), 0), token, why)

    def build(self, node: ast.AST, cond: bool = False) -> Any:
        """Convert ``node``; ``cond`` is True where a condition (comparison, and/or/not) is expected."""
        if cond:
            return self._condition(node)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail_node(node, "is not allowed (only numbers are)")
            if not math.isfinite(value) or abs(value) > 1e300:
                raise self.fail_node(node, "is too large")
            return sp.Integer(value) if isinstance(value, int) else sp.Float(value)
        if isinstance(node, ast.Name):
            if node.id in _SYM:
                return _SYM[node.id]
            if node.id == "pi":
                return sp.pi
            if node.id in self.params:
                return sp.Symbol(node.id, real=True)
            why = "needs arguments" if node.id in _FUNCS else "is not allowed (unknown name)"
            raise self.fail(node.col_offset, node.id, why)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            arg = self.build(node.operand)
            return -arg if isinstance(node.op, ast.USub) else arg
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.fail_between(node.left, node.right, _TOKENS[type(node.op)], "is not allowed")
            left, right = self.build(node.left), self.build(node.right)
            # sympy would compute e.g. 9**9**9 exactly and hang; refuse absurd constants instead
            if isinstance(node.op, ast.Pow) and left.is_number and right.is_number and _huge(left, right):
                raise self.fail_between(node.left, node.right, "**", "gives a number that is too large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, (ast.Compare, ast.BoolOp)):
            is_cmp = isinstance(node, ast.Compare)
            left, right = (node.left, node.comparators[0]) if is_cmp else node.values[:2]
            token = _TOKENS[type(node.ops[0] if is_cmp else node.op)]
            raise self.fail_between(left, right, token, "is only allowed in the condition of where(c, a, b)")
        if isinstance(node, ast.UnaryOp):  # 'not' outside a condition, '~'
            raise self.fail(node.col_offset, _TOKENS[type(node.op)])
        if isinstance(node, ast.IfExp):
            raise self.fail_node(node, "is not allowed (write where(condition, a, b))")
        if isinstance(node, ast.Attribute):  # point at the attribute name, e.g. '__class__' in ().__class__
            raise self.fail((node.end_col_offset or 0) - len(node.attr.encode()), node.attr,
                            "is not allowed (attribute access)")
        if isinstance(node, ast.Subscript):
            raise self.fail(node.value.end_col_offset or 0, "[", "is not allowed (indexing)")
        raise self.fail_node(node)

    def _condition(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Compare):  # a < b < c means (a < b) and (b < c), as in Python
            sides = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, sides[:-1], sides[1:], strict=True):
                if type(op) not in _CMPS:
                    raise self.fail_between(left, right, _TOKENS[type(op)], "is not allowed")
            vals = [self.build(n) for n in sides]
            return sp.And(*[_CMPS[type(op)](vals[i], vals[i + 1]) for i, op in enumerate(node.ops)])
        if isinstance(node, ast.BoolOp):
            parts = [self._condition(v) for v in node.values]
            return sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return sp.Not(self._condition(node.operand))
        raise self.fail_node(node, "is not a condition (use a comparison such as x < 0.5)")

    def _call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise self.fail_node(node.func, "cannot be called")
        name = node.func.id
        if name not in _FUNCS:
            raise self.fail(node.col_offset, name, "is not allowed (unknown function)")
        if node.keywords:
            kw = node.keywords[0]
            raise self.fail(kw.col_offset, f"{kw.arg}=" if kw.arg else "**", "is not allowed (keyword)")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail_node(arg)
        func, lo, hi = _FUNCS[name]
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            expected = f"{lo} or more" if hi is None else str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.fail(node.col_offset, name, f"takes {expected} argument(s), got {len(node.args)}")
        return func(*[self.build(a, cond=(name == "where" and i == 0)) for i, a in enumerate(node.args)])


_UNARY = ("log", "exp", "sin", "cos", "tan", "tanh", "sinh", "cosh", "sqrt", "sign")
_RELATIONS = {"StrictLessThan": "lt", "LessThan": "le", "StrictGreaterThan": "gt", "GreaterThan": "ge",
              "Equality": "eq", "Unequality": "ne"}


_NUMPY_NS = {**{n: getattr(np, n) for n in (*_UNARY, "where")}, "atan": np.arctan, "atan2": np.arctan2,
             "Abs": np.abs, "Min": np.minimum, "Max": np.maximum, "lt": np.less, "le": np.less_equal,
             "gt": np.greater, "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal,
             "And": np.logical_and, "Or": np.logical_or, "Not": np.logical_not, "const": np.float64}


def _torch_ns(dtype: Any, device: Any) -> dict[str, Any]:
    import torch

    ns = {n: getattr(torch, n) for n in (*_UNARY, "atan", "atan2", "where", *_RELATIONS.values())}
    return {**ns, "Abs": torch.abs, "Min": torch.minimum, "Max": torch.maximum, "And": torch.logical_and,
            "Or": torch.logical_or, "Not": torch.logical_not,
            "const": lambda v: torch.tensor(v, dtype=dtype, device=device)}


def _ufl_ns() -> dict[str, Any]:
    import ufl

    ns = {n: getattr(ufl, n) for n in (*_UNARY[1:], "atan", *_RELATIONS.values(), "And", "Or", "Not")}
    return {**ns, "log": ufl.ln, "atan2": getattr(ufl, "atan2", None) or ufl.atan_2, "Abs": abs,
            "Min": ufl.min_value, "Max": ufl.max_value, "where": ufl.conditional,
            "const": lambda v: ufl.as_ufl(float(v))}


def _emit(expr: sp.Basic, ns: dict[str, Any], env: dict[sp.Symbol, Any],
          err: Callable[[str], Exception]) -> Any:
    """Evaluate a sympy tree with the functions in ``ns``; cached so shared subtrees are computed once."""
    cache: dict[sp.Basic, Any] = {}

    def go(e: sp.Basic) -> Any:
        if e in cache:
            return cache[e]
        name = type(e).__name__
        if e.is_Symbol:
            out = env[e]
        elif e is sp.true or e is sp.false:
            out = bool(e)
        elif isinstance(e, (sp.Number, sp.NumberSymbol)):
            out = ns["const"](float(e))
        elif e.is_Add or e.is_Mul:
            out = reduce(operator.add if e.is_Add else operator.mul, [go(a) for a in e.args])
        elif e.is_Pow:
            base, ex = e.args
            if ex == sp.S.Half:
                out = ns["sqrt"](go(base))
            else:  # plain Python exponents keep UFL/numpy on their integer-power fast paths
                small_int = ex.is_Integer and abs(ex) < 1000
                out = go(base) ** (int(ex) if small_int else float(ex) if ex.is_Number else go(ex))
        elif isinstance(e, sp.Piecewise):
            out = ns["const"](math.nan)  # value where no piece applies (never for where())
            for value, c in reversed(e.args):
                cv = go(c)
                out = (go(value) if cv else out) if isinstance(cv, bool) else ns["where"](cv, go(value), out)
        elif isinstance(e, sp.Heaviside):  # H(s) = 1 for s > 0, 0 for s < 0, H0 at s == 0
            s, zero, one = go(e.args[0]), ns["const"](0.0), ns["const"](1.0)
            h0 = float(e.args[1]) if len(e.args) > 1 else 0.5
            at_zero = zero if h0 == 0 else ns["where"](ns["lt"](s, zero), zero, ns["const"](h0))
            out = ns["where"](ns["gt"](s, zero), one, at_zero)
        elif name in _RELATIONS:
            out = ns[_RELATIONS[name]](go(e.args[0]), go(e.args[1]))
        elif name in ("And", "Or", "Min", "Max"):  # n-ary in sympy, binary in the backends
            out = reduce(ns[name], [go(a) for a in e.args])
        elif name in ns and name != "const":
            out = ns[name](*[go(a) for a in e.args])
        elif name == "DiracDelta":
            raise err("the expression contains a Dirac delta (the derivative of a jump, e.g. of heaviside "
                      "or where), which cannot be evaluated pointwise")
        else:
            raise err(f"cannot evaluate sympy node {name} ({e})")
        cache[e] = out
        return out

    return go(expr)


class Expression:
    """A parsed math expression in x, y, z, t and named parameters."""

    def __init__(self, text: str, expr: sp.Expr, params: dict[str, float], *, file: str | None = None,
                 field: str | None = None):
        self.text, self.sympy, self.params = text, expr, dict(params)
        self._file, self._field = file, field

    @classmethod
    def parse(cls, text: str | int | float, params: dict[str, float] | None = None, *,
              file: str | None = None, field: str | None = None) -> Expression:
        """Parse a case-file value (a math string or a plain number).

        Args:
            text: the expression, e.g. ``"sin(pi*x)*exp(-t)"``, or an int/float.
            params: parameter values usable by name in ``text``.
            file, field: where the value comes from; only used in error messages.

        Returns:
            The expression. Raises ExpressionError for anything outside the whitelisted language.
        """
        def error(msg: str, fix: str | None = _FIX) -> ExpressionError:
            return ExpressionError(msg, file=file, field=field, fix=fix)

        params = _check_params(params or {}, error)
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            if not _finite(text) or abs(text) > 1e300:
                raise error(f"{text} is not a finite number", fix="give a finite number")
            return cls(str(text), sp.Integer(text) if isinstance(text, int) else sp.Float(text), params,
                       file=file, field=field)
        if not isinstance(text, str):
            raise error(f"expected a math string or a number, got {type(text).__name__} {text!r}")
        text = " ".join(text.split())  # YAML may fold long formulas over lines; columns refer to this form
        if not text:
            raise error("the expression is empty")
        if len(text) > _MAX_LEN:
            raise error(f"the expression is longer than {_MAX_LEN} characters")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise error(f"column {exc.offset or 1}: {exc.msg} in expression {text!r}") from None
        except (ValueError, RecursionError, MemoryError) as exc:
            raise error(f"cannot parse {text!r}: {exc}") from None
        try:
            expr = _Builder(text, params, file, field).build(tree.body)
        except RecursionError:
            raise error(f"the expression {text!r} is nested too deeply") from None
        if expr.has(sp.I, sp.zoo, sp.nan, sp.oo, -sp.oo) or not all(map(_finite, expr.atoms(sp.Number))):
            raise error(f"the expression {text!r} is complex or infinite ({expr})",
                        fix="check for division by zero, or log/sqrt of a negative number")
        return cls(text, expr, params, file=file, field=field)

    @property
    def free_coords(self) -> set[str]:
        """The coordinates among x, y, z, t that the expression uses."""
        return {s.name for s in self.sympy.free_symbols if s.name in _SYM}

    @property
    def depends_on_time(self) -> bool:
        return "t" in self.free_coords

    @property
    def is_constant(self) -> bool:
        """True when no coordinate (x, y, z, t) occurs; parameters may."""
        return not self.free_coords

    @classmethod
    def from_sympy(cls, expr: sp.Expr, params: dict[str, float] | None = None) -> Expression:
        """Wrap a sympy expression built from :data:`SYMBOLS` (e.g. a derived source term)."""
        return cls(str(expr), expr, dict(params or {}))

    def _new(self, expr: sp.Expr, params: dict[str, float] | None = None) -> Expression:
        return Expression(str(expr), expr, self.params if params is None else params, file=self._file,
                          field=self._field)

    def _error(self, msg: str, fix: str | None = None) -> ExpressionError:
        return ExpressionError(f"{msg} (expression {self.text!r})", file=self._file, field=self._field,
                               fix=fix)

    def diff(self, var: str) -> Expression:
        """Symbolic derivative with respect to ``var`` (one of x, y, z, t)."""
        if var not in _SYM:
            raise self._error(f"cannot differentiate with respect to {var!r}", fix="use one of x, y, z, t")
        return self._new(self.sympy.diff(_SYM[var]))

    def subs(self, **values: float) -> Expression:
        """Replace coordinates and/or parameters by numbers."""
        known = {n: _SYM[n] if n in _SYM else sp.Symbol(n, real=True)
                 for n in values if n in _SYM or n in self.params}
        if unknown := sorted(set(values) - set(known)):
            raise self._error(f"cannot substitute unknown name(s) {unknown}",
                              fix=f"use coordinates x, y, z, t or parameters {sorted(self.params)}")
        expr = self.sympy.subs({known[n]: sp.Float(float(v)) for n, v in values.items()})
        return self._new(expr, {k: v for k, v in self.params.items() if k not in values})

    def with_params(self, params: dict[str, float]) -> Expression:
        """Same expression, with parameter values updated from ``params``."""
        merged = _check_params({**self.params, **params}, lambda m, fix=None: self._error(m, fix))
        return self._new(self.sympy, merged)

    def _env(self, coords: dict[str, Any], t: Any, params: dict[str, Any] | None, dim: int,
             convert: Callable[[Any], Any]) -> dict[sp.Symbol, Any]:
        """Map every free symbol to a backend value, with errors for what is missing."""
        used = self.free_coords
        if missing := sorted(c for c in used - {"t"} if c not in coords):
            raise self._error(f"uses {', '.join(missing)} but the domain is {dim}D",
                              fix=f"use only {', '.join(COORDS[:dim])} (and t) on a {dim}D domain")
        if "t" in used and t is None:
            raise self._error("depends on t but no time was given")
        values = {**self.params, **(params or {})}
        env: dict[sp.Symbol, Any] = {}
        for s in self.sympy.free_symbols:
            if s.name in used:
                env[s] = convert(t) if s.name == "t" else coords[s.name]
            elif s.name in values:
                env[s] = convert(values[s.name])
            else:
                raise self._error(f"parameter {s.name!r} has no value", fix="pass it in params")
        return env

    def numpy(self, coords: Any, t: float = 0.0, params: dict[str, float] | None = None) -> np.ndarray:
        """Evaluate with numpy.

        Args:
            coords: points, shape (d, ...) with d in 1..3 (x = coords[0], y = coords[1], z = coords[2]).
            t: time; params: parameter values overriding ``self.params``.

        Returns:
            float64 array of shape ``coords.shape[1:]`` (constants are broadcast).
        """
        pts = np.asarray(coords, dtype=np.float64)
        if pts.ndim < 1 or not 1 <= pts.shape[0] <= 3:
            raise self._error(f"coords must have shape (d, ...) with d in 1..3, got {pts.shape}")
        named = dict(zip(COORDS, pts, strict=False))  # x=pts[0], y=pts[1], ...
        env = self._env(named, t, params, pts.shape[0], lambda v: np.asarray(v, dtype=np.float64))
        with np.errstate(all="ignore"):  # where() evaluates both branches; the unused one may be nan
            out = _emit(self.sympy, _NUMPY_NS, env, self._error)
        return np.array(np.broadcast_to(out, pts.shape[1:]), dtype=np.float64)

    def torch(self, coords: Any, t: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Evaluate with torch, differentiably in ``coords`` and in tensor-valued ``t``/``params``.

        Args:
            coords: points, shape (N, d) with d in 1..3.
            t: None (only for time-independent expressions), a float or a tensor of shape (N,) or (N, 1).
            params: parameter values (floats or tensors, e.g. trainable) overriding ``self.params``.

        Returns:
            Tensor of shape (N,) with the dtype and device of ``coords``.
        """
        import torch

        if coords.ndim != 2 or not 1 <= coords.shape[1] <= 3:
            raise self._error(f"coords must have shape (N, d) with d in 1..3, got {tuple(coords.shape)}")
        if not coords.is_floating_point():
            coords = coords.to(torch.get_default_dtype())
        n, dtype, device = coords.shape[0], coords.dtype, coords.device

        def convert(v: Any) -> Any:
            v = torch.as_tensor(v, dtype=dtype, device=device)  # keeps the graph of tensor inputs
            return v.reshape(-1) if v.numel() == n and v.ndim > 0 else v.reshape(()) if v.numel() == 1 else v

        named = {c: coords[:, i] for i, c in enumerate(COORDS[: coords.shape[1]])}
        env = self._env(named, t, params, coords.shape[1], convert)
        out = _emit(self.sympy, _torch_ns(dtype, device), env, self._error)
        if coords.requires_grad and not self.free_coords - {"t"}:
            out = out + 0.0 * coords[:, 0]  # so autograd.grad w.r.t. coords works (gives 0) for constants
        return torch.broadcast_to(out, (n,)).to(dtype).contiguous()  # constants: a real copy, not a view

    def ufl(self, x: Any, t: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Build the UFL expression.

        Args:
            x: ``ufl.SpatialCoordinate(mesh)``.
            t: None (only for time-independent expressions), a float or a ``fem.Constant``/UFL expression.
            params: parameter values (floats or ``fem.Constant``) overriding ``self.params``.

        Returns:
            A UFL expression (constants wrapped with ``ufl.as_ufl``).
        """
        import ufl

        dim = x.ufl_shape[0]
        convert = lambda v: ufl.as_ufl(float(v)) if isinstance(v, (int, float, np.floating)) else v
        env = self._env({c: x[i] for i, c in enumerate(COORDS[:dim])}, t, params, dim, convert)
        return ufl.as_ufl(_emit(self.sympy, _ufl_ns(), env, self._error))

    def __call__(self, coords: Any, t: float = 0.0) -> np.ndarray:
        return self.numpy(coords, t)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def _check_params(params: dict[str, Any], error: Callable[..., ExpressionError]) -> dict[str, float]:
    """Parameter names must be identifiers that do not shadow coordinates, pi or functions."""
    out = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__") or \
                name in _SYM or name == "pi" or name in _FUNCS:
            raise error(f"{name!r} cannot be a parameter name",
                        fix="use an identifier other than x, y, z, t, pi and function names")
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise error(f"parameter {name!r} must be a number, got {value!r}") from None
    return out


def _huge(base: sp.Expr, exponent: sp.Expr) -> bool:
    try:
        b, e = abs(float(base)), abs(float(exponent))
        return b != 0 and (math.isinf(b) or abs(math.log10(b)) * e > 300)
    except OverflowError:
        return True
    except TypeError:  # complex: reported after parsing
        return False


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError):
        return False


def parse(text: str | int | float, params: dict[str, float] | None = None, **kw: Any) -> Expression:
    """Module-level alias of :meth:`Expression.parse`."""
    return Expression.parse(text, params, **kw)
