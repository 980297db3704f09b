"""Checkpoints: one ``.npz`` file, written atomically, read without pickle.

Layout: every array is a member ``<name>.npy``; the metadata (config, epoch, step, vocabulary,
RNG state, ...) is a JSON string stored as a 0-d unicode array in the reserved member
``__nprnn__``, together with the format name and version. Nothing is ever pickled, so loading a
checkpoint cannot run code.

Writing goes to a temporary file in the destination's directory, is flushed and fsync'ed, then
renamed over the destination with ``os.replace`` (atomic on POSIX and Windows): a reader sees the
old checkpoint or the new one, never a mix, even if the writer is killed. On any error the
temporary file is removed and the old checkpoint is left byte for byte as it was.

Reading checks every member's CRC, refuses object arrays (which would need pickle) and reports
any problem as a ``CheckpointError`` (a ``ValueError``) naming the file.
"""

import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT = "nprnn-checkpoint"
VERSION = 1
META_KEY = "__nprnn__"
# bool, integers, floats, complex, bytes and unicode strings: what .npy stores without pickle
_PLAIN_KINDS = "biufcSU"
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


# ---------------------------------------------------------------- writing


def save_checkpoint(path, arrays, meta, *, finite=True):
    """Write ``arrays`` (``{name: ndarray}``) and ``meta`` (a JSON-serializable dict) to ``path``.

    Python and NumPy scalars among ``arrays`` are stored as 0-d arrays (so an optimizer's
    ``state_dict()`` can go in as is; ``load_state_dict`` accepts the 0-d arrays back).

    Atomic: ``path`` is either left untouched (on any error) or replaced by the complete new
    file. With ``finite`` (the default) a float array holding NaN or Inf is refused before
    anything is written, so a diverged run can never overwrite a good checkpoint.
    Raises ``ValueError`` for bad arguments, ``OSError`` if the file system fails.
    """
    path = os.fspath(path)
    members = _members(arrays, meta, finite)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave a half-written temporary file
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)  # make the rename itself durable


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
    members = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name or name == META_KEY or name.startswith("/") or "\\" in name:
            raise ValueError(f"save_checkpoint: bad array name {name!r} (a non-empty str, not {META_KEY!r})")
        if isinstance(a, (int, float, np.generic)):  # e.g. an optimizer's state_dict() scalars
            a = np.asarray(a)
        if not isinstance(a, np.ndarray):
            raise ValueError(f"save_checkpoint: {name!r} must be a NumPy array or number, got {type(a).__name__}")
        if a.dtype.kind not in _PLAIN_KINDS or a.dtype.fields is not None:
            raise ValueError(
                f"save_checkpoint: {name!r} has dtype {a.dtype}; only bool, integer, float, complex and "
                "string arrays can be stored without pickle"
            )
        if finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise ValueError(f"save_checkpoint: {name!r} contains NaN or Inf; refusing to write it")
        members[name] = a
    try:
        text = json.dumps({"format": FORMAT, "version": VERSION, "meta": meta}, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"save_checkpoint: meta must be JSON-serializable: {e}") from None
    members[META_KEY] = np.array(text)
    return members


def _file_mode(path):
    """Keep an existing checkpoint's permissions; a new one gets 0o666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
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


def load_checkpoint(path):
    """Read a checkpoint: ``(arrays, meta)``. Raises ``CheckpointError`` naming the file and the problem."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] != b"PK":
            hint = " (it looks like a pickle; nprnn never unpickles checkpoints)" if head[:1] == b"\x80" else ""
            raise CheckpointError(f"{path}: not an .npz checkpoint: the file is not a zip archive{hint}")
        arrays = {}
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    raise CheckpointError(f"{path}: unexpected member {name!r} (an .npz holds only .npy files)")
                if name[: -len(".npy")] in arrays:
                    raise CheckpointError(f"{path}: member {name!r} appears twice")
                arrays[name[: -len(".npy")]] = _read_member(zf, info, path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupted or truncated checkpoint ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None

    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not an nprnn checkpoint (no {META_KEY!r} metadata member)")
    header = _parse_meta(arrays.pop(META_KEY), path)
    return arrays, header["meta"]


def _read_member(zf, info, path):
    """One ``.npy`` member, fully read (so its CRC is checked), refusing anything needing pickle."""
    name = info.filename
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise CheckpointError(f"{path}: member {name!r} uses .npy format {version}, not supported")
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: member {name!r} is not a valid .npy array ({e})") from None
        if dtype.hasobject:
            raise CheckpointError(
                f"{path}: member {name!r} is an object array; refused (loading it would need pickle, "
                "which can run arbitrary code)"
            )
        if dtype.kind not in _PLAIN_KINDS:
            raise CheckpointError(f"{path}: member {name!r} has unsupported dtype {dtype}")
    with zf.open(info) as f:
        try:
            array = np.lib.format.read_array(f, allow_pickle=False)
        except ValueError as e:
            raise CheckpointError(f"{path}: member {name!r} is damaged ({e})") from None
        if f.read(1):  # also reaches the member's end, where zipfile verifies the CRC
            raise CheckpointError(f"{path}: member {name!r} has trailing data after the array")
    return array


def _parse_meta(raw, path):
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise CheckpointError(f"{path}: metadata member {META_KEY!r} must be a unicode string, got {raw.dtype}")
    try:
        header = json.loads(str(raw))
    except ValueError as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata does not describe an {FORMAT!r} file")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {header.get('version')!r}; this nprnn reads version {VERSION}"
        )
    if not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"{path}: metadata has no 'meta' dict")
    return header


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
