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
    pytest.importorskip("numba", reason="NPRNN_ACCEL=numba needs numba")
    show = "import nprnn.accel as a; print(a.backend(), a.blas_threads())"
    assert python(show).stdout.split() == ["numpy", "auto"]  # the defaults
    done = python(show, NPRNN_ACCEL="numba", NPRNN_BLAS_THREADS="0")
    assert done.stdout.split() == ["numba", "0"]
    assert python(show, NPRNN_BLAS_THREADS="Adaptive").stdout.split() == ["numpy", "adaptive"]
    done = python(show, NPRNN_ACCEL="cuda", NPRNN_BLAS_THREADS="x")
    assert done.stdout.split() == ["numpy", "auto"]
    assert "NPRNN_ACCEL='cuda' ignored" in done.stderr and "NPRNN_BLAS_THREADS='x' ignored" in done.stderr


def test_numba_is_not_imported_by_default():
    code = (
        "import sys, numpy as np, nprnn\n"
        "from nprnn.layers.lstm import TimeLSTM, init_lstm_params\n"
        "TimeLSTM(*init_lstm_params(2, 3)).forward(np.zeros((1, 2, 2), np.float32))\n"
        "print('numba' in sys.modules)"
    )
    assert python(code).stdout.strip() == "False"
