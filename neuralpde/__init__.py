"""neuralpde: seven neural PDE methods behind one case-definition layer, each checked against a
finite-element reference (FEniCSx when installed, else the embedded scikit-fem).

    import neuralpde as npde
    case = npde.load_case("cases/poisson.yaml", overrides={"reference.degree": 1})
    result = npde.run(case)
    print(result.metrics["method"]["vs_reference"]["rel_l2"])
"""

__version__ = "0.1.0"

from .cases.loader import Case, load_case, load_case_text  # noqa: E402
from .cases.runner import RunResult, run  # noqa: E402
from .errors import CaseError, ExpressionError, MeshError, NeuralPDEError, SolverError  # noqa: E402
from .meshes import Mesh  # noqa: E402
from .pde import PDE, BoundaryCondition, Expression, Heat, Poisson, Problem, div, grad  # noqa: E402
from .solvers.fem import FEField, FEMSolution, get_backend  # noqa: E402
from .solvers.method import METHODS, Method, MethodConfig, MethodResult, RunContext, register  # noqa: E402

__all__ = ["METHODS", "PDE", "BoundaryCondition", "Case", "CaseError", "Expression", "ExpressionError",
           "FEField", "FEMSolution", "Heat", "Mesh", "MeshError", "Method", "MethodConfig", "MethodResult",
           "NeuralPDEError", "Poisson", "Problem", "RunContext", "RunResult", "SolverError", "div",
           "get_backend", "grad", "load_case", "load_case_text", "register", "run"]
