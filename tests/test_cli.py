"""The ``neuralpde`` command line, run as a user runs it (subprocesses)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import neuralpde
from neuralpde.solvers.fem import compat
from neuralpde.solvers.method import METHODS

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def neuralpde_cmd(*args: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("neuralpde")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "neuralpde"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("cli") / "poisson"
    proc = neuralpde_cmd("run", "cases/poisson.yaml", "--smoke", "--out", str(out), "-q")
    return proc, out


def test_info():
    proc = neuralpde_cmd("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"neuralpde {neuralpde.__version__}" in out
    dolfinx_line = next(line for line in out.splitlines() if " dolfinx " in line)
    if compat.have_dolfinx():
        import dolfinx

        assert dolfinx.__version__ in dolfinx_line
        backend_line = next(line for line in out.splitlines() if "FEM backend (auto)" in line)
        assert "dolfinx" in backend_line
    else:
        assert "not installed" in dolfinx_line
    assert "device (auto)" in out


def test_list_cases():
    proc = neuralpde_cmd("list", "cases")
    assert proc.returncode == 0, proc.stderr
    for name in ("poisson.yaml", "poisson_lshape.yaml", "heat.yaml"):
        assert name in proc.stdout
    methods = next(line for line in proc.stdout.splitlines() if line.startswith("methods:"))
    assert "fem" in methods.split(":", 1)[1].replace(",", " ").split()
    assert all(name in methods for name in METHODS)


def test_validate():
    proc = neuralpde_cmd("validate", "cases/poisson.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ") and "poisson" in proc.stdout and "method fem" in proc.stdout


def test_run_smoke(smoke_run):
    proc, out = smoke_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = proc.stdout
    for cell in ("backend", "DOFs", "rel L2 vs ref", "reference P2", "method fem"):
        assert cell in text, text
    output_line = next(line for line in text.splitlines() if line.startswith("output:"))
    assert str(out) in output_line and "metrics.json" in output_line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["case"] == "poisson" and metrics["method"]["type"] == "fem"
    assert (out / "fields.xdmf").is_file() and (out / "fields.png").is_file()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_version():
    proc = subprocess.run([sys.executable, "-m", "neuralpde", "--version"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == neuralpde.__version__


def test_plot_rerenders_png(smoke_run, tmp_path):
    proc, out = smoke_run
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "poisson"
    shutil.copytree(out, folder)
    (folder / "fields.png").unlink()
    proc = neuralpde_cmd("plot", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote" in proc.stdout
    png = folder / "fields.png"
    data = png.read_bytes()
    assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    if importlib.util.find_spec("PIL") is not None:
        from PIL import Image

        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.width > 100 and img.height > 100
            extrema = img.convert("RGB").getextrema()
            assert any(lo != hi for lo, hi in extrema), "the picture is a single flat colour"
            colors = img.convert("RGB").getcolors(maxcolors=1 << 16)   # None: more colours than that
            assert colors is None or len(colors) > 16


def test_plot_without_fields(tmp_path):
    proc = neuralpde_cmd("plot", str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}: ") and "(fix: " in lines[0]
    assert not (tmp_path / "fields.png").exists()


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\npde: {type: poisson, source: 1\n")
    plain = neuralpde_cmd("validate", str(bad))
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    assert [line for line in plain.stderr.splitlines() if line.strip()] == [
        line for line in plain.stderr.splitlines() if line.startswith("error: ")]
    assert f"{bad}: not valid YAML: line " in plain.stderr

    debug = neuralpde_cmd("--debug", "validate", str(bad))
    assert debug.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in debug.stderr
    assert "neuralpde.errors.CaseError" in debug.stderr and "not valid YAML" in debug.stderr


def test_bad_set_exit_code(tmp_path):
    proc = neuralpde_cmd("run", "cases/poisson.yaml", "--smoke", "--set", "foo", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--set: " in lines[0] and "KEY=VALUE" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
