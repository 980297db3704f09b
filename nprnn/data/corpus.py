"""Corpora for language modelling: reading text, splitting it, and storing token ids.

``load_corpus`` takes one of three sources:

- ``None``: the built-in corpus, the English documentation text every CPython ships
  in ``pydoc_data.topics.topics`` (its values joined in sorted key order, a blank line
  between topics). Nothing is downloaded; the text depends on the Python version.
- a directory in the PTB layout: exactly one each of ``*.train.txt``, ``*.valid.txt``,
  ``*.test.txt``. The vocabulary comes from the training file only; words of the
  validation/test files that it lacks become ``<unk>``.
- a single text file.

The built-in text and a single file are split into train/valid/test as contiguous
blocks of lines, in that order (the first 90% of the lines train by default), not as
randomly drawn lines: a language model is evaluated on text it has not seen, and
neighbouring lines of documentation are far from independent.

Files must be UTF-8 (a BOM is dropped; ``\\r\\n`` and ``\\r`` count as line breaks, as
in Python's text mode). Every problem with a file raises ``DataError`` with one line
that names the file. Only regular files (or symlinks to them) are read: a FIFO, a
device such as ``/dev/zero`` or a socket is refused before it is opened, so reading
never blocks or runs without end; OS errors (``EACCES``...) name the file too.

Ids can be stored as a raw ``.npy`` (``save_ids``) and memory-mapped back
(``open_ids``); ``encode_file`` streams a text file of any size into such a file.
"""

import io
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nprnn.data.vocab import Vocab, _check_level, tokenize

BUILTIN_NAME = "pydoc-topics"
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """A corpus that cannot be used; the message is one line naming the file."""


@dataclass
class Corpus:
    """Token ids of the three splits, with their vocabulary. ``train/valid/test`` are 1-D id arrays."""

    name: str
    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    source: str = field(default="")

    @property
    def level(self):
        return self.vocab.level

    def split(self, which):
        """The id array of ``"train"``, ``"valid"`` (or ``"val"``) or ``"test"``."""
        which = "valid" if which == "val" else which
        if which not in SPLITS:
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {which!r}")
        return getattr(self, which)

    def __repr__(self):
        sizes = ", ".join(f"{s} {len(self.split(s)):,}" for s in SPLITS)
        return f"Corpus({self.name!r}, {self.level} level, vocab {len(self.vocab):,}; tokens: {sizes})"


# -------------------------------------------------------------------- opening files

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode):
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a file")


def _os_error(path, error, cls=DataError):
    """A ``cls`` error naming ``path`` for an ``OSError`` (``"x.txt: Permission denied"``)."""
    return cls(f"{path}: {error.strerror or error}")


def check_regular_file(path, error=DataError):
    """``os.stat`` of ``path`` (following symlinks), raising ``error`` unless it is a regular file.

    Nothing is opened, so a FIFO or a device is refused without blocking. Returns the stat result.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file or directory") from None
    except OSError as e:
        raise error(f"{path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file ({_kind(st.st_mode)}), expected a file")
    return st


def open_regular_file(path, error=DataError):
    """Open ``path`` for binary reading if it is a regular file, else raise ``error`` naming it.

    ``os.stat`` first; then the open is non-blocking and re-checked with ``fstat``, so even a
    file swapped for a FIFO between the two cannot make the open hang. OS errors name the file.
    """
    check_regular_file(path, error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: not a regular file ({_kind(mode)}), expected a file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# -------------------------------------------------------------------- reading text


def _check_text_bytes(path, data, offset=0):
    """Raise DataError for NUL bytes or invalid UTF-8; ``offset`` is where ``data`` starts in the file."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path}: binary file (NUL byte at byte offset {offset + nul}), expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at byte offset {offset + e.start})"
        ) from None


def _normalize_newlines(text):
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path):
    """The text of a UTF-8 file, with ``\\n`` line breaks; DataError if missing, empty, binary or not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    try:
        with open_regular_file(path) as f:
            data = f.read()
    except OSError as e:
        raise _os_error(path, e) from None
    if not data:
        raise DataError(f"{path}: file is empty")
    text = _check_text_bytes(path, data)
    return _normalize_newlines(text.removeprefix("\ufeff"))


def builtin_text():
    """The built-in corpus: ``pydoc_data.topics.topics`` values in sorted key order, a blank line between."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DataError(
            "built-in corpus: this Python has no pydoc_data.topics; pass a corpus file or directory"
        ) from None
    return "\n".join(topics[key] for key in sorted(topics))


def split_lines(text, split=(0.9, 0.05, 0.05)):
    """Cut ``text`` into three contiguous blocks of whole lines with the given fractions.

    Each block keeps its line breaks, so the three tokenize to exactly the tokens of
    ``text``. The block boundaries are ``round(fraction_so_far * number_of_lines)``.
    """
    fractions = _check_split(split)
    lines = _lines(text)
    n = len(lines)
    cut1 = round(n * fractions[0])
    cut2 = round(n * (fractions[0] + fractions[1]))
    return "".join(lines[:cut1]), "".join(lines[cut1:cut2]), "".join(lines[cut2:])


def _lines(text):
    """The lines of ``text``, each with its ``\\n`` (the last one may lack it)."""
    pieces = text.split("\n")
    return [p + "\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def _check_split(split):
    try:
        fractions = [float(f) for f in split]
    except (TypeError, ValueError):
        raise ValueError(f"split must be three fractions (train, valid, test), got {split!r}") from None
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] == 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split must be three fractions (train, valid, test) >= 0 with train > 0 summing to 1, got {split!r}"
        )
    return fractions


def find_splits(directory):
    """The ``{"train": path, "valid": path, "test": path}`` files of a PTB-layout directory."""
    directory = Path(directory)
    found, missing = {}, []
    for which in SPLITS:
        matches = sorted(directory.glob(f"*.{which}.txt"))
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise DataError(f"{directory}: expected one *.{which}.txt, found {len(matches)}: {names}")
        if matches:
            found[which] = matches[0]
        else:
            missing.append(f"*.{which}.txt")
    if missing:
        raise DataError(
            f"{directory}: expected one each of *.train.txt, *.valid.txt, *.test.txt; missing {', '.join(missing)}"
        )
    return found


# -------------------------------------------------------------------- loading


def load_corpus(source=None, level=None, max_vocab=None, split=(0.9, 0.05, 0.05), vocab=None):
    """Load a corpus and encode its three splits.

    source: ``None`` (built-in), a PTB-layout directory, or a text file (see the module docstring).
    level: ``"word"`` (default) or ``"char"``.
    max_vocab: keep only the most frequent training tokens (``Vocab.build``).
    split: (train, valid, test) fractions of the lines, for the built-in corpus and a single file.
    vocab: encode with this vocabulary (e.g. a checkpoint's) instead of building one from the
        training text; ``level`` then defaults to its level and ``max_vocab`` must be None.

    Returns a ``Corpus``. Raises ``DataError`` (one line naming the file) for unusable data,
    including a training split without tokens; validation/test splits entirely of unknown
    words are fine.
    """
    if vocab is not None:
        if level is not None and level != vocab.level:
            raise ValueError(f"level {level!r} does not match the given vocabulary's level {vocab.level!r}")
        if max_vocab is not None:
            raise ValueError("max_vocab cannot be used with a given vocabulary")
        level = vocab.level
    level = _check_level("word" if level is None else level)

    if source is None:
        name, where = BUILTIN_NAME, "built-in corpus (pydoc_data.topics)"
        texts = dict(zip(SPLITS, split_lines(builtin_text(), split)))
        origins = dict.fromkeys(SPLITS, where)
    else:
        path = Path(source).expanduser()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file or directory") from None
        except OSError as e:
            raise _os_error(path, e) from None
        if stat.S_ISDIR(st.st_mode):
            files = find_splits(path)
            texts = {which: read_text(f) for which, f in files.items()}
            origins = {which: str(f) for which, f in files.items()}
            prefixes = {f.name.rsplit(".", 2)[0] for f in files.values()}
            name = prefixes.pop() if len(prefixes) == 1 else path.resolve().name
            where = str(path)
        else:
            text = read_text(path)
            texts = dict(zip(SPLITS, split_lines(text, split)))
            origins = dict.fromkeys(SPLITS, str(path))
            name, where = path.stem, str(path)
            for which, fraction in zip(SPLITS, _check_split(split)):
                if fraction > 0 and not texts[which]:
                    n = len(_lines(text))
                    raise DataError(f"{path}: too few lines ({n}) to give the {which} split its share of {split}")

    if not texts["train"].strip():
        raise DataError(f"{origins['train']}: the training split has no tokens (only whitespace)")
    tokens = {which: tokenize(text, level) for which, text in texts.items()}
    if vocab is None:
        vocab = Vocab.build(tokens["train"], level=level, max_vocab=max_vocab)
    ids = {which: vocab.encode(t) for which, t in tokens.items()}
    return Corpus(name, vocab, ids["train"], ids["valid"], ids["test"], source=where)


# -------------------------------------------------------------------- compact storage


def _check_ids(name, ids):
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
    return ids


def save_ids(path, ids):
    """Write a 1-D integer id array as a raw ``.npy`` (atomically: a temporary file, then a rename)."""
    ids = _check_ids("save_ids", ids)
    path = Path(path)
    target = _write_target(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, ids, allow_pickle=False)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _os_error(path, e) from None
    return path


def _write_target(path):
    """Where writing ``path`` goes: its target if it is a symlink (written through, never replaced
    by a plain file); DataError if it exists and is not a regular file."""
    target = Path(os.path.realpath(path)) if os.path.islink(path) else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as e:
        raise _os_error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else _kind(st.st_mode)
        raise DataError(f"{path}: not a regular file ({what}), cannot write ids there")
    return target


def open_ids(path):
    """Memory-map an id array written by ``save_ids`` or ``encode_file`` (read-only ``np.memmap``).

    Nothing is read until it is indexed, so a corpus larger than memory can be batched. The
    file must be a regular file with a valid ``.npy`` header (version 1 or 2) declaring a 1-D
    integer array whose size is exactly what the file holds; anything else is a DataError
    naming the file, raised before anything of the size the header claims is allocated.
    """
    path = Path(path)
    try:
        with open_regular_file(path) as f:
            size = os.fstat(f.fileno()).st_size
            dtype, shape, offset = _read_npy_header(path, f, size)
    except OSError as e:
        raise _os_error(path, e) from None
    if len(shape) != 1 or dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-D integer id array, got shape {shape} {dtype}")
    declared = offset + shape[0] * dtype.itemsize
    if declared != size:
        raise DataError(
            f"{path}: its .npy header declares {shape[0]:,} ids of {dtype} ({declared:,} bytes with the header), "
            f"but the file has {size:,} bytes"
        )
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot memory-map the id array ({getattr(e, 'strerror', None) or e})") from None


_MAX_NPY_HEADER = 1 << 16  # bytes; np.save writes ~128 for a 1-D array


def _read_npy_header(path, f, size):
    """``(dtype, shape, data_offset)`` of the ``.npy`` file open as ``f`` (``size`` bytes), reading
    at most the header; DataError for a missing, corrupt, oversized or truncated header."""
    start = f.read(12)
    if start[:6] != b"\x93NUMPY":  # else np.load guesses: text would be called "pickled data"
        raise DataError(f"{path}: not a NumPy .npy id array (no .npy header)")
    version = (start[6], start[7]) if len(start) >= 8 else None
    if version not in ((1, 0), (2, 0)):
        raise DataError(f"{path}: not a NumPy .npy id array (unsupported .npy version {version})")
    length_size = 2 if version == (1, 0) else 4
    if len(start) < 8 + length_size:
        raise DataError(f"{path}: not a NumPy .npy id array (truncated header)")
    start = start[: 8 + length_size]
    f.seek(len(start))
    (header_len,) = struct.unpack("<H" if length_size == 2 else "<I", start[8:])
    offset = 8 + length_size + header_len
    if header_len > _MAX_NPY_HEADER or offset > size:
        raise DataError(
            f"{path}: not a NumPy .npy id array (header of {header_len:,} bytes in a file of {size:,} bytes)"
        )
    header = io.BytesIO(start + f.read(header_len))
    try:
        np.lib.format.read_magic(header)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(header, max_header_size=_MAX_NPY_HEADER)
    except Exception as e:  # noqa: BLE001 (numpy's parser raises ValueError, SyntaxError, TokenError...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a NumPy .npy id array (bad header: {reason})") from None
    if dtype.hasobject or any(n < 0 for n in shape):
        raise DataError(f"{path}: not a NumPy .npy id array (header declares {dtype} with shape {shape})")
    return dtype, shape, offset


def _encoded_lines(path, vocab):
    """Ids of each line of a text file, read one line at a time (same tokens as ``read_text`` + ``encode``)."""
    offset = 0
    with open_regular_file(path) as f:
        for raw in f:
            line = _check_text_bytes(path, raw, offset)
            if offset == 0:
                line = line.removeprefix("\ufeff")
            offset += len(raw)
            yield vocab.encode(_normalize_newlines(line))


def encode_file(path, vocab, out):
    """Encode a text file of any size into a ``.npy`` id array at ``out``; returns it memory-mapped.

    Two streaming passes (count, then write), so memory use does not grow with the file.
    Ids equal ``vocab.encode(read_text(path))``.
    """
    path = Path(path)
    if check_regular_file(path).st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        total = sum(len(ids) for ids in _encoded_lines(path, vocab))
    except OSError as e:
        raise _os_error(path, e) from None
    out = Path(out)
    target = _write_target(out)
    tmp = target.with_name(target.name + ".tmp")
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=vocab.dtype, shape=(total,))
        start = 0
        for ids in _encoded_lines(path, vocab):
            array[start : start + len(ids)] = ids
            start += len(ids)
        array.flush()
        del array
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _os_error(out if e.filename in (None, str(tmp)) else e.filename, e) from None
    return open_ids(out)
