"""The textbook's ``common/np.py``: ``np`` is the array module, ``GPU`` the switch it was chosen by.

``from nprnn.dlfs2.np import *`` binds ``np`` (NumPy) and ``GPU``, as ``from common.np import *`` does. The
book imports CuPy as ``np`` when ``config.GPU`` is true; nprnn's fast layers are NumPy code and cannot run on
CuPy arrays, so here ``GPU = True`` is refused with an ImportError rather than failing later, deep inside a
layer.
"""

from nprnn.dlfs2.config import GPU

if GPU:
    raise ImportError(
        "nprnn.dlfs2 runs on NumPy only: nprnn's layers are NumPy code and cannot run on CuPy arrays; "
        "leave nprnn.dlfs2.config.GPU = False (or run the script on the textbook's own common package)"
    )

import numpy as np  # noqa: E402

__all__ = ["np", "GPU"]
