"""The command line on tiny data: train, resume, eval, generate, and one-line errors."""

import argparse
import json
from pathlib import Path

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
    assert first.startswith("the cat") and "sample" not in first  # the sample alone on stdout
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


# ---------------------------------------------------------------- --resume: refused and applied options (rule 1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small finished word-level run to resume from; each test copies it."""
    tmp = tmp_path_factory.mktemp("base")
    (tmp / "tiny.txt").write_text(TEXT)
    out = tmp / "run"
    args = ["train", "--data", str(tmp / "tiny.txt"), "--level", "word", "--out", str(out), "--max-vocab", "50",
            *TINY, "--epochs", "1", "--sample-length", "0"]  # fmt: skip
    assert main(args) == 0
    return tmp


def copy_run(run_dir, tmp_path):
    import shutil

    shutil.copytree(run_dir / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize(
    "option, value, saved",
    [("--cell", "gru", "lstm"), ("--hidden", "64", "12"), ("--embed", "9", "8"), ("--layers", "2", "1"),
     ("--level", "char", "word"), ("--dtype", "float64", "float32"), ("--tie", None, "False"),
     ("--batch-size", "8", "4"), ("--bptt", "7", "6"), ("--optimizer", "sgd", "adam"), ("--seed", "5", "0"),
     ("--max-vocab", "40", "50"), ("--preset", "rnnlm", "tiny"), ("--dropout", "0.2", "0.0"),
     ("--init", "uniform", "xavier"), ("--data", "OTHER", "tiny.txt")],
)  # fmt: skip
def test_resume_refuses_options_that_change_the_run(run_dir, tmp_path, capsys, option, value, saved):
    out = copy_run(run_dir, tmp_path)
    before = (out / "checkpoint.npz").read_bytes()
    if value == "OTHER":
        (tmp_path / "other.txt").write_text(TEXT)
        value = str(tmp_path / "other.txt")
    given = [option] if value is None else [option, value]
    assert main(["train", "--out", str(out), "--resume", *given, "--no-progress", "--sample-length", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"nprnn: error: {option} ")
    assert f"has {option.lstrip('-')} " in err and saved in err.split(" has ", 1)[1]
    assert (out / "checkpoint.npz").read_bytes() == before  # nothing touched


def test_resume_applies_safe_options_and_shows_them(run_dir, tmp_path, capsys):
    out = copy_run(run_dir, tmp_path)
    args = ["train", "--out", str(out), "--resume", "--epochs", "2", "--lr", "0.002", "--max-grad", "0.5",
            "--schedule", "cosine", "--save-every", "3", "--max-batches", "4", "--log-format", "csv",
            "--eval-bptt", "4", "--hidden", "12", "--no-progress", "--sample-length", "0"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    resuming = printed.splitlines()[0]
    for shown in ("epochs 1 -> 2", "lr 0.004 -> 0.002", "max_grad 1.0 -> 0.5", "schedule plateau -> cosine",
                  "save_every 0 -> 3", "max_batches 0 -> 4", "eval_bptt 5 -> 4"):  # fmt: skip
        assert shown in resuming, shown
    assert "hidden" not in resuming  # given with the run's own value: nothing to change
    assert "2 epochs x 4 batches" in printed and (out / "metrics.csv").exists()
    from nprnn.models.io import load_lm

    meta = load_lm(out / "checkpoint.npz")[3]
    assert meta["train"]["lr"] == 0.002 and meta["train"]["max_batches"] == 4 and meta["progress"]["step"] > 0


def test_resume_and_force_together_are_refused(run_dir, tmp_path, capsys):
    out = copy_run(run_dir, tmp_path)
    assert main(["train", "--out", str(out), "--resume", "--force"]) == 2
    assert "pass one of them" in capsys.readouterr().err


# ---------------------------------------------------------------- bad numbers (rule 5, issue 14 point 6)


@pytest.mark.parametrize(
    "args",
    [["train", "--max-batches", "-1"], ["train", "--save-every", "-1"], ["train", "--epochs", "0"],
     ["train", "--hidden", "-3"], ["train", "--init-scale", "nan"], ["train", "--init-scale", "inf"],
     ["train", "--init-scale", "-1"], ["train", "--lr", "0"], ["train", "--lr", "nan"], ["train", "--decay", "4"],
     ["train", "--decay", "1"], ["train", "--dropout", "1"], ["train", "--max-grad", "-1"],
     ["generate", "x.npz", "--length", "-5"], ["generate", "x.npz", "--top-k", "0"],
     ["generate", "x.npz", "--temperature", "inf"], ["eval", "x.npz", "--bptt", "0"]],
)  # fmt: skip
def test_bad_numbers_are_one_line_exit_2(capsys, args):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {args[-2]}" in err and "Traceback" not in err


def test_a_diverging_adam_run_stops_with_exit_2(text_file, tmp_path, capsys):
    out = tmp_path / "div"
    args = ["train", "--data", str(text_file), "--out", str(out), "--optimizer", "adam", "--lr", "1e6", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epoch 1" in err and ("NaN" in err or "inf" in err)
    assert not (out / "best.npz").exists()
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


# ---------------------------------------------------------------- the parser


def test_version_and_did_you_mean(capsys):
    from nprnn import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"nprnn {__version__}"
    for typo, hint in ((["trian"], "did you mean 'train'?"), (["train", "--preset", "tinny"], "did you mean 'tiny'?")):
        with pytest.raises(SystemExit):
            main(typo)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and hint in err


def test_help_and_model_commands_import_no_training_code(text_file, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom nprnn.cli import build_parser\nbuild_parser().format_help()\n"
        "print(sorted(m for m in sys.modules if m.startswith('nprnn.training.') and m != 'nprnn.training.presets'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "v0.1" / "lm-word.npz"
    code = (
        "import sys\nfrom nprnn.cli import main\n"
        f"main(['generate', {str(fixture)!r}, '--length', '3'])\n"
        f"main(['eval', {str(fixture)!r}, '--data', {str(text_file)!r}, '--batch-size', '2', '--bptt', '5'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('nprnn.training.') and m != 'nprnn.training.presets'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[]", out.stderr
    assert "sample of" in out.stderr and "test perplexity" in out.stdout  # both commands did run


def test_two_runs_into_one_folder(text_file, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "both"
    args = [sys.executable, "-m", "nprnn", "train", "--data", str(text_file), "--level", "word", "--out", str(out),
            *TINY, "--epochs", "50", "--sample-length", "0"]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run([*args, "--force"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and second.stderr.count("\n") == 1
        assert "another nprnn run" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.kill()
        first.wait()


# ---------------------------------------------------------------- paths (issue 14 point 4)


def test_a_full_disk_is_one_line_naming_the_checkpoint(text_file, tmp_path, capsys, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "full"
    assert main(["train", "--data", str(text_file), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.npz: No space left on device" in err, err  # the first file written
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"] and not (out / ".lock").exists()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_as_the_checkpoint_is_refused_at_once(tmp_path, kind):
    import os
    import subprocess
    import sys

    path = "/dev/zero" if kind == "device" else str(tmp_path / "ck.npz")
    if kind == "fifo":
        os.mkfifo(path)
    for command in (["generate", path], ["eval", path], ["seq2seq", "translate", path, "x"]):
        out = subprocess.run([sys.executable, "-m", "nprnn", *command], capture_output=True, text=True, timeout=20)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a regular file" in out.stderr
