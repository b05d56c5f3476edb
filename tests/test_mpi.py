"""``mpirun -n 2 neuralpde run`` gives the serial run's errors and writes each file once."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from neuralpde.solvers.fem.compat import have_dolfinx

pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(not have_dolfinx() or shutil.which("mpirun") is None,
                                 reason="needs dolfinx and mpirun")]


def _mpirun(n, args, tmp_path):
    cmd = ["mpirun", "-n", str(n)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd += ["--allow-run-as-root"]
    cmd += ["--oversubscribe", sys.executable, "-m", "neuralpde", *args]
    env = {**os.environ, "OMPI_MCA_rmaps_base_oversubscribe": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_two_ranks_match_serial(tmp_path):
    case = os.path.abspath("cases/poisson.yaml")
    args = ["run", case, "--smoke", "-q", "--set", "reference.solver.rtol=1e-13",
            "--set", "method.solver.type=lu", "--set", "method.cells=[12, 12]"]
    serial = subprocess.run([sys.executable, "-m", "neuralpde", *args, "--out", str(tmp_path / "serial")],
                            capture_output=True, text=True, timeout=300)
    assert serial.returncode == 0, serial.stderr
    par = _mpirun(2, [*args, "--out", str(tmp_path / "mpi")], tmp_path)
    assert par.returncode == 0, par.stderr + par.stdout
    a = json.loads((tmp_path / "serial" / "metrics.json").read_text())
    b = json.loads((tmp_path / "mpi" / "metrics.json").read_text())
    assert b["mpi_ranks"] == 2 and a["mpi_ranks"] == 1
    assert a["reference"]["num_dofs"] == b["reference"]["num_dofs"]
    for part, key in (("reference", "vs_exact"), ("method", "vs_exact"), ("method", "vs_reference")):
        for norm in ("l2", "h1", "linf"):
            assert b[part][key][norm] == pytest.approx(a[part][key][norm], rel=1e-8), (part, key, norm)
    # each file once: the same file set as the serial run, one summary table, no temporaries
    names = {d: sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("mpi", "serial")}
    assert names["mpi"] == names["serial"]
    assert par.stdout.count("output:") == 1
    assert (tmp_path / "mpi" / "run.log").read_text().count("case poisson") == 1
