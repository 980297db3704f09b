"""The textbook's ``common/base_model.py``: ``BaseModel`` with ``save_params`` and ``load_params``.

The file format is the book's: a pickle of the list of the model's ``params`` as float16 arrays, named
``<ClassName>.pkl`` by default, so files move both ways between the book's code and this package.

- ``save_params`` writes that pickle (atomically: to a temporary file in the same folder, then renamed, so
  an interrupted save never leaves a half-written file in place of a good one).
- ``load_params`` never runs ``pickle.load`` on the file: it reads it with nprnn's restricted unpickler
  (``nprnn.interop.book.load_book_params``), which rebuilds plain NumPy arrays and refuses anything else
  without calling it, so a crafted ``.pkl`` cannot run code. The arrays are converted to float32 and
  copied into the model's arrays in place, as the book does; a file whose number or shapes of arrays do
  not match the model is refused with a message naming the first difference (the book would broadcast or
  fail somewhere inside NumPy).
"""

import os
import pickle
import tempfile

from nprnn.dlfs2.config import GPU
from nprnn.dlfs2.np import np
from nprnn.dlfs2.util import to_cpu, to_gpu
from nprnn.interop.book import BookParamsError, load_book_params

__all__ = ["BaseModel", "BookParamsError"]


class BaseModel:
    def __init__(self):
        self.params, self.grads = None, None

    def forward(self, *args):
        raise NotImplementedError

    def backward(self, *args):
        raise NotImplementedError

    def save_params(self, file_name=None):
        """Write ``[p.astype(float16) for p in self.params]`` as a pickle (default ``<ClassName>.pkl``)."""
        if file_name is None:
            file_name = self.__class__.__name__ + ".pkl"
        file_name = os.fspath(file_name)
        params = [to_cpu(p).astype(np.float16) for p in self.params]
        folder = os.path.dirname(os.path.abspath(file_name))
        fd, tmp = tempfile.mkstemp(prefix=".save_params-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(params, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, file_name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def load_params(self, file_name=None):
        """Read a ``save_params`` file (the book's or ours) into ``self.params`` in place, as float32."""
        if file_name is None:
            file_name = self.__class__.__name__ + ".pkl"
        file_name = os.fspath(file_name)
        if "/" in file_name:
            file_name = file_name.replace("/", os.sep)
        if not os.path.exists(file_name):
            raise OSError("No file: " + file_name)
        params = load_book_params(file_name, dtype="f")
        if GPU:  # pragma: no cover - nprnn.dlfs2.np refuses GPU mode
            params = [to_gpu(p) for p in params]
        if len(params) != len(self.params):
            raise BookParamsError(
                f"{file_name}: holds {len(params)} arrays, but {type(self).__name__} has {len(self.params)} "
                "parameters; was it saved from another model?"
            )
        for i, (param, loaded) in enumerate(zip(self.params, params)):
            if param.shape != loaded.shape:
                raise BookParamsError(
                    f"{file_name}: array {i} has shape {loaded.shape}, but {type(self).__name__}'s parameter {i} "
                    f"has shape {param.shape}; was it saved from another model or vocabulary?"
                )
        for param, loaded in zip(self.params, params):
            param[...] = loaded
