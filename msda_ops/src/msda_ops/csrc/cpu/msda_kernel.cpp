// CPU kernels of msda_ops::ms_deform_attn_{forward,backward}.
//
// float64 and float32 compute in their own precision; float16 and bfloat16 read their
// values but accumulate in float32 (at::opmath_type). The channel loop (D contiguous
// values per head) is the innermost one so the compiler vectorises it.
//
// The library is compiled for the x86-64 baseline (it may be cached on a shared disk and
// loaded by other machines), so the loops exist twice: baseline, and AVX2+FMA picked at
// run time when the CPU has it. Both copies come from the same always-inline bodies.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "msda_ops.h"

#if defined(__GNUC__)
#define MSDA_INLINE inline __attribute__((always_inline))
#else
#define MSDA_INLINE inline
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#define MSDA_AVX2 1
#define MSDA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define MSDA_AVX2 0
#endif

namespace msda {
namespace {

struct Level {
  int64_t height, width, start;
  bool valid;
};

std::vector<Level> read_levels(const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index, int64_t length) {
  const auto shapes = spatial_shapes.to(at::kLong).contiguous();
  const auto starts = level_start_index.to(at::kLong).contiguous();
  const int64_t* hw = shapes.data_ptr<int64_t>();
  const int64_t* start = starts.data_ptr<int64_t>();
  std::vector<Level> levels(shapes.size(0));
  for (size_t l = 0; l < levels.size(); ++l) {
    const int64_t h = hw[2 * l], w = hw[2 * l + 1];
    levels[l] = {h, w, start[l], level_in_bounds(h, w, start[l], length)};
  }
  return levels;
}

// acc[d] += coef * v[d]
template <typename scalar_t, typename opmath_t>
MSDA_INLINE void axpy(opmath_t* __restrict__ acc, opmath_t coef, const scalar_t* __restrict__ v,
                      int64_t n) {
  for (int64_t d = 0; d < n; ++d) acc[d] += coef * static_cast<opmath_t>(v[d]);
}

// gv[d] += coef * g[d]; returns sum_d g[d] * v[d]. The sum runs in 8 interleaved partial
// sums: a single running sum would fix the order of additions and forbid vectorising.
template <typename scalar_t, typename opmath_t>
MSDA_INLINE opmath_t dot_and_axpy(const opmath_t* __restrict__ g, const scalar_t* __restrict__ v,
                                  opmath_t* __restrict__ gv, opmath_t coef, int64_t n) {
  constexpr int kLanes = 8;
  opmath_t part[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      part[j] += g[d + j] * static_cast<opmath_t>(v[d + j]);
      gv[d + j] += coef * g[d + j];
    }
  }
  for (; d < n; ++d) {
    part[0] += g[d] * static_cast<opmath_t>(v[d]);
    gv[d] += coef * g[d];
  }
  opmath_t dot = 0;
  for (int j = 0; j < kLanes; ++j) dot += part[j];
  return dot;
}

// Contiguous inputs as the loops read them; locations and weights in opmath_t.
template <typename scalar_t>
struct Inputs {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* value;      // (N, S, M, D)
  const opmath_t* locations;  // (N, Lq, M, L, P, 2)
  const opmath_t* weights;    // (N, Lq, M, L, P)
  const Level* levels;
  Sizes s;
};

// Queries nq in [begin, end) (nq = n * Lq + q), all heads: output (N, Lq, M, D).
// kD > 0: D known at compile time (the common head sizes), so the accumulator lives in
// registers instead of memory.
template <int kD, typename scalar_t>
MSDA_INLINE void forward_body(const Inputs<scalar_t>& in, scalar_t* out_ptr, int64_t begin,
                              int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Sizes& s = in.s;
  const int64_t M = s.heads, L = s.levels, P = s.points;
  const int64_t D = kD > 0 ? kD : s.channels;
  std::vector<opmath_t> heap(kD > 0 ? 0 : D);
  opmath_t fixed[kD > 0 ? kD : 1];
  opmath_t* acc = kD > 0 ? fixed : heap.data();
  Corners<opmath_t> c;
  for (int64_t nq = begin; nq < end; ++nq) {
    const int64_t n = nq / s.queries;
    for (int64_t m = 0; m < M; ++m) {
      std::fill(acc, acc + D, opmath_t(0));
      const int64_t sample0 = (nq * M + m) * L * P;
      for (int64_t l = 0; l < L; ++l) {
        const Level& lv = in.levels[l];
        if (!lv.valid) continue;
        // Pixel i of this level, head m, is at level_value[i * M * D].
        const scalar_t* level_value = in.value + ((n * s.length + lv.start) * M + m) * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t sample = sample0 + l * P + p;
          const opmath_t* loc = in.locations + 2 * sample;
          if (!bilinear_corners(loc[0], loc[1], lv.height, lv.width, c)) continue;
          const opmath_t attn = in.weights[sample];
          for (int k = 0; k < 4; ++k) {
            if (c.index[k] < 0) continue;
            axpy(acc, attn * c.weight[k], level_value + c.index[k] * M * D, D);
          }
        }
      }
      scalar_t* out = out_ptr + (nq * M + m) * D;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
    }
  }
}

// Gradients of one task (n, m, level), see backward_cpu.
template <typename scalar_t>
struct Grads {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* grad_output;  // (N, Lq, M, D)
  opmath_t* value;              // (N, S, M, D)
  opmath_t* locations;          // (N, Lq, M, L, P, 2)
  opmath_t* weights;            // (N, Lq, M, L, P)
};

template <int kD, typename scalar_t>
MSDA_INLINE void backward_body(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                               int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Sizes& s = in.s;
  const int64_t M = s.heads, L = s.levels, P = s.points;
  const int64_t D = kD > 0 ? kD : s.channels;
  std::vector<opmath_t> heap(kD > 0 ? 0 : D);
  opmath_t fixed[kD > 0 ? kD : 1];
  opmath_t* g = kD > 0 ? fixed : heap.data();
  Corners<opmath_t> c;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t l = task % L;
    const int64_t m = (task / L) % M;
    const int64_t n = task / (L * M);
    const Level& lv = in.levels[l];
    if (!lv.valid) continue;
    const int64_t level_offset = ((n * s.length + lv.start) * M + m) * D;
    const scalar_t* level_value = in.value + level_offset;
    opmath_t* level_grad = grad.value + level_offset;
    for (int64_t q = 0; q < s.queries; ++q) {
      const int64_t nqm = (n * s.queries + q) * M + m;
      const scalar_t* go = grad.grad_output + nqm * D;
      for (int64_t d = 0; d < D; ++d) g[d] = static_cast<opmath_t>(go[d]);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t sample = (nqm * L + l) * P + p;
        const opmath_t* loc = in.locations + 2 * sample;
        if (!bilinear_corners(loc[0], loc[1], lv.height, lv.width, c)) continue;
        const opmath_t attn = in.weights[sample];
        opmath_t grad_attn = 0, grad_x = 0, grad_y = 0;
        for (int k = 0; k < 4; ++k) {
          if (c.index[k] < 0) continue;
          const int64_t row = c.index[k] * M * D;
          const opmath_t dot =  // <grad_output, value at this corner>
              dot_and_axpy(g, level_value + row, level_grad + row, attn * c.weight[k], D);
          grad_attn += c.weight[k] * dot;
          grad_x += c.d_weight_dx[k] * dot;
          grad_y += c.d_weight_dy[k] * dot;
        }
        grad.weights[sample] = grad_attn;
        // d(pixel x)/dx = W and d(pixel y)/dy = H.
        grad.locations[2 * sample] = attn * grad_x * static_cast<opmath_t>(lv.width);
        grad.locations[2 * sample + 1] = attn * grad_y * static_cast<opmath_t>(lv.height);
      }
    }
  }
}

// The head sizes worth a specialisation get their own copy of the loops (kD = D); others
// take the runtime-D one (kD = 0). A plain switch: lambdas would not be inlined into the
// AVX2 copies and would stay baseline code.
template <typename scalar_t>
MSDA_INLINE void forward_any(const Inputs<scalar_t>& in, scalar_t* out, int64_t begin,
                             int64_t end) {
  switch (in.s.channels) {
    case 32:
      return forward_body<32>(in, out, begin, end);
    case 64:
      return forward_body<64>(in, out, begin, end);
    default:
      return forward_body<0>(in, out, begin, end);
  }
}

template <typename scalar_t>
MSDA_INLINE void backward_any(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                              int64_t begin, int64_t end) {
  switch (in.s.channels) {
    case 32:
      return backward_body<32>(in, grad, begin, end);
    case 64:
      return backward_body<64>(in, grad, begin, end);
    default:
      return backward_body<0>(in, grad, begin, end);
  }
}

#if MSDA_AVX2
template <typename scalar_t>
MSDA_TARGET_AVX2 void forward_avx2(const Inputs<scalar_t>& in, scalar_t* out, int64_t begin,
                                   int64_t end) {
  forward_any(in, out, begin, end);
}

template <typename scalar_t>
MSDA_TARGET_AVX2 void backward_avx2(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                                    int64_t begin, int64_t end) {
  backward_any(in, grad, begin, end);
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

template <typename scalar_t>
void forward_range(const Inputs<scalar_t>& in, scalar_t* out, int64_t begin, int64_t end) {
#if MSDA_AVX2
  if (has_avx2()) return forward_avx2(in, out, begin, end);
#endif
  forward_any(in, out, begin, end);
}

template <typename scalar_t>
void backward_range(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad, int64_t begin,
                    int64_t end) {
#if MSDA_AVX2
  if (has_avx2()) return backward_avx2(in, grad, begin, end);
#endif
  backward_any(in, grad, begin, end);
}

at::ScalarType opmath_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The converted inputs, kept alive while Inputs points into them.
struct Prepared {
  at::Tensor value, locations, weights;
  std::vector<Level> levels;
  Sizes s;
};

Prepared prepare(const at::Tensor& value, const at::Tensor& spatial_shapes,
                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                 const at::Tensor& attention_weights) {
  const Sizes s = check_arguments(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights);
  const auto opmath = opmath_dtype(value.scalar_type());
  return {value.contiguous(), sampling_locations.to(opmath).contiguous(),
          attention_weights.to(opmath).contiguous(),
          read_levels(spatial_shapes, level_start_index, s.length), s};
}

template <typename scalar_t>
Inputs<scalar_t> view(const Prepared& p) {
  using opmath_t = at::opmath_type<scalar_t>;
  return {p.value.const_data_ptr<scalar_t>(), p.locations.const_data_ptr<opmath_t>(),
          p.weights.const_data_ptr<opmath_t>(), p.levels.data(), p.s};
}

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                       const at::Tensor& attention_weights) {
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  auto output = at::empty({p.s.batch, p.s.queries, p.s.heads * p.s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
        const auto in = view<scalar_t>(p);
        scalar_t* out = output.mutable_data_ptr<scalar_t>();
        // One task per (n, q): all heads of a query share its cache lines of the output.
        at::parallel_for(0, p.s.batch * p.s.queries, 1, [&](int64_t begin, int64_t end) {
          forward_range(in, out, begin, end);
        });
      });
  return output;
}

// One task per (n, m, level): the gradient rows of value that a task writes (its level's
// pixels, head m of image n) and its location/weight gradients belong to no other task, so
// there are no atomics and no per-thread copies of grad_value.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes& s = p.s;
  TORCH_CHECK(grad_output.numel() == s.batch * s.queries * s.heads * s.channels,
              "msda_ops: grad_output must be (N, Lq, M*D), got ", grad_output.sizes());
  const auto go = grad_output.to(value.scalar_type()).contiguous();
  // Accumulate in opmath precision; converted to each input's dtype at the end.
  const auto options = value.options().dtype(opmath_dtype(value.scalar_type()));
  auto grad_value = at::zeros(value.sizes(), options);
  auto grad_loc = at::zeros(sampling_locations.sizes(), options);
  auto grad_w = at::zeros(attention_weights.sizes(), options);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const auto in = view<scalar_t>(p);
        const Grads<scalar_t> grads{go.const_data_ptr<scalar_t>(),
                                    grad_value.mutable_data_ptr<opmath_t>(),
                                    grad_loc.mutable_data_ptr<opmath_t>(),
                                    grad_w.mutable_data_ptr<opmath_t>()};
        at::parallel_for(0, s.batch * s.heads * s.levels, 1, [&](int64_t begin, int64_t end) {
          backward_range(in, grads, begin, end);
        });
      });
  return {grad_value.to(value.scalar_type()), grad_loc.to(sampling_locations.scalar_type()),
          grad_w.to(attention_weights.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(msda_ops, CPU, m) {
  m.impl("ms_deform_attn_forward", &forward_cpu);
  m.impl("ms_deform_attn_backward", &backward_cpu);
}

}  // namespace msda
