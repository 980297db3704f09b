"""The notebooks in docs/notebooks run top to bottom, and show what their text says they show.

Each one is executed with nbclient in a fresh kernel (this interpreter's, through ipykernel) in a
temporary working directory, so nothing is written into the repository. A cell that raises fails
the test; then the printed numbers are checked, so a notebook that runs but no longer demonstrates
its point fails too.
"""

import os
import re
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"
CELL_TIMEOUT = 120  # seconds per cell; the slowest (a training run) takes well under a minute
# One BLAS thread in the kernel: on the 2 shared cores, BLAS threads competing with other processes made
# the training cells 3x slower (21 s instead of 7 s for notebook 02); one thread is as fast when idle.
KERNEL_ENV = {"NPRNN_BLAS_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_notebook(name, workdir):
    """Execute ``NOTEBOOKS/name`` in ``workdir``; returns (the executed notebook, all its text output)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env={**os.environ, **KERNEL_ENV})  # raises CellExecutionError naming the cell that raised
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                texts.append(output.text)
            elif output.output_type in ("execute_result", "display_data") and "text/plain" in output.data:
                texts.append(output.data["text/plain"])
    return nb, "\n".join(texts)


def images(nb):
    return [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def numbers_after(label, text):
    """Every number printed right after ``label`` (e.g. ``max difference hs   1.7e-16``)."""
    number = r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?"
    return [float(v) for v in re.findall(rf"{label}\s+(?:\S+\s+)?({number})(?!\S)", text)]


def test_notebooks_are_saved_without_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in paths] == [
        "01_rnn_from_the_textbook.ipynb",
        "02_language_model.ipynb",
        "03_seq2seq_attention_dates.ipynb",
    ]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs"


def test_01_rnn_from_the_textbook(tmp_path):
    nb, text = run_notebook("01_rnn_from_the_textbook.ipynb", tmp_path)
    # each bug of the first draft is shown happening
    assert "NameError: name 'Wb' is not defined" in text
    assert "AttributeError: 'numpy.ndarray' object has no attribute 'Shape'" in text
    assert "largest gradient the optimizer saw: 0.0" in text  # rebound gradients: the optimizer sees zeros
    buggy, fixed = [
        (float(a), float(b)) for a, b in re.findall(r"loss at step 1: ([\d.]+)\s+after 30 SGD steps: ([\d.]+)", text)
    ]
    assert buggy[1] == buggy[0] and fixed[1] < 0.9 * fixed[0]  # stuck with the rebound gradients, learns once fixed
    # the fixed cells equal nprnn's layers and pass the numerical gradient check
    differences = numbers_after("max difference", text)
    assert len(differences) == 12 and max(differences) < 1e-12
    errors = numbers_after("relative error", text)
    assert len(errors) == 4 and max(errors) < 1e-7
    assert "gradient check passed" in text
    # the chapter-6 plot
    assert len(images(nb)) == 1


def test_02_language_model(tmp_path):
    nb, text = run_notebook("02_language_model.ipynb", tmp_path)
    (untrained,) = numbers_after("valid perplexity before training:", text)
    (final,) = numbers_after("final valid perplexity:", text)
    assert untrained > 80  # about the vocabulary size: a uniform guess
    assert final < 0.5 * untrained
    samples = re.findall(r"--- temperature ([\d.]+)\nThe ", text)
    assert samples == ["0.5", "1.0", "1.5"]
    assert re.search(r"loaded model: valid perplexity [\d.]+, same sample: True", text)
    assert f"loaded model: valid perplexity {final:.2f}" in text
    assert len(images(nb)) == 1
    assert not list(tmp_path.iterdir()), "the run's files belong in a temporary folder, not the working directory"


def test_03_seq2seq_attention_dates(tmp_path):
    nb, text = run_notebook("03_seq2seq_attention_dates.ipynb", tmp_path)
    assert (tmp_path / "dates.txt").read_text().count("\n") == 5000
    (accuracy,) = re.findall(r"test accuracy: ([\d.]+)% of 500 test questions", text)
    assert float(accuracy) > 80
    right, asked = map(int, re.search(r"(\d+) of (\d+) right", text).groups())
    assert asked == 8 and right >= 6
    assert len(images(nb)) == 2  # the curves and the attention heatmaps
