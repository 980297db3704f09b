"""The command line on tiny data: train, resume, eval, generate, and one-line errors."""

import argparse
import json

import pytest

from nprnn.cli import build_parser, main
from tests.training.test_lm import TEXT

TINY = ["--hidden", "12", "--embed", "8", "--epochs", "2", "--batch-size", "4", "--bptt", "6",
        "--eval-batch-size", "2", "--eval-bptt", "5", "--no-progress", "--sample-length", "12"]  # fmt: skip


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    return path


def test_train_eval_generate(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(text_file), "--level", "word", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "best valid perplexity" in printed and "--- sample" in printed
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]

    assert main(["eval", str(out / "best.npz"), "--split", "valid", "--batch-size", "2", "--bptt", "5"]) == 0
    line = capsys.readouterr().out
    best = min(r["valid_ppl"] for r in history)
    assert f"valid perplexity: {best:.2f}" in line  # eval reproduces the trainer's number

    args = ["generate", str(out / "best.npz"), "--prompt", "the cat", "--length", "15", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    assert first.splitlines()[1].startswith("the cat")
    assert main([*args[:-1], "4"]) == 0
    assert capsys.readouterr().out != first


def test_resume_extends_training(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data", str(text_file), "--level", "word", "--out", str(out), *TINY]
    assert main(["train", *common]) == 0
    assert main(["train", *common]) == 2  # refuses to overwrite a run
    assert "pass --resume to continue it, or --force" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress", "--sample-length", "0"]) == 0
    assert "resuming" in capsys.readouterr().out
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_char_level_and_csv(text_file, tmp_path):
    out = tmp_path / "char"
    args = ["train", "--data", str(text_file), "--level", "char", "--out", str(out), "--log-format", "csv", *TINY]
    assert main(args) == 0
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_ppl,valid_ppl") and len(lines) == 3


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "no such file or directory"),
        ("empty.txt", b"", "empty"),
        ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1") * 50, "UTF-8"),
        ("binary.bin", bytes(range(256)) * 20, "binary"),
    ],
)
def test_bad_data_is_one_line_exit_2(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "o"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nprnn: error: ") and str(path.name) in err
    assert message in err
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_bad_options_are_one_line(text_file, tmp_path, capsys):
    args = ["train", "--data", str(text_file), "--out", str(tmp_path / "o"), *TINY]
    assert main([*args, "--tie"]) == 2
    assert "tie_weights needs embed == hidden, got embed 8 and hidden 12" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing.npz" in err


def test_help_explains_every_option(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "eval", "generate", "import-book", "demo"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings or action.dest}"
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "usage: nprnn " + name in capsys.readouterr().out


def test_demo_loss_goes_down(capsys):
    assert main(["demo", "--epochs", "10"]) == 0
    out = capsys.readouterr().out
    start, end = (float(x) for x in out.splitlines()[-1].split("from ")[1].split(" to "))
    assert end < 0.1 * start


def test_export_onnx(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--data", str(text_file), "--out", str(out), *TINY, "--epochs", "1", "--sample-length", "0"])
        == 0
    )
    capsys.readouterr()
    assert main(["export", str(out / "best.npz"), "-o", str(tmp_path / "lm.onnx")]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    assert (tmp_path / "lm.onnx").stat().st_size > 0
    assert main(["export", str(out / "best.npz"), "-o", str(tmp_path / "bad.onnx"), "--opset", "3"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "bad.onnx").exists()
