// The sampling rule shared by every kernel: the C++ CPU loops, the CUDA kernels and the CPU
// emulation of those kernels (tests/cuda_emu). ATen-free, so plain C++ and device code both
// include it.
//
// Semantics (Deformable DETR, equal to grid_sample(bilinear, zeros, align_corners=False)):
// a location (x, y) in [0, 1] maps to pixel (x*W - 0.5, y*H - 0.5); the four neighbouring
// pixels are weighted bilinearly and a corner outside the map contributes zero.
//
// NaN rule (DESIGN.md, msda_ops/README.md): a NaN location makes its (query, head) output
// NaN and its own location (both coordinates) and weight gradients NaN; NaN values propagate
// through ordinary arithmetic; ±inf and far-away locations are outside the map and contribute
// zero. A non-finite attention weight w multiplies the bilinear sample as a whole, as in the
// reference (w * sample, so inf * 0 = NaN for a sample outside the map or equal to 0; see
// bilinear_sample), and its location gradients are NaN (location_grad).
#pragma once

#include <cmath>
#include <cstdint>

// Always inlined: the CPU kernel copies its loops into an AVX2 build, which only happens to
// the code inlined into them. MSDA_HOST_DEVICE marks what device code calls too.
#if defined(__GNUC__)
#define MSDA_INLINE inline __attribute__((always_inline))
#else
#define MSDA_INLINE inline
#endif
#if defined(__CUDACC__)
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSDA_HOST_DEVICE MSDA_INLINE
#endif

namespace msda {

// One level of the multi-scale map, validated once per call against value's length S: a
// level whose rows would reach outside value gets height = width = 0 and is skipped (the
// Python checks reject it; this guards direct calls of the ops).
struct Level {
  int64_t height, width, start;
};

MSDA_HOST_DEVICE Level make_level(int64_t height, int64_t width, int64_t start, int64_t length) {
  const bool ok = height > 0 && width > 0 && start >= 0 && start <= length &&
                  height <= (length - start) / width;
  return ok ? Level{height, width, start} : Level{0, 0, 0};
}

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

enum class Sample { outside, inside, nan };

// floor() for |v| well inside int64 range: truncation, corrected for negatives. A single
// conversion instead of a libm call on CPUs without SSE4.1 rounding.
template <typename T>
MSDA_HOST_DEVICE int64_t floor_to_int(T v) {
  const int64_t i = static_cast<int64_t>(v);
  return i - static_cast<int64_t>(static_cast<T>(i) > v);
}

// Fills `c` and returns Sample::inside when at least one corner can be inside the map.
// Locations that are NaN, infinite or far away fail the first test, so no index is ever
// formed from them. The bounds `>= -1` and `< size` match grid_sample (the original kernel
// used `> -1`, which differs only in the gradient exactly on that line).
template <typename T>
MSDA_HOST_DEVICE Sample bilinear_corners(T x, T y, int64_t height, int64_t width,
                                         Corners<T>& c) {
  const T px = x * static_cast<T>(width) - T(0.5);
  const T py = y * static_cast<T>(height) - T(0.5);
  if (!(px >= T(-1) && py >= T(-1) && px < static_cast<T>(width) &&
        py < static_cast<T>(height))) {
    return (x != x || y != y) ? Sample::nan : Sample::outside;
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
  return Sample::inside;
}

// What a sample that reads no pixel adds to each output channel: NaN for a NaN location
// (x + y is NaN then), attn * 0 otherwise (NaN when the weight is not finite, as the
// reference's `0 * weight`), so zero in the ordinary case.
template <typename T>
MSDA_HOST_DEVICE T unsampled_term(Sample where, T x, T y, T attn) {
  return where == Sample::nan ? x + y : attn * T(0);
}

// False for ±inf and NaN (v - v is NaN then), without <cmath> overloads on the device.
template <typename T>
MSDA_HOST_DEVICE bool is_finite(T v) {
  return v - v == T(0);
}

// The bilinear sample of one channel, sum_k weight_k * v[index_k * stride], for the rare
// non-finite attention weight: the kernels otherwise fold the weight into each corner's
// coefficient, which for inf turns a corner weight of 0 or corners of opposite sign into
// NaN where the reference's inf * sample is ±inf.
template <typename T, typename V>
MSDA_HOST_DEVICE T bilinear_sample(const Corners<T>& c, const V* v, int64_t stride) {
  T sum = 0;
  for (int k = 0; k < 4; ++k) {
    if (c.index[k] >= 0) sum += c.weight[k] * static_cast<T>(v[c.index[k] * stride]);
  }
  return sum;
}

// d out / d location of a sample: attn * grad (grad: the derivative of the sample, times
// <grad_output, value>, scaled to normalised coordinates). NaN when attn is not finite,
// inside the map or outside: inf times a derivative that is 0 (outside, or cancelling
// channels) has no value; the reference is made to follow the same rule.
template <typename T>
MSDA_HOST_DEVICE T location_grad(T attn, T grad) {
  return is_finite(attn) ? attn * grad : attn - attn;
}

MSDA_HOST_DEVICE float exp_of(float v) { return ::expf(v); }
MSDA_HOST_DEVICE double exp_of(double v) { return ::exp(v); }

// The softmax over the L*P logits of one (query, head), read where it is needed instead of
// being stored: weight_i = exp(logit_i - max) * inv_sum. A NaN logit makes every weight NaN
// (the sum is NaN), as torch.softmax does.
template <typename T>
struct Softmax {
  T max, inv_sum;
  MSDA_HOST_DEVICE T operator()(T logit) const { return exp_of(logit - max) * inv_sum; }
};

template <typename T>
MSDA_HOST_DEVICE Softmax<T> softmax_of(const T* logits, int64_t count) {
  if (count <= 0) return {T(0), T(0)};
  T max = logits[0];
  for (int64_t i = 1; i < count; ++i) max = logits[i] > max ? logits[i] : max;
  T sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += exp_of(logits[i] - max);
  return {max, T(1) / sum};
}

// In place: grad_i = d loss / d weight_i becomes d loss / d logit_i
// = weight_i * (grad_i - sum_j weight_j * grad_j).
template <typename T>
MSDA_HOST_DEVICE void softmax_backward(const T* logits, T* grad, int64_t count) {
  const Softmax<T> softmax = softmax_of(logits, count);
  T dot = 0;
  for (int64_t i = 0; i < count; ++i) dot += softmax(logits[i]) * grad[i];
  for (int64_t i = 0; i < count; ++i) grad[i] = softmax(logits[i]) * (grad[i] - dot);
}

}  // namespace msda
