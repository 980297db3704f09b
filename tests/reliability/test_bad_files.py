"""Bad files through the command line: each gets one line on stderr naming the file and the problem,
exit code 2, and leaves every file already on disk as it was (paths, sizes, mtimes and bytes are
compared before and after). The library-level checks behind these are in tests/test_checkpoint.py,
tests/interop/test_book.py and tests/data/test_corpus.py; tests/cli/test_lm.py covers a fresh `train` on a
missing, empty, Latin-1 and binary file. Here: every command that reads the file, and the disk.
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

from nprnn.checkpoint import load_checkpoint, save_checkpoint
from nprnn.cli import main
from nprnn.data.corpus import load_corpus, save_ids
from nprnn.models.io import load_lm
from nprnn.training.lm import evaluate
from tests.reliability import make_text, nprnn_command, snapshot

TINY = ["--level", "word", "--hidden", "12", "--embed", "8", "--epochs", "1", "--batch-size", "4", "--bptt", "6",
        "--eval-batch-size", "2", "--eval-bptt", "5", "--no-progress", "--sample-length", "0"]  # fmt: skip
EVAL = ["--batch-size", "2", "--bptt", "5"]


class System:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run: run/checkpoint.npz (resumable), run/best.npz, metrics, plot."""
    root = tmp_path_factory.mktemp("bad-files")
    make_text(root / "words.txt", lines=200, words=12)
    assert main(["train", "--data", str(root / "words.txt"), "--out", str(root / "run"), *TINY]) == 0
    return root


@pytest.fixture
def ws(trained, tmp_path, capsys):
    """A private copy of the trained workspace; every test checks that nothing in it changed."""
    capsys.readouterr()
    shutil.copytree(trained, tmp_path / "ws")
    return tmp_path / "ws"


def fails_cleanly(capsys, ws, args, named, problem):
    """``nprnn ARGS`` exits 2 with one stderr line naming ``named`` and matching ``problem``; ``ws`` unchanged."""
    before = snapshot(ws)
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nprnn: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert str(named) in err, err
    assert re.search(problem, err), err
    assert snapshot(ws) == before
    return err


# ---------------------------------------------------------------- checkpoints


def member_data_offset(path, member):
    """Byte offset of a zip member's stored data (after its local header)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    local_header = path.read_bytes()[info.header_offset : info.header_offset + 30]
    name_len, extra_len = (int.from_bytes(local_header[k : k + 2], "little") for k in (26, 28))
    return info.header_offset + 30 + name_len + extra_len


def truncated(ckpt, path):
    path.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])


def tail_cut(ckpt, path):
    path.write_bytes(ckpt.read_bytes()[:-10])  # the zip's end record is damaged


def flipped_byte(ckpt, path):
    raw = bytearray(ckpt.read_bytes())
    raw[member_data_offset(ckpt, "param/001.npy") + 200] ^= 0x01  # one bit of a weight, past the .npy header
    path.write_bytes(bytes(raw))


def object_array(ckpt, path):
    # an otherwise complete checkpoint with one more member: an object array, which only pickle can load
    arrays, meta = load_checkpoint(ckpt)
    header = json.dumps({"format": "nprnn-checkpoint", "version": 1, "meta": meta})
    with open(path, "wb") as f:
        np.savez(f, **arrays, __nprnn__=np.array(header), evil=np.array([System("true")], dtype=object))


def code_running_pickle(ckpt, path):
    path.write_bytes(pickle.dumps(System(f"touch {path.parent / 'pwned'}")))


def text_file(ckpt, path):
    path.write_text("the cat sat on the mat\n")


def nan_params(ckpt, path):
    arrays, meta = load_checkpoint(ckpt)
    arrays["param/001"] = arrays["param/001"].copy()
    arrays["param/001"][0, 0] = np.nan
    save_checkpoint(path, arrays, meta, finite=False)


def other_kind(ckpt, path):
    save_checkpoint(path, {"W": np.zeros((2, 2))}, {"kind": "nprnn-seq2seq"})


def foreign_metadata(ckpt, path):
    arrays, meta = load_checkpoint(ckpt)
    save_checkpoint(path, arrays, dict(meta, model=dict(meta["model"], attention_heads=4)))


def other_shapes(ckpt, path):
    arrays, meta = load_checkpoint(ckpt)
    save_checkpoint(path, arrays, dict(meta, model=dict(meta["model"], hidden=13)))


def empty(ckpt, path):
    path.write_bytes(b"")


def mentions(*parts):
    """A pattern that matches a message holding every one of ``parts`` (literal), in any order: for the
    messages of nprnn/models/io.py, whose wording may change while what they must name does not."""
    return "".join(f"(?=.*{re.escape(part)})" for part in parts)


CHECKPOINTS = {
    "truncated": (truncated, "corrupted or truncated checkpoint"),
    "end-cut-off": (tail_cut, "corrupted or truncated checkpoint"),
    "flipped-byte": (flipped_byte, r"corrupted or truncated checkpoint \(Bad CRC-32 for file 'param/001.npy'\)"),
    # refused unread, whatever the reason given: an unknown member, or an object array
    "object-array": (object_array, r"member 'evil(\.npy)?' is an object array; refused|unexpected member 'evil'"),
    "code-running-pickle": (code_running_pickle, "looks like a pickle; nprnn never unpickles checkpoints"),
    "text-file": (text_file, "not an .npz checkpoint"),
    "nan-parameters": (nan_params, mentions("param/001", "NaN or Inf")),
    "other-model-kind": (other_kind, mentions("not a language-model", "'nprnn-seq2seq'")),
    "foreign-metadata": (foreign_metadata, mentions("unknown model settings", "attention_heads")),
    "other-shapes": (other_shapes, mentions("param/001", "shape", "(8, 52)", "(8, 48)")),
    "empty": (empty, "not an .npz checkpoint"),
}


@pytest.mark.parametrize("command", ["eval", "generate", "resume"])
@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_bad_checkpoint(ws, capsys, case, command):
    make, problem = CHECKPOINTS[case]
    if command == "resume":  # the run's own checkpoint is the bad file
        path = ws / "run" / "checkpoint.npz"
        good = ws / "good.npz"
        path.rename(good)
        args = ["train", "--out", ws / "run", "--resume", "--no-progress"]
    else:
        good, path = ws / "run" / "checkpoint.npz", ws / "bad.npz"
        args = ["eval", path, *EVAL] if command == "eval" else ["generate", path, "--length", "5"]
    make(good, path)
    fails_cleanly(capsys, ws, args, path, problem)
    assert not list(ws.rglob("pwned"))  # the pickle's command never ran


@pytest.mark.parametrize("command", ["eval", "generate", "resume"])
def test_missing_or_directory_checkpoint(ws, capsys, command):
    if command == "resume":
        path = ws / "run" / "checkpoint.npz"
        path.unlink()
        fails_cleanly(capsys, ws, ["train", "--out", ws / "run", "--resume"], path, "no checkpoint to resume from")
        path.mkdir()
        fails_cleanly(capsys, ws, ["train", "--out", ws / "run", "--resume"], path, "is a directory")
        return
    for path, problem in ((ws / "nothing.npz", "no such checkpoint file"), (ws / "run", "is a directory")):
        fails_cleanly(capsys, ws, [command, path], path, problem)


def test_resume_needs_a_training_checkpoint(ws, capsys):
    """best.npz holds a model only: put in place of checkpoint.npz it cannot be resumed."""
    shutil.copy2(ws / "run" / "best.npz", ws / "run" / "checkpoint.npz")
    path = ws / "run" / "checkpoint.npz"
    fails_cleanly(capsys, ws, ["train", "--out", ws / "run", "--resume"], path, "holds a model but no training state")


def test_exit_code_of_the_process_is_2(ws):
    truncated(ws / "run" / "checkpoint.npz", ws / "bad.npz")
    before = snapshot(ws)
    result = subprocess.run(nprnn_command("eval", ws / "bad.npz"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    expected = f"nprnn: error: {ws / 'bad.npz'}: corrupted or truncated checkpoint (File is not a zip file)\n"
    assert result.stderr == expected
    assert snapshot(ws) == before


# ---------------------------------------------------------------- pickles for import-book


def test_import_book_refuses_a_code_running_pickle(ws, capsys, tmp_path):
    live, marker = tmp_path / "live", tmp_path / "pwned"
    pickle.loads(pickle.dumps(System(f"touch {live}")))  # the payload is real: pickle.load runs it
    assert live.exists()
    evil = ws / "Rnnlm.pkl"
    evil.write_bytes(pickle.dumps([np.zeros((3, 4), np.float16), System(f"touch {marker}")]))
    ptb = ws / "ptb"
    ptb.mkdir()
    for split in ("train", "valid", "test"):
        (ptb / f"ptb.{split}.txt").write_text("the cat sat on the mat\n" * 20)
    target = ws / "run" / "best.npz"  # -o onto an existing checkpoint: it must stay as it is
    args = ["import-book", evil, "--preset", "rnnlm", "--data", ptb, "-o", target]
    fails_cleanly(capsys, ws, args, evil, "refused to unpickle global 'posix.system'")
    assert not marker.exists()


# ---------------------------------------------------------------- corpora


def write(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def ptb_dir(ws, files):
    directory = ws / "corpus"
    directory.mkdir()
    for name, content in files.items():
        write(directory / name, content)
    return directory


GOOD_LINES = "w1 w2 w3 w4\n" * 200


def data_cases(ws):
    """(path given to --data, the path the error must name, the problem) of each bad corpus."""
    latin1 = "caf\xe9 au lait\n".encode("latin-1") * 50
    splits = {"c.train.txt": GOOD_LINES, "c.valid.txt": GOOD_LINES, "c.test.txt": GOOD_LINES}
    cases = {
        "missing": lambda: (ws / "nope.txt", ws / "nope.txt", "no such file or directory"),
        "empty": lambda: (write(ws / "e.txt", b""),) * 2 + ("file is empty",),
        "only-whitespace": lambda: (write(ws / "w.txt", " \n\t\n\n" * 30),) * 2 + ("has no tokens",),
        "binary": lambda: (write(ws / "b.bin", bytes(range(256)) * 20),) * 2 + ("binary file",),
        "not-utf8": lambda: (write(ws / "l.txt", latin1),) * 2 + (r"not UTF-8 text \(invalid byte 0xe9",),
        "dir-without-splits": lambda: (ptb_dir(ws, {"notes.txt": GOOD_LINES}),) * 2 + ("missing",),
        "dir-missing-test": lambda: (
            ptb_dir(ws, {"c.train.txt": GOOD_LINES, "c.valid.txt": GOOD_LINES}),
        ) * 2 + (r"missing \*\.test\.txt",),
        "dir-two-train-files": lambda: (
            ptb_dir(ws, {**splits, "d.train.txt": GOOD_LINES}),
        ) * 2 + (r"expected one \*\.train\.txt, found 2",),
        "dir-bad-valid-file": lambda: (
            lambda d: (d, d / "c.valid.txt", "not UTF-8")
        )(ptb_dir(ws, {**splits, "c.valid.txt": latin1})),
    }  # fmt: skip
    return cases


DATA_CASES = list(data_cases(None))


def point_run_at(ws, data):
    """Make the run in ``ws`` one trained on ``data``: what a resume finds when the run's own corpus
    was replaced since (``--resume`` reads the corpus recorded in the checkpoint)."""
    path = ws / "run" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    save_checkpoint(path, arrays, dict(meta, data=str(data.resolve())))


@pytest.mark.parametrize("command", ["train", "resume", "eval"])
@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_corpus(ws, capsys, case, command):
    data, named, problem = data_cases(ws)[case]()
    if command == "train":  # --force over an existing run: the old run must survive bad data
        args = ["train", "--data", data, "--out", ws / "run", "--force", *TINY]
    elif command == "resume":  # the run's recorded corpus went bad since
        point_run_at(ws, data)
        args = ["train", "--out", ws / "run", "--resume", "--no-progress"]
    else:
        args = ["eval", ws / "run" / "best.npz", "--data", data, *EVAL]
    fails_cleanly(capsys, ws, args, named, problem)


@pytest.mark.parametrize("case", ["other-words", "only-unknown-words"])
def test_resume_refuses_data_with_another_vocabulary(ws, capsys, case):
    """The checkpoint's ids mean its vocabulary's words: if the run's corpus was rewritten since and
    its vocabulary differs, continuing would train on silently remapped ids, so --resume refuses."""
    text = "w1 w2 zebra w3 quux\n" * 100 if case == "other-words" else "zebra quux yak\n" * 100
    data = write(ws / "other.txt", text)
    point_run_at(ws, data)
    args = ["train", "--out", ws / "run", "--resume", "--no-progress"]
    fails_cleanly(capsys, ws, args, data, r"not the vocabulary .*checkpoint.npz was trained with .*'zebra'")


def test_resume_refuses_other_data(ws, capsys):
    """--data on --resume must be the run's corpus (issue 13, rule 1): another file, even a copy of the
    same text, is refused with one line naming both (the check is on the path, resolved)."""
    trained_on = load_checkpoint(ws / "run" / "checkpoint.npz")[1]["data"]
    copy = shutil.copy(trained_on, ws / "copy.txt")
    args = ["train", "--data", copy, "--out", ws / "run", "--resume", "--no-progress"]
    problem = f"the run in {re.escape(str(ws / 'run'))} has data {re.escape(trained_on)}; a resumed run keeps"
    fails_cleanly(capsys, ws, args, copy, problem)


def test_resume_with_the_runs_own_data_is_accepted(ws, capsys, tmp_path):
    """The same corpus given again (here through a symlink: compared resolved) resumes."""
    trained_on = load_checkpoint(ws / "run" / "checkpoint.npz")[1]["data"]
    link = tmp_path / "link.txt"
    link.symlink_to(trained_on)
    args = ["train", "--data", link, "--out", ws / "run", "--resume", "--epochs", "2", "--no-progress"]
    assert main([str(a) for a in [*args, "--sample-length", "0"]]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "epoch 2/2" in out and "epoch 1/2" not in out


def test_too_little_data_names_the_file_and_split(ws, capsys):
    short = write(ws / "short.txt", "w1 w2 w3\n" * 30)
    args = ["eval", ws / "run" / "best.npz", "--data", short, "--split", "valid"]
    fails_cleanly(capsys, ws, args, short, r"short.txt \(valid split\): \d+ tokens, too few for one batch of 10 x 35")
    args = ["train", "--data", short, "--out", ws / "run", "--force", *TINY, "--bptt", "40"]
    fails_cleanly(capsys, ws, args, short, r"\(train split\): \d+ tokens, too few for one batch of 4 x 40")
    # the validation split is checked before training, not after the first epoch
    args = ["train", "--data", short, "--out", ws / "run", "--force", *TINY, "--eval-bptt", "10"]
    fails_cleanly(capsys, ws, args, short, r"\(valid split\): \d+ tokens, too few .*--eval-batch-size/--eval-bptt")


# ---------------------------------------------------------------- eval on other data


def eval_line(capsys):
    captured = capsys.readouterr()
    match = re.fullmatch(r"test perplexity: ([\d.]+)  \((\w+), ([\d,]+) tokens, ([\d.]+)% <unk>\)\n", captured.out)
    assert match, captured.out
    return float(match.group(1)), int(match.group(3).replace(",", "")), float(match.group(4)), captured.err


@pytest.mark.parametrize(
    "text, unk_share",
    [("w1 w2 w3 zebra\n" * 120, 0.2), ("zebra w1 quux yak\n" * 120, 0.6), ("zebra quux yak\n" * 120, 0.75)],
    ids=["some-unknown", "mostly-unknown", "only-unknown-words"],
)
def test_eval_on_other_data_encodes_with_the_checkpoint_vocabulary(ws, capsys, text, unk_share):
    """Allowed (evaluating a model on new text is what eval is for), but never silently: the data
    is encoded with the checkpoint's vocabulary, the <unk> share is printed, and above 50% a
    one-line warning says the perplexity mostly measures predicting <unk>. (At word level every
    line also ends in the known <eos>, hence 75% rather than 100% for a text of unknown words.)"""
    data = write(ws / "other.txt", text)
    before = snapshot(ws)
    assert main(["eval", str(ws / "run" / "best.npz"), "--data", str(data), *EVAL]) == 0
    ppl, tokens, share, err = eval_line(capsys)
    model, vocab, _, _ = load_lm(ws / "run" / "best.npz")
    ids = load_corpus(data, vocab=vocab).test
    assert tokens == len(ids) and share == pytest.approx(100 * np.mean(ids == vocab.unk_id), abs=0.05)
    assert share == pytest.approx(100 * unk_share, abs=0.05)
    assert ppl == pytest.approx(evaluate(model, ids, 2, 5), abs=0.005)
    if unk_share > 0.5:
        assert err == (
            f"nprnn: warning: {unk_share:.0%} of the tokens of {data} (test split) are <unk> for this checkpoint's "
            "vocabulary (other data?); the perplexity mostly measures how well it predicts <unk>\n"
        )
    else:
        assert err == ""
    assert snapshot(ws) == before


# ---------------------------------------------------------------- eval --ids


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"w1 w2 w3\n" * 100, r"not a NumPy .npy id array \(no .npy header\)"),
        (np.array([1, None] * 200, dtype=object), "not a NumPy .npy id array"),
        (np.zeros((20, 20), np.int32), r"expected a 1-D integer id array, got shape \(20, 20\)"),
        (np.zeros(400, np.float32), r"expected a 1-D integer id array, got shape \(400,\) float32"),
        (
            np.arange(400, dtype=np.int32),
            r"ids must be in \[0, 14\) for the checkpoint's vocabulary, got min 0 and max 399",
        ),  # noqa: E501
        (np.full(400, -1, np.int64), r"ids must be in \[0, 14\) .*got min -1"),
    ],
    ids=["text", "object-array", "2-d", "float", "too-large", "negative"],
)
def test_eval_ids_bad_file(ws, capsys, content, problem):
    path = ws / "ids.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content, allow_pickle=content.dtype.hasobject)
    fails_cleanly(capsys, ws, ["eval", ws / "run" / "best.npz", "--ids", path, *EVAL], path, problem)


def test_eval_ids_is_the_data(ws, capsys):
    path = save_ids(ws / "ids.npy", np.zeros(400, np.uint16))
    args = ["eval", ws / "run" / "best.npz", "--ids", path, "--data", ws / "words.txt"]
    fails_cleanly(capsys, ws, args, "--ids", "cannot be combined with --data or --split")
