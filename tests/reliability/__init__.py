"""Reliability tests (issue 8): crashes, bad files, numeric faults, API misuse, memory.

docs/guarantees.md lists what nprnn guarantees and which test backs each claim.
The helpers below are shared by these test files.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np


def make_text(path, lines=600, words=30, seed=0):
    """A deterministic word-level corpus: ``lines`` lines of 5-12 words drawn from ``w0 .. w{words-1}``."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(words)]
    text = "\n".join(" ".join(rng.choice(vocab, size=rng.integers(5, 13))) for _ in range(lines)) + "\n"
    Path(path).write_text(text)
    return Path(path)


def snapshot(directory):
    """Every file under ``directory``: relative path -> (size, mtime in ns, sha256 of the bytes)."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            stat = path.stat()
            files[str(path.relative_to(directory))] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return files


def nprnn_command(*args):
    """The command line of ``python -m nprnn ARGS`` with this interpreter."""
    return [sys.executable, "-m", "nprnn", *map(str, args)]
