import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nprnn.data import (
    BPTTBatches,
    DataError,
    EvalBatches,
    Vocab,
    builtin_text,
    encode_file,
    load_corpus,
    open_ids,
    read_text,
    save_ids,
    split_lines,
    tokenize,
)


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


@pytest.fixture
def ptb_like(tmp_path):
    """A tiny PTB-layout directory."""
    d = tmp_path / "tiny"
    d.mkdir()
    write(d / "tiny.train.txt", " the cat sat \n the dog sat \n")
    write(d / "tiny.valid.txt", " the bird sat \n")
    write(d / "tiny.test.txt", " a cow \n")
    return d


# ---------------------------------------------------------------- the built-in corpus


def test_builtin_text_is_the_pydoc_topics_in_sorted_key_order():
    from pydoc_data.topics import topics

    text = builtin_text()
    assert len(text) > 100_000
    pos = 0
    for key in sorted(topics):  # each topic in turn, a blank line between (every topic ends with "\n")
        assert text.startswith(topics[key], pos)
        pos += len(topics[key]) + 1
    assert pos == len(text) + 1


@pytest.mark.parametrize("level", ["word", "char"])
def test_builtin_corpus_splits_add_up_and_are_contiguous(level):
    corpus = load_corpus(level=level)
    assert corpus.name == "pydoc-topics" and corpus.level == level
    text = builtin_text()
    whole = corpus.vocab.encode(text)
    sizes = [len(corpus.train), len(corpus.valid), len(corpus.test)]
    assert sum(sizes) == len(whole) == len(tokenize(text, level))
    # Contiguous blocks in order: train, then valid, then test, with nothing left out.
    np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.valid, corpus.test]), whole)
    assert 0.85 < sizes[0] / sum(sizes) < 0.95 and min(sizes) > 0
    assert corpus.train.dtype == np.uint16


def test_builtin_corpus_is_deterministic():
    a, b = load_corpus(), load_corpus()
    assert a.vocab == b.vocab
    for which in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.split(which), b.split(which))


def test_vocab_comes_from_train_only_and_oov_maps_to_unk():
    corpus = load_corpus()
    train_tokens = set(tokenize(split_lines(builtin_text())[0]))
    assert set(corpus.vocab.tokens) == train_tokens | {"<unk>"}
    valid_tokens = tokenize(split_lines(builtin_text())[1])
    unknown = [i for i, t in enumerate(valid_tokens) if t not in train_tokens]
    assert unknown  # the documentation's later topics have words the earlier ones lack
    assert (corpus.valid[unknown] == corpus.vocab.unk_id).all()


def test_builtin_max_vocab():
    corpus = load_corpus(max_vocab=500)
    assert len(corpus.vocab) == 500
    assert corpus.train.max() < 500 and (corpus.train == corpus.vocab.unk_id).any()


# ---------------------------------------------------------------- splitting


def test_split_lines_contiguous_blocks_of_whole_lines():
    text = "".join(f"line {i}\n" for i in range(20))
    train, valid, test = split_lines(text)
    assert train + valid + test == text
    assert [b.count("\n") for b in (train, valid, test)] == [18, 1, 1]
    assert valid == "line 18\n" and test == "line 19\n"
    assert [b.count("\n") for b in split_lines(text, (0.5, 0.25, 0.25))] == [10, 5, 5]
    assert split_lines("a\nb", (0.5, 0.5, 0)) == ("a\n", "b", "")


@pytest.mark.parametrize("split", [(0.9, 0.1), (0.5, 0.5, 0.5), (0, 0.5, 0.5), (1.1, -0.05, -0.05), "abc", 3])
def test_bad_split(split):
    with pytest.raises(ValueError, match="split must be three fractions"):
        split_lines("a\nb\n", split)


def test_single_file_is_split_like_the_builtin(tmp_path):
    text = "".join(f"w{i % 7} w{i % 3}\n" for i in range(40))
    path = write(tmp_path / "mine.txt", text)
    corpus = load_corpus(path, split=(0.8, 0.1, 0.1))
    assert corpus.name == "mine"
    train, valid, test = split_lines(text, (0.8, 0.1, 0.1))
    vocab = Vocab.build(train)
    assert corpus.vocab == vocab
    for which, block in zip(("train", "valid", "test"), (train, valid, test)):
        np.testing.assert_array_equal(corpus.split(which), vocab.encode(block))
    assert len(corpus.train) == 32 * 3 and len(corpus.valid) == len(corpus.test) == 4 * 3


def test_single_file_char_level(tmp_path):
    path = write(tmp_path / "c.txt", "ab\n" * 18 + "zz\n" + "ay\n")
    corpus = load_corpus(path, level="char")
    assert corpus.vocab.tokens == ["a", "b", "\n", "<unk>"]
    assert corpus.vocab.decode(corpus.valid) == "<unk><unk>\n"
    assert corpus.vocab.decode(corpus.test) == "a<unk>\n"


def test_crlf_and_bom_are_normalized(tmp_path):
    path = write(tmp_path / "w.txt", b"\xef\xbb\xbfa b\r\nc\rd\n")
    assert read_text(path) == "a b\nc\nd\n"


# ---------------------------------------------------------------- PTB-layout directories


def test_directory_vocab_from_train_only(ptb_like):
    corpus = load_corpus(ptb_like)
    assert corpus.name == "tiny"
    assert corpus.vocab.tokens == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert corpus.vocab.decode(corpus.valid) == "the <unk> sat\n"
    # The test split is all unknown words: fine.
    np.testing.assert_array_equal(corpus.test, [5, 5, 3])


def test_directory_char_level_and_max_vocab(ptb_like):
    assert load_corpus(ptb_like, level="char").vocab.tokens[:4] == [" ", "t", "h", "e"]
    assert load_corpus(ptb_like, max_vocab=4).vocab.tokens == ["the", "sat", "<eos>", "<unk>"]


def test_given_vocab_is_used_as_is(ptb_like):
    vocab = Vocab(["sat", "<unk>", "the", "<eos>"])
    corpus = load_corpus(ptb_like, vocab=vocab)
    assert corpus.vocab is vocab
    np.testing.assert_array_equal(corpus.valid, [2, 1, 0, 3])
    with pytest.raises(ValueError, match="level 'char' does not match the given vocabulary's level 'word'"):
        load_corpus(ptb_like, level="char", vocab=vocab)
    with pytest.raises(ValueError, match="max_vocab cannot be used with a given vocabulary"):
        load_corpus(ptb_like, max_vocab=3, vocab=vocab)


# ---------------------------------------------------------------- errors, one line naming the file


def assert_data_error(match, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        load_corpus(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_path(tmp_path):
    assert_data_error(f"{tmp_path / 'nope'}: no such file or directory", tmp_path / "nope")


def test_directory_without_the_splits(tmp_path):
    write(tmp_path / "x.train.txt", "a\n")
    assert_data_error(r"expected one each of .*; missing \*\.valid\.txt, \*\.test\.txt", tmp_path)


def test_directory_with_two_train_files(ptb_like):
    write(ptb_like / "other.train.txt", "b\n")
    assert_data_error(r"expected one \*\.train\.txt, found 2: other.train.txt, tiny.train.txt", ptb_like)


def test_empty_file(tmp_path, ptb_like):
    assert_data_error(f"{tmp_path / 'e.txt'}: file is empty", write(tmp_path / "e.txt", b""))
    write(ptb_like / "tiny.valid.txt", b"")
    assert_data_error("tiny.valid.txt: file is empty", ptb_like)


def test_non_utf8_names_the_byte_offset(tmp_path, ptb_like):
    path = write(tmp_path / "latin1.txt", "caf\u00e9 ok\n".encode("latin-1"))
    message = assert_data_error(r"latin1.txt: not UTF-8 text \(invalid byte 0xe9 at byte offset 3\)", path)
    assert str(path) in message
    write(ptb_like / "tiny.test.txt", b"ok\n\xff\xfe")
    assert_data_error(r"tiny.test.txt: not UTF-8 text \(invalid byte 0xff at byte offset 3\)", ptb_like)


def test_binary_file(tmp_path):
    path = write(tmp_path / "b.bin", b"abc\x00\x01\x02")
    assert_data_error(r"b.bin: binary file \(NUL byte at byte offset 3\)", path)
    # UTF-16 text is full of NULs: reported as binary, not as garbage tokens.
    assert_data_error("binary file", write(tmp_path / "u16.txt", "hello\n".encode("utf-16")))


def test_train_split_without_tokens(tmp_path, ptb_like):
    write(ptb_like / "tiny.train.txt", " \n\t\n")
    assert_data_error("tiny.train.txt: the training split has no tokens", ptb_like)
    assert_data_error("the training split has no tokens", ptb_like, level="char")
    path = write(tmp_path / "w.txt", "\n" * 18 + "a\nb\n")
    assert_data_error("w.txt: the training split has no tokens", path)


def test_file_too_short_to_split(tmp_path):
    path = write(tmp_path / "short.txt", "one line only\n")
    assert_data_error(r"short.txt: too few lines \(1\) to give the valid split", path)
    assert len(load_corpus(path, split=(1, 0, 0)).train) == 4  # an empty share is asked for: fine


def test_read_text_of_a_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory, expected a text file"):
        read_text(tmp_path)


# ---------------------------------------------------------------- compact storage, memory mapping


def test_save_open_ids_memory_maps_and_batches_agree(tmp_path):
    corpus = load_corpus()
    path = save_ids(tmp_path / "train.npy", corpus.train)
    ids = open_ids(path)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and not ids.flags.writeable
    np.testing.assert_array_equal(ids, corpus.train)
    for mapped, loaded in [
        (BPTTBatches(ids, 8, 20), BPTTBatches(corpus.train, 8, 20)),
        (EvalBatches(ids), EvalBatches(corpus.train)),
    ]:
        assert isinstance(mapped.ids, np.memmap)  # batched straight from the file, never loaded whole
        for step in (0, 1, len(mapped) - 1):
            for a, b in zip(mapped.batch(step), loaded.batch(step)):
                assert a.dtype == np.int32 and type(a) is np.ndarray
                np.testing.assert_array_equal(a, b)


def test_save_ids_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"ids must be a 1-D integer array, got shape \(2, 2\)"):
        save_ids(tmp_path / "x.npy", np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="float64"):
        save_ids(tmp_path / "x.npy", [0.5, 1.5])


def test_open_ids_errors(tmp_path):
    with pytest.raises(DataError, match="nope.npy: no such file"):
        open_ids(tmp_path / "nope.npy")
    with pytest.raises(DataError, match="junk.npy: not a NumPy .npy id array"):
        open_ids(write(tmp_path / "junk.npy", "hello"))
    np.save(tmp_path / "f.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"f.npy: expected a 1-D integer id array, got shape \(3,\) float64"):
        open_ids(tmp_path / "f.npy")


@pytest.mark.parametrize("level", ["word", "char"])
def test_encode_file_streams_to_the_same_ids(tmp_path, level):
    data = "\ufeff the cat\r\n\n sat on é \rthe mat\nlast line without newline".encode()
    path = write(tmp_path / "big.txt", data)
    vocab = Vocab.build("the cat sat on the mat\n", level=level)
    ids = encode_file(path, vocab, tmp_path / "big.npy")
    assert isinstance(ids, np.memmap) and ids.dtype == vocab.dtype
    np.testing.assert_array_equal(ids, vocab.encode(read_text(path)))
    assert not (tmp_path / "big.npy.tmp").exists()


def test_encode_file_errors(tmp_path):
    vocab = Vocab.build("a\n")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8 text \(invalid byte 0xc3 at byte offset 8\)"):
        encode_file(write(tmp_path / "bad.txt", b"a\nbb\nccc\xc3("), vocab, tmp_path / "o.npy")
    with pytest.raises(DataError, match=r"nul.txt: binary file \(NUL byte at byte offset 4\)"):
        encode_file(write(tmp_path / "nul.txt", b"a\nb\n\x00"), vocab, tmp_path / "o.npy")
    with pytest.raises(DataError, match="empty.txt: file is empty"):
        encode_file(write(tmp_path / "empty.txt", b""), vocab, tmp_path / "o.npy")
    with pytest.raises(DataError, match="no such file"):
        encode_file(tmp_path / "missing.txt", vocab, tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()


# ---------------------------------------------------------------- only regular files (issue 14.4)


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if the test blocks for more than 10 seconds."""
    import signal

    def stop(signum, frame):
        raise AssertionError("blocked for 10 s: a FIFO or device was opened or read")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "corpus.txt"
    os.mkfifo(path)
    return path


def test_fifo_as_corpus_is_refused_at_once(fifo, no_hang):
    for call in (lambda: load_corpus(fifo), lambda: read_text(fifo)):
        with pytest.raises(DataError) as info:
            call()
        assert str(info.value) == f"{fifo}: not a regular file (a FIFO), expected a file"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_as_corpus_is_refused(no_hang):
    assert_data_error(r"^/dev/zero: not a regular file \(a character device\), expected a file$", "/dev/zero")


def test_fifo_as_a_split_file_of_a_directory_is_refused(ptb_like, no_hang):
    (ptb_like / "tiny.valid.txt").unlink()
    os.mkfifo(ptb_like / "tiny.valid.txt")
    message = assert_data_error("not a regular file", ptb_like)
    assert message == f"{ptb_like / 'tiny.valid.txt'}: not a regular file (a FIFO), expected a file"


def test_symlink_to_a_regular_file_is_read(tmp_path):
    target = write(tmp_path / "real.txt", "a b\nc d\n" * 20)
    (tmp_path / "link.txt").symlink_to(target)
    assert load_corpus(tmp_path / "link.txt").vocab == load_corpus(target).vocab


def test_os_errors_name_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.txt", "a b\n" * 20)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    assert_data_error(f"^{path}: Permission denied$", path)
    for call in (lambda: open_ids(path), lambda: encode_file(path, Vocab.build("a\n"), tmp_path / "o.npy")):
        with pytest.raises(DataError, match=f"^{path}: Permission denied$"):
            call()


def test_encode_file_refuses_a_fifo(fifo, tmp_path, no_hang):
    with pytest.raises(DataError, match=r"corpus.txt: not a regular file \(a FIFO\)"):
        encode_file(fifo, Vocab.build("a\n"), tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()


def test_open_ids_refuses_fifo_device_and_directory(fifo, tmp_path, no_hang):
    with pytest.raises(DataError, match=r"^.*corpus.txt: not a regular file \(a FIFO\), expected a file$"):
        open_ids(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(DataError, match=r"^/dev/zero: not a regular file \(a character device\)"):
            open_ids("/dev/zero")
    with pytest.raises(DataError, match=f"^{tmp_path}: is a directory"):
        open_ids(tmp_path)


def npy_header(descr="<u2", shape=(3,), version=(1, 0), header=None):
    """A .npy header as np.save writes it, or with a given header text."""
    text = header if header is not None else f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text = text.encode("latin1")
    length = struct.pack("<H" if version == (1, 0) else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text


@pytest.mark.parametrize(
    "data, message",
    [
        (npy_header(shape=(2**40,)) + b"\0" * 6, r"declares 1,099,511,627,776 ids of uint16 .* but the file has"),
        (npy_header(shape=(4,)) + b"\0" * 6, r"declares 4 ids of uint16 \(\d+ bytes with the header\), but"),
        (npy_header(shape=(2,)) + b"\0" * 6, r"declares 2 ids .*, but the file has"),  # trailing bytes
        (b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'", r"header of 4,294,967,295 bytes in a file of 20 bytes"),
        (b"\x93NUMPY\x01\x00\xff\xff{", r"header of 65,535 bytes in a file of 11 bytes"),
        (npy_header(header="{'descr': '<u2', 'fortran_order': False}"), r"bad header: Header does not contain"),
        (npy_header(header="not python at all ((("), r"bad header"),
        (npy_header(header="{'descr': 'zz', 'fortran_order': False, 'shape': (3,), }"), r"bad header"),
        (npy_header(shape=(-1,)) + b"\0" * 6, r"bad header|header declares"),
        (npy_header(version=(9, 0)), r"unsupported .npy version \(9, 0\)"),
        (b"\x93NUMPY\x01", r"unsupported .npy version None"),
        (b"\x93NUMPY\x01\x00\x05", r"truncated header"),
        (npy_header(descr="|O", shape=(3,)) + b"\0" * 24, r"header declares object|bad header|integer id array"),
        (
            npy_header(descr="<f4", shape=(3,)) + b"\0" * 12,
            r"expected a 1-D integer id array, got shape \(3,\) float32",
        ),
        (npy_header(shape=(3, 1)) + b"\0" * 6, r"expected a 1-D integer id array, got shape \(3, 1\)"),
    ],
)
def test_open_ids_refuses_corrupt_headers(tmp_path, data, message):
    path = write(tmp_path / "ids.npy", data)
    with pytest.raises(DataError, match=message) as info:
        open_ids(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_open_ids_reads_headers_np_save_writes(tmp_path):
    ids = np.arange(70000, dtype=np.int32)
    np.save(tmp_path / "v1.npy", ids)
    with open(tmp_path / "v2.npy", "wb") as f:
        np.lib.format.write_array(f, ids, version=(2, 0))
    for name in ("v1.npy", "v2.npy"):
        mapped = open_ids(tmp_path / name)
        assert isinstance(mapped, np.memmap) and mapped.dtype == np.int32
        np.testing.assert_array_equal(mapped, ids)
    np.save(tmp_path / "empty.npy", np.zeros(0, np.uint16))
    assert open_ids(tmp_path / "empty.npy").shape == (0,)
    write(tmp_path / "handmade.npy", npy_header(shape=(3,)) + np.array([5, 6, 7], "<u2").tobytes())
    assert open_ids(tmp_path / "handmade.npy").tolist() == [5, 6, 7]


def test_save_ids_writes_through_a_symlink(tmp_path):
    target = save_ids(tmp_path / "real.npy", np.array([1, 2], np.uint16))
    (tmp_path / "link.npy").symlink_to(target)
    save_ids(tmp_path / "link.npy", np.array([3, 4, 5], np.uint16))
    assert (tmp_path / "link.npy").is_symlink() and open_ids(target).tolist() == [3, 4, 5]
    os.mkfifo(tmp_path / "fifo.npy")
    with pytest.raises(DataError, match=r"fifo.npy: not a regular file \(a FIFO\), cannot write ids there"):
        save_ids(tmp_path / "fifo.npy", np.array([1], np.uint16))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_cli_train_with_a_fifo_or_device_as_data_exits_2_at_once(tmp_path, kind):
    if kind == "fifo":
        data = tmp_path / "corpus.txt"
        os.mkfifo(data)
    elif not os.path.exists(kind):
        pytest.skip(f"no {kind}")
    else:
        data = kind
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "nprnn", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
    )
    assert run.returncode == 2, run.stderr
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert run.stderr.splitlines() == [f"nprnn: error: {data}: not a regular file ({what}), expected a file"]
    assert time.monotonic() - started < 20
