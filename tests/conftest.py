import os
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """The read-only ../shared folder (PTB, seq2seq data, textbook code). Tests and benchmarks
    may read it; the package never does. In CI it must be there, so a missing one fails."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"expected the shared folder at {SHARED}")
        pytest.skip(f"no shared folder at {SHARED} (it sits beside the repository in CI)")
    return SHARED


@pytest.fixture(scope="session")
def dlfs2(shared_dir):
    """The textbook's reference code, importable as ``common.*``."""
    path = str(shared_dir / "reference" / "dlfs2")
    if path not in sys.path:
        sys.path.insert(0, path)
    import common.time_layers

    return common


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
