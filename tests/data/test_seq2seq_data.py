import numpy as np
import pytest

from nprnn.data import CharVocab
from nprnn.data.corpus import DataError
from nprnn.data.seq2seq import (
    Seq2seqData,
    Seq2seqDataError,
    build_vocab,
    load_seq2seq,
    read_seq2seq,
    resolve_seq2seq_path,
)


def textbook_load_data(path, seed=1984):
    """The textbook's dataset/sequence.py load_data, step for step (global RNG, text-mode read,
    ``line[idx:-1]`` to drop the newline, a fresh vocabulary)."""
    char_to_id, id_to_char = {}, {}

    def update_vocab(txt):
        for c in txt:
            if c not in char_to_id:
                char_to_id[c] = len(char_to_id)
                id_to_char[char_to_id[c]] = c

    questions, answers = [], []
    with open(path) as f:
        for line in f:
            idx = line.find("_")
            questions.append(line[:idx])
            answers.append(line[idx:-1])
    for q, a in zip(questions, answers):
        update_vocab(q)
        update_vocab(a)
    x = np.zeros((len(questions), len(questions[0])), dtype=int)
    t = np.zeros((len(questions), len(answers[0])), dtype=int)
    for i, s in enumerate(questions):
        x[i] = [char_to_id[c] for c in s]
    for i, s in enumerate(answers):
        t[i] = [char_to_id[c] for c in s]
    indices = np.arange(len(x))
    saved = np.random.get_state()  # noqa: NPY002 (the textbook uses the global RNG)
    try:
        np.random.seed(seed)  # noqa: NPY002 (the textbook uses the global RNG)
        np.random.shuffle(indices)  # noqa: NPY002 (the textbook uses the global RNG)
    finally:
        np.random.set_state(saved)  # noqa: NPY002 (the textbook uses the global RNG)
    x, t = x[indices], t[indices]
    split_at = len(x) - len(x) // 10
    return (x[:split_at], t[:split_at]), (x[split_at:], t[split_at:]), char_to_id, id_to_char


@pytest.fixture
def write(tmp_path):
    def write(text, name="data.txt", mode="w"):
        path = tmp_path / name
        if mode == "wb":
            path.write_bytes(text)
        else:
            path.write_text(text, newline="")
        return path

    return write


# ---------------------------------------------------------------- the textbook's files


@pytest.mark.parametrize("name, seed", [("addition", 1984), ("date", 1984), ("addition", 7)])
def test_matches_textbook_loader_on_shared_files(shared_dir, name, seed):
    path = shared_dir / "data" / "seq2seq" / f"{name}.txt"
    (x_train, t_train), (x_test, t_test), char_to_id, id_to_char = textbook_load_data(path, seed)
    data = load_seq2seq(path, seed=seed)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.t_train, t_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.t_test, t_test)
    assert list(data.char_to_id.items()) == list(char_to_id.items())  # same ids, same order
    assert data.id_to_char == id_to_char
    assert len(data.x_test) == 5000 and len(data.x_train) == 45000
    assert np.all(data.t_train[:, 0] == data.start_id) and np.all(data.t_test[:, 0] == data.start_id)


def test_does_not_touch_global_random_state(shared_dir):
    state = np.random.get_state()  # noqa: NPY002 (the textbook uses the global RNG)
    load_seq2seq(shared_dir / "data" / "seq2seq" / "addition.txt")
    after = np.random.get_state()  # noqa: NPY002 (the textbook uses the global RNG)
    assert state[2:] == after[2:] and np.array_equal(state[1], after[1])


def test_addition_first_example_as_in_the_book(shared_dir):
    # the book prints x_train[0] / t_train[0] of addition.txt (seed 1984) as '71+118 ' / '_189 '
    data = load_seq2seq(shared_dir / "data" / "seq2seq" / "addition.txt")
    assert data.decode(data.x_train[0]) == "71+118 " and data.decode(data.t_train[0]) == "_189 "
    assert data.vocab_size == 13


# ---------------------------------------------------------------- vocabulary, shuffle, split, reversal


def test_vocab_first_appearance_question_then_answer(write):
    path = write("ba_c\nab_d\nxz_y\n")
    data = load_seq2seq(path, seed=0)
    assert list(data.char_to_id.items()) == [("b", 0), ("a", 1), ("_", 2), ("c", 3), ("d", 4), ("x", 5), ("z", 6)] + [
        ("y", 7)
    ]
    assert data.id_to_char == {i: c for c, i in data.char_to_id.items()}
    assert build_vocab(["ba", "ab"], ["_c", "_d"])[0] == {"b": 0, "a": 1, "_": 2, "c": 3, "d": 4}


def lines_file(write, n):
    # distinct rows, so the shuffle is visible: question i, answer i reversed
    return write("".join(f"{i:03d}_{str(i)[::-1]:>3}\n" for i in range(n)))


def test_split_sizes_and_seed(write):
    path = lines_file(write, 25)
    data = load_seq2seq(path, seed=3)
    assert len(data.x_train) == 23 and len(data.x_test) == 2  # N - N // 10, N // 10
    again = load_seq2seq(path, seed=3)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    other = load_seq2seq(path, seed=4)
    assert not np.array_equal(other.x_train, data.x_train)
    # a permutation of the rows, each question still paired with its answer
    xs, ts = np.vstack([data.x_train, data.x_test]), np.vstack([data.t_train, data.t_test])
    questions = [data.decode(x) for x in xs]
    assert sorted(questions) == [f"{i:03d}" for i in range(25)] and questions != sorted(questions)
    assert all(data.decode(t) == f"_{str(int(q))[::-1]:>3}" for q, t in zip(questions, ts))


def test_reverse(write):
    path = lines_file(write, 30)
    plain, rev = load_seq2seq(path), load_seq2seq(path, reverse=True)
    np.testing.assert_array_equal(rev.x_train, plain.x_train[:, ::-1])
    np.testing.assert_array_equal(rev.x_test, plain.x_test[:, ::-1])
    np.testing.assert_array_equal(rev.t_train, plain.t_train)  # answers are never reversed
    assert rev.x_train.flags.c_contiguous
    assert rev.decode_question(rev.x_train[0]) == plain.decode(plain.x_train[0])
    assert rev.decode(rev.x_train[0]) == plain.decode(plain.x_train[0])[::-1]


def test_encode_question(write):
    data = load_seq2seq(write("12+3 _15\n1+2  _3 \n"), seed=0)
    np.testing.assert_array_equal(data.encode_question("3+2"), [data.char_to_id[c] for c in "3+2  "])
    rev = load_seq2seq(data.path, seed=0, reverse=True)
    np.testing.assert_array_equal(rev.encode_question("3+2"), [data.char_to_id[c] for c in "  2+3"])
    with pytest.raises(ValueError, match=r"at most 5"):
        data.encode_question("123+45")
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['9'\]"):
        data.encode_question("9+1")


def test_answer_may_contain_underscore_and_crlf_equals_lf(write):
    lf = load_seq2seq(write("ab_c_\nba_d_\n", "lf.txt"), seed=0)
    crlf = load_seq2seq(write("ab_c_\r\nba_d_\r\n", "crlf.txt"), seed=0)
    no_final_newline = load_seq2seq(write("ab_c_\nba_d_", "nonl.txt"), seed=0)
    for other in (crlf, no_final_newline):
        np.testing.assert_array_equal(other.x_train, lf.x_train)
        np.testing.assert_array_equal(other.t_train, lf.t_train)
    answers = {lf.decode(x): lf.decode(t) for x, t in zip(lf.x_train, lf.t_train)}
    assert answers == {"ab": "_c_", "ba": "_d_"}


def test_read_returns_strings(write):
    questions, answers = read_seq2seq(write("1+1 _2 \n10+1_11\n"))
    assert questions == ["1+1 ", "10+1"] and answers == ["_2 ", "_11"]


# ---------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "text, message",
    [
        ("ab_c\nab_c\nabc\n", r"line 3: no '_' separating"),
        ("ab_c\nabc_c\n", r"line 2: question is 3 characters wide, expected 2 as on line 1"),
        ("ab_c\nab_c\nab_cd\n", r"line 3: answer is 3 characters wide, expected 2 as on line 1"),
        ("ab_c\n_c\n", r"line 2: empty question"),
        ("ab_c\nab_\n", r"line 2: empty answer"),
        ("ab_c\nab_c\n\n", r"line 3: no '_'"),  # a blank line is a malformed line
        ("", r"empty file"),
        ("\n", r"line 1: no '_'"),
    ],
)
def test_malformed_lines_name_file_and_line(write, text, message):
    path = write(text)
    with pytest.raises(Seq2seqDataError, match=message) as err:
        load_seq2seq(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)


def test_non_utf8_names_the_line(write):
    path = write(b"ab_c\nab_c\na\xff_c\n", mode="wb")
    with pytest.raises(Seq2seqDataError, match=r"data.txt, line 3: not valid UTF-8"):
        load_seq2seq(path)


# ---------------------------------------------------------------- names and paths


def test_book_names_need_a_folder(tmp_path, write):
    with pytest.raises(FileNotFoundError, match="does not ship"):
        resolve_seq2seq_path("addition")
    with pytest.raises(FileNotFoundError, match="no date.txt in"):
        resolve_seq2seq_path("date", data_dir=tmp_path)
    path = write("a_b\n", name="date.txt")
    assert resolve_seq2seq_path("date", data_dir=tmp_path) == path
    assert resolve_seq2seq_path(path) == path
    with pytest.raises(FileNotFoundError, match="no such seq2seq data file"):
        resolve_seq2seq_path(tmp_path / "missing.txt")


def test_fifo_or_device_is_refused_without_blocking(tmp_path):
    """Issue 14.4: a FIFO as --data used to block for ever in read_bytes()."""
    import os
    import signal

    fifo = tmp_path / "data.txt"
    os.mkfifo(fifo)
    signal.alarm(10)  # a regression fails the test instead of hanging the suite
    try:
        for call in (read_seq2seq, load_seq2seq, resolve_seq2seq_path):
            with pytest.raises(Seq2seqDataError, match=r"data.txt: not a regular file \(a FIFO\), expected a file$"):
                call(fifo)
        if os.path.exists("/dev/zero"):
            with pytest.raises(Seq2seqDataError, match=r"^/dev/zero: not a regular file \(a character device\)"):
                load_seq2seq("/dev/zero")
    finally:
        signal.alarm(0)


# ---------------------------------------------------------------- the vocabulary object (issue 13)


def test_data_holds_a_char_vocab_with_the_textbooks_ids(write):
    data = load_seq2seq(write("ba_c\nab_d\nxz_y\n"), seed=0)
    assert isinstance(data.vocab, CharVocab) and data.vocab.tokens == list("ba_cdxzy")
    assert data.char_to_id is data.vocab.char_to_id and data.id_to_char is data.vocab.id_to_char
    assert data.vocab_size == len(data.vocab) == 8 and data.start_id == data.vocab.start_id == 2
    assert data.vocab == CharVocab.build(q + a for q, a in zip(*read_seq2seq(data.path)))
    assert (data.question_width, data.answer_width) == (2, 2) and data.has_splits


def test_from_vocab_has_no_splits_and_encodes_like_the_data(write):
    data = load_seq2seq(write("12+3 _15\n1+2  _3 \n"), seed=0, reverse=True)
    like = Seq2seqData.from_vocab(data.vocab.to_array(), data.question_width, data.answer_width, reverse=True)
    assert like.x_train is None and like.t_test is None and not like.has_splits
    assert like.vocab == data.vocab and like.char_to_id == data.char_to_id and like.start_id == data.start_id
    assert (like.question_width, like.answer_width, like.reverse) == (5, 3, True)
    np.testing.assert_array_equal(like.encode_question("3+2"), data.encode_question("3+2"))
    assert like.decode_question(like.encode_question("3+2")) == "3+2  " and like.decode([0, 1]) == "12"
    assert "no splits" in repr(like)


def test_the_older_constructor_with_char_to_id_still_works(write):
    data = load_seq2seq(write("ab_c\nba_d\n"), seed=0)
    old = Seq2seqData(
        x_train=data.x_train[:0],
        t_train=data.t_train[:0],
        x_test=data.x_test[:0],
        t_test=data.t_test[:0],
        char_to_id=dict(data.char_to_id),
        id_to_char=dict(data.id_to_char),
        reverse=False,
    )
    assert old.vocab == data.vocab and (old.question_width, old.answer_width) == (2, 2)
    with pytest.raises(ValueError, match="id_to_char is not the inverse"):
        Seq2seqData(data.x_train, data.t_train, char_to_id=data.char_to_id, id_to_char={0: "z"})
    with pytest.raises(ValueError, match="ids must be 0, 1"):
        Seq2seqData(data.x_train, data.t_train, char_to_id={"_": 0, "a": 5})
    with pytest.raises(ValueError, match="give vocab"):
        Seq2seqData(data.x_train, data.t_train)
    with pytest.raises(ValueError, match="question width unknown"):
        Seq2seqData(vocab=data.vocab, answer_width=3)
    with pytest.raises(ValueError, match=r"answer width ambiguous: \[2, 4\]"):
        Seq2seqData(data.x_train, data.t_train, vocab=data.vocab, answer_width=4)


def test_load_with_a_given_vocab_and_with_vocab_renumber_alike(write):
    lines = ["ab_c", "ba_d", "aa_c", "bb_d"]
    original = load_seq2seq(write("\n".join(lines) + "\n", "a.txt"), seed=5)
    shuffled = write("\n".join(lines[::-1]) + "\n", "b.txt")  # other first appearances, so other ids
    own = load_seq2seq(shuffled, seed=5)
    assert own.vocab != original.vocab
    given = load_seq2seq(shuffled, seed=5, vocab=original.vocab)
    renumbered = own.with_vocab(original.vocab)
    for data in (given, renumbered):
        assert data.vocab == original.vocab
        for a, b in ((data.x_train, own.x_train), (data.t_test, own.t_test)):
            assert [data.decode(row) for row in a] == [own.decode(row) for row in b]  # same rows, same text
    np.testing.assert_array_equal(given.x_train, renumbered.x_train)
    bad = write("ab_z\nab_c\n", "z.txt")
    with pytest.raises(Seq2seqDataError, match=r"z.txt: characters not in the vocabulary: \['z'\]"):
        load_seq2seq(bad, vocab=original.vocab)
    with pytest.raises(Seq2seqDataError, match=r"z.txt: characters not in the vocabulary: \['z'\]"):
        load_seq2seq(bad).with_vocab(original.vocab)
