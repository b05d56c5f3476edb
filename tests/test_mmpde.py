"""2D viscous Burgers (the MM-PDE benchmark PDE) and its transient P1 reference."""

from __future__ import annotations

import pytest

from neuralpde.errors import CaseError
from neuralpde.meshes import rectangle
from neuralpde.pde.burgers import Burgers, travelling_wave
from neuralpde.solvers.fem.burgers import solve_burgers

NU = 0.05


def test_travelling_wave_solves_burgers():
    torch = pytest.importorskip("torch")
    pde = Burgers(nu=NU, exact=travelling_wave(nu=NU))
    x = torch.rand(200, 3, dtype=torch.float64, requires_grad=True)
    u = pde.exact.torch(x[:, :2], t=x[:, 2])
    scale = float(torch.max(torch.abs(pde.exact.diff("x").torch(x[:, :2].detach(), t=x[:, 2].detach()))))
    assert float(torch.max(torch.abs(pde.residual(x, u).detach()))) < 1e-10 * max(scale, 1.0) ** 2


def test_reference_converges_on_the_travelling_wave():
    pde = Burgers(nu=NU, t_end=0.25, exact=travelling_wave(nu=NU))
    errors = [solve_burgers(pde, rectangle(cells=[n, n]), dt=dt).field.errors(pde.exact, t=pde.t_end)["rel_l2"]
              for n, dt in ((8, 0.025), (16, 0.0125), (32, 0.00625))]
    assert errors[2] < 2e-3, errors
    assert errors[2] < 0.5 * errors[1] < 0.25 * errors[0], errors     # first order in dt, second in h


def test_snapshots_and_bad_input():
    pde = Burgers(nu=NU, t_end=0.1, exact=travelling_wave(nu=NU))
    sol = solve_burgers(pde, rectangle(cells=[8, 8]), dt=0.01, save_every=5)
    assert [round(t, 10) for t, _ in sol.snapshots] == [0.0, 0.05, 0.1]
    with pytest.raises(CaseError, match="dt"):
        solve_burgers(pde, rectangle(cells=[4, 4]), dt=1.0)
    with pytest.raises(CaseError, match="boundary data"):
        solve_burgers(Burgers(nu=NU, initial="x", t_end=0.1), rectangle(cells=[4, 4]))
    with pytest.raises(CaseError, match="2D"):
        Burgers(nu=NU, initial=0, dim=1)
    with pytest.raises(CaseError, match="initial: exact"):
        Burgers(nu=NU)


def test_burgers_registers_for_case_files():
    from neuralpde.pde import PDES

    assert PDES["burgers"] is Burgers
    pde = Burgers.from_config(Burgers.config_model(type="burgers", nu=0.1, initial="sin(pi*x)"), exact=None)
    assert pde.nu == 0.1 and not pde.initial.depends_on_time
