// The op schemas. Kernels register per device in cpu/ and cuda/ (TORCH_LIBRARY_IMPL);
// fake tensors and autograd are registered from Python (msda_ops/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(msda_ops, m) {
  // ops.py holds the fake-tensor and autograd registrations; torch imports it on demand.
  m.set_python_module("msda_ops.ops");
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, bool softmax=False) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
      "bool softmax=False) "
      "-> (Tensor, Tensor, Tensor)");
}
