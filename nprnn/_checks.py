"""Input validation shared by every layer.

Each check raises ``ValueError`` with a message that names what was expected
and what was given, so a user never has to decode a NumPy broadcasting error
from deep inside a layer.
"""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_params(name, arrays, shapes):
    """Check that parameter arrays are float32/float64, all of one dtype, with the given shapes.

    ``arrays`` and ``shapes`` are dicts keyed by the parameter name, e.g. ``{"Wx": Wx}`` and
    ``{"Wx": (D, H)}``; a shape entry of ``None`` means "any size" for that axis.
    """
    dtype = None
    for key, arr in arrays.items():
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{name}: {key} must be a NumPy array, got {type(arr).__name__}")
        if arr.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name}: {key} must be float32 or float64, got {arr.dtype}")
        if dtype is None:
            dtype = arr.dtype
        elif arr.dtype != dtype:
            raise ValueError(f"{name}: all parameters must share one dtype; {key} is {arr.dtype}, expected {dtype}")
        want = shapes[key]
        if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)):
            raise ValueError(f"{name}: {key} must have shape {_fmt(want)}, got {arr.shape}")
    return dtype


def check_input(name, x, shape, dtype, what="input"):
    """Check a float input against an expected shape (``None`` = any) and the layer's dtype."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: {what} must be a NumPy array, got {type(x).__name__}")
    if x.ndim != len(shape):
        raise ValueError(f"{name}: {what} must be {len(shape)}-D with shape {_fmt(shape)}, got shape {x.shape}")
    for axis, (want, got) in enumerate(zip(shape, x.shape)):
        if want is not None and want != got:
            raise ValueError(f"{name}: {what} must have shape {_fmt(shape)}, got {x.shape} (axis {axis})")
    if x.dtype != dtype:
        raise ValueError(f"{name}: {what} must have dtype {dtype} (the parameters' dtype), got {x.dtype}")
    return x


def check_lengths(name, lengths, N, T):
    """Check per-sequence lengths: integers in [1, T], one per batch row. Returns an int array."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.shape[0] != N:
        raise ValueError(f"{name}: lengths must have shape ({N},), got {lengths.shape}")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"{name}: lengths must be integers, got dtype {lengths.dtype}")
    if N and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(
            f"{name}: lengths must be in [1, {T}] (T={T}), got min {lengths.min()} and max {lengths.max()}"
        )
    return lengths.astype(np.intp)


def _fmt(shape):
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def positive_int(what, value, where=None):
    """``value`` as an int if it is a positive integer (not a bool), else ``ValueError`` naming ``what``
    (and ``where``, e.g. the class or file, when given). The one place that makes this check."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{what} must be a positive integer, got {value!r}")
    return int(value)
