"""Interoperability: PyTorch state_dicts (``torch_io``) and ONNX export (``onnx_export``).

torch, onnx and onnxruntime are optional (``pip install "nprnn[interop]"``): importing this package
never needs them; a function that does raises ``MissingExtraError`` (an ``ImportError`` and a
``RuntimeError``) naming the extra to install.
"""

from nprnn.interop._optional import EXTRA, MissingExtraError
from nprnn.interop.onnx_export import (
    compare_with_onnxruntime,
    export_checkpoint_onnx,
    lm_to_onnx,
    onnx_weights,
    recurrent_to_onnx,
)
from nprnn.interop.torch_io import (
    directional_layers,
    from_torch,
    grads_to_torch,
    infer_lm_config,
    layer_kind,
    lm_state_dict,
    load_lm_state_dict,
    load_recurrent_state_dict,
    params_from_torch,
    params_to_torch,
    recurrent_from_torch,
    recurrent_state_dict,
    to_torch,
    torch_recurrent,
)

__all__ = [
    "EXTRA", "MissingExtraError",
    "params_to_torch", "params_from_torch", "grads_to_torch", "layer_kind", "directional_layers",
    "recurrent_state_dict", "load_recurrent_state_dict", "torch_recurrent", "recurrent_from_torch",
    "lm_state_dict", "load_lm_state_dict", "to_torch", "from_torch", "infer_lm_config",
    "onnx_weights", "recurrent_to_onnx", "lm_to_onnx", "compare_with_onnxruntime", "export_checkpoint_onnx",
]  # fmt: skip
