"""The package nprnn.accel: the names users import, the settings read from the environment at
import, numba imported only when selected, and no import from above (accel is a leaf below the layers)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nprnn.accel

PUBLIC = ["use", "backend", "kernels", "set_blas_threads", "blas_threads", "threads_for", "threads_for_time_layer"]


def python(code, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NPRNN_")}
    done = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_the_public_names_stay():
    for name in PUBLIC:
        assert callable(getattr(nprnn.accel, name)), name
    assert nprnn.accel.backend() in nprnn.accel.BACKENDS


def test_accel_imports_nothing_above_it():
    """Every ``nprnn`` import in nprnn/accel/ is of nprnn.accel itself (static: importing nprnn.accel
    at all runs nprnn/__init__.py, which imports the layers)."""
    package = Path(nprnn.accel.__file__).parent
    files = sorted(package.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "backends.py", "blas.py", "numba_kernels.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: use absolute imports"
                names = [node.module]
            else:
                continue
            for name in names:
                if name == "nprnn" or name.startswith("nprnn."):
                    assert name == "nprnn.accel" or name.startswith("nprnn.accel."), f"{path.name} imports {name}"


def test_environment_variables_select_backend_and_threads():
    pytest.importorskip("numba", reason="the default backend is numba where numba is installed")
    show = "import nprnn.accel as a; print(a.backend(), a.blas_threads())"
    assert python(show).stdout.split() == ["numba", "auto"]  # the defaults
    done = python(show, NPRNN_ACCEL="numpy", NPRNN_BLAS_THREADS="0")
    assert done.stdout.split() == ["numpy", "0"]
    assert python(show, NPRNN_BLAS_THREADS="Adaptive").stdout.split() == ["numba", "adaptive"]
    done = python(show, NPRNN_ACCEL="cuda", NPRNN_BLAS_THREADS="x")
    assert done.stdout.split() == ["numba", "auto"]
    assert "NPRNN_ACCEL='cuda' ignored" in done.stderr and "NPRNN_BLAS_THREADS='x' ignored" in done.stderr


def test_numba_is_imported_when_first_needed_not_with_nprnn():
    pytest.importorskip("numba", reason="the default backend is numba where numba is installed")
    code = (
        "import sys, nprnn, nprnn.accel as a; print('numba' in sys.modules); a.kernels(); print('numba' in sys.modules)"
    )
    assert python(code).stdout.split() == ["False", "True"]


def test_without_numba_the_default_is_numpy():
    code = "import sys; sys.modules['numba'] = None; import nprnn.accel as a; print(a.backend(), a.kernels())"
    assert python(code).stdout.split() == ["numpy", "None"]
    done = python(code, NPRNN_ACCEL="numba")  # asked for by name: says why it is not used
    assert done.stdout.split() == ["numpy", "None"] and "NPRNN_ACCEL='numba' ignored" in done.stderr
