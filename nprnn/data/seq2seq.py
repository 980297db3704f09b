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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nprnn.data.corpus import DataError, _os_error, open_regular_file

BOOK_DATASETS = ("addition", "date")


class Seq2seqDataError(DataError):
    """A seq2seq data file that does not follow the ``question_answer`` fixed-width format
    (a ``DataError``, so a ``ValueError``); the message names the file and the line."""


@dataclass
class Seq2seqData:
    """A loaded dataset: id arrays split into train/test, and the character vocabulary.

    ``x_*: (N, Tq)`` question ids (reversed along time if ``reverse``), ``t_*: (N, Ta)`` answer
    ids, whose first column is always ``start_id`` (the ``'_'``).
    """

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    char_to_id: dict = field(repr=False)
    id_to_char: dict = field(repr=False)
    reverse: bool = False
    path: str = ""

    @property
    def vocab_size(self):
        return len(self.char_to_id)

    @property
    def start_id(self):
        return self.char_to_id["_"]

    @property
    def question_width(self):
        return self.x_train.shape[1] if len(self.x_train) else self.x_test.shape[1]

    @property
    def answer_width(self):
        return self.t_train.shape[1] if len(self.t_train) else self.t_test.shape[1]

    def encode_question(self, text):
        """One question string -> ids ``(Tq,)``: right-padded with spaces to the dataset's width
        (as the files are) and reversed if the dataset is."""
        width = self.question_width
        if len(text) > width:
            raise ValueError(f"question {text!r} is {len(text)} characters long; this dataset's are at most {width}")
        text = text.ljust(width)
        unknown = sorted({c for c in text if c not in self.char_to_id})
        if unknown:
            raise ValueError(f"question {text.rstrip()!r} has characters not in the vocabulary: {unknown}")
        ids = np.array([self.char_to_id[c] for c in text], dtype=np.int64)
        return ids[::-1].copy() if self.reverse else ids

    def decode(self, ids):
        """Ids -> string (no un-reversing: use ``decode_question`` for questions)."""
        return "".join(self.id_to_char[int(i)] for i in ids)

    def decode_question(self, ids):
        """Question ids as stored in ``x_*`` -> the question as written in the file."""
        ids = np.asarray(ids)
        return self.decode(ids[::-1] if self.reverse else ids)


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
    """Character ids in first-appearance order, question then answer, line by line (the textbook's)."""
    char_to_id = {}
    for question, answer in zip(questions, answers):
        for c in question + answer:
            char_to_id.setdefault(c, len(char_to_id))
    return char_to_id, {i: c for c, i in char_to_id.items()}


def load_seq2seq(path, seed=1984, reverse=False):
    """Load a ``question_answer`` file into a shuffled 90/10 train/test ``Seq2seqData``.

    The shuffle is the textbook's: ``np.random.seed(seed); np.random.shuffle(arange(N))``, done here
    with a private ``RandomState`` so the global NumPy state is left alone; ``seed=None`` shuffles
    unseeded. The test split is the last ``N // 10`` rows. ``reverse`` reverses each question
    (``x[:, ::-1]``), the textbook's trick that helps the encoder.
    """
    questions, answers = read_seq2seq(path)
    char_to_id, id_to_char = build_vocab(questions, answers)
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
        char_to_id=char_to_id,
        id_to_char=id_to_char,
        reverse=reverse,
        path=str(path),
    )
