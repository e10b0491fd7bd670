// CUDA kernels of msda_ops and the launch plan that picks and orders them. ATen-free and
// CUDA-header-free: msda_kernel.cu includes this file to launch on a GPU, and
// tests/cuda_emu includes it unmodified to run the same kernels on CPU threads (checked
// warp shuffles, std::atomic_ref atomics) under ASan/UBSan/TSan.
//
// Work split: one thread per (n, q, m, channel chunk). A chunk is VEC consecutive channels
// of one head, loaded as a single 16-byte (or smaller) vector, so the G = D / VEC threads
// of a head read its value rows coalesced. Every thread walks the L*P samples of its
// (n, q, m): the location and weight loads are shared through L1 by the G threads.
//
// Backward: the same split. grad_value is scattered with atomicAdd into an opmath (float
// or double) buffer; the location and weight gradients need a sum over all D channels,
// done with warp shuffles inside each group of G threads when G divides the warp, and with
// atomicAdd otherwise. Under torch.use_deterministic_algorithms no float atomics run: the
// location and weight gradients come from the shuffles, or from one thread per sample that
// sums all D channels itself, and grad_value is gathered by threads that each own a band of
// pixels and walk the queries in order.
//
// With softmax, attention_weights hold logits; each thread recomputes the max and sum over
// the L*P logits of its (n, q, m) (nothing normalised is stored), and a last kernel turns
// the weight gradients into logit gradients.
//
// All index arithmetic is 64-bit: value may hold more than 2^31 elements.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "msda_sampling.h"

namespace msda {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// What the launcher hands over: device pointers and sizes of one call.
template <typename scalar_t, typename opmath_t>
struct Inputs {
  const scalar_t* value;      // (N, S, M, D)
  const int64_t* shapes;      // (L, 2) rows (H, W)
  const int64_t* starts;      // (L,)
  const opmath_t* locations;  // (N, Lq, M, L, P, 2)
  const opmath_t* weights;    // (N, Lq, M, L, P): weights, or logits with softmax
  int64_t batch, length, heads, channels, queries, levels, points;
  bool softmax;
};

// Zero-filled opmath buffers the backward adds into, shaped like value, locations, weights.
template <typename opmath_t>
struct GradBuffers {
  opmath_t* value;
  opmath_t* locations;
  opmath_t* weights;
};

// Sizes and pointers of one launch, passed by value to the kernels.
template <typename scalar_t, typename opmath_t>
struct Args {
  const scalar_t* value;
  const Level* levels;  // (L,), validated by levels_kernel
  const opmath_t* locations;
  const opmath_t* weights;
  int64_t batch, length, heads, channels, queries, levels_count, points;
  int64_t groups;  // G = channels / VEC threads per (n, q, m)
  int64_t total;   // N * Lq * M * G threads
  bool softmax;
};

// static: a plain (non-template) kernel defined in a header.
static __global__ void levels_kernel(const int64_t* __restrict__ shapes,
                              const int64_t* __restrict__ starts, int64_t count, int64_t length,
                              Level* __restrict__ levels) {
  const int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (l < count) levels[l] = make_level(shapes[2 * l], shapes[2 * l + 1], starts[l], length);
}

template <typename scalar_t, typename opmath_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Args<scalar_t, opmath_t> a, scalar_t* __restrict__ output) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (thread >= a.total) return;
  const int64_t chunk = thread % a.groups;
  const int64_t nqm = thread / a.groups;  // (n, q, m) flattened
  const int64_t m = nqm % a.heads;
  const int64_t n = nqm / (a.heads * a.queries);
  const int64_t row = a.heads * a.channels;  // stride of one position in value
  const int64_t samples = a.levels_count * a.points;
  const scalar_t* value = a.value + (n * a.length * a.heads + m) * a.channels + chunk * VEC;
  const opmath_t* loc = a.locations + nqm * samples * 2;
  const opmath_t* w = a.weights + nqm * samples;
  const Softmax<opmath_t> softmax =
      a.softmax ? softmax_of(w, samples) : Softmax<opmath_t>{opmath_t(0), opmath_t(0)};

  opmath_t acc[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) acc[j] = opmath_t(0);
  Corners<opmath_t> c;
  for (int64_t l = 0; l < a.levels_count; ++l) {
    const Level lv = a.levels[l];
    if (lv.height == 0) continue;
    for (int64_t p = 0; p < a.points; ++p) {
      const int64_t sample = l * a.points + p;
      const opmath_t x = loc[2 * sample], y = loc[2 * sample + 1];
      const opmath_t attn = a.softmax ? softmax(w[sample]) : w[sample];
      const Sample where = bilinear_corners(x, y, lv.height, lv.width, c);
      if (where != Sample::inside) {
        const opmath_t term = unsampled_term(where, x, y, attn);
        if (term != opmath_t(0)) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) acc[j] += term;
        }
        continue;
      }
      if (!is_finite(attn)) {  // the reference's order (msda_sampling.h, bilinear_sample)
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          acc[j] += attn * bilinear_sample(c, value + lv.start * row + j, row);
        }
        continue;
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (c.index[k] < 0) continue;
        const auto pack =
            *reinterpret_cast<const Pack<scalar_t, VEC>*>(value + (lv.start + c.index[k]) * row);
        const opmath_t coef = attn * c.weight[k];
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[j] += coef * static_cast<opmath_t>(pack.v[j]);
      }
    }
  }
  Pack<scalar_t, VEC> out;
#pragma unroll
  for (int j = 0; j < VEC; ++j) out.v[j] = static_cast<scalar_t>(acc[j]);
  *reinterpret_cast<Pack<scalar_t, VEC>*>(output + nqm * a.channels + chunk * VEC) = out;
}

// Sum over the `width` lanes of each aligned lane group (width a power of two <= 32).
template <typename T>
__device__ __forceinline__ T group_sum(T v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset, width);
  }
  return v;
}

// How the G threads of a (n, q, m) sum their location and weight gradients.
enum class Reduce {
  shuffle,  // G a power of two <= 32: warp shuffles, lane 0 of the group writes
  atomic,   // otherwise: atomicAdd into the gradients
};

// kScatterValue: grad_value by atomicAdd here (false: value_gather_kernel computes it).
template <typename scalar_t, typename opmath_t, int VEC, Reduce kReduce, bool kScatterValue>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Args<scalar_t, opmath_t> a, const scalar_t* __restrict__ grad_output,
                    GradBuffers<opmath_t> grad) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = thread < a.total;
  // With shuffles, the lanes past `total` (the last warp's tail) form whole idle groups that
  // must still take part in every shuffle.
  if (kReduce != Reduce::shuffle && !active) return;
  const int64_t chunk = active ? thread % a.groups : 0;
  const int64_t nqm = active ? thread / a.groups : 0;
  const int64_t m = nqm % a.heads;
  const int64_t n = nqm / (a.heads * a.queries);
  const int64_t row = a.heads * a.channels;
  const int64_t samples = a.levels_count * a.points;
  const int64_t offset = (n * a.length * a.heads + m) * a.channels + chunk * VEC;
  const scalar_t* value = a.value + offset;
  opmath_t* grad_v = grad.value + offset;
  const opmath_t* loc = a.locations + nqm * samples * 2;
  const opmath_t* w = a.weights + nqm * samples;
  const Softmax<opmath_t> softmax = (active && a.softmax)
                                        ? softmax_of(w, samples)
                                        : Softmax<opmath_t>{opmath_t(0), opmath_t(0)};

  opmath_t g[VEC];
  {
    Pack<scalar_t, VEC> pack;
#pragma unroll
    for (int j = 0; j < VEC; ++j) pack.v[j] = scalar_t(0);
    if (active) {
      pack = *reinterpret_cast<const Pack<scalar_t, VEC>*>(grad_output + nqm * a.channels +
                                                            chunk * VEC);
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) g[j] = static_cast<opmath_t>(pack.v[j]);
  }
  Corners<opmath_t> c;
  for (int64_t l = 0; l < a.levels_count; ++l) {
    const Level lv = a.levels[l];
    const bool level_ok = active && lv.height > 0;
    for (int64_t p = 0; p < a.points; ++p) {
      const int64_t sample = l * a.points + p;
      opmath_t grad_attn = 0, grad_x = 0, grad_y = 0;
      bool touched = false;
      if (level_ok) {
        const opmath_t x = loc[2 * sample], y = loc[2 * sample + 1];
        const opmath_t attn = a.softmax ? softmax(w[sample]) : w[sample];
        const Sample where = bilinear_corners(x, y, lv.height, lv.width, c);
        if (where == Sample::inside) {
          touched = true;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (c.index[k] < 0) continue;
            const int64_t at = (lv.start + c.index[k]) * row;
            const auto pack = *reinterpret_cast<const Pack<scalar_t, VEC>*>(value + at);
            const opmath_t coef = attn * c.weight[k];
            opmath_t dot = 0;  // <grad_output, value at this corner> over this chunk
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
              dot += g[j] * static_cast<opmath_t>(pack.v[j]);
              if constexpr (kScatterValue) atomicAdd(grad_v + at + j, coef * g[j]);
            }
            grad_attn += c.weight[k] * dot;
            grad_x += c.d_weight_dx[k] * dot;
            grad_y += c.d_weight_dy[k] * dot;
          }
          // d(pixel x)/dx = W, d(pixel y)/dy = H.
          grad_x = location_grad(attn, grad_x * static_cast<opmath_t>(lv.width));
          grad_y = location_grad(attn, grad_y * static_cast<opmath_t>(lv.height));
        } else if (where == Sample::nan) {
          touched = true;
          grad_attn = grad_x = grad_y = x + y;  // NaN
        } else if (!is_finite(attn)) {
          touched = true;
          grad_x = grad_y = location_grad(attn, attn);  // NaN
        }
      }
      const int64_t out = nqm * samples + sample;
      if constexpr (kReduce == Reduce::shuffle) {
        const int group = static_cast<int>(a.groups);
        grad_attn = group_sum(grad_attn, group);
        grad_x = group_sum(grad_x, group);
        grad_y = group_sum(grad_y, group);
        if (active && chunk == 0) {
          grad.weights[out] = grad_attn;
          grad.locations[2 * out] = grad_x;
          grad.locations[2 * out + 1] = grad_y;
        }
      } else if (touched) {
        atomicAdd(grad.weights + out, grad_attn);
        atomicAdd(grad.locations + 2 * out, grad_x);
        atomicAdd(grad.locations + 2 * out + 1, grad_y);
      }
    }
  }
}

// Deterministic location and weight gradients where the G threads of a (n, q, m) cannot
// shuffle: one thread per (n, q, m, sample) sums over all D channels itself, in order.
template <typename scalar_t, typename opmath_t>
__global__ void __launch_bounds__(kThreads)
    sample_grad_kernel(Args<scalar_t, opmath_t> a, const scalar_t* __restrict__ grad_output,
                       GradBuffers<opmath_t> grad) {
  const int64_t samples = a.levels_count * a.points;
  const int64_t out = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (out >= a.batch * a.queries * a.heads * samples) return;
  const int64_t nqm = out / samples, sample = out % samples;
  const Level lv = a.levels[sample / a.points];
  if (lv.height == 0) return;
  const opmath_t x = a.locations[2 * out], y = a.locations[2 * out + 1];
  Corners<opmath_t> c;
  const Sample where = bilinear_corners(x, y, lv.height, lv.width, c);
  if (where == Sample::nan) {
    grad.weights[out] = grad.locations[2 * out] = grad.locations[2 * out + 1] = x + y;  // NaN
  }
  const opmath_t* w = a.weights + nqm * samples;
  const opmath_t attn = a.softmax ? softmax_of(w, samples)(w[sample]) : w[sample];
  if (where == Sample::outside && !is_finite(attn)) {
    grad.locations[2 * out] = grad.locations[2 * out + 1] = location_grad(attn, attn);  // NaN
  }
  if (where != Sample::inside) return;
  const int64_t m = nqm % a.heads, n = nqm / (a.heads * a.queries);
  const int64_t row = a.heads * a.channels;
  const scalar_t* value = a.value + (n * a.length * a.heads + m) * a.channels;
  const scalar_t* g = grad_output + nqm * a.channels;
  opmath_t grad_attn = 0, grad_x = 0, grad_y = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (c.index[k] < 0) continue;
    const scalar_t* v = value + (lv.start + c.index[k]) * row;
    opmath_t dot = 0;
    for (int64_t d = 0; d < a.channels; ++d) {
      dot += static_cast<opmath_t>(g[d]) * static_cast<opmath_t>(v[d]);
    }
    grad_attn += c.weight[k] * dot;
    grad_x += c.d_weight_dx[k] * dot;
    grad_y += c.d_weight_dy[k] * dot;
  }
  grad.weights[out] = grad_attn;
  grad.locations[2 * out] = location_grad(attn, grad_x * static_cast<opmath_t>(lv.width));
  grad.locations[2 * out + 1] = location_grad(attn, grad_y * static_cast<opmath_t>(lv.height));
}

// Deterministic grad_value: one thread per (n, m, level, band, chunk) owns the pixels of
// its band of the level and adds every sample that lands there, queries and points in
// order, so no two threads write the same element and the sum order is fixed.
template <typename scalar_t, typename opmath_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    value_gather_kernel(Args<scalar_t, opmath_t> a, int64_t bands,
                        const scalar_t* __restrict__ grad_output,
                        opmath_t* __restrict__ grad_value) {
  int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= a.batch * a.heads * a.levels_count * bands * a.groups) return;
  const int64_t chunk = t % a.groups;
  t /= a.groups;
  const int64_t band = t % bands;
  t /= bands;
  const int64_t l = t % a.levels_count;
  t /= a.levels_count;
  const int64_t m = t % a.heads;
  const int64_t n = t / a.heads;
  const Level lv = a.levels[l];
  const int64_t pixels = lv.height * lv.width;
  const int64_t lo = pixels * band / bands, hi = pixels * (band + 1) / bands;
  if (lo == hi) return;
  const int64_t row = a.heads * a.channels;
  const int64_t samples = a.levels_count * a.points;
  const int64_t offset = ((n * a.length + lv.start) * a.heads + m) * a.channels + chunk * VEC;
  opmath_t* grad_v = grad_value + offset;
  Corners<opmath_t> c;
  for (int64_t q = 0; q < a.queries; ++q) {
    const int64_t nqm = (n * a.queries + q) * a.heads + m;
    const opmath_t* loc = a.locations + nqm * samples * 2;
    const opmath_t* w = a.weights + nqm * samples;
    for (int64_t p = 0; p < a.points; ++p) {
      const int64_t sample = l * a.points + p;
      if (bilinear_corners(loc[2 * sample], loc[2 * sample + 1], lv.height, lv.width, c) !=
          Sample::inside) {
        continue;
      }
      bool mine = false;
#pragma unroll
      for (int k = 0; k < 4; ++k) mine = mine || (c.index[k] >= lo && c.index[k] < hi);
      if (!mine) continue;
      const opmath_t attn = a.softmax ? softmax_of(w, samples)(w[sample]) : w[sample];
      const auto pack = *reinterpret_cast<const Pack<scalar_t, VEC>*>(
          grad_output + nqm * a.channels + chunk * VEC);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (c.index[k] < lo || c.index[k] >= hi) continue;
        const opmath_t coef = attn * c.weight[k];
        opmath_t* target = grad_v + c.index[k] * row;
#pragma unroll
        for (int j = 0; j < VEC; ++j) target[j] += coef * static_cast<opmath_t>(pack.v[j]);
      }
    }
  }
}

// One thread per (n, q, m): weight gradients in place -> logit gradients.
template <typename opmath_t>
__global__ void softmax_backward_kernel(const opmath_t* __restrict__ logits, int64_t rows,
                                        int64_t samples, opmath_t* __restrict__ grad_weights) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < rows) softmax_backward(logits + r * samples, grad_weights + r * samples, samples);
}

// ---------------------------------------------------------------- launch plan (host)
// `Device` supplies two members, implemented with CUDA by msda_kernel.cu and with threads
// by tests/cuda_emu:
//   void launch(kernel, int64_t threads, args...)  // ceil(threads / kThreads) blocks
//   T* scratch<T>(int64_t count)                   // device memory for this call

inline bool aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(bytes) == 0;
}

// Widest vector (at most 16 bytes) that divides D and keeps every row access aligned.
template <typename scalar_t>
int pick_vec(int64_t channels, std::initializer_list<const void*> pointers) {
  int vec = 16 / static_cast<int>(sizeof(scalar_t));
  while (vec > 1) {
    bool ok = channels % vec == 0;
    for (const void* ptr : pointers) ok = ok && aligned(ptr, vec * sizeof(scalar_t));
    if (ok) break;
    vec /= 2;
  }
  return vec;
}

// Calls fn(std::integral_constant<int, VEC>) for the `vec` of pick_vec (1, 2, 4 or 8).
template <typename scalar_t, typename Fn>
void with_vec(int vec, Fn&& fn) {
  constexpr int kMax = 16 / static_cast<int>(sizeof(scalar_t));
  if constexpr (kMax >= 8) {
    if (vec == 8) return fn(std::integral_constant<int, 8>{});
  }
  if constexpr (kMax >= 4) {
    if (vec == 4) return fn(std::integral_constant<int, 4>{});
  }
  if (vec == 2) return fn(std::integral_constant<int, 2>{});
  fn(std::integral_constant<int, 1>{});
}

// Each group of G threads lies inside one warp, aligned: shuffles can sum it.
inline bool use_group_shuffle(int64_t groups) {
  return groups <= kWarp && (groups & (groups - 1)) == 0;
}

// Pixel bands per level for value_gather_kernel: enough threads to fill a GPU, at most 64
// (each band re-reads every location of its level).
inline int64_t gather_bands(int64_t owners) {
  const int64_t wanted = (int64_t{1} << 16) / (owners > 0 ? owners : 1);
  return wanted < 1 ? 1 : (wanted > 64 ? 64 : wanted);
}

template <typename scalar_t, typename opmath_t, typename Device>
const Level* launch_levels(const Inputs<scalar_t, opmath_t>& in, Device& device) {
  Level* levels = device.template scratch<Level>(in.levels);
  device.launch(levels_kernel, in.levels, in.shapes, in.starts, in.levels, in.length, levels);
  return levels;
}

template <typename scalar_t, typename opmath_t>
Args<scalar_t, opmath_t> make_args(const Inputs<scalar_t, opmath_t>& in, const Level* levels,
                                   int vec) {
  const int64_t groups = in.channels / vec;
  return {in.value,   levels,      in.locations, in.weights, in.batch,  in.length,
          in.heads,   in.channels, in.queries,   in.levels,  in.points, groups,
          in.batch * in.queries * in.heads * groups, in.softmax};
}

// output: (N, Lq, M*D), written whole.
template <typename scalar_t, typename opmath_t, typename Device>
void forward(const Inputs<scalar_t, opmath_t>& in, scalar_t* output, Device& device) {
  if (in.batch * in.queries * in.heads * in.channels == 0) return;
  const Level* levels = launch_levels(in, device);
  const int vec = pick_vec<scalar_t>(in.channels, {in.value, output});
  with_vec<scalar_t>(vec, [&](auto v) {
    constexpr int kVec = decltype(v)::value;
    const auto args = make_args(in, levels, kVec);
    device.launch(forward_kernel<scalar_t, opmath_t, kVec>, args.total, args, output);
  });
}

// grad_output: (N, Lq, M*D); grad: zero-filled opmath buffers.
template <typename scalar_t, typename opmath_t, typename Device>
void backward(const Inputs<scalar_t, opmath_t>& in, const scalar_t* grad_output,
              GradBuffers<opmath_t> grad, bool deterministic, Device& device) {
  if (in.batch * in.queries * in.heads * in.channels == 0) return;
  const Level* levels = launch_levels(in, device);
  const int vec = pick_vec<scalar_t>(in.channels, {in.value, grad_output});
  with_vec<scalar_t>(vec, [&](auto v) {
    constexpr int kVec = decltype(v)::value;
    const auto args = make_args(in, levels, kVec);
    const bool shuffle = use_group_shuffle(args.groups);
    const int64_t outputs = in.batch * in.queries * in.heads * in.levels * in.points;
    if (!deterministic) {
      if (shuffle) {
        device.launch(backward_kernel<scalar_t, opmath_t, kVec, Reduce::shuffle, true>,
                      args.total, args, grad_output, grad);
      } else {
        device.launch(backward_kernel<scalar_t, opmath_t, kVec, Reduce::atomic, true>,
                      args.total, args, grad_output, grad);
      }
    } else {
      if (shuffle) {
        device.launch(backward_kernel<scalar_t, opmath_t, kVec, Reduce::shuffle, false>,
                      args.total, args, grad_output, grad);
      } else {
        device.launch(sample_grad_kernel<scalar_t, opmath_t>, outputs, args, grad_output, grad);
      }
      const int64_t owners = in.batch * in.heads * in.levels * args.groups;
      const int64_t bands = gather_bands(owners);
      device.launch(value_gather_kernel<scalar_t, opmath_t, kVec>, owners * bands, args, bands,
                    grad_output, grad.value);
    }
  });
  if (in.softmax) {
    const int64_t rows = in.batch * in.queries * in.heads;
    device.launch(softmax_backward_kernel<opmath_t>, rows, in.weights, rows,
                  in.levels * in.points, grad.weights);
  }
}

}  // namespace cuda
}  // namespace msda
