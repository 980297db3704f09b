"""Vocabulary: the token <-> id mapping, at word or character level.

Word level (the textbook's PTB rule): tokens are the whitespace-separated words of
each line, with ``<eos>`` in place of every line break, ids in order of first
appearance. For PTB this gives exactly the ids of the textbook's
``dataset/ptb.py``, so its trained models and ours are interchangeable.

Character level: every character is a token, and a line break stays the
character ``"\\n"`` (no ``<eos>`` token), so ``decode(encode(text)) == text``.

Every built vocabulary has its line-end token (``<eos>`` or ``"\\n"``), even with
``max_vocab`` or for a text without a line break: it is the token a language model
starts generating from (``start_id``), so sampling from any trained model works.

Both levels have ``<unk>``: out-of-vocabulary tokens encode to its id. If the
training text contains ``<unk>`` itself (PTB does), that token *is* the unknown
token and keeps its first-appearance id; otherwise it is appended after the
corpus tokens (as is the line-end token if the text has no line break).

Ids are stored compactly: ``uint16`` while the vocabulary has at most 65,536
tokens (any word vocabulary of a normal corpus, every character vocabulary of
a normal text), else ``int32``. Batches are always handed to models as ``int32``
(see ``nprnn.data.batching``), so no model ever sees unsigned arithmetic.
"""

from collections import Counter

import numpy as np

UNK = "<unk>"
EOS = "<eos>"
LEVELS = ("word", "char")
LINE_END = {"word": EOS, "char": "\n"}  # the token of a line break, at each level


def _check_level(level):
    if level not in LEVELS:
        raise ValueError(f"level must be 'word' or 'char', got {level!r}")
    return level


def ids_dtype(vocab_size):
    """The compact id dtype for a vocabulary of ``vocab_size`` tokens: uint16 if it fits, else int32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def tokenize(text, level="word"):
    """Split ``text`` into a list of tokens.

    word: ``line.split()`` of each line, ``"<eos>"`` for every ``"\\n"`` (a last line
    without a newline gets none, as in the textbook's ``read().replace('\\n', '<eos>')``).
    char: ``list(text)``.
    """
    if _check_level(level) == "char":
        return list(text)
    tokens = []
    for i, line in enumerate(text.split("\n")):
        if i:
            tokens.append(EOS)
        tokens.extend(line.split())
    return tokens


class Vocab:
    """A token <-> id mapping.

    ``tokens[i]`` is the token with id ``i``; ``word_to_id`` maps back (the textbook's
    names). ``unk_id`` is the id of ``<unk>``; ``eos_id`` (also ``start_id``) is the id of the
    line-end token (``<eos>`` at word level, ``"\\n"`` at char level), where generation starts.
    ``Vocab.build`` always includes that token; a vocabulary given without it (a checkpoint
    written before it was always kept) gets the id a line break encodes to, ``unk_id``: the
    id its model saw at every line start. So ``eos_id`` is never ``None``.
    """

    def __init__(self, tokens, level="word"):
        self.level = _check_level(level)
        self.tokens = list(tokens)
        self.word_to_id = {}
        for i, token in enumerate(self.tokens):
            if not isinstance(token, str) or not token or "\0" in token:
                raise ValueError(f"Vocab: token {i} must be a non-empty string without NUL, got {token!r}")
            if level == "char" and len(token) != 1 and token != UNK:
                raise ValueError(f"Vocab: a char-level token must be one character or {UNK!r}, got {token!r}")
            if token in self.word_to_id:
                raise ValueError(f"Vocab: token {token!r} appears twice (ids {self.word_to_id[token]} and {i})")
            self.word_to_id[token] = i
        if UNK not in self.word_to_id:
            raise ValueError(f"Vocab: the tokens must include {UNK!r}")
        self.unk_id = self.word_to_id[UNK]
        self.eos_id = self.word_to_id.get(LINE_END[level], self.unk_id)

    @property
    def start_id(self):
        """The id generation starts from: the line-end token's (``eos_id``)."""
        return self.eos_id

    @property
    def line_end(self):
        """The line-end token: ``"<eos>"`` at word level, ``"\\n"`` at char level."""
        return LINE_END[self.level]

    @classmethod
    def build(cls, source, *, level="word", max_vocab=None):
        """Build a vocabulary from a text (``str``, tokenized by ``level``) or an iterable of tokens.

        Ids follow the order of first appearance. With ``max_vocab``, only the most frequent
        tokens are kept (ties broken by first appearance) so that the vocabulary has at most
        ``max_vocab`` tokens in all; ``<unk>`` and the line-end token (``<eos>`` at word level,
        ``"\\n"`` at char level) are always kept, and appended if the text lacks them.
        The kept tokens keep their first-appearance order. An iterable is consumed once,
        so a generator over a large file needs memory only for the vocabulary.
        """
        _check_level(level)
        tokens = tokenize(source, level) if isinstance(source, str) else source
        counts = Counter()
        counts.update(tokens)  # dict order = order of first appearance
        specials = (UNK, LINE_END[level])
        kept = list(counts)
        if max_vocab is not None:
            if isinstance(max_vocab, bool) or not isinstance(max_vocab, (int, np.integer)):
                raise ValueError(f"max_vocab must be an integer, got {type(max_vocab).__name__}")
            if max_vocab < len(specials):
                names = ", ".join(map(repr, specials))
                raise ValueError(f"max_vocab must be at least {len(specials)} (for {names}), got {max_vocab}")
            ordinary = [t for t in counts if t not in specials]
            # sorted() is stable, so equal counts stay in first-appearance order.
            top = set(sorted(ordinary, key=counts.__getitem__, reverse=True)[: max_vocab - len(specials)])
            kept = [t for t in counts if t in top or t in specials]
        kept += [s for s in specials if s not in counts]
        return cls(kept, level)

    # ---------------------------------------------------------------- lookups

    def __len__(self):
        return len(self.tokens)

    def __contains__(self, token):
        return token in self.word_to_id

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.level == other.level and self.tokens == other.tokens

    def __repr__(self):
        shown = ", ".join(map(repr, self.tokens[:5])) + (", ..." if len(self) > 5 else "")
        return f"Vocab({len(self)} {self.level} tokens: {shown})"

    @property
    def dtype(self):
        """The id dtype of ``encode``: uint16 while it fits, else int32."""
        return ids_dtype(len(self))

    # ---------------------------------------------------------------- encode / decode

    def encode(self, source):
        """Ids of a text (``str``, tokenized by the vocabulary's level) or of a sequence of tokens.

        Unknown tokens get ``unk_id``. Returns a 1-D array of dtype ``self.dtype``.
        """
        tokens = tokenize(source, self.level) if isinstance(source, str) else list(source)
        get, unk = self.word_to_id.get, self.unk_id
        return np.fromiter((get(t, unk) for t in tokens), dtype=self.dtype, count=len(tokens))

    def decode(self, ids):
        """Text of a sequence of ids: words joined by spaces with a line break for ``<eos>``, or characters joined."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"Vocab.decode: ids must be a 1-D integer sequence, got shape {ids.shape} {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"Vocab.decode: ids must be in [0, {len(self)}), got min {ids.min()} and max {ids.max()}")
        tokens = [self.tokens[i] for i in ids.tolist()]
        if self.level == "char":
            return "".join(tokens)
        lines, line = [], []
        for token in tokens:
            if token == EOS:
                lines.append(" ".join(line))
                line = []
            else:
                line.append(token)
        lines.append(" ".join(line))
        return "\n".join(lines)

    # ---------------------------------------------------------------- serialization

    def to_array(self):
        """The tokens as a NumPy unicode array (``array[i]`` = token ``i``), storable with ``allow_pickle=False``.

        The level is not in the array: store it beside (e.g. in the checkpoint's config).
        """
        return np.array(self.tokens, dtype=str)

    @classmethod
    def from_array(cls, array, level):
        """Inverse of ``to_array``; ``level`` is required because the array does not record it."""
        array = np.asarray(array)
        if array.ndim != 1 or array.dtype.kind != "U":
            raise ValueError(f"Vocab.from_array: expected a 1-D unicode array, got shape {array.shape} {array.dtype}")
        return cls(array.tolist(), level)


class CharVocab:
    """Characters <-> ids for character-level sequence-to-sequence data (``nprnn.data.seq2seq``).

    The seq2seq counterpart of ``Vocab(tokens, level="char")``, with the same interface
    (``tokens``, ``len``, ``in``, ``encode``, ``decode``, ``start_id``, ``to_array`` /
    ``from_array``) and two differences the textbook's data needs: there is no ``<unk>``
    (a character the vocabulary lacks is an error, since a seq2seq model cannot answer a
    question it cannot read), and any character is a token, NUL included. ``start`` (``"_"``)
    is the decoder's start symbol and must be one of the characters.

    ``tokens[i]`` is the character with id ``i``; ``char_to_id`` / ``id_to_char`` are the
    textbook's two dicts. Ids are ``int64``, as the textbook's arrays.
    """

    level = "char"

    def __init__(self, chars, start="_"):
        self.tokens = list(chars)
        self.char_to_id = {}
        for i, c in enumerate(self.tokens):
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharVocab: token {i} must be one character, got {c!r}")
            if c in self.char_to_id:
                raise ValueError(f"CharVocab: character {c!r} appears twice (ids {self.char_to_id[c]} and {i})")
            self.char_to_id[c] = i
        self.id_to_char = dict(enumerate(self.tokens))
        if start not in self.char_to_id:
            raise ValueError(f"CharVocab: the start symbol {start!r} is not one of the {len(self)} characters")
        self.start = start
        self.start_id = self.char_to_id[start]

    @classmethod
    def build(cls, texts, start="_"):
        """The characters of ``texts`` (an iterable of strings, read in order) with ids in order of
        first appearance, as the textbook's ``dataset/sequence.py`` numbers them."""
        char_to_id = {}
        for text in texts:
            for c in text:
                char_to_id.setdefault(c, len(char_to_id))
        return cls(char_to_id, start)

    # ---------------------------------------------------------------- lookups

    @property
    def word_to_id(self):
        """``char_to_id``, under ``Vocab``'s name."""
        return self.char_to_id

    @property
    def vocab_size(self):
        return len(self.tokens)

    def __len__(self):
        return len(self.tokens)

    def __contains__(self, char):
        return char in self.char_to_id

    def __eq__(self, other):
        return isinstance(other, CharVocab) and self.tokens == other.tokens and self.start == other.start

    def __repr__(self):
        shown = "".join(self.tokens[:20]) + ("..." if len(self) > 20 else "")
        return f"CharVocab({len(self)} characters: {shown!r}, start {self.start!r})"

    def unknown(self, text):
        """The characters of ``text`` not in the vocabulary, sorted."""
        return sorted({c for c in text if c not in self.char_to_id})

    # ---------------------------------------------------------------- encode / decode

    def encode(self, text):
        """Ids ``(len(text),)`` int64 of a string; ValueError listing any character not in the vocabulary."""
        unknown = self.unknown(text)
        if unknown:
            raise ValueError(f"{text!r} has characters not in the vocabulary: {unknown}")
        return np.fromiter(map(self.char_to_id.__getitem__, text), dtype=np.int64, count=len(text))

    def decode(self, ids):
        """The string of a 1-D sequence of ids."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"CharVocab.decode: ids must be a 1-D integer sequence, got shape {ids.shape} {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(
                f"CharVocab.decode: ids must be in [0, {len(self)}), got min {ids.min()} and max {ids.max()}"
            )
        return "".join(self.tokens[i] for i in ids.tolist())

    # ---------------------------------------------------------------- serialization

    def to_array(self):
        """The characters as int32 code points (``array[i]`` = ``ord`` of character ``i``): NUL-safe,
        storable with ``allow_pickle=False``; the seq2seq checkpoints' ``vocab`` member."""
        return np.array([ord(c) for c in self.tokens], dtype=np.int32)

    @classmethod
    def from_array(cls, array, start="_"):
        """Inverse of ``to_array``. A unicode array of single characters is accepted too, though it
        cannot hold NUL (NumPy strips trailing NULs, so ``"\\0"`` reads back as ``""``: refused)."""
        array = np.asarray(array)
        if array.ndim != 1 or not (array.size == 0 or array.dtype.kind in "iuU"):
            raise ValueError(
                f"CharVocab.from_array: expected a 1-D array of code points, got shape {array.shape} {array.dtype}"
            )
        if array.dtype.kind == "U":
            return cls(array.tolist(), start)
        if array.size and (array.min() < 0 or array.max() > 0x10FFFF):
            raise ValueError(
                "CharVocab.from_array: code points must be in [0, 0x10FFFF], "
                f"got min {array.min()} and max {array.max()}"
            )
        return cls([chr(c) for c in array.tolist()], start)
