"""Triton kernels of multi-scale deformable attention: the forward in
:mod:`msda_ops.triton_forward`, the backward in :mod:`msda_ops.triton_backward`, what they
share in :mod:`msda_ops.triton_sampling`; this module names both and describes them.

Imported lazily by :mod:`msda_ops.triton_ops` (Triton is optional). Whether the kernels are
compiled for the GPU or run by Triton's CPU interpreter is decided when this module is
imported (``TRITON_INTERPRET=1``), as for every ``@triton.jit`` function.

One program handles ``BLOCK_Q`` queries of one (image n, head m) and all their L*P samples
at once, as 2-D tiles ``[BLOCK_Q, BLOCK_LP]``; the channels are visited in chunks of
``BLOCK_D`` (3-D tiles ``[BLOCK_Q, BLOCK_LP, BLOCK_D]``), so any D, L and P work through masks.
Consequences of that layout:

- the softmax over L*P (``SOFTMAX``) is a row reduction of the logits tile, done in
  registers: the normalised weights are never written to memory;
- the location and weight gradients of a sample are owned by one program (no atomics);
  only the value gradient is scattered, with float32 ``atomic_add`` into a float32 buffer
  (bfloat16 atomics are missing in the interpreter, and float32 sums are more accurate),
  relaxed: nothing is read back before the kernel ends, so no acquire/release barrier;
- every offset is formed in int64, so tensors past 2**31 elements are indexed correctly;
- every load is masked, and corner indices of samples outside a map are replaced by 0
  before any address is formed.

Semantics (DESIGN.md): pixel (x*W - 0.5, y*H - 0.5), bilinear, corners outside the map
contribute zero; a NaN location makes its sample (hence the output and the gradients that
depend on it) NaN; ±inf and far-away locations contribute zero; a non-finite attention
weight multiplies the whole bilinear sample (inf * 0 = NaN) and makes its location
gradients NaN (the rule of every backend, see msda_ops/README.md).
"""

from __future__ import annotations

from msda_ops.triton_backward import msda_backward_kernel
from msda_ops.triton_forward import msda_forward_kernel

__all__ = ["msda_backward_kernel", "msda_forward_kernel"]
