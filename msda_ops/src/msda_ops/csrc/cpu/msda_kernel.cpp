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

#if defined(__x86_64__) && defined(__GNUC__)
#define MSDA_AVX2 1
#define MSDA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define MSDA_AVX2 0
#endif

namespace msda {
namespace {

// Levels validated once per call (see make_level): the loops only test height > 0.
std::vector<Level> read_levels(const Prepared& p) {
  const int64_t* hw = p.shapes.const_data_ptr<int64_t>();
  const int64_t* start = p.starts.const_data_ptr<int64_t>();
  std::vector<Level> levels(p.s.levels);
  for (size_t l = 0; l < levels.size(); ++l) {
    levels[l] = make_level(hw[2 * l], hw[2 * l + 1], start[l], p.s.length);
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
  const opmath_t* weights;    // (N, Lq, M, L, P): weights, or logits with softmax
  const Level* levels;
  Sizes s;
  bool softmax;
  const Softmax<opmath_t>* softmax_rows;  // backward with softmax: one per (n, q, m)
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
      const opmath_t* w = in.weights + sample0;
      const Softmax<opmath_t> softmax =
          in.softmax ? softmax_of(w, L * P) : Softmax<opmath_t>{opmath_t(0), opmath_t(0)};
      for (int64_t l = 0; l < L; ++l) {
        const Level& lv = in.levels[l];
        if (lv.height == 0) continue;
        // Pixel i of this level, head m, is at level_value[i * M * D].
        const scalar_t* level_value = in.value + ((n * s.length + lv.start) * M + m) * D;
        for (int64_t p = 0; p < P; ++p) {
          const int64_t sample = l * P + p;
          const opmath_t* loc = in.locations + 2 * (sample0 + sample);
          const opmath_t attn = in.softmax ? softmax(w[sample]) : w[sample];
          const Sample where = bilinear_corners(loc[0], loc[1], lv.height, lv.width, c);
          if (where != Sample::inside) {
            const opmath_t term = unsampled_term(where, loc[0], loc[1], attn);
            if (term != opmath_t(0)) {
              for (int64_t d = 0; d < D; ++d) acc[d] += term;
            }
            continue;
          }
          if (!is_finite(attn)) {  // the reference's order (msda_sampling.h, bilinear_sample)
            for (int64_t d = 0; d < D; ++d) {
              acc[d] += attn * bilinear_sample(c, level_value + d, M * D);
            }
            continue;
          }
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
  opmath_t* weights;            // (N, Lq, M, L, P): d loss / d weight (before softmax)
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
    if (lv.height == 0) continue;
    const int64_t level_offset = ((n * s.length + lv.start) * M + m) * D;
    const scalar_t* level_value = in.value + level_offset;
    opmath_t* level_grad = grad.value + level_offset;
    for (int64_t q = 0; q < s.queries; ++q) {
      const int64_t nqm = (n * s.queries + q) * M + m;
      const scalar_t* go = grad.grad_output + nqm * D;
      const opmath_t* w = in.weights + nqm * L * P;
      const Softmax<opmath_t> softmax =
          in.softmax ? in.softmax_rows[nqm] : Softmax<opmath_t>{opmath_t(0), opmath_t(0)};
      for (int64_t d = 0; d < D; ++d) g[d] = static_cast<opmath_t>(go[d]);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t sample = (nqm * L + l) * P + p;
        const opmath_t* loc = in.locations + 2 * sample;
        const Sample where = bilinear_corners(loc[0], loc[1], lv.height, lv.width, c);
        if (where == Sample::nan) {
          grad.weights[sample] = grad.locations[2 * sample] = grad.locations[2 * sample + 1] =
              loc[0] + loc[1];  // NaN
        }
        const opmath_t attn = in.softmax ? softmax(w[l * P + p]) : in.weights[sample];
        if (where == Sample::outside && !is_finite(attn)) {
          grad.locations[2 * sample] = grad.locations[2 * sample + 1] = location_grad(attn, attn);
        }
        if (where != Sample::inside) continue;
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
        grad.locations[2 * sample] =
            location_grad(attn, grad_x * static_cast<opmath_t>(lv.width));
        grad.locations[2 * sample + 1] =
            location_grad(attn, grad_y * static_cast<opmath_t>(lv.height));
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

template <typename scalar_t>
Inputs<scalar_t> view(const Prepared& p, const std::vector<Level>& levels, bool softmax) {
  using opmath_t = at::opmath_type<scalar_t>;
  return {p.value.const_data_ptr<scalar_t>(), p.locations.const_data_ptr<opmath_t>(),
          p.weights.const_data_ptr<opmath_t>(), levels.data(), p.s, softmax, nullptr};
}

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                       const at::Tensor& attention_weights, bool softmax) {
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const std::vector<Level> levels = read_levels(p);
  auto output = at::empty({p.s.batch, p.s.queries, p.s.heads * p.s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
        const auto in = view<scalar_t>(p, levels, softmax);
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
// there are no atomics and no per-thread copies of grad_value, and the result does not
// depend on the number of threads (deterministic by construction).
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, bool softmax) {
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes& s = p.s;
  const std::vector<Level> levels = read_levels(p);
  const auto go = prepare_grad_output(grad_output, value, s);
  Gradients grads = zero_gradients(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        auto in = view<scalar_t>(p, levels, softmax);
        // The L tasks of a query share its softmax: max and 1/sum once per (n, q, m), never
        // the normalised weights themselves.
        const int64_t rows = s.batch * s.queries * s.heads, samples = s.levels * s.points;
        std::vector<Softmax<opmath_t>> softmax_rows(softmax ? rows : 0);
        if (softmax) {
          at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
              softmax_rows[r] = softmax_of(in.weights + r * samples, samples);
            }
          });
          in.softmax_rows = softmax_rows.data();
        }
        const Grads<scalar_t> g{go.const_data_ptr<scalar_t>(),
                                grads.value.mutable_data_ptr<opmath_t>(),
                                grads.locations.mutable_data_ptr<opmath_t>(),
                                grads.weights.mutable_data_ptr<opmath_t>()};
        at::parallel_for(0, s.batch * s.heads * s.levels, 1, [&](int64_t begin, int64_t end) {
          backward_range(in, g, begin, end);
        });
        if (softmax) {  // weight gradients -> logit gradients, per (n, q, m)
          at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
              softmax_backward(in.weights + r * samples, g.weights + r * samples, samples);
            }
          });
        }
      });
  return finish(grads, value, sampling_locations, attention_weights);
}

}  // namespace

TORCH_LIBRARY_IMPL(msda_ops, CPU, m) {
  m.impl("ms_deform_attn_forward", &forward_cpu);
  m.impl("ms_deform_attn_backward", &backward_cpu);
}

}  // namespace msda
