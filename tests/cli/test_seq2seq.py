"""``nprnn seq2seq train|eval|translate`` on tiny data: outputs, resume, attention plot, one-line errors."""

import argparse
import json

import numpy as np
import pytest

from nprnn.cli import build_parser, main
from nprnn.data.seq2seq import DATA_DIR_ENV, load_data_like
from nprnn.models.decode import predict
from nprnn.models.io import load_seq2seq as load_seq2seq_model
from tests.training.test_seq2seq import toy_lines

TINY = ["--embed", "8", "--hidden", "32", "--batch-size", "16", "--lr", "0.03", "--no-progress"]


@pytest.fixture
def toy_file(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text("".join(toy_lines(n=400)))
    return path


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("nprnn: error: ") and err.count("\n") == 1, err
    return err


def test_train_eval_translate(toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["seq2seq", "train", "--data", str(toy_file), "--model", "attention", "--reverse", "--epochs", "3"]
    assert main([*args, "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed and "test exact match" in printed and "questions 5 wide (reversed)" in printed
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["test_accuracy"] > 0.5  # learning: the numbers below are not all zeros
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"

    # eval reproduces the trainer's last test accuracy, from the data path stored in the checkpoint
    assert main(["seq2seq", "eval", str(out / "checkpoint.npz")]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"test exact-match accuracy: {100 * history[-1]['test_accuracy']:.2f}% (")
    assert "/40, greedy, toy.txt)" in line
    assert main(["seq2seq", "eval", str(out / "checkpoint.npz"), "--data", str(toy_file), "--split", "all"]) == 0
    assert "/400, greedy" in capsys.readouterr().out
    assert main(["seq2seq", "eval", str(out / "checkpoint.npz"), "--beam", "3"]) == 0
    assert "beam 3" in capsys.readouterr().out

    # translate prints what the model decodes for those questions
    model, vocab, _, meta = load_seq2seq_model(out / "checkpoint.npz")
    data = load_data_like(meta["data"], vocab)
    questions = [data.decode_question(q).rstrip() for q in data.x_test[:4]]
    expected = [data.decode(a).rstrip() for a in predict(model, data.x_test[:4], data.start_id, 4)]
    assert main(["seq2seq", "translate", str(out / "checkpoint.npz"), *questions]) == 0
    assert capsys.readouterr().out.splitlines() == expected

    png = tmp_path / "att.png"
    assert main(["seq2seq", "translate", str(out / "checkpoint.npz"), questions[0], "--attention-plot", str(png)]) == 0
    assert capsys.readouterr().out.splitlines() == [expected[0], f"attention map: {png}"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cosine_schedule(toy_file, tmp_path, capsys):
    args = ["seq2seq", "train", "--data", str(toy_file), "--epochs", "3", "--schedule", "cosine"]
    assert main([*args, "--out", str(tmp_path / "run"), *TINY]) == 0
    assert "adam lr 0.03, schedule cosine" in capsys.readouterr().out
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert 0.03 > history[0]["lr"] > history[1]["lr"] > history[2]["lr"] > 0  # towards 0 at the last update
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage line and exit status 2
        main([*args, "--out", str(tmp_path / "bad"), "--schedule", "linear"])
    assert exit_info.value.code == 2 and "invalid choice: 'linear'" in capsys.readouterr().err


def test_resume_and_overwrite(toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["seq2seq", "train", "--data", str(toy_file), "--model", "peeky", "--out", str(out), *TINY]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "1"]) == 2
    assert "pass --resume to continue it, or --force" in one_line_error(capsys)
    assert main(["seq2seq", "train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    assert main([*common, "--epochs", "1", "--force"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["seq2seq", "train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint to resume from" in one_line_error(capsys)


def test_book_dataset_names_need_a_data_dir(tmp_path, monkeypatch, capsys):
    assert main(["seq2seq", "train", "--data", "date", "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys)
    assert "--data date: nprnn does not ship the textbook's datasets" in err and "--data-dir" in err
    assert DATA_DIR_ENV in err
    (tmp_path / "addition.txt").write_text("".join(toy_lines(n=100)))  # a stand-in under the book's name
    args = ["seq2seq", "train", "--data", "addition", "--epochs", "1", *TINY]
    assert main([*args, "--data-dir", str(tmp_path), "--out", str(tmp_path / "a")]) == 0
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "addition.txt: 90 train / 10 test" in capsys.readouterr().out
    assert main([*args, "--data", "date", "--out", str(tmp_path / "c")]) == 2
    assert f"no date.txt in {tmp_path}" in one_line_error(capsys)


@pytest.mark.parametrize(
    "content, message",
    [
        ("12+3 _15\n1+2  _3 \n7+8  15\n", "line 3: no '_' separating question and answer"),
        ("12+3 _15\n1+2 _3 \n", "line 2: question is 4 characters wide, expected 5 as on line 1"),
        ("", "empty file"),
    ],
)
def test_malformed_data_is_one_line_with_the_line_number(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    assert main(["seq2seq", "train", "--data", str(path), "--out", str(tmp_path / "o"), *TINY]) == 2
    err = one_line_error(capsys)
    assert message in err and "bad.txt" in err
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_usage_errors_are_one_line(toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["seq2seq", "train", "--data", str(toy_file), "--model", "seq2seq", "--epochs", "1", "--out", str(out)]
    assert main([*args, *TINY]) == 0
    checkpoint = str(out / "checkpoint.npz")
    capsys.readouterr()
    assert main(["seq2seq", "translate", checkpoint, "abcd", "--attention-plot", str(tmp_path / "a.png")]) == 2
    assert "--attention-plot needs an attention model; " in one_line_error(capsys)
    assert not (tmp_path / "a.png").exists()
    assert main(["seq2seq", "translate", checkpoint, "abzd"]) == 2
    assert "characters not in the vocabulary: ['z']" in one_line_error(capsys)
    assert main(["seq2seq", "eval", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz: no such checkpoint file" in one_line_error(capsys)
    assert main(["seq2seq", "eval", checkpoint, "--data", str(tmp_path / "nope.txt")]) == 2
    assert "no such seq2seq data file" in one_line_error(capsys)
    assert main(["seq2seq", "train", "--out", str(tmp_path / "x"), *TINY]) == 2
    assert "--data is required" in one_line_error(capsys)
    assert main(["seq2seq", "train", "--data", str(toy_file), "--out", str(tmp_path / "y"), "--batch-size", "999"]) == 2
    assert "batch size 999 is larger than the training split (360 examples)" in one_line_error(capsys)


def test_help_explains_every_option(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    seq2seq = commands["seq2seq"]
    subcommands = next(a for a in seq2seq._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == {"train", "eval", "translate"}
    for name, sub in subcommands.items():
        for action in sub._actions:
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings or action.dest}"
        with pytest.raises(SystemExit):
            main(["seq2seq", name, "--help"])
        assert "usage: nprnn seq2seq " + name in capsys.readouterr().out


def test_import_book_seq2seq_presets(toy_file, tmp_path, capsys):
    import pickle

    from nprnn.data.seq2seq import load_seq2seq
    from nprnn.models.seq2seq import build_model

    data = load_seq2seq(toy_file)
    params = [p.astype(np.float16) for p in build_model("peeky", data.vocab_size, 4, 6, seed=3).params]
    with open(tmp_path / "peeky.pkl", "wb") as f:
        pickle.dump(params, f)  # what the textbook's save_params writes
    out = tmp_path / "peeky.npz"
    assert main(["import-book", str(tmp_path / "peeky.pkl"), "--preset", "peeky", "--data", str(toy_file),
                 "-o", str(out)]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    assert main(["seq2seq", "eval", str(out), "--data", str(toy_file)]) == 0
    assert "accuracy" in capsys.readouterr().out
    args = ["import-book", str(tmp_path / "peeky.pkl"), "--preset", "rnnlm", "--data", str(toy_file), "-o", str(out)]
    assert main([*args, "--reverse"]) == 2
    assert "--reverse and --data-dir apply to the seq2seq" in one_line_error(capsys)


def test_a_diverging_run_is_a_clean_numeric_stop(toy_file, tmp_path, capsys, recwarn):
    out = tmp_path / "div"
    args = ["seq2seq", "train", "--data", str(toy_file), "--out", str(out), "--epochs", "1", "--max-batches", "3",
            "--embed", "8", "--hidden", "8", "--batch-size", "16", "--lr", "1e30", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "epoch 1" in one_line_error(capsys)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert not (out / "best.npz").exists() and not (out / "checkpoint.npz").exists()


@pytest.mark.parametrize("option, value, saved", [("--model", "peeky", "attention"), ("--hidden", "64", "32"),
                                                  ("--embed", "4", "8"), ("--batch-size", "8", "16"),
                                                  ("--split-seed", "3", "1984"), ("--dtype", "float64", "float32"),
                                                  ("--optimizer", "sgd", "adam"), ("--seed", "2", "0")])  # fmt: skip
def test_resume_refuses_options_that_change_the_run(toy_file, tmp_path, capsys, option, value, saved):
    out = tmp_path / "run"
    assert main(["seq2seq", "train", "--data", str(toy_file), "--out", str(out), "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    before = (out / "checkpoint.npz").read_bytes()
    assert main(["seq2seq", "train", "--out", str(out), "--resume", option, value, "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"nprnn: error: {option} {value}: the run in {out} has ") and saved in err
    assert (out / "checkpoint.npz").read_bytes() == before


def test_resume_applies_safe_options(toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["seq2seq", "train", "--data", str(toy_file), "--out", str(out), "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    args = ["seq2seq", "train", "--out", str(out), "--resume", "--epochs", "2", "--lr", "0.01", "--beam", "2",
            "--max-batches", "5", "--hidden", "32", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    resuming = capsys.readouterr().out.splitlines()[0]
    for shown in ("epochs 1 -> 2", "lr 0.03 -> 0.01", "beam 1 -> 2", "max_batches 0 -> 5"):
        assert shown in resuming
    assert (out / "best.npz").exists()
