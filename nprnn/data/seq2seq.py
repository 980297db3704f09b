"""Character-level sequence-to-sequence data in the textbook's format (``addition.txt``, ``date.txt``).

Each line holds a question and its answer, split at the first ``'_'``::

    16+75  _91
    september 27, 1994           _1994-09-27

The ``'_'`` stays as the first character of the answer: it is the decoder's start symbol
(the model reads ``t[:, :-1]`` and predicts ``t[:, 1:]``). All questions share one width and all
answers another (the files are space-padded), so a dataset is two int arrays
``x: (N, Tq)`` and ``t: (N, Ta)``.

``load_seq2seq`` reproduces the textbook's ``dataset/sequence.py`` exactly: character ids in
first-appearance order (question then answer, line by line), the same shuffle for a seed
(default 1984) and the same 90/10 train/test split, so results and saved parameters compare
one to one with the book's.
"""

import os
from pathlib import Path

import numpy as np

from nprnn.data.corpus import DataError, _os_error, open_regular_file
from nprnn.data.vocab import CharVocab

BOOK_DATASETS = ("addition", "date")
DATA_DIR_ENV = "NPRNN_DATA_DIR"  # where find_data looks for the textbook's addition.txt and date.txt


class Seq2seqDataError(DataError):
    """A seq2seq data file that does not follow the ``question_answer`` fixed-width format
    (a ``DataError``, so a ``ValueError``); the message names the file and the line."""


class Seq2seqData:
    """A dataset: id arrays split into train/test, its character vocabulary and its format.

    ``vocab`` is a ``CharVocab`` (encode/decode, ``start_id``, ``to_array``/``from_array``).
    ``x_*: (N, Tq)`` question ids (reversed along time if ``reverse``), ``t_*: (N, Ta)`` answer
    ids, whose first column is always ``start_id`` (the ``'_'``).

    Built by ``load_seq2seq``; ``Seq2seqData.from_vocab`` gives one without splits (``x_train``
    and the others are ``None``): the vocabulary, widths and reversal a checkpoint needs to
    encode questions and decode answers. The textbook's ``char_to_id`` / ``id_to_char`` dicts
    are the vocabulary's; passing them instead of ``vocab`` (the older constructor) still works.
    """

    def __init__(
        self,
        x_train=None,
        t_train=None,
        x_test=None,
        t_test=None,
        char_to_id=None,
        id_to_char=None,
        reverse=False,
        path="",
        *,
        vocab=None,
        question_width=None,
        answer_width=None,
    ):
        if vocab is None:
            if char_to_id is None:
                raise ValueError("Seq2seqData: give vocab (a CharVocab) or char_to_id")
            vocab = CharVocab(sorted(char_to_id, key=char_to_id.__getitem__))
            if list(vocab.char_to_id.items()) != sorted(char_to_id.items(), key=lambda item: item[1]):
                raise ValueError("Seq2seqData: char_to_id ids must be 0, 1, ..., len - 1")
        elif char_to_id is not None and dict(char_to_id) != vocab.char_to_id:
            raise ValueError("Seq2seqData: char_to_id differs from vocab.char_to_id")
        if id_to_char is not None and dict(id_to_char) != vocab.id_to_char:
            raise ValueError("Seq2seqData: id_to_char is not the inverse of char_to_id")
        if not isinstance(vocab, CharVocab):
            raise ValueError(f"Seq2seqData: vocab must be a CharVocab, got {type(vocab).__name__}")
        self.vocab = vocab
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.reverse = bool(reverse)
        self.path = str(path)
        self._question_width = self._width("question", question_width, x_train, x_test)
        self._answer_width = self._width("answer", answer_width, t_train, t_test)

    @staticmethod
    def _width(what, given, train, test):
        found = {a.shape[1] for a in (train, test) if a is not None and np.ndim(a) == 2}
        if given is not None:
            found.add(int(given))
        if len(found) != 1:
            raise ValueError(
                f"Seq2seqData: {what} width "
                + ("unknown: give it or the arrays" if not found else f"ambiguous: {sorted(found)}")
            )
        width = found.pop()
        if width < 1 + (what == "answer"):
            raise ValueError(f"Seq2seqData: {what} width must be at least {1 + (what == 'answer')}, got {width}")
        return width

    @classmethod
    def from_vocab(cls, vocab, question_width, answer_width, reverse=False, path=""):
        """A ``Seq2seqData`` without splits (``x_train`` etc. are ``None``): a checkpoint's vocabulary
        (a ``CharVocab``, or its ``to_array()`` code points) with its widths and reversal."""
        if not isinstance(vocab, CharVocab):
            vocab = CharVocab.from_array(vocab)
        return cls(vocab=vocab, question_width=question_width, answer_width=answer_width, reverse=reverse, path=path)

    def __repr__(self):
        sizes = (
            "no splits"
            if self.x_train is None
            else f"{len(self.x_train):,} train / {len(self.x_test) if self.x_test is not None else 0:,} test"
        )
        return (
            f"Seq2seqData({self.path!r}, {sizes}, {self.vocab_size} characters, "
            f"widths {self.question_width}/{self.answer_width}, reverse={self.reverse})"
        )

    @property
    def has_splits(self):
        return self.x_train is not None

    @property
    def char_to_id(self):
        return self.vocab.char_to_id

    @property
    def id_to_char(self):
        return self.vocab.id_to_char

    @property
    def vocab_size(self):
        return len(self.vocab)

    @property
    def start_id(self):
        return self.vocab.start_id

    @property
    def question_width(self):
        return self._question_width

    @property
    def answer_width(self):
        return self._answer_width

    def encode_question(self, text):
        """One question string -> ids ``(Tq,)``: right-padded with spaces to the dataset's width
        (as the files are) and reversed if the dataset is."""
        width = self.question_width
        if len(text) > width:
            raise ValueError(f"question {text!r} is {len(text)} characters long; this dataset's are at most {width}")
        text = text.ljust(width)
        unknown = self.vocab.unknown(text)
        if unknown:
            raise ValueError(f"question {text.rstrip()!r} has characters not in the vocabulary: {unknown}")
        ids = self.vocab.encode(text)
        return ids[::-1].copy() if self.reverse else ids

    def decode(self, ids):
        """Ids -> string (no un-reversing: use ``decode_question`` for questions)."""
        return self.vocab.decode(np.asarray(ids).astype(np.int64, copy=False))

    def decode_question(self, ids):
        """Question ids as stored in ``x_*`` -> the question as written in the file."""
        ids = np.asarray(ids)
        return self.decode(ids[::-1] if self.reverse else ids)

    def with_vocab(self, vocab):
        """This dataset with its ids renumbered to ``vocab`` (e.g. a checkpoint's); Seq2seqDataError
        naming the file if ``vocab`` lacks some of its characters."""
        unknown = [c for c in self.vocab.tokens if c not in vocab]
        if unknown:
            raise Seq2seqDataError(f"{self.path}: characters not in the vocabulary: {sorted(unknown)}")
        renumber = np.array([vocab.char_to_id[c] for c in self.vocab.tokens], dtype=np.int64)
        arrays = [None if a is None else renumber[a] for a in (self.x_train, self.t_train, self.x_test, self.t_test)]
        return Seq2seqData(
            *arrays,
            reverse=self.reverse,
            path=self.path,
            vocab=vocab,
            question_width=self.question_width,
            answer_width=self.answer_width,
        )


def resolve_seq2seq_path(name_or_path, data_dir=None):
    """A data file path: an existing file as given, or ``"addition"`` / ``"date"`` looked up as
    ``<data_dir>/<name>.txt`` (the package ships no data, so the book's names need a folder)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if os.path.lexists(path) and not path.is_dir():  # a FIFO, a device, a dangling link...
        open_regular_file(path, Seq2seqDataError).close()  # raises, naming it; never blocks
    if str(name_or_path) in BOOK_DATASETS:
        if data_dir is None:
            raise FileNotFoundError(
                f"{name_or_path!r} is one of the textbook's datasets, which nprnn does not ship: "
                f"give the path of {name_or_path}.txt, or the folder holding it as data_dir"
            )
        path = Path(data_dir) / f"{name_or_path}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"no {name_or_path}.txt in {data_dir}")
        return path
    raise FileNotFoundError(f"no such seq2seq data file: {name_or_path}")


def read_seq2seq(path):
    """Read and validate a file; returns ``(questions, answers)`` as lists of strings
    (answers keep their leading ``'_'``). Raises ``Seq2seqDataError`` naming file and line."""
    path = Path(path)
    try:
        with open_regular_file(path, Seq2seqDataError) as f:  # a FIFO or /dev/zero: refused, never read
            raw = f.read()
    except OSError as e:
        raise _os_error(path, e, Seq2seqDataError) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise Seq2seqDataError(f"{path}, line {line}: not valid UTF-8 ({err.reason})") from None
    text = text.removeprefix("\ufeff")
    # Universal newlines, as the textbook's text-mode open() sees the file.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    if not lines:
        raise Seq2seqDataError(f"{path}: empty file, expected lines 'question_answer'")

    questions, answers = [], []
    for number, line in enumerate(lines, start=1):
        cut = line.find("_")
        if cut < 0:
            raise Seq2seqDataError(f"{path}, line {number}: no '_' separating question and answer: {line!r}")
        question, answer = line[:cut], line[cut:]
        if not question:
            raise Seq2seqDataError(f"{path}, line {number}: empty question (the line starts with '_')")
        if len(answer) < 2:
            raise Seq2seqDataError(f"{path}, line {number}: empty answer (nothing after '_')")
        if questions and (len(question), len(answer)) != (len(questions[0]), len(answers[0])):
            what, got, want = (
                ("question", len(question), len(questions[0]))
                if len(question) != len(questions[0])
                else ("answer", len(answer), len(answers[0]))
            )
            raise Seq2seqDataError(
                f"{path}, line {number}: {what} is {got} characters wide, expected {want} as on line 1 "
                f"(questions and answers are padded to fixed widths)"
            )
        questions.append(question)
        answers.append(answer)
    return questions, answers


def build_vocab(questions, answers):
    """``(char_to_id, id_to_char)``: character ids in first-appearance order, question then answer,
    line by line (the textbook's). ``CharVocab.build`` numbers them the same, as a vocabulary object."""
    char_to_id = {}
    for question, answer in zip(questions, answers):
        for c in question + answer:
            char_to_id.setdefault(c, len(char_to_id))
    return char_to_id, {i: c for c, i in char_to_id.items()}


def load_seq2seq(path, seed=1984, reverse=False, vocab=None):
    """Load a ``question_answer`` file into a shuffled 90/10 train/test ``Seq2seqData``.

    The shuffle is the textbook's: ``np.random.seed(seed); np.random.shuffle(arange(N))``, done here
    with a private ``RandomState`` so the global NumPy state is left alone; ``seed=None`` shuffles
    unseeded. The test split is the last ``N // 10`` rows. ``reverse`` reverses each question
    (``x[:, ::-1]``), the textbook's trick that helps the encoder. ``vocab``: encode with this
    ``CharVocab`` (e.g. a checkpoint's) instead of numbering the file's characters; the rows and
    the split are the same, and a character it lacks is a ``Seq2seqDataError`` naming the file.
    """
    questions, answers = read_seq2seq(path)
    if vocab is None:
        vocab = CharVocab.build(q + a for q, a in zip(questions, answers))
    else:
        unknown = sorted({c for q, a in zip(questions, answers) for c in q + a if c not in vocab})
        if unknown:
            raise Seq2seqDataError(f"{path}: characters not in the vocabulary: {unknown}")
    char_to_id = vocab.char_to_id
    x = np.array([[char_to_id[c] for c in q] for q in questions], dtype=np.int64)
    t = np.array([[char_to_id[c] for c in a] for a in answers], dtype=np.int64)

    order = np.random.RandomState(seed).permutation(len(x))
    x, t = x[order], t[order]
    if reverse:
        x = np.ascontiguousarray(x[:, ::-1])
    split = len(x) - len(x) // 10
    return Seq2seqData(
        x_train=x[:split],
        t_train=t[:split],
        x_test=x[split:],
        t_test=t[split:],
        vocab=vocab,
        reverse=reverse,
        path=str(path),
    )


def find_data(name_or_path, data_dir=None):
    """The data file for ``--data``: an existing file, or ``"addition"`` / ``"date"`` inside ``data_dir``
    (default: the ``NPRNN_DATA_DIR`` environment variable). nprnn ships no data, so without a folder
    the textbook's names are an error that says what to pass instead."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if str(name_or_path) in BOOK_DATASETS and not Path(name_or_path).is_file() and data_dir is None:
        raise ValueError(
            f"--data {name_or_path}: nprnn does not ship the textbook's datasets; pass the path of "
            f"{name_or_path}.txt, or --data-dir DIR (or {DATA_DIR_ENV}=DIR) naming the folder that holds it"
        )
    return resolve_seq2seq_path(name_or_path, data_dir)


def load_data_like(path, vocab, split_seed=1984):
    """Load ``path`` split with ``split_seed`` and reversed like ``vocab`` (a checkpoint's), its ids
    renumbered to ``vocab``'s. Raises ``Seq2seqDataError`` if the file uses characters the checkpoint
    does not know or has other question/answer widths."""
    data = load_seq2seq(path, seed=split_seed, reverse=vocab.reverse, vocab=vocab.vocab)
    widths, want = (data.question_width, data.answer_width), (vocab.question_width, vocab.answer_width)
    if widths != want:
        raise Seq2seqDataError(
            f"{path}: questions/answers are {widths[0]}/{widths[1]} characters wide, the checkpoint's "
            f"were {want[0]}/{want[1]}"
        )
    return data
