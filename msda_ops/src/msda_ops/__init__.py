"""Multi-scale deformable attention (Deformable DETR's MSDeformAttn).

- :func:`ms_deform_attn`: the op, on a compiled kernel (CPU or CUDA, built on first use),
  Triton kernels (CUDA, no compiler needed) or the pure-PyTorch reference;
  :func:`use_backend` picks one for a block of code, :func:`backends` says which this
  machine has (also ``python -m msda_ops``).
- :class:`MSDeformAttn`: the layer, with the original parameter names and initialisation.
- :func:`ms_deform_attn_reference`: the reference, always available.

Importing the package compiles nothing and does not import Triton.
"""

from msda_ops import onnx as onnx  # registers the TorchScript ONNX symbolic; imports no onnx
from msda_ops.availability import BackendStatus, backends
from msda_ops.functional import level_start_index, ms_deform_attn, use_backend
from msda_ops.module import MSDeformAttn
from msda_ops.reference import ms_deform_attn_reference

__all__ = [
    "BackendStatus",
    "MSDeformAttn",
    "backends",
    "level_start_index",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "use_backend",
]
__version__ = "0.1.0"
