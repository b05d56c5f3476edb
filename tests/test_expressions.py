"""Tests of neuralpde.pde.expressions: safe parsing, numpy/torch/UFL agreement, derivatives, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralpde.errors import ExpressionError
from neuralpde.pde.expressions import ALLOWED_FUNCTIONS, Expression, parse

RNG = np.random.default_rng(0)

# Smooth (away from the kinks, which the random points avoid with probability 1) 2D expressions.
EXPRS_2D = [
    "exp(-1000*((x-0.5)**2 + (y-0.5)**2))",
    "sin(pi*x)*cos(2*pi*y) + tan(0.5*x) - tanh(y)",
    "sinh(x)*cosh(y) + sqrt(x + 1)/(1 + y**2) + log(2 + x*y)",
    "atan2(y - 0.3, x - 0.6) + arctan(x) - atan(y) + x**-0.5 + x**(1/3)",
    "min(x, y) + max(x, y, 0.5) + abs(x - y)",
    "2*heaviside(x - 0.4) + heaviside(0.3 - y)*x",
    "where(x < 0.5 and not y > 0.7, x**2, 1 - y) + where(0.2 < y <= 0.6 or x >= 0.9, 1, -1)",
    "k*x**2 + exp(-a*y) - -x + +y",
]
PARAMS = {"k": 2.5, "a": 3.0}
# heaviside has a Dirac delta as derivative, which is refused (see test_derivatives_of_kinks_and_time)
DIFFERENTIABLE = [s for s in EXPRS_2D if "heaviside" not in s]


def points_2d(n: int = 64) -> np.ndarray:
    return RNG.uniform(0.05, 0.95, size=(2, n))


def test_properties_and_repr():
    e = parse("sin(pi*x)*exp(-t) + k", {"k": 1.0})
    assert e.free_coords == {"x", "t"}
    assert e.depends_on_time and not e.is_constant
    assert e.params == {"k": 1.0}
    assert e.text == "sin(pi*x)*exp(-t) + k"
    assert repr(e) == "Expression('sin(pi*x)*exp(-t) + k')"
    assert parse("2*k + pi", {"k": 1.0}).is_constant
    assert set(ALLOWED_FUNCTIONS) >= {"exp", "where", "heaviside", "min", "max", "atan2", "arctan"}
    assert Expression.parse("x").free_coords == {"x"}


@pytest.mark.parametrize("value, expected", [(3, 3.0), (2.5, 2.5), ("1e-3", 1e-3), ("-2.", -2.0)])
def test_numbers_and_constant_broadcasting(value, expected):
    e = parse(value)
    assert e.is_constant
    coords = RNG.uniform(size=(2, 4, 5))
    out = e.numpy(coords)
    assert out.shape == (4, 5) and out.dtype == np.float64 and out.flags.writeable
    np.testing.assert_array_equal(out, expected)
    out[0, 0] = 7.0  # a real array, not a read-only broadcast view
    pts = torch.rand(6, 2, dtype=torch.float32)
    tout = e.torch(pts)
    assert tout.shape == (6,) and tout.dtype == torch.float32
    assert torch.all(tout == torch.tensor(expected, dtype=torch.float32))
    assert np.array_equal(e(coords[:1]), np.full((4, 5), expected))


def test_constant_torch_is_differentiable_in_coords():
    pts = torch.rand(5, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(parse("2*pi").torch(pts).sum(), pts)
    assert torch.all(g == 0)


@pytest.mark.parametrize("text", EXPRS_2D)
def test_numpy_and_torch_agree(text):
    e = parse(text, PARAMS)
    pts = points_2d()
    ref = e.numpy(pts)
    assert ref.shape == (64,) and np.all(np.isfinite(ref))
    out = e.torch(torch.tensor(pts.T))
    assert out.shape == (64,) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_3d_and_time():
    e = parse("x*y*z*exp(-t)")
    pts = RNG.uniform(size=(3, 10))
    np.testing.assert_allclose(e.numpy(pts, t=0.5), np.prod(pts, axis=0) * np.exp(-0.5))
    tt = torch.full((10, 1), 0.5, dtype=torch.float64)
    np.testing.assert_allclose(e.torch(torch.tensor(pts.T), t=tt).numpy(), e.numpy(pts, t=0.5))
    np.testing.assert_allclose(e.torch(torch.tensor(pts.T), t=0.5).numpy(), e.numpy(pts, t=0.5))
    with pytest.raises(ExpressionError, match="depends on t"):
        e.torch(torch.tensor(pts.T))


def test_semantics_of_where_min_max_abs_heaviside():
    x = np.array([[-1.0, 0.0, 0.25, 2.0]])
    np.testing.assert_array_equal(parse("heaviside(x)").numpy(x), [0, 0, 1, 1])  # H(0) = 0
    np.testing.assert_array_equal(parse("where(x <= 0, -1, x)").numpy(x), [-1, -1, 0.25, 2])
    np.testing.assert_array_equal(parse("where(0 < x < 1, 1, 0)").numpy(x), [0, 0, 1, 0])
    np.testing.assert_array_equal(parse("where(x == 0 or x > 1, 1, 0)").numpy(x), [0, 1, 0, 1])
    np.testing.assert_array_equal(parse("where(not x != 0, 5, 0)").numpy(x), [0, 5, 0, 0])
    np.testing.assert_array_equal(parse("min(x, 0.5, 1)").numpy(x), [-1, 0, 0.25, 0.5])
    np.testing.assert_array_equal(parse("max(x, 0)").numpy(x), [0, 0, 0.25, 2])
    np.testing.assert_array_equal(parse("abs(x)").numpy(x), [1, 0, 0.25, 2])
    # where() only evaluates to the chosen branch: a nan in the other one does not leak
    np.testing.assert_array_equal(parse("where(x > 0, sqrt(x), 0)").numpy(x), [0, 0, 0.5, np.sqrt(2)])
    assert np.all(parse("where(x > 0, sqrt(x), 0)").torch(torch.tensor(x.T)).numpy() == [0, 0, 0.5, 2**0.5])


@pytest.mark.parametrize("text", DIFFERENTIABLE)
@pytest.mark.parametrize("var", ["x", "y"])
def test_derivative_matches_finite_differences_and_autograd(text, var):
    e = parse(text, PARAMS)
    d = e.diff(var)
    assert isinstance(d, Expression) and d.params == PARAMS and d.text == str(d.sympy)
    pts = points_2d()
    h, axis = 1e-6, "xy".index(var)
    step = np.zeros((2, 1))
    step[axis] = h
    fd = (e.numpy(pts + step) - e.numpy(pts - step)) / (2 * h)
    np.testing.assert_allclose(d.numpy(pts), fd, rtol=1e-5, atol=1e-4)
    xt = torch.tensor(pts.T, requires_grad=True)
    (grad,) = torch.autograd.grad(e.torch(xt).sum(), xt)
    np.testing.assert_allclose(d.torch(xt).detach().numpy(), grad[:, axis].numpy(), rtol=1e-10, atol=1e-10)


def test_derivatives_of_kinks_and_time():
    x = np.array([[-2.0, 3.0]])
    np.testing.assert_array_equal(parse("abs(x)").diff("x").numpy(x), [-1, 1])
    np.testing.assert_array_equal(parse("max(x, 0)").diff("x").numpy(x), [0, 1])
    np.testing.assert_array_equal(parse("where(x < 0, x**2, 3*x)").diff("x").numpy(x), [-4, 3])
    assert parse("x*exp(-t)").diff("t").numpy(x, t=0.0).tolist() == [2.0, -3.0]
    assert parse("x**2").diff("y").is_constant
    with pytest.raises(ExpressionError, match="Dirac"):
        parse("heaviside(x - 1)").diff("x").numpy(x)
    with pytest.raises(ExpressionError, match="differentiate"):
        parse("x").diff("k")


def test_params_values_override_subs_and_with_params():
    e = parse("k*x + a", {"k": 2.0, "a": 1.0})
    x = np.array([[1.0, 2.0]])
    np.testing.assert_allclose(e.numpy(x), [3.0, 5.0])
    np.testing.assert_allclose(e.numpy(x, params={"k": 10.0}), [11.0, 21.0])
    np.testing.assert_allclose(e.with_params({"a": -1.0}).numpy(x), [1.0, 3.0])
    assert e.params == {"k": 2.0, "a": 1.0}  # with_params returns a new expression
    s = e.subs(k=3.0, x=2.0)
    assert s.is_constant and s.params == {"a": 1.0}
    np.testing.assert_allclose(s.numpy(x), [7.0, 7.0])
    with pytest.raises(ExpressionError, match="unknown"):
        e.subs(q=1.0)
    with pytest.raises(ExpressionError, match="'q'"):
        parse("q*x")  # a parameter that was not declared is an unknown name


def test_torch_tensor_params_carry_gradients():
    e = parse("exp(-k*x) + a*y", {"k": 1.0, "a": 0.0})
    pts = torch.rand(20, 2, dtype=torch.float64)
    k = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.5, dtype=torch.float32, requires_grad=True)  # other dtype: still differentiable
    out = e.torch(pts, params={"k": k, "a": a})
    assert out.dtype == torch.float64
    out.sum().backward()
    x, y = pts[:, 0], pts[:, 1]
    torch.testing.assert_close(k.grad, (-x * torch.exp(-2.0 * x)).sum())
    torch.testing.assert_close(a.grad, y.sum().float())


@pytest.mark.parametrize("text, token", [
    ("__import__('os')", "__import__"),
    ("().__class__", "__class__"),
    ("x.real", "real"),
    ("lambda: 1", "lambda"),
    ("x[0]", "["),
    ("foo(x)", "foo"),
    ("os", "os"),
    ("'a'", "'a'"),
    ("sin(x, y)", "sin"),
    ("min(x)", "min"),
    ("sin(x=1)", "x="),
    ("sin(*x)", "*"),
    ("x if y > 0 else 1", "if"),
    ("[i for i in x]", "[i for i in x]"),
    ("(z := 2)", ":="),
    ("f'{x}'", "f-string"),
    ("x // 2", "//"),
    ("x % 2", "%"),
    ("x > 0", ">"),
    ("x and y", "and"),
    ("not x", "not"),
    ("where(x, 1, 0)", "x"),
    ("where(x is 1, 1, 0)", "is"),
    ("True", "True"),
    ("1j", "1j"),
    ("sin", "sin"),
    ("9**9**9**9", "**"),
])
def test_forbidden_inputs_name_column_and_token(text, token):
    with pytest.raises(ExpressionError) as info:
        parse(text, file="case.yaml", field="source")
    msg = str(info.value)
    assert "column" in msg and f"'{token}'" in msg
    assert msg.startswith("case.yaml: source: ")
    assert "where" in info.value.fix and "exp" in info.value.fix


def test_column_is_one_based_and_points_at_the_token():
    with pytest.raises(ExpressionError, match="column 5: '__import__'"):
        parse("x + __import__('os')")
    with pytest.raises(ExpressionError, match=r"column 8: '__class__'"):
        parse("1 + ().__class__")


@pytest.mark.parametrize("text, match", [
    ("x +", "column 1"), ("sin(x", "column 4: '\\(' was never closed"), ("", "empty"), ("   ", "empty"),
    ("log(-1)", "complex"), ("1/0", "infinite"), ("sqrt(-4)", "complex"), (float("nan"), "finite"),
    (True, "expected a math string"), (None, "expected a math string"),
])
def test_syntax_and_value_errors(text, match):
    with pytest.raises(ExpressionError, match=match):
        parse(text)


@pytest.mark.parametrize("params", [{"x": 1.0}, {"pi": 1.0}, {"exp": 1.0}, {"__k": 1.0}, {"k": "big"}])
def test_bad_parameters_are_rejected(params):
    with pytest.raises(ExpressionError):
        parse("1", params)


def test_missing_coordinate_for_domain_dimension():
    e = parse("x + y")
    with pytest.raises(ExpressionError, match="uses y but the domain is 1D"):
        e.numpy(np.zeros((1, 5)))
    with pytest.raises(ExpressionError, match="uses y but the domain is 1D"):
        e.torch(torch.zeros(5, 1))
    assert parse("2*x").numpy(np.ones((1, 3))).tolist() == [2.0, 2.0, 2.0]


# ---------------------------------------------------------------------------------------------- UFL


def test_ufl_pointwise_matches_numpy():
    dolfinx = pytest.importorskip("dolfinx")
    ufl = pytest.importorskip("ufl")
    from dolfinx import fem
    from mpi4py import MPI

    from neuralpde.solvers.fem import compat

    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 8, 8)
    x = ufl.SpatialCoordinate(mesh)
    texts = [*EXPRS_2D, "x*exp(-t)", "max(x, y)*abs(x - y) + where(x < 0.37, x, 0)"]
    exprs = [parse(s, PARAMS) for s in texts] + [parse(EXPRS_2D[0], PARAMS).diff("x")]
    # mix the argument kinds: fem.Constant time and parameter, a plain float time
    t, k = fem.Constant(mesh, 0.25), fem.Constant(mesh, PARAMS["k"])
    forms = [e.ufl(x, t=t if e.depends_on_time else 0.25, params={"k": k}) for e in exprs]
    V = compat.vector_function_space(mesh, 2, len(forms))
    u = fem.Function(V)
    u.interpolate(fem.Expression(ufl.as_vector(forms), V.element.interpolation_points()))
    pts = V.tabulate_dof_coordinates()[:, :2].T
    got = u.x.array.reshape(-1, len(forms))
    # the mesh vertices hit the kinks of where(x < 0.5 ...) etc. exactly: compare away from them
    inside = np.all((np.abs(pts - 0.5) > 1e-9) & (np.abs(pts - 0.6) > 1e-9) & (pts > 0.01), axis=0)
    for i, e in enumerate(exprs):
        ref = e.numpy(pts, t=0.25)
        np.testing.assert_allclose(got[inside, i], ref[inside], rtol=1e-10, atol=1e-10, err_msg=e.text)


def test_ufl_integral_matches_gauss_quadrature_and_rejects_missing_coords():
    dolfinx = pytest.importorskip("dolfinx")
    ufl = pytest.importorskip("ufl")
    from dolfinx import fem
    from mpi4py import MPI


    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 2, 2)
    x = ufl.SpatialCoordinate(mesh)
    e = parse("sin(pi*x)*exp(y) + k*x**2*y", {"k": 3.0})
    dx = ufl.dx(metadata={"quadrature_degree": 14})
    got = fem.assemble_scalar(fem.form(e.ufl(x) * dx))
    g, w = np.polynomial.legendre.leggauss(20)
    g, w = (g + 1) / 2, w / 2
    X, Y = np.meshgrid(g, g, indexing="ij")
    ref = np.sum(np.outer(w, w) * e.numpy(np.stack([X, Y])))
    assert got == pytest.approx(ref, rel=1e-9)
    assert ref == pytest.approx(2 / np.pi * (np.e - 1) + 3.0 / 6, rel=1e-12)
    with pytest.raises(ExpressionError, match="uses z but the domain is 2D"):
        parse("x*z").ufl(x)
    with pytest.raises(ExpressionError, match="depends on t"):
        parse("x*t").ufl(x)
