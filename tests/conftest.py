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


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test (gathers of a few thousand entries are ~100x slower with 2
    threads on a loaded 2-core machine); restored afterwards. Use with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
