"""Checkpoints: one ``.npz`` file, written atomically, read without pickle and within bounds.

Layout: every array is a member ``<name>.npy``; the metadata (config, epoch, step, vocabulary,
RNG state, ...) is a JSON string stored as a 0-d unicode array in the reserved member
``__nprnn__``, together with the format name and version. Nothing is ever pickled, so loading a
checkpoint cannot run code.

Writing goes to a temporary file in the destination's directory, is flushed and fsync'ed, then
renamed over the destination with ``os.replace`` (atomic on POSIX and Windows): a reader sees the
old checkpoint or the new one, never a mix, even if the writer is killed. On any error the
temporary file is removed and the old checkpoint is left byte for byte as it was. A symlinked
destination is written through to its target (the link stays a link). File-system failures raise
``CheckpointWriteError`` (an ``OSError`` whose message is ``"<path>: <strerror>"``).

Reading (``open_checkpoint`` / ``CheckpointReader``, and ``load_checkpoint`` built on it) is
bounded before anything is allocated: the path must be a regular file (a FIFO, a device, a
directory or a socket is refused without blocking); the archive may hold at most ``MAX_MEMBERS``
members whose stored bytes fit in the file; each ``.npy`` header is parsed first and the size it
declares must equal the member's stored size, and a compressed member may not inflate to more
than ``MAX_INFLATION`` times its compressed size (above ``INFLATION_FLOOR``), so memory stays near
the file's honest size. Object, structured, complex, byte-string, datetime and non-native-byte-order
arrays are refused, as are NaN and Inf in float arrays; every member's CRC is checked. Any problem
is a ``CheckpointError`` (a ``ValueError``) whose one-line message names the file, the member and
what was expected versus found.
"""

import contextlib
import errno
import io
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT = "nprnn-checkpoint"
VERSION = 1
META_KEY = "__nprnn__"

MAX_MEMBERS = 4096  # arrays per checkpoint, the metadata member included
MAX_META_BYTES = 32 * 2**20  # the metadata member's .npy data (4 bytes per character): 8 Mi characters
MAX_HEADER_BYTES = 10_000  # an .npy header (NumPy's own limit for untrusted files)
MAX_NDIM = 32
MAX_INFLATION = 32  # a compressed member may inflate to at most this many times its compressed size...
INFLATION_FLOOR = 2**20  # ...unless it is this small anyway
_CHUNK = 2**20  # bytes per read while filling an array
# what an array member may be: bool, signed and unsigned integers, floats, unicode strings
READABLE_KINDS = "biufU"
_ITEMSIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8)}
_KIND_NAMES = {"b": "bool", "i": "integer", "u": "unsigned integer", "f": "float", "U": "unicode string"}
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_MISSING = object()


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the one-line message names the file and the problem."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed in the file system; ``str()`` is ``"<path>: <strerror>"``.

    ``errno``, ``strerror`` and ``filename`` (the path as the caller gave it) are set as on any
    ``OSError``; the original exception is chained as ``__cause__``.
    """

    def __str__(self):
        return f"{self.filename}: {self.strerror}"


def _show(path):
    """The path for a one-line message: as given, or its repr if it holds control characters."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if text.isprintable() else repr(text)


def _one_line(text, limit=200):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_kind(mode):
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _dtype_problem(dtype):
    """Why an array of ``dtype`` can never be stored or read (a phrase following "has dtype X; "), or None."""
    if dtype.hasobject:
        return "an object array would need pickle to load, which can run arbitrary code"
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind == "V":
        return "expected a plain bool, integer, float or unicode dtype, not a structured one"
    if dtype.kind not in READABLE_KINDS:
        return "expected bool, integer, float or unicode (not complex, bytes or dates)"
    if not dtype.isnative:
        return f"expected native byte order {dtype.newbyteorder('=').str}"
    if dtype.kind in _ITEMSIZES and dtype.itemsize not in _ITEMSIZES[dtype.kind]:
        return f"expected a {_KIND_NAMES[dtype.kind]} of {' or '.join(map(str, _ITEMSIZES[dtype.kind]))} bytes"
    if dtype.itemsize == 0:
        return "expected a non-empty dtype"
    return None


def _nbytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


# ---------------------------------------------------------------- writing


def save_checkpoint(path, arrays, meta, *, finite=True):
    """Write ``arrays`` (``{name: ndarray}``) and ``meta`` (a JSON-serializable dict) to ``path``.

    Python and NumPy scalars among ``arrays`` are stored as 0-d arrays (so an optimizer's
    ``state_dict()`` can go in as is; ``load_state_dict`` accepts the 0-d arrays back). Arrays
    must be bool, integer, float (2, 4 or 8 bytes) or unicode, in native byte order: exactly what
    ``load_checkpoint`` reads back.

    Atomic: ``path`` is either left untouched (on any error) or replaced by the complete new
    file. A symlink ``path`` is written through: its target is replaced, the link stays. An
    existing file keeps its permission bits; a new one gets 0o666 minus the umask. With
    ``finite`` (the default) a float array holding NaN or Inf is refused before anything is
    written, so a diverged run can never overwrite a good checkpoint.

    Raises ``ValueError`` for bad arguments (before touching the disk) and
    ``CheckpointWriteError`` (an ``OSError``; ``str()`` is ``"<path>: <strerror>"``) if the file
    system fails, e.g. ``"runs/x/checkpoint.npz: No space left on device"``.
    """
    path = os.fspath(path)
    members = _members(arrays, meta, finite)
    target = os.path.realpath(path)  # through symlinks: replace the target, never the link itself
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _write_error(e, path) from e
    if st is not None and not stat.S_ISREG(st.st_mode):
        code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
        kind = _file_kind(st.st_mode)
        raise CheckpointWriteError(code, f"is {kind}, not a regular file; refusing to replace it", _show(path))
    mode = st.st_mode & 0o777 if st is not None else _default_mode()
    directory = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise _write_error(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:  # also KeyboardInterrupt: never leave a half-written temporary file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError):
            raise _write_error(e, path) from e
        raise
    _fsync_directory(directory)  # make the rename itself durable


def _write_error(e, path):
    return CheckpointWriteError(e.errno, e.strerror or _one_line(e) or type(e).__name__, _show(path))


def _write_npz(f, members):
    """The layout ``np.savez`` writes (so ``np.load`` reads it too), with pickling switched off.
    Done by hand because ``np.savez(f, **members)`` breaks on arrays named "file" or "allow_pickle"."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in members.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _members(arrays, meta, finite):
    if not isinstance(arrays, dict):
        raise ValueError(f"save_checkpoint: arrays must be a dict of name -> ndarray, got {type(arrays).__name__}")
    if not isinstance(meta, dict):
        raise ValueError(f"save_checkpoint: meta must be a dict, got {type(meta).__name__}")
    if len(arrays) >= MAX_MEMBERS:
        raise ValueError(f"save_checkpoint: {len(arrays):,} arrays; at most {MAX_MEMBERS - 1:,} can be stored")
    members = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name or name == META_KEY or name.startswith("/") or "\\" in name:
            raise ValueError(f"save_checkpoint: bad array name {name!r} (a non-empty str, not {META_KEY!r})")
        if isinstance(a, (int, float, np.generic)):  # e.g. an optimizer's state_dict() scalars
            a = np.asarray(a)
        if not isinstance(a, np.ndarray):
            raise ValueError(f"save_checkpoint: {name!r} must be a NumPy array or number, got {type(a).__name__}")
        problem = _dtype_problem(a.dtype)
        if problem is not None:
            raise ValueError(f"save_checkpoint: {name!r} has dtype {a.dtype}; {problem}")
        if a.ndim > MAX_NDIM:
            raise ValueError(f"save_checkpoint: {name!r} has {a.ndim} dimensions; at most {MAX_NDIM}")
        if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"save_checkpoint: {name!r} contains NaN or Inf; refusing to write it")
        members[name] = a
    try:
        text = json.dumps({"format": FORMAT, "version": VERSION, "meta": meta}, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"save_checkpoint: meta must be JSON-serializable: {_one_line(e)}") from None
    if 4 * len(text) > MAX_META_BYTES:
        raise ValueError(
            f"save_checkpoint: meta is {len(text):,} characters of JSON; at most {MAX_META_BYTES // 4:,} "
            "(store large data as arrays)"
        )
    members[META_KEY] = np.array(text)
    return members


def _default_mode():
    """A new checkpoint's permissions: 0o666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading


def open_checkpoint(path, allowed=None):
    """Open ``path`` for two-phase reading: a ``CheckpointReader`` (use it in a ``with`` block).

    Nothing but the zip directory, the metadata and (on demand) the ``.npy`` headers is read until
    ``read()`` is called, so a caller can check names, the metadata and every shape against its
    config before any array is allocated. ``allowed`` is as for ``CheckpointReader``.
    """
    return CheckpointReader(path, allowed=allowed)


def load_checkpoint(path, allowed=None, *, dtype_kinds=READABLE_KINDS, finite=True):
    """Read a whole checkpoint: ``(arrays, meta)``, ``arrays`` a ``{name: ndarray}`` dict.

    ``allowed`` (a callable ``name -> bool`` or a collection of names; None allows any name) makes
    any other member a ``CheckpointError`` before anything is read. Every array must be of a kind
    in ``dtype_kinds`` (default: bool, integer, float, unicode); with ``finite`` float arrays
    holding NaN or Inf are refused. Raises ``CheckpointError`` naming the file and the problem.
    """
    with CheckpointReader(path, allowed=allowed) as reader:
        arrays = {name: reader.read(name, dtype_kinds=dtype_kinds, finite=finite) for name in reader.names}
        return arrays, reader.meta


class CheckpointReader:
    """A checkpoint opened for bounded, two-phase reading.

    Opening checks that ``path`` is a regular file (without blocking on a FIFO), reads the zip
    directory, refuses more than ``MAX_MEMBERS`` members, members that are not ``<name>.npy``,
    duplicates, encrypted members, compression other than stored/deflate, members whose stored
    bytes do not fit in the file, and members that would inflate beyond ``MAX_INFLATION`` times
    their compressed size. With ``allowed`` (a callable ``name -> bool`` or a collection of
    names), any other member is refused here, unread. Then the metadata member is read and
    validated; it is ``.meta``.

    Attributes: ``path`` (as given), ``meta`` (the JSON dict given to ``save_checkpoint``),
    ``names`` (tuple of array names in archive order, the metadata member excluded).
    ``spec(name)`` gives ``(shape, dtype)`` from the header alone; ``read(name, ...)`` reads one
    array fully (CRC checked). Every problem raises ``CheckpointError`` naming the file.
    """

    def __init__(self, path, *, allowed=None):
        self.path = os.fspath(path)
        self._where = _show(self.path)
        self._file = None
        self._zip = None
        self._specs = {}
        self._file, size = self._open_regular_file()
        try:
            with self._errors():
                self._open_zip(size, allowed)
            self.meta = self._read_meta()
        except BaseException:
            self.close()
            raise

    # -- public

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release the file; idempotent."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __contains__(self, name):
        return name in self._infos and name != META_KEY

    def __repr__(self):
        return f"CheckpointReader({self.path!r}, {len(self.names)} arrays)"

    def spec(self, name):
        """``(shape, dtype)`` of array ``name`` from its ``.npy`` header, without reading its data.

        The header is validated on the way: a declared size that differs from the stored size,
        a dtype that can never be read, more than ``MAX_NDIM`` dimensions: ``CheckpointError``.
        """
        shape, dtype, _, _ = self._spec(self._info(name))
        return shape, dtype

    def read(self, name, shape=None, dtype_kinds="f", *, dtype=None, finite=True):
        """Read array ``name`` fully (its CRC checked) and return it.

        Checked from the header, before any allocation: the dtype's kind must be in
        ``dtype_kinds`` (a string of ``"biufU"`` letters; default floats only), the dtype must
        equal ``dtype`` if given, the shape must match ``shape`` if given (a tuple; ``None`` in it
        matches any length). With ``finite`` a float array holding NaN or Inf is refused.
        The array is C-ordered, or Fortran-ordered if it was stored so.
        """
        info = self._info(name)
        member = info.filename
        got_shape, got_dtype, fortran, offset = self._spec(info)
        if got_dtype.kind not in dtype_kinds:
            want = " or ".join(_KIND_NAMES.get(k, k) for k in dtype_kinds) or "nothing"
            article = "an" if want[0] in "aeiou" else "a"
            raise CheckpointError(
                f"{self._where}: member {member!r} has dtype {got_dtype}; expected {article} {want} array"
            )
        if dtype is not None and got_dtype != np.dtype(dtype):
            raise CheckpointError(f"{self._where}: member {member!r} has dtype {got_dtype}; expected {np.dtype(dtype)}")
        if shape is not None:
            shape = tuple(shape)
            if len(shape) != len(got_shape) or any(w is not None and w != g for w, g in zip(shape, got_shape)):
                want = (
                    "("
                    + ", ".join("*" if w is None else str(w) for w in shape)
                    + ("," if len(shape) == 1 else "")
                    + ")"
                )
                raise CheckpointError(f"{self._where}: member {member!r} has shape {got_shape}; expected {want}")
        array = self._read_data(info, got_shape, got_dtype, fortran, offset)
        if finite and array.dtype.kind == "f":
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                raise CheckpointError(
                    f"{self._where}: member {member!r} holds {bad:,} NaN or Inf values of {array.size:,}; "
                    "expected finite floats"
                )
        return array

    def value(self, key, types, *, low=None, high=None, choices=None, default=_MISSING):
        """``meta_value(self.path, self.meta, key, ...)``: one checked metadata value."""
        return meta_value(self.path, self.meta, key, types, low=low, high=high, choices=choices, default=default)

    # -- opening

    def _open_regular_file(self):
        where = self._where
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise CheckpointError(f"{where}: no such checkpoint file") from None
        except (OSError, ValueError) as e:  # ValueError: an embedded NUL byte
            raise CheckpointError(
                f"{where}: cannot read checkpoint ({_one_line(getattr(e, 'strerror', None) or e)})"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(
                f"{where}: not a regular file (it is {_file_kind(st.st_mode)}); expected a checkpoint .npz file"
            )
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
        try:  # O_NONBLOCK: should the path become a FIFO after the stat, opening it still cannot block
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise CheckpointError(f"{where}: cannot read checkpoint ({e.strerror or e})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CheckpointError(
                    f"{where}: not a regular file (it is {_file_kind(st.st_mode)}); expected a checkpoint .npz file"
                )
            return os.fdopen(fd, "rb"), st.st_size
        except BaseException:
            os.close(fd)
            raise

    def _open_zip(self, size, allowed):
        where, f = self._where, self._file
        head = f.read(4)
        f.seek(0)
        if head[:2] != b"PK":
            hint = " (it looks like a pickle; nprnn never unpickles checkpoints)" if head[:1] == b"\x80" else ""
            raise CheckpointError(f"{where}: not an .npz checkpoint: the file is not a zip archive{hint}")
        self._zip = zipfile.ZipFile(f)
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CheckpointError(f"{where}: {len(infos):,} members; a checkpoint holds at most {MAX_MEMBERS:,}")
        accept = _acceptor(allowed)
        self._infos, stored = {}, 0
        for info in infos:
            member = info.filename
            if not member.endswith(".npy") or member == ".npy":
                raise CheckpointError(f"{where}: unexpected member {member!r} (an .npz holds only <name>.npy files)")
            name = member[: -len(".npy")]
            if name in self._infos:
                raise CheckpointError(f"{where}: member {member!r} appears twice")
            if name != META_KEY and accept is not None and not accept(name):
                raise CheckpointError(f"{where}: unexpected member {member!r}; {_expected(allowed)}")
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{where}: member {member!r} is encrypted; expected a plain member")
            if info.compress_type == zipfile.ZIP_STORED:
                if info.compress_size != info.file_size:
                    raise CheckpointError(
                        f"{where}: member {member!r} is stored uncompressed in {info.compress_size:,} bytes "
                        f"but declares {info.file_size:,}"
                    )
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                limit = max(INFLATION_FLOOR, MAX_INFLATION * info.compress_size)
                if info.file_size > limit:
                    raise CheckpointError(
                        f"{where}: member {member!r} would inflate from {_nbytes(info.compress_size)} to "
                        f"{_nbytes(info.file_size)}; refused (at most {MAX_INFLATION}x compression)"
                    )
            else:
                raise CheckpointError(
                    f"{where}: member {member!r} uses zip compression method {info.compress_type}; "
                    "expected stored or deflate"
                )
            stored += info.compress_size
            if info.header_offset < 0 or info.header_offset + info.compress_size > size or stored > size:
                raise CheckpointError(
                    f"{where}: member {member!r} claims {_nbytes(info.compress_size)} beyond the file's "
                    f"{_nbytes(size)}; corrupted or truncated checkpoint"
                )
            self._infos[name] = info
        if META_KEY not in self._infos:
            raise CheckpointError(f"{where}: not an nprnn checkpoint (no {META_KEY!r} metadata member)")
        self.names = tuple(n for n in self._infos if n != META_KEY)

    def _read_meta(self):
        where = self._where
        info = self._infos[META_KEY]
        shape, dtype, _, _ = self._spec(info)
        if dtype.kind != "U" or shape != ():
            raise CheckpointError(
                f"{where}: metadata member {META_KEY!r} must be a unicode string (0-d <U), got {dtype} {shape}"
            )
        if dtype.itemsize > MAX_META_BYTES:
            raise CheckpointError(
                f"{where}: metadata member {META_KEY!r} is {_nbytes(dtype.itemsize)}; at most {_nbytes(MAX_META_BYTES)}"
            )
        raw = self.read(META_KEY, dtype_kinds="U")
        try:
            header = json.loads(str(raw[()]))
        except (ValueError, RecursionError) as e:
            raise CheckpointError(f"{where}: metadata is not valid JSON ({_one_line(e)})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{where}: metadata does not describe an {FORMAT!r} file")
        if header.get("version") != VERSION or isinstance(header.get("version"), bool):
            raise CheckpointError(
                f"{where}: checkpoint format version {_one_line(repr(header.get('version')), 40)}; "
                f"this nprnn reads version {VERSION}"
            )
        if not isinstance(header.get("meta"), dict):
            raise CheckpointError(f"{where}: metadata has no 'meta' dict")
        return header["meta"]

    # -- members

    def _info(self, name):
        info = self._infos.get(name) if isinstance(name, str) else None
        if info is None:
            member = repr(name + ".npy") if isinstance(name, str) else repr(name)
            raise CheckpointError(
                f"{self._where}: no member {member}; expected it among the file's {len(self.names)} arrays"
            )
        if self._zip is None:
            raise ValueError(f"{self._where}: the checkpoint reader is closed")
        return info

    def _spec(self, info):
        """(shape, dtype, fortran_order, data_offset) from the member's .npy header, validated."""
        if info.filename in self._specs:
            return self._specs[info.filename]
        where, member = self._where, info.filename
        with self._errors(member), self._zip.open(info) as f:
            magic = f.read(8)
            if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
                raise CheckpointError(f"{where}: member {member!r} is not a valid .npy array (no .npy magic)")
            version = (magic[6], magic[7])
            if version not in ((1, 0), (2, 0)):
                raise CheckpointError(f"{where}: member {member!r} uses .npy format {version}, not supported")
            size_field = f.read(2 if version == (1, 0) else 4)
            if len(size_field) != (2 if version == (1, 0) else 4):
                raise CheckpointError(f"{where}: member {member!r} is not a valid .npy array (header cut off)")
            header_len = struct.unpack("<H" if version == (1, 0) else "<I", size_field)[0]
            if header_len > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{where}: member {member!r} has a {header_len:,}-byte .npy header; at most {MAX_HEADER_BYTES:,}"
                )
            header = f.read(header_len)
            if len(header) != header_len:
                raise CheckpointError(f"{where}: member {member!r} is not a valid .npy array (header cut off)")
        parse = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, fortran, dtype = parse(io.BytesIO(size_field + header), max_header_size=MAX_HEADER_BYTES)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, OverflowError) as e:
            raise CheckpointError(f"{where}: member {member!r} is not a valid .npy array ({_one_line(e)})") from None
        if dtype.hasobject:
            raise CheckpointError(
                f"{where}: member {member!r} is an object array; refused (loading it would need pickle, "
                "which can run arbitrary code)"
            )
        problem = _dtype_problem(dtype)
        if problem is not None:
            raise CheckpointError(f"{where}: member {member!r} has dtype {dtype}; {problem}")
        if len(shape) > MAX_NDIM or any(not isinstance(n, int) or n < 0 for n in shape):
            raise CheckpointError(f"{where}: member {member!r} declares an invalid shape {_one_line(shape, 80)}")
        offset = 8 + len(size_field) + header_len
        declared = offset + math.prod(shape) * dtype.itemsize
        if declared != info.file_size:
            raise CheckpointError(
                f"{where}: member {member!r} declares shape {_one_line(shape, 80)} of {dtype}, "
                f"{_nbytes(declared)} with its header, but holds {_nbytes(info.file_size)}"
            )
        self._specs[info.filename] = spec = (tuple(shape), dtype, bool(fortran), offset)
        return spec

    def _read_data(self, info, shape, dtype, fortran, offset):
        nbytes = info.file_size - offset  # equal to the declared size: checked in _spec
        raw = np.empty(nbytes, np.uint8)
        view = memoryview(raw)
        with self._errors(info.filename), self._zip.open(info) as f:
            if len(f.read(offset)) != offset:
                raise EOFError("header cut off")
            done = 0
            while done < nbytes:
                n = f.readinto(view[done : done + _CHUNK])
                if not n:
                    raise EOFError(f"array data cut off after {done:,} of {nbytes:,} bytes")
                done += n
            if f.read(1):  # also reaches the member's end, where zipfile verifies the CRC
                raise CheckpointError(f"{self._where}: member {info.filename!r} has trailing data after the array")
        array = raw.view(dtype)
        return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)

    @contextlib.contextmanager
    def _errors(self, member=None):
        """Turn whatever a damaged archive makes zipfile or zlib raise into one CheckpointError."""
        where = f"{self._where}: " if member is None else f"{self._where}: member {member!r}: "
        try:
            yield
        except CheckpointError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            NotImplementedError,
            RuntimeError,
            struct.error,
            ValueError,
            OverflowError,
            UnicodeDecodeError,
            IndexError,
            KeyError,
        ) as e:
            raise CheckpointError(f"{where}corrupted or truncated checkpoint ({_one_line(e)})") from None
        except OSError as e:  # EINVAL: a seek to an offset a damaged directory made negative
            problem = "corrupted or truncated checkpoint" if e.errno == errno.EINVAL else "cannot read checkpoint"
            raise CheckpointError(f"{where}{problem} ({_one_line(e.strerror or e)})") from None


def meta_value(path, meta, key, types, *, low=None, high=None, choices=None, default=_MISSING):
    """``meta[key]`` checked for type and range, or ``CheckpointError`` naming ``path`` and the key.

    ``key`` may be dotted for nested dicts (``"model.hidden"``). ``types`` is a type or a tuple of
    types; ``bool`` is not accepted as an ``int`` unless listed, and an ``int`` is accepted (and
    returned as a ``float``) where ``float`` is. ``low``/``high`` bound numbers inclusively (NaN
    never passes a bound), ``choices`` lists the allowed values. A missing key returns ``default``
    if given, else is an error. Messages: ``"<path>: metadata 'model.hidden' must be an int in
    [1, 65536], got 1000000"``.
    """
    types = types if isinstance(types, tuple) else (types,)
    value = meta
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is not _MISSING:
                return default
            raise CheckpointError(f"{_show(path)}: metadata {key!r} is missing")
        value = value[part]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if ok and (low is not None or high is not None):
        ok = (low is None or value >= low) and (high is None or value <= high)
    if ok and choices is not None:
        ok = value in choices
    if not ok:
        want = " or ".join(t.__name__ for t in types)
        if low is not None or high is not None:
            want += f" in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        if choices is not None:
            want += " among " + _one_line(", ".join(map(repr, choices)), 120)
        raise CheckpointError(f"{_show(path)}: metadata {key!r} must be {want}, got {_one_line(repr(value), 60)}")
    return value


def _acceptor(allowed):
    if allowed is None or callable(allowed):
        return allowed
    if isinstance(allowed, (str, bytes)):
        raise TypeError("allowed must be a callable name -> bool or a collection of names, not a string")
    names = frozenset(allowed)
    return names.__contains__


def _expected(allowed):
    if callable(allowed):
        return "expected only the arrays this model and its training state use"
    names = sorted(allowed)
    shown = ", ".join(repr(n) for n in names[:8]) + (f", ... ({len(names)} names)" if len(names) > 8 else "")
    return f"expected only {shown}" if names else "expected no arrays"


# ---------------------------------------------------------------- RNG state


def rng_state(rng):
    """The state of a ``np.random.Generator`` as plain JSON (nested dicts, lists, ints, strs)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng_state: expected a numpy.random.Generator, got {type(rng).__name__}")
    return _to_json(rng.bit_generator.state)


def rng_from_state(state):
    """A new ``np.random.Generator`` that continues exactly where the one given to ``rng_state`` was."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"rng_from_state: unknown bit generator {name!r}; expected one of {_BIT_GENERATORS}")
    rng = np.random.Generator(getattr(np.random, name)())
    set_rng_state(rng, state)
    return rng


def set_rng_state(rng, state):
    """Restore ``state`` (from ``rng_state``) into an existing Generator, e.g. one a dropout layer holds."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"set_rng_state: expected a numpy.random.Generator, got {type(rng).__name__}")
    name = type(rng.bit_generator).__name__
    if not isinstance(state, dict) or state.get("bit_generator") != name:
        got = state.get("bit_generator") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"set_rng_state: the generator uses {name}, the state is for {got!r}")
    try:
        rng.bit_generator.state = _from_json(state)
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ValueError(f"set_rng_state: invalid {name} state ({e})") from None


def _to_json(x):
    if isinstance(x, dict):
        return {k: _to_json(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):  # e.g. MT19937's key: tagged so it comes back with its dtype
        return {"__ndarray__": x.tolist(), "dtype": x.dtype.str}
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (int, str)) or x is None:
        return x
    if isinstance(x, (float, np.floating)) and math.isfinite(x):
        return float(x)
    raise ValueError(f"rng_state: cannot represent {type(x).__name__} in JSON")


def _from_json(x):
    if isinstance(x, dict):
        if "__ndarray__" in x:
            return np.array(x["__ndarray__"], dtype=np.dtype(x["dtype"]))
        return {k: _from_json(v) for k, v in x.items()}
    return x
