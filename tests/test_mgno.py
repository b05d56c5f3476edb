"""MgNO architecture: the paper's parameter counts, any grid size, shift equivariance, and the
structural claim that a fixed-stencil MgConv is a multigrid cycle."""

import pytest
import torch

from neuralpde.errors import CaseError
from neuralpde.operators.mgno import MgConv, MgNO, level_sizes, parse_iterations, transposed_kernel

LAPLACE_5PT = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
BILINEAR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64) / 4


def test_smooth_darcy_configuration_has_678093_parameters_and_paper_kernels():
    net = MgNO(grid=(211, 211), channels=24, num_layers=5, iterations="10 10 10 10 10 20")
    assert net.num_parameters() == 678_093
    assert net.transposed_kernels() == [3, 4, 3, 3, 4]
    assert level_sizes(211, 6) == [211, 106, 53, 27, 14, 7]
    with torch.no_grad():
        assert net(torch.randn(1, 1, 211, 211)).shape == (1, 1, 211, 211)


def test_rough_darcy_configuration_has_572661_parameters():
    net = MgNO(grid=256, channels=24, num_layers=4, iterations="10 10 10 10 10 20")
    assert net.num_parameters() == 572_661
    assert net.transposed_kernels() == [4, 4, 4, 4, 4]


def test_num_iteration_trap_and_kernel_formula():
    assert parse_iterations("10 10 10 10 10 20") == [(1, 0)] * 5 + [(2, 0)]
    assert [transposed_kernel(n, level_sizes(n, 2)[1]) for n in (85, 43, 22, 11)] == [3, 3, 4, 3]
    with pytest.raises(CaseError, match="two digits"):
        parse_iterations("1 1 2")


@pytest.mark.parametrize("shape", [(64, 64), (63, 63), (85, 85), (128, 128), (37, 50), (17, 17)])
def test_any_input_size_gives_the_same_output_size(shape):
    torch.manual_seed(0)
    net = MgNO(grid=64, channels=6, num_layers=2, iterations="10 10 10 20")
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 1, *shape)
    assert torch.isfinite(out).all()


def test_circular_padding_commutes_with_roll():
    torch.manual_seed(0)
    net = MgNO(grid=64, channels=6, num_layers=2, iterations="10 10 10 20", padding_mode="circular").double()
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    shift = (8, -24)    # multiples of 2^(levels-1): stride-2 restrictions commute only with such shifts
    with torch.no_grad():
        err = (net(torch.roll(x, shift, (2, 3))) - torch.roll(net(x), shift, (2, 3))).abs().max()
        zero_padded = MgNO(grid=64, channels=6, num_layers=2, iterations="10 10 10 20").double()
        err_zeros = (zero_padded(torch.roll(x, shift, (2, 3))) - torch.roll(zero_padded(x), shift, (2, 3))).abs().max()
    assert err < 1e-12
    assert err_zeros > 1e-3       # the property is the padding's, not an accident of the test


def _fixed_stencil_mgconv(n: int, iterations, omega: float = 0.8) -> MgConv:
    """MgConv with A = 5-point Laplacian (h^2-scaled), S = damped Jacobi, R = P^T, P = bilinear, Pi = 0.

    Stride-2 convolutions without padding put the coarse node c at fine node 2c + 1 (vertex-centred
    coarsening of n = 2^k - 1 interior nodes); the residual is restricted (use_res) and the coarse
    level starts from zero, so the V-cycle is a textbook correction scheme.
    """
    mg = MgConv(1, 1, iterations, (n, n), "zeros", restrict_padding=0, use_res=True).double()
    with torch.no_grad():
        for p in mg.parameters():
            p.zero_()
        for smoothers in list(mg.pre) + list(mg.post):
            for sm in smoothers:
                sm.S.weight[0, 0, 1, 1] = omega / 4
                if sm.A is not None:
                    sm.A.weight[0, 0] = LAPLACE_5PT
        for A, R, P in zip(mg.A_res, mg.R, mg.RT, strict=True):
            A.weight[0, 0] = LAPLACE_5PT
            R.weight[0, 0] = BILINEAR      # P^T: full weighting times 4 for the h^2-scaled coarse equation
            P.conv.weight[0, 0] = BILINEAR
    return mg


def _cycle_factors(mg: MgConv, n: int, cycles: int = 10) -> list[float]:
    """Residual reduction per cycle of the defect correction u <- u + MgConv(f - A u)."""
    laplace = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False).double()
    laplace.weight.data[0, 0] = LAPLACE_5PT
    torch.manual_seed(0)
    f = torch.randn(1, 1, n, n, dtype=torch.float64)
    u = torch.zeros_like(f)
    factors = []
    with torch.no_grad():
        residual = f
        for _ in range(cycles):
            u = u + mg(residual)
            new = f - laplace(u)
            factors.append(float(new.norm() / residual.norm()))
            residual = new
    return factors


@pytest.mark.parametrize("iterations", [[(1, 1)] * 3 + [(8, 0)], [(2, 0)] * 3 + [(8, 0)]])
def test_fixed_stencil_mgconv_is_a_multigrid_cycle(iterations):
    n = 31
    mg = _fixed_stencil_mgconv(n, iterations)
    assert mg.kernels == [3, 3, 3]
    factors = _cycle_factors(mg, n)
    assert max(factors) < 0.5, factors
    # the same smoother on the fine level alone stalls on the smooth error: the coarse levels do the work
    single_level = _cycle_factors(_fixed_stencil_mgconv(n, [iterations[0]]), n)
    assert single_level[-1] > 0.9, single_level
