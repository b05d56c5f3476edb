import os

import pytest

os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")


def _have_dolfinx() -> bool:
    from neuralpde.solvers.fem import compat

    return compat.have_dolfinx()


BACKENDS = ["skfem", pytest.param("dolfinx", marks=pytest.mark.skipif(not _have_dolfinx(),
                                                                       reason="dolfinx is not installed"))]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
