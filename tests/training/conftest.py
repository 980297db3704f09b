import pytest

from nprnn.data.corpus import load_corpus
from tests.training.test_lm import TEXT


@pytest.fixture
def corpus(tmp_path):
    """A tiny word-level corpus (three sentences repeated), written to ``tmp_path / "tiny.txt"``."""
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    return load_corpus(path, level="word")
