"""nprnn.dlfs2.base_model: files move both ways between the book's BaseModel and ours, and loading never
runs a pickle's code."""

import os
import pickle

import numpy as np
import pytest

from nprnn.dlfs2.base_model import BaseModel, BookParamsError


def tied_params(rng):
    """Shaped like a tiny BetterRnnlm: the output weight is a transposed view of the embedding."""
    embed = rng.standard_normal((7, 3)).astype(np.float32)
    return [embed, rng.standard_normal((3, 8)).astype(np.float32), np.zeros(8, np.float32), embed.T,
            rng.standard_normal(7).astype(np.float32)]  # fmt: skip


def model_with(cls, params):
    model = cls()
    model.params = params
    return model


def test_ours_and_the_books_files_load_both_ways(dlfs2, rng, tmp_path):
    from common.base_model import BaseModel as BookModel

    params = tied_params(rng)
    half = [p.astype(np.float16).astype(np.float32) for p in params]
    model_with(BaseModel, params).save_params(str(tmp_path / "ours.pkl"))
    model_with(BookModel, params).save_params(str(tmp_path / "book.pkl"))
    with open(tmp_path / "ours.pkl", "rb") as f:  # what the book's load_params reads: float16 arrays
        saved = pickle.load(f)
    assert [p.dtype for p in saved] == [np.float16] * 5
    for name in ("ours.pkl", "book.pkl"):
        for cls in (BaseModel, BookModel):
            fresh = tied_params(np.random.default_rng(99))
            model = model_with(cls, fresh)
            model.load_params(str(tmp_path / name))
            for got, want in zip(model.params, half):
                assert got.dtype == np.float32
                np.testing.assert_array_equal(got, want)
            assert np.shares_memory(fresh[0], fresh[3])  # loaded in place: the tie survives
    assert sorted(os.listdir(tmp_path)) == ["book.pkl", "ours.pkl"]  # no temporary file left


def test_default_file_name_is_the_class_name(rng, tmp_path, monkeypatch):
    class Rnnlm(BaseModel):
        pass

    monkeypatch.chdir(tmp_path)
    model = model_with(Rnnlm, tied_params(rng))
    model.save_params()
    assert os.listdir(tmp_path) == ["Rnnlm.pkl"]
    model.load_params()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_pickle_is_refused_without_running(rng, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("Rnnlm.pkl", "wb") as f:
        pickle.dump([np.zeros(3, np.float16), Exploit()], f)
    model = model_with(BaseModel, [np.zeros(3, np.float32), np.zeros(3, np.float32)])
    with pytest.raises(BookParamsError, match="refused"):
        model.load_params("Rnnlm.pkl")
    assert not os.path.exists("pwned")


def test_mismatched_files_and_missing_files(rng, tmp_path):
    path = str(tmp_path / "m.pkl")
    model_with(BaseModel, tied_params(rng)).save_params(path)
    with pytest.raises(BookParamsError, match="holds 5 arrays"):
        model_with(BaseModel, tied_params(rng)[:4]).load_params(path)
    other = tied_params(rng)
    other[1] = np.zeros((3, 9), np.float32)
    with pytest.raises(BookParamsError, match=r"array 1 has shape \(3, 8\)"):
        model_with(BaseModel, other).load_params(path)
    with pytest.raises(OSError, match="No file: "):
        model_with(BaseModel, other).load_params(str(tmp_path / "missing.pkl"))
    with pytest.raises(NotImplementedError):
        BaseModel().forward()
