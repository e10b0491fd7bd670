// Shared by the CPU and CUDA kernels: argument checks and the bilinear sampling rule.
//
// Semantics (Deformable DETR, equal to grid_sample(bilinear, zeros, align_corners=False)):
// a location (x, y) in [0, 1] maps to pixel (x*W - 0.5, y*H - 0.5); the four neighbouring
// pixels are weighted bilinearly and a corner outside the map contributes zero.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

// Always inlined: the CPU kernel copies its loops into an AVX2 build, which only happens to
// the code inlined into them.
#if defined(__CUDACC__)
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define MSDA_HOST_DEVICE inline __attribute__((always_inline))
#else
#define MSDA_HOST_DEVICE inline
#endif

namespace msda {

// The four corners around one location: pixel index inside the level (row * W + col), or -1
// when the corner is outside the map, with its bilinear weight and the derivatives of that
// weight with respect to the pixel coordinates (for the location gradient).
template <typename T>
struct Corners {
  int64_t index[4];
  T weight[4];
  T d_weight_dx[4];
  T d_weight_dy[4];
};

// Fills `c` and returns true when at least one corner can be inside the map. Locations that
// are NaN, infinite or far away fail the first test, so no index is ever formed from them.
// The bounds `>= -1` and `< size` match grid_sample (the original kernel used `> -1`,
// which differs only in the gradient exactly on that line).
// floor() for |v| well inside int64 range: truncation, corrected for negatives. A single
// conversion instead of a libm call on CPUs without SSE4.1 rounding.
template <typename T>
MSDA_HOST_DEVICE int64_t floor_to_int(T v) {
  const int64_t i = static_cast<int64_t>(v);
  return i - static_cast<int64_t>(static_cast<T>(i) > v);
}

template <typename T>
MSDA_HOST_DEVICE bool bilinear_corners(T x, T y, int64_t height, int64_t width, Corners<T>& c) {
  const T px = x * static_cast<T>(width) - T(0.5);
  const T py = y * static_cast<T>(height) - T(0.5);
  if (!(px >= T(-1) && py >= T(-1) && px < static_cast<T>(width) &&
        py < static_cast<T>(height))) {
    return false;
  }
  const int64_t x0 = floor_to_int(px);  // px, py in [-1, size): no overflow
  const int64_t y0 = floor_to_int(py);
  const T lx = px - static_cast<T>(x0);
  const T ly = py - static_cast<T>(y0);
  const T hx = T(1) - lx;
  const T hy = T(1) - ly;
  const bool x0_in = x0 >= 0;
  const bool x1_in = x0 + 1 <= width - 1;
  const bool y0_in = y0 >= 0;
  const bool y1_in = y0 + 1 <= height - 1;
  // Corner order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
  c.index[0] = (y0_in && x0_in) ? y0 * width + x0 : -1;
  c.index[1] = (y0_in && x1_in) ? y0 * width + x0 + 1 : -1;
  c.index[2] = (y1_in && x0_in) ? (y0 + 1) * width + x0 : -1;
  c.index[3] = (y1_in && x1_in) ? (y0 + 1) * width + x0 + 1 : -1;
  c.weight[0] = hy * hx;
  c.weight[1] = hy * lx;
  c.weight[2] = ly * hx;
  c.weight[3] = ly * lx;
  c.d_weight_dx[0] = -hy;
  c.d_weight_dx[1] = hy;
  c.d_weight_dx[2] = -ly;
  c.d_weight_dx[3] = ly;
  c.d_weight_dy[0] = -hx;
  c.d_weight_dy[1] = -lx;
  c.d_weight_dy[2] = hx;
  c.d_weight_dy[3] = lx;
  return true;
}

// A level whose rows (H, W, start) would reach outside value's S positions is skipped by the
// kernels (the Python checks reject it; this guards direct calls of the ops).
MSDA_HOST_DEVICE bool level_in_bounds(int64_t height, int64_t width, int64_t start,
                                      int64_t length) {
  return height > 0 && width > 0 && start >= 0 && start <= length &&
         height <= (length - start) / width;
}

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

}  // namespace msda
