import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.data import EOS, UNK, CharVocab, Vocab, load_corpus, tokenize

# ---------------------------------------------------------------- PTB: the textbook's ids


def textbook_ptb_ids(path, word_to_id=None):
    """dataset/ptb.py of the textbook: whole file, '\\n' -> '<eos>', split, ids by first appearance."""
    words = open(path).read().replace("\n", "<eos>").strip().split()
    if word_to_id is None:
        word_to_id = {}
        for w in words:
            if w not in word_to_id:
                word_to_id[w] = len(word_to_id)
    return np.array([word_to_id[w] for w in words]), word_to_id


def test_ptb_ids_equal_the_textbooks(shared_dir):
    ptb = shared_dir / "data" / "ptb"
    corpus = load_corpus(ptb)
    train, word_to_id = textbook_ptb_ids(ptb / "ptb.train.txt")
    assert corpus.name == "ptb"
    assert corpus.vocab.tokens == list(word_to_id)  # same tokens, same ids
    assert len(corpus.vocab) == 10000
    np.testing.assert_array_equal(corpus.train, train)
    for which in ("valid", "test"):
        expected, _ = textbook_ptb_ids(ptb / f"ptb.{which}.txt", word_to_id)
        np.testing.assert_array_equal(corpus.split(which), expected)
    # PTB has its own <unk>: that token is the unknown token, at its first-appearance id.
    assert corpus.vocab.unk_id == word_to_id["<unk>"] and corpus.vocab.eos_id == word_to_id["<eos>"]
    assert corpus.train.dtype == np.uint16


# ---------------------------------------------------------------- word level


def test_ids_in_order_of_first_appearance():
    v = Vocab.build("the cat sat\non the mat\n")
    assert v.tokens == ["the", "cat", "sat", EOS, "on", "mat", UNK]
    np.testing.assert_array_equal(v.encode("the mat sat\n"), [0, 5, 2, 3])


def test_tokenize_word_level():
    assert tokenize("  a b \n\nc\td") == ["a", "b", EOS, EOS, "c", "d"]
    # No <eos> after an unterminated last line, as with the textbook's replace('\n', '<eos>').
    assert tokenize("a\nb") == ["a", EOS, "b"]
    assert tokenize("") == [] and tokenize("\n") == [EOS]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "bb", "<unk>", "c.d", "N"]), max_size=5), max_size=6))
def test_tokenize_matches_textbook_rule_on_ptb_style_lines(lines):
    # PTB lines start and end with a space; there the textbook's rule is well defined.
    text = "".join(" " + " ".join(words) + " \n" for words in lines)
    assert tokenize(text) == text.replace("\n", "<eos>").strip().split()


def test_unknown_words_map_to_unk_appended_when_corpus_has_none():
    v = Vocab.build("a b a\n")
    assert v.tokens == ["a", "b", EOS, UNK] and v.unk_id == 3
    np.testing.assert_array_equal(v.encode(["a", "zzz", "b", "<eos>", "q"]), [0, 3, 1, 2, 3])


def test_corpus_unk_token_is_used_where_it_first_appears():
    v = Vocab.build("x <unk> y\n")
    assert v.unk_id == 1 and v.eos_id == 3 and len(v) == 4
    np.testing.assert_array_equal(v.encode("never seen x"), [1, 1, 0])


def test_eos_added_when_text_has_no_line_break():
    v = Vocab.build("one line")
    assert v.tokens == ["one", "line", UNK, EOS] and v.eos_id == 3


def test_decode_word_level():
    v = Vocab.build("the cat sat\non the mat\n")
    assert v.decode(v.encode("the cat\n\nsat")) == "the cat\n\nsat"
    assert v.decode(v.encode("  the   cat  \n")) == "the cat\n"  # whitespace normalized
    assert v.decode(v.encode("dog sat")) == "<unk> sat"
    assert v.decode([]) == ""


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=30))
def test_encode_decode_round_trip_word_level(ids):
    v = Vocab.build("the cat sat\non the mat\n")
    np.testing.assert_array_equal(v.encode(v.decode(ids)), ids)


# ---------------------------------------------------------------- max_vocab


def test_max_vocab_keeps_most_frequent_ties_by_first_appearance():
    text = "d c c b b a a a\n"  # counts: d 1, c 2, b 2, a 3, <eos> 1
    v = Vocab.build(text, max_vocab=4)  # <unk>, <eos> + the two most frequent: a (3), then c before b (tie)
    assert v.tokens == ["c", "a", EOS, UNK]
    np.testing.assert_array_equal(v.encode(text), [3, 0, 0, 3, 3, 1, 1, 1, 2])
    assert Vocab.build(text, max_vocab=2).tokens == [EOS, UNK]
    assert Vocab.build(text, max_vocab=100) == Vocab.build(text)


def test_max_vocab_keeps_specials_even_when_rare():
    text = "a a a <unk> b b\n"
    v = Vocab.build(text, max_vocab=3)
    assert v.tokens == ["a", UNK, EOS]
    # char level: <unk> and "\n" kept, plus the most frequent character (" ", 5 times)
    assert Vocab.build(text, max_vocab=3, level="char").tokens == [" ", "\n", UNK]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list("abcdefgh") + [UNK, EOS]), max_size=40), st.integers(2, 12))
def test_max_vocab_against_brute_force(tokens, max_vocab):
    v = Vocab.build(tokens, max_vocab=max_vocab)
    first = {}
    for i, t in enumerate(tokens):
        first.setdefault(t, i)
    ordinary = sorted((t for t in first if t not in (UNK, EOS)), key=lambda t: (-tokens.count(t), first[t]))
    kept = set(ordinary[: max_vocab - 2]) | {UNK, EOS}
    expected = sorted(kept & set(first), key=first.get) + [s for s in (UNK, EOS) if s not in first]
    assert v.tokens == expected
    assert len(v) <= max_vocab
    np.testing.assert_array_equal(v.encode(tokens), [v.word_to_id.get(t, v.unk_id) for t in tokens])


@pytest.mark.parametrize(
    "max_vocab, message",
    [(1, "at least 2 .*got 1"), (2.5, "integer, got float"), ("10", "integer, got str"), (True, "integer")],
)
def test_bad_max_vocab(max_vocab, message):
    with pytest.raises(ValueError, match=message):
        Vocab.build("a b\n", max_vocab=max_vocab)


# ---------------------------------------------------------------- character level


def test_char_level():
    v = Vocab.build("ab\nba\n", level="char")
    assert v.tokens == ["a", "b", "\n", UNK]
    assert v.eos_id == 2 and v.unk_id == 3
    np.testing.assert_array_equal(v.encode("a\nz"), [0, 2, 3])
    assert v.decode([0, 1, 2, 3]) == "ab\n<unk>"
    assert tokenize("a b\n", "char") == ["a", " ", "b", "\n"]


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=40))
def test_char_round_trip(text):
    v = Vocab.build(text, level="char")
    assert v.decode(v.encode(text)) == text
    assert len(v) == len(set(text)) + 1 + ("\n" not in text)  # + <unk>, + "\n" if the text lacks it
    assert v.start_id == v.eos_id == v.word_to_id["\n"]


def test_char_level_with_literal_unk_text():
    v = Vocab.build("<unk>", level="char")
    assert v.tokens == ["<", "u", "n", "k", ">", UNK, "\n"]  # the characters, then <unk> and the line break
    np.testing.assert_array_equal(v.encode("<unk>!"), [0, 1, 2, 3, 4, 5])


# ---------------------------------------------------------------- dtype and serialization


def test_ids_dtype_is_uint16_while_it_fits_else_int32():
    assert Vocab.build("a b\n").encode("a b\n").dtype == np.uint16
    fits = Vocab.build([str(i) for i in range(65534)])  # + <unk> + <eos> = 65536 tokens
    assert len(fits) == 65536 and fits.dtype == np.uint16
    assert fits.encode(["65533", "x"]).tolist() == [65533, 65534]
    big = Vocab.build([str(i) for i in range(65535)])
    assert big.dtype == np.int32
    assert big.encode(["65534", "<eos>"]).tolist() == [65534, 65536]


@pytest.mark.parametrize("level, text", [("word", "x <unk> y\nz\n"), ("char", "héllo wörld\n\t€")])
def test_to_array_from_array_round_trip_through_npz(tmp_path, level, text):
    v = Vocab.build(text, level=level)
    np.savez(tmp_path / "v.npz", vocab=v.to_array())
    with np.load(tmp_path / "v.npz", allow_pickle=False) as f:
        array = f["vocab"]
    assert array.dtype.kind == "U"
    back = Vocab.from_array(array, level)
    assert back == v and back.unk_id == v.unk_id and back.eos_id == v.eos_id
    np.testing.assert_array_equal(back.encode(text), v.encode(text))


def test_from_array_rejects_non_unicode():
    with pytest.raises(ValueError, match=r"1-D unicode array, got shape \(2,\) int64"):
        Vocab.from_array(np.array([1, 2]), "word")
    with pytest.raises(ValueError, match=r"1-D unicode array, got shape \(1, 1\)"):
        Vocab.from_array(np.array([["a"]]), "word")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "tokens, level, message",
    [
        (["a", "b"], "word", "must include '<unk>'"),
        (["a", UNK, "a"], "word", r"'a' appears twice \(ids 0 and 2\)"),
        (["", UNK], "word", "token 0 must be a non-empty string"),
        ([UNK, 3], "word", "token 1 must be a non-empty string.*got 3"),
        ([UNK, "a\0"], "word", "without NUL"),
        ([UNK, "ab"], "char", "one character or '<unk>', got 'ab'"),
        ([UNK], "chars", "level must be 'word' or 'char', got 'chars'"),
    ],
)
def test_bad_tokens(tokens, level, message):
    with pytest.raises(ValueError, match=message):
        Vocab(tokens, level)


def test_decode_bad_ids():
    v = Vocab.build("a b\n")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\), got min -1 and max 2"):
        v.decode([-1, 2])
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\), got min 0 and max 4"):
        v.decode([0, 4])
    with pytest.raises(ValueError, match="1-D integer sequence, got shape .* float64"):
        v.decode([0.5])


def test_bad_level():
    with pytest.raises(ValueError, match="level must be 'word' or 'char', got 'bytes'"):
        Vocab.build("a", level="bytes")
    with pytest.raises(ValueError, match="level must be 'word' or 'char'"):
        tokenize("a", "sentence")


# ---------------------------------------------------------------- the line-end token is always there (issue 14.5)


@pytest.mark.parametrize("level, line_end", [("word", EOS), ("char", "\n")])
@pytest.mark.parametrize("text", ["one line without a break", "aaaa bbbb cccc\ndddd eeee\n" * 3])
@pytest.mark.parametrize("max_vocab", [None, 2, 3])
def test_line_end_and_unk_always_kept(level, line_end, text, max_vocab):
    v = Vocab.build(text, level=level, max_vocab=max_vocab)
    assert line_end in v and UNK in v and v.line_end == line_end
    assert v.eos_id == v.start_id == v.word_to_id[line_end] and v.unk_id == v.word_to_id[UNK]
    assert max_vocab is None or len(v) <= max_vocab
    # every token of the text, and any other, encodes to a defined id; a line break to eos_id
    ids = v.encode(text + "\nzzz ¤")
    assert ids.max() < len(v) and v.encode("\n").tolist() == [v.eos_id]


def test_char_max_vocab_keeps_newline_although_rare():
    text = "e" * 50 + " " * 40 + "a" * 30 + "\n"  # "\n" is the rarest character
    v = Vocab.build(text, level="char", max_vocab=3)
    assert v.tokens == ["e", "\n", UNK]
    assert v.encode("e a\n").tolist() == [0, 2, 2, 1]  # dropped characters -> <unk>
    assert Vocab.build("abc", level="char").tokens == ["a", "b", "c", UNK, "\n"]  # no line break: appended


def test_char_max_vocab_below_two_is_refused():
    with pytest.raises(ValueError, match=r"max_vocab must be at least 2 \(for '<unk>', '\\n'\), got 1"):
        Vocab.build("abc\n", level="char", max_vocab=1)


def test_vocab_without_line_end_starts_from_unk():
    """A checkpoint written before the line end was always kept: a line break encoded to <unk>
    there, so generation starts from <unk>, the id its model saw at each line start; never None."""
    old = Vocab(["e", " ", "a", UNK], "char")
    assert old.eos_id == old.start_id == old.unk_id == 3
    assert old.encode("\n").tolist() == [old.start_id]
    assert Vocab.from_array(old.to_array(), "char").start_id == 3
    assert Vocab(["a", UNK], "word").start_id == 1


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run(
        [sys.executable, "-m", "nprnn", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


SMALL = ("--hidden", "16", "--embed", "8", "--batch-size", "4", "--bptt", "8", "--epochs", "1", "--no-progress")


@pytest.mark.parametrize("corpus", ["builtin", "no-line-break"])
def test_cli_train_and_generate_with_tiny_char_vocab(tmp_path, corpus):
    """`nprnn train --max-vocab 10` (char level) used to die printing the sample with a TypeError
    on 'NoneType', as did `nprnn generate` on its checkpoint, and a corpus without a line break."""
    data = []
    if corpus == "no-line-break":
        # a PTB-layout folder (one line cannot be split 90/5/5 by lines), no file with a line break
        folder = tmp_path / "corpus"
        folder.mkdir()
        for which, repeat in (("train", 60), ("valid", 5), ("test", 5)):
            (folder / f"one.{which}.txt").write_text("the quick brown fox jumps over the lazy dog " * repeat)
        data = ["--data", str(folder), "--eval-batch-size", "2", "--eval-bptt", "8"]
    out = tmp_path / "run"
    options = ("--level", "char", "--max-vocab", "10", "--max-batches", "3", "--out", str(out))
    train = _run("train", *options, *SMALL, *data)
    assert train.returncode == 0, train.stderr
    assert "Traceback" not in train.stderr and "--- sample" in train.stdout
    gen = _run("generate", str(out / "best.npz"), "--length", "20")
    assert gen.returncode == 0, gen.stderr
    # generate prints the sample alone on stdout (20 characters, line breaks among them), a header on stderr
    assert len(gen.stdout) > 20 and "sample of" in gen.stderr and "Traceback" not in gen.stderr


# ---------------------------------------------------------------- CharVocab: seq2seq's character vocabulary


def test_char_vocab_first_appearance_order_and_lookups():
    v = CharVocab.build(["ba_c", "ab_d", "xz_y"])
    assert v.tokens == list("ba_cdxzy") and len(v) == v.vocab_size == 8
    assert v.char_to_id == {c: i for i, c in enumerate("ba_cdxzy")} and v.id_to_char == dict(enumerate("ba_cdxzy"))
    assert v.word_to_id is v.char_to_id and v.level == "char"
    assert v.start == "_" and v.start_id == 2 and "x" in v and "q" not in v
    ids = v.encode("_abz")
    assert ids.dtype == np.int64 and ids.tolist() == [2, 1, 0, 6]
    assert v.decode(ids) == "_abz" and v.decode([]) == ""


def test_char_vocab_unknown_characters_are_an_error_not_unk():
    v = CharVocab.build(["1+2_3"])
    assert v.unknown("9+1 9") == [" ", "9"]
    with pytest.raises(ValueError, match=r"'9\+1' has characters not in the vocabulary: \['9'\]"):
        v.encode("9+1")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\), got min 0 and max 5"):
        v.decode([0, 5])
    with pytest.raises(ValueError, match="1-D integer sequence"):
        v.decode([[0]])


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30))
def test_char_vocab_to_array_from_array_round_trip(tmp_path_factory, text):
    v = CharVocab.build(["_" + text])  # NUL and any other character included
    array = v.to_array()
    assert array.dtype == np.int32 and array.tolist() == [ord(c) for c in v.tokens]
    path = tmp_path_factory.mktemp("v") / "v.npz"
    np.savez(path, vocab=array)
    with np.load(path, allow_pickle=False) as f:
        back = CharVocab.from_array(f["vocab"])
    assert back == v and back.start_id == v.start_id and back.decode(back.encode(text)) == text
    if "\0" not in v:  # a NumPy unicode array drops trailing NULs: hence the code points
        assert CharVocab.from_array(np.array(v.tokens, dtype=str)) == v


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: CharVocab(["a", "b"]), r"start symbol '_' is not one of the 2 characters"),
        (lambda: CharVocab(["_", "ab"]), r"token 1 must be one character, got 'ab'"),
        (lambda: CharVocab(["_", "a", "_"]), r"'_' appears twice \(ids 0 and 2\)"),
        (lambda: CharVocab.from_array(np.array([95, -1])), r"code points must be in \[0, 0x10FFFF\], got min -1"),
        (lambda: CharVocab.from_array(np.array([95, 0x110000])), r"got min 95 and max 1114112"),
        (lambda: CharVocab.from_array(np.array([[95]])), r"1-D array of code points, got shape \(1, 1\)"),
        (lambda: CharVocab.from_array(np.array([95.0])), r"1-D array of code points, got shape \(1,\) float64"),
    ],
)
def test_char_vocab_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
