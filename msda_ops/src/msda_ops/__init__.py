"""Multi-scale deformable attention (Deformable DETR's MSDeformAttn).

- :func:`ms_deform_attn`: the op, on a compiled kernel (CPU or CUDA, built on first use)
  or the pure-PyTorch reference; :func:`use_backend` picks one for a block of code.
- :class:`MSDeformAttn`: the layer, with the original parameter names and initialisation.
- :func:`ms_deform_attn_reference`: the reference, always available.

Importing the package compiles nothing.
"""

from msda_ops import onnx as onnx  # registers the TorchScript ONNX symbolic; imports no onnx
from msda_ops.functional import level_start_index, ms_deform_attn, use_backend
from msda_ops.module import MSDeformAttn
from msda_ops.reference import ms_deform_attn_reference

__all__ = [
    "MSDeformAttn",
    "level_start_index",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "use_backend",
]
__version__ = "0.1.0"
