// CUDA kernels of msda_ops::ms_deform_attn_{forward,backward}.
//
// Work split: one thread per (n, q, m, channel chunk). A chunk is VEC consecutive channels
// of one head, loaded as a single 16-byte (or smaller) vector, so the G = D / VEC threads
// of a head read its value rows coalesced. Every thread walks the L*P samples of its
// (n, q, m): the location and weight loads are shared through L1 by the G threads.
//
// Backward: the same split. grad_value is scattered with atomicAdd into an opmath (float
// or double) buffer; the location and weight gradients need a sum over all D channels,
// done with warp shuffles inside each group of G threads when G divides the warp, and with
// atomicAdd otherwise. float16/bfloat16 are read as such and accumulated in float32.
//
// All index arithmetic is 64-bit: value may hold more than 2^31 elements. Locations that
// are NaN, infinite or outside the map, and levels inconsistent with value's length, are
// skipped before any index is formed (see msda_ops.h).
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "msda_ops.h"

namespace msda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// Sizes and pointers of one call, passed by value to the kernels.
template <typename scalar_t, typename opmath_t>
struct Args {
  const scalar_t* value;      // (N, S, M, D)
  const int64_t* shapes;      // (L, 2) rows (H, W)
  const int64_t* starts;      // (L,)
  const opmath_t* locations;  // (N, Lq, M, L, P, 2)
  const opmath_t* weights;    // (N, Lq, M, L, P)
  int64_t length, heads, channels, levels, points;
  int64_t groups;  // G = channels / VEC threads per (n, q, m)
  int64_t total;   // N * Lq * M * G threads
};

template <typename scalar_t, typename opmath_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Args<scalar_t, opmath_t> a, int64_t queries, scalar_t* __restrict__ output) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (thread >= a.total) return;
  const int64_t chunk = thread % a.groups;
  const int64_t nqm = thread / a.groups;  // (n, q, m) flattened
  const int64_t m = nqm % a.heads;
  const int64_t n = nqm / (a.heads * queries);
  const int64_t row = a.heads * a.channels;  // stride of one position in value
  const scalar_t* value = a.value + (n * a.length * a.heads + m) * a.channels + chunk * VEC;
  const opmath_t* loc = a.locations + nqm * a.levels * a.points * 2;
  const opmath_t* w = a.weights + nqm * a.levels * a.points;

  opmath_t acc[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) acc[j] = opmath_t(0);
  Corners<opmath_t> c;
  for (int64_t l = 0; l < a.levels; ++l) {
    const int64_t height = a.shapes[2 * l], width = a.shapes[2 * l + 1], start = a.starts[l];
    if (!level_in_bounds(height, width, start, a.length)) continue;
    for (int64_t p = 0; p < a.points; ++p) {
      const int64_t sample = l * a.points + p;
      if (!bilinear_corners(loc[2 * sample], loc[2 * sample + 1], height, width, c)) continue;
      const opmath_t attn = w[sample];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (c.index[k] < 0) continue;
        const auto pack =
            *reinterpret_cast<const Pack<scalar_t, VEC>*>(value + (start + c.index[k]) * row);
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

// kGroupShuffle: G is a power of two <= 32, so each group lies inside one warp and the
// lanes past `total` (the last warp's tail) form whole idle groups that still shuffle.
template <typename scalar_t, typename opmath_t, int VEC, bool kGroupShuffle>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Args<scalar_t, opmath_t> a, int64_t queries,
                    const scalar_t* __restrict__ grad_output, opmath_t* __restrict__ grad_value,
                    opmath_t* __restrict__ grad_locations, opmath_t* __restrict__ grad_weights) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = thread < a.total;
  if (!kGroupShuffle && !active) return;
  const int64_t chunk = active ? thread % a.groups : 0;
  const int64_t nqm = active ? thread / a.groups : 0;
  const int64_t m = nqm % a.heads;
  const int64_t n = nqm / (a.heads * queries);
  const int64_t row = a.heads * a.channels;
  const int64_t offset = (n * a.length * a.heads + m) * a.channels + chunk * VEC;
  const scalar_t* value = a.value + offset;
  opmath_t* grad_v = grad_value + offset;
  const opmath_t* loc = a.locations + nqm * a.levels * a.points * 2;
  const opmath_t* w = a.weights + nqm * a.levels * a.points;

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
  for (int64_t l = 0; l < a.levels; ++l) {
    const int64_t height = a.shapes[2 * l], width = a.shapes[2 * l + 1], start = a.starts[l];
    const bool level_ok = active && level_in_bounds(height, width, start, a.length);
    for (int64_t p = 0; p < a.points; ++p) {
      const int64_t sample = l * a.points + p;
      opmath_t grad_attn = 0, grad_x = 0, grad_y = 0;
      const opmath_t attn = active ? w[sample] : opmath_t(0);
      const bool inside =
          level_ok && bilinear_corners(loc[2 * sample], loc[2 * sample + 1], height, width, c);
      if (inside) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.index[k] < 0) continue;
          const int64_t at = (start + c.index[k]) * row;
          const auto pack = *reinterpret_cast<const Pack<scalar_t, VEC>*>(value + at);
          const opmath_t coef = attn * c.weight[k];
          opmath_t dot = 0;  // <grad_output, value at this corner> over this chunk
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            dot += g[j] * static_cast<opmath_t>(pack.v[j]);
            atomicAdd(grad_v + at + j, coef * g[j]);
          }
          grad_attn += c.weight[k] * dot;
          grad_x += c.d_weight_dx[k] * dot;
          grad_y += c.d_weight_dy[k] * dot;
        }
        // d(pixel x)/dx = W, d(pixel y)/dy = H.
        grad_x *= attn * static_cast<opmath_t>(width);
        grad_y *= attn * static_cast<opmath_t>(height);
      }
      const int64_t out = nqm * a.levels * a.points + sample;
      if constexpr (kGroupShuffle) {
        const int group = static_cast<int>(a.groups);
        grad_attn = group_sum(grad_attn, group);
        grad_x = group_sum(grad_x, group);
        grad_y = group_sum(grad_y, group);
        if (active && chunk == 0) {
          grad_weights[out] = grad_attn;
          grad_locations[2 * out] = grad_x;
          grad_locations[2 * out + 1] = grad_y;
        }
      } else if (inside) {
        atomicAdd(grad_weights + out, grad_attn);
        atomicAdd(grad_locations + 2 * out, grad_x);
        atomicAdd(grad_locations + 2 * out + 1, grad_y);
      }
    }
  }
}

bool aligned(const void* ptr, int64_t bytes) {
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

// Calls fn(std::integral_constant<int, VEC>) for the runtime `vec` (1, 2, 4 or 8).
template <typename scalar_t, typename Fn>
void with_vec(int vec, Fn&& fn) {
  constexpr int kMax = 16 / static_cast<int>(sizeof(scalar_t));
  switch (vec) {
    case 8:
      if constexpr (kMax >= 8) return fn(std::integral_constant<int, 8>{});
      break;
    case 4:
      if constexpr (kMax >= 4) return fn(std::integral_constant<int, 4>{});
      break;
    case 2:
      if constexpr (kMax >= 2) return fn(std::integral_constant<int, 2>{});
      break;
    default:
      return fn(std::integral_constant<int, 1>{});
  }
  TORCH_CHECK(false, "msda_ops: unsupported vector width ", vec);
}

dim3 grid_for(int64_t threads) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "msda_ops: problem too large (",
              threads, " threads)");
  return dim3(static_cast<unsigned>(blocks));
}

// The inputs in the layout and precision the kernels read.
struct Prepared {
  at::Tensor value, shapes, starts, locations, weights;
};

Prepared prepare(const at::Tensor& value, const at::Tensor& spatial_shapes,
                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                 const at::Tensor& attention_weights) {
  const auto opmath = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {value.contiguous(), spatial_shapes.to(at::kLong).contiguous(),
          level_start_index.to(at::kLong).contiguous(),
          sampling_locations.to(opmath).contiguous(), attention_weights.to(opmath).contiguous()};
}

template <typename scalar_t, typename opmath_t>
Args<scalar_t, opmath_t> make_args(const Prepared& in, const Sizes& s, int vec) {
  const int64_t groups = s.channels / vec;
  return {in.value.const_data_ptr<scalar_t>(),
          in.shapes.const_data_ptr<int64_t>(),
          in.starts.const_data_ptr<int64_t>(),
          in.locations.const_data_ptr<opmath_t>(),
          in.weights.const_data_ptr<opmath_t>(),
          s.length,
          s.heads,
          s.channels,
          s.levels,
          s.points,
          groups,
          s.batch * s.queries * s.heads * groups};
}

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights) {
  const Sizes s = check_arguments(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights);
  const c10::cuda::CUDAGuard guard(value.device());
  const Prepared in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  if (output.numel() == 0) return output;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_forward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const int vec = pick_vec<scalar_t>(s.channels, {in.value.const_data_ptr()});
    const auto args = make_args<scalar_t, opmath_t>(in, s, vec);
    with_vec<scalar_t>(vec, [&](auto v) {
      forward_kernel<scalar_t, opmath_t, decltype(v)::value>
          <<<grid_for(args.total), kThreads, 0, stream>>>(args, s.queries,
                                                          output.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes s = check_arguments(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights);
  TORCH_CHECK(grad_output.numel() == s.batch * s.queries * s.heads * s.channels,
              "msda_ops: grad_output must be (N, Lq, M*D), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == value.device(), "msda_ops: grad_output must be on ",
              value.device());
  const c10::cuda::CUDAGuard guard(value.device());
  const Prepared in =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const auto go = grad_output.to(value.scalar_type()).contiguous();
  // Accumulate in opmath precision (atomics on half would lose most of the sum).
  const auto options = value.options().dtype(in.locations.scalar_type());
  auto grad_value = at::zeros(value.sizes(), options);
  auto grad_loc = at::zeros(sampling_locations.sizes(), options);
  auto grad_w = at::zeros(attention_weights.sizes(), options);
  if (go.numel() > 0) {
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                    "ms_deform_attn_backward_cuda", [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const int vec =
          pick_vec<scalar_t>(s.channels, {in.value.const_data_ptr(), go.const_data_ptr()});
      const auto args = make_args<scalar_t, opmath_t>(in, s, vec);
      const bool shuffle = args.groups <= kWarp && (args.groups & (args.groups - 1)) == 0;
      with_vec<scalar_t>(vec, [&](auto v) {
        constexpr int kVec = decltype(v)::value;
        auto launch = [&](auto kernel) {
          kernel<<<grid_for(args.total), kThreads, 0, stream>>>(
              args, s.queries, go.const_data_ptr<scalar_t>(), grad_value.mutable_data_ptr<opmath_t>(),
              grad_loc.mutable_data_ptr<opmath_t>(), grad_w.mutable_data_ptr<opmath_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        };
        if (shuffle) {
          launch(backward_kernel<scalar_t, opmath_t, kVec, true>);
        } else {
          launch(backward_kernel<scalar_t, opmath_t, kVec, false>);
        }
      });
    });
  }
  return {grad_value.to(value.scalar_type()), grad_loc.to(sampling_locations.scalar_type()),
          grad_w.to(attention_weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(msda_ops, CUDA, m) {
  m.impl("ms_deform_attn_forward", &forward_cuda);
  m.impl("ms_deform_attn_backward", &backward_cuda);
}

}  // namespace msda
