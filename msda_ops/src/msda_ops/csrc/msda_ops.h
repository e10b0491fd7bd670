// Host-side steps shared by the CPU and CUDA launchers: argument checks, the inputs in the
// layout and precision the kernels read, the accumulation dtype, gradient buffers and the
// final cast. The sampling rule itself is in msda_sampling.h (ATen-free).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

#include "msda_sampling.h"

namespace msda {

// Shapes of one call, read from the tensors' metadata.
struct Sizes {
  int64_t batch, length, heads, channels, queries, levels, points;
};

// Metadata checks for direct callers of torch.ops.msda_ops (the Python API checks more).
inline Sizes check_arguments(const at::Tensor& value, const at::Tensor& spatial_shapes,
                             const at::Tensor& level_start_index,
                             const at::Tensor& sampling_locations,
                             const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "msda_ops: value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "msda_ops: spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(!at::isFloatingType(spatial_shapes.scalar_type()) &&
                  !at::isFloatingType(level_start_index.scalar_type()),
              "msda_ops: spatial_shapes and level_start_index must be integer tensors");
  const Sizes s{value.size(0),
                value.size(1),
                value.size(2),
                value.size(3),
                sampling_locations.dim() == 6 ? sampling_locations.size(1) : -1,
                spatial_shapes.size(0),
                sampling_locations.dim() == 6 ? sampling_locations.size(4) : -1};
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == s.levels,
              "msda_ops: level_start_index must be (L,), got ", level_start_index.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 &&
                  sampling_locations.sizes() ==
                      at::IntArrayRef({s.batch, s.queries, s.heads, s.levels, s.points, 2}),
              "msda_ops: sampling_locations must be (N, Lq, M, L, P, 2), got ",
              sampling_locations.sizes());
  TORCH_CHECK(attention_weights.sizes() ==
                  at::IntArrayRef({s.batch, s.queries, s.heads, s.levels, s.points}),
              "msda_ops: attention_weights must be (N, Lq, M, L, P), got ",
              attention_weights.sizes());
  TORCH_CHECK(value.is_floating_point() && sampling_locations.is_floating_point() &&
                  attention_weights.is_floating_point(),
              "msda_ops: value, sampling_locations and attention_weights must be floating point");
  for (const at::Tensor* t :
       {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->device() == value.device(), "msda_ops: all inputs must be on ",
                value.device(), ", got one on ", t->device());
  }
  return s;
}

// The accumulation dtype: float64 stays float64; float32, float16 and bfloat16 accumulate
// in float32 (at::opmath_type), and locations and weights are read in it.
inline at::ScalarType opmath_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The inputs in the layout and precision the kernels read: value contiguous in its own
// dtype, shapes and starts as int64, locations and weights contiguous in opmath.
struct Prepared {
  at::Tensor value, shapes, starts, locations, weights;
  Sizes s;
};

inline Prepared prepare(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights) {
  const Sizes s = check_arguments(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights);
  const auto opmath = opmath_dtype(value.scalar_type());
  return {value.contiguous(),
          spatial_shapes.to(at::kLong).contiguous(),
          level_start_index.to(at::kLong).contiguous(),
          sampling_locations.to(opmath).contiguous(),
          attention_weights.to(opmath).contiguous(),
          s};
}

// grad_output checked and made contiguous in value's dtype.
inline at::Tensor prepare_grad_output(const at::Tensor& grad_output, const at::Tensor& value,
                                      const Sizes& s) {
  TORCH_CHECK(grad_output.numel() == s.batch * s.queries * s.heads * s.channels,
              "msda_ops: grad_output must be (N, Lq, M*D), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == value.device(), "msda_ops: grad_output must be on ",
              value.device(), ", got ", grad_output.device());
  return grad_output.to(value.scalar_type()).contiguous();
}

// Gradients accumulate in opmath precision (sums in half would lose most of their bits);
// zero-filled because samples outside the map and invalid levels write nothing.
struct Gradients {
  at::Tensor value, locations, weights;
};

// The three gradients in opmath dtype, zeroed where the kernel adds to them (value's when
// zero_value, the location and weight gradients when zero_samples) and uninitialised where
// it writes every entry.
inline Gradients new_gradients(const Prepared& in, bool zero_value, bool zero_samples) {
  const auto options = in.value.options().dtype(in.locations.scalar_type());
  const auto make = [&](const at::Tensor& like, bool zero) {
    return zero ? at::zeros(like.sizes(), options) : at::empty(like.sizes(), options);
  };
  return {make(in.value, zero_value), make(in.locations, zero_samples),
          make(in.weights, zero_samples)};
}

inline Gradients zero_gradients(const Prepared& in) { return new_gradients(in, true, true); }

// Each gradient in the dtype of its input.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> finish(const Gradients& g,
                                                             const at::Tensor& value,
                                                             const at::Tensor& locations,
                                                             const at::Tensor& weights) {
  return {g.value.to(value.scalar_type()), g.locations.to(locations.scalar_type()),
          g.weights.to(weights.scalar_type())};
}

}  // namespace msda
