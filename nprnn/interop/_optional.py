"""Importing the optional interop dependencies (torch, onnx, onnxruntime) only when a function needs them."""

import importlib

EXTRA = 'pip install "nprnn[interop]"'


class MissingExtraError(ImportError, RuntimeError):
    """An optional dependency is not installed. Both an ``ImportError`` (what it is) and a
    ``RuntimeError`` (so the command line reports it as one line like its other errors)."""


def require(module, what):
    """Import ``module`` (e.g. ``"torch"``) or raise ``MissingExtraError`` saying how to install it.

    ``what`` names the feature that needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{what} needs the optional dependency {module!r}, which is not installed; "
            f"install the interop extra: {EXTRA}",
            name=module,
        ) from e
