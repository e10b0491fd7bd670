// CPU kernels of msda_ops::ms_deform_attn_{forward,backward}.
//
// float64 and float32 compute in their own precision; float16 and bfloat16 read their
// values but accumulate in float32 (at::opmath_type). The channel loop (D contiguous
// values per head) is the innermost one so it runs on vectors.
//
// The library is compiled for the x86-64 baseline (it may be cached on a shared disk and
// loaded by other machines), so the loops exist three times: baseline, AVX2+FMA and AVX-512,
// the widest the CPU has picked at run time (MSDA_OPS_CPU_ISA=avx2|baseline caps it). All
// copies come from the same always-inline bodies (msda_block.h and below).
//
// Per (query, head) the corners of all its samples are computed first, in arrays (one
// sample per vector lane, see corners), then one channel loop runs over them with the sums
// in vector registers: the loops hold no per-sample bookkeeping.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu/msda_block.h"
#include "msda_ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define MSDA_X86 1
#define MSDA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define MSDA_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")))
#else
#define MSDA_X86 0
#endif

namespace msda {
namespace {

using namespace cpu;  // NOLINT: the building blocks of this file's loops

// Levels validated once per call (see make_level): the loops only test height > 0.
std::vector<Level> read_levels(const Prepared& p) {
  const int64_t* hw = p.shapes.const_data_ptr<int64_t>();
  const int64_t* start = p.starts.const_data_ptr<int64_t>();
  std::vector<Level> levels(p.s.levels);
  for (size_t l = 0; l < levels.size(); ++l) {
    levels[l] = make_level(hw[2 * l], hw[2 * l + 1], start[l], p.s.length);
    // The loops hold pixel coordinates in int32 (see corners).
    TORCH_CHECK(levels[l].height < INT32_MAX && levels[l].width < INT32_MAX,
                "msda_ops: the CPU kernel takes levels under 2^31 - 1 pixels high and wide, "
                "got spatial_shapes[", l, "] = (", hw[2 * l], ", ", hw[2 * l + 1], ")");
  }
  return levels;
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
  const scalar_t* zeros;                  // D zeros: the row of a corner outside the map
};

// out[0, D) += sum over the inside samples of b and their corners of coef * row, where
// row(k, j) is the D values of corner k of sample j (zeros for a corner outside the map).
// Each corner has its own sums: one running sum per vector would chain 4 multiply-adds per
// sample one after the other (their latency, not the loads, would set the pace).
template <int kD, int kBytes, typename scalar_t, typename opmath_t, typename RowOf>
MSDA_INLINE void gather(opmath_t* __restrict__ out, const Block<opmath_t>& b, int count,
                        RowOf row, int64_t D) {
#if MSDA_SIMD
  if constexpr (kD > 0) {
    using V = typename Simd<opmath_t, kBytes>::type;
    constexpr int kW = Simd<opmath_t, kBytes>::kWidth, kV = kD / kW;
    static_assert(kD % kW == 0, "specialised head sizes are whole vectors");
    V acc[4][kV], v;
    for (int k = 0; k < 4; ++k) {
      for (int i = 0; i < kV; ++i) acc[k][i] = V{};
    }
    for (int j = 0; j < count; ++j) {
      if (b.status[j] != static_cast<int32_t>(Sample::inside)) continue;
      for (int k = 0; k < 4; ++k) {
        const scalar_t* r = row(k, j);
        const opmath_t coef = b.coef[k][j];
        for (int i = 0; i < kV; ++i) {
          load(v, r + i * kW);
          acc[k][i] += coef * v;
        }
      }
    }
    for (int i = 0; i < kV; ++i) {
      load(v, out + i * kW);
      v += (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]);
      std::memcpy(out + i * kW, &v, sizeof(v));
    }
    return;
  }
#endif
  for (int j = 0; j < count; ++j) {
    if (b.status[j] != static_cast<int32_t>(Sample::inside)) continue;
    for (int k = 0; k < 4; ++k) axpy(out, b.coef[k][j], row(k, j), D);
  }
}

// acc[d] += attn * sum_k weight_k * row_k[d] for sample j of b, row_k = corner(k) (nullptr
// for a corner outside the map): the reference's order, for a non-finite weight
// (bilinear_sample in msda_sampling.h; attn * weight_k per corner would turn a corner weight
// of 0 or corners of opposite sign into NaN where the reference gives ±inf).
template <typename scalar_t, typename opmath_t, typename CornerOf>
MSDA_INLINE void sample_first(opmath_t* acc, const Block<opmath_t>& b, int j, opmath_t attn,
                              CornerOf corner, int64_t D) {
  for (int64_t d = 0; d < D; ++d) {
    opmath_t sum = 0;
    for (int k = 0; k < 4; ++k) {
      const scalar_t* r = corner(k);
      if (r != nullptr) sum += b.weight[k][j] * static_cast<opmath_t>(r[d]);
    }
    acc[d] += attn * sum;
  }
}

// The element offset of corner k of sample j of b in the framed copy (Layout::framed).
template <typename opmath_t>
MSDA_INLINE int64_t framed_offset(const Block<opmath_t>& b, int k, int j, int64_t D) {
  return b.base[j] + (k & 1) * D + (k >> 1) * static_cast<int64_t>(b.step32[j]);
}

// How many queries ahead the backward prefetches its strided rows (a query's work is a few
// hundred nanoseconds, about a memory latency).
constexpr int64_t kAhead = 2;
// The same for the forward, whose work per query and head is shorter.
constexpr int64_t kAheadForward = 4;

// Prefetch the cache lines of elements [p, p + n) (for writing when `write`).
template <typename T>
MSDA_INLINE void prefetch_span(const T* p, int64_t n, bool write = false) {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t at = 0; at < n * static_cast<int64_t>(sizeof(T)); at += 64) {
    if (write) {
      __builtin_prefetch(c + at, 1);
    } else {
      __builtin_prefetch(c + at, 0);
    }
  }
#else
  (void)p, (void)n, (void)write;
#endif
}

// Scratch memory of one thread for the framed copies, kept from one task (and call) to the
// next: 2 MiB aligned and, on Linux, backed by huge pages where the system allows it
// (madvise). Memory from the heap made the kernel's speed depend on the allocator's
// history: after one unrelated large computation in the same process the backward ran up
// to 1.5x slower on the same inputs (where its 4 KiB pages landed, we think: cache sets and
// TLB; this VM has no counters to tell); a few contiguous huge pages measured the same in
// every state. More than kKeepBytes is returned after use.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { release(); }

  // At least `bytes` bytes, 2 MiB aligned, contents undefined.
  char* get(size_t bytes) {
    if (bytes <= size_) return base_;
    release();
    const size_t size = (bytes + kHuge - 1) / kHuge * kHuge;
#if defined(__linux__)
    void* raw = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    TORCH_CHECK(raw != MAP_FAILED, "msda_ops: cannot map ", size, " bytes of scratch memory");
    char* start = static_cast<char*>(raw);
    char* aligned = reinterpret_cast<char*>(
        (reinterpret_cast<uintptr_t>(start) + kHuge - 1) / kHuge * kHuge);
    if (aligned > start) munmap(start, aligned - start);
    munmap(aligned + size, start + kHuge - aligned);
#if defined(MADV_HUGEPAGE)
    madvise(aligned, size, MADV_HUGEPAGE);  // a request: without huge pages it is ignored
#endif
    base_ = aligned;
#else
    base_ = static_cast<char*>(std::aligned_alloc(kHuge, size));
    TORCH_CHECK(base_ != nullptr, "msda_ops: cannot allocate ", size, " bytes of scratch memory");
#endif
    size_ = size;
    return base_;
  }

  // Gives the memory back if it is more than kKeepBytes (a large problem's copies).
  void trim() {
    if (size_ > kKeepBytes) release();
  }

 private:
  static constexpr size_t kHuge = size_t(2) << 20, kKeepBytes = size_t(4) << 20;

  void release() {
    if (base_ == nullptr) return;
#if defined(__linux__)
    munmap(base_, size_);
#else
    std::free(base_);
#endif
    base_ = nullptr;
    size_ = 0;
  }

  char* base_ = nullptr;
  size_t size_ = 0;
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The largest framed copy of one head's levels of value (forward) or of a backward task's
// gradient rows (and as much again or less for its value rows), see forward_body and
// backward_body. Offsets in the copy are int32 (Layout::framed).
constexpr int64_t kPackBytes = int64_t(8) << 20;
static_assert(kPackBytes / 2 < INT32_MAX, "framed offsets are int32");

// Whether a task copies its head's levels into a framed copy of `pixels` pixels of D values
// of `element` bytes: not for more pixels than the task has samples (the copy would cost
// more than it saves), nor beyond kPackBytes.
MSDA_INLINE bool worth_framing(int64_t pixels, int64_t samples, int64_t D, int64_t element) {
  return pixels > 0 && pixels <= samples && pixels * D * element <= kPackBytes;
}

// The framed copy (Layout::framed, frame_layout) of levels [l0, l1) of one head, whose pixel
// p has its D values at head + p * pixel_step, into `framed` (`pixels` pixels).
template <typename T, typename scalar_t>
void frame_head_rows(T* framed, const scalar_t* head, int64_t pixel_step, int64_t D,
                     const Level* levels, const Frame* frames, int64_t l0, int64_t l1) {
  for (int64_t l = l0; l < l1; ++l) {
    const Level& lv = levels[l];
    if (lv.width == 0) continue;
    const int64_t W = lv.width, H = lv.height, step = frames[l].step;
    T* first = framed + frames[l].first;
    std::fill(first - step - D, first - D + step, T(0));  // the top row and the next left pixel
    for (int64_t y = 0; y < H; ++y) {
      T* row = first + y * step;
      const scalar_t* src = head + (lv.start + y * W) * pixel_step;
      if (pixel_step == D) {
        std::memcpy(row, src, W * D * sizeof(T));
      } else {
        for (int64_t x = 0; x < W; ++x) {
          std::memcpy(row + x * D, src + x * pixel_step, D * sizeof(T));
        }
      }
      std::fill(row + W * D, row + W * D + 2 * D, T(0));  // this row's right, next row's left
    }
    std::fill(first + H * step - D, first + (H + 1) * step - D, T(0));  // the bottom row
  }
}

// Queries [q_begin, q_end) of head m of image n, whose rows are read at image_m (value as
// it is: Layout::plain, pixel p at p * pixel_step; or its framed copy: Layout::framed,
// pixel_step = D).
template <int kD, int kBytes, Layout kLayout, typename scalar_t>
MSDA_INLINE void forward_queries(const Inputs<scalar_t>& in, scalar_t* out_ptr, int64_t n,
                                 int64_t m, int64_t q_begin, int64_t q_end,
                                 const scalar_t* image_m, int64_t pixel_step,
                                 const Frame* frames, at::opmath_type<scalar_t>* acc,
                                 Block<at::opmath_type<scalar_t>>& b) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Sizes& s = in.s;
  const int64_t M = s.heads, P = s.points, LP = s.levels * P;
  const int64_t D = kD > 0 ? kD : s.channels;
  const auto row = [&](int k, int j) -> const scalar_t* {
    if constexpr (kLayout == Layout::framed) {
      return image_m + framed_offset(b, k, j, D);
    } else {
      const int64_t at = b.offset[k][j];
      return at >= 0 ? image_m + at : in.zeros;
    }
  };
  for (int64_t q = q_begin; q < q_end; ++q) {
    const int64_t nq = n * s.queries + q;
    std::fill(acc, acc + D, opmath_t(0));
    const int64_t sample0 = (nq * M + m) * LP;
    if (q + kAheadForward < q_end) {
      // One head of every query: locations, weights and output rows M apart, which the
      // hardware prefetcher does not follow (a profile put a third of the time on the
      // load of the locations). Ask for those of the query kAheadForward on.
      const int64_t ahead = sample0 + kAheadForward * M * LP;
      prefetch_span(in.locations + 2 * ahead, 2 * LP);
      prefetch_span(in.weights + ahead, LP);
      prefetch_span(out_ptr + (nq * M + m + kAheadForward * M) * D, D, true);
    }
    const opmath_t* w = in.weights + sample0;
    const Softmax<opmath_t> softmax =
        in.softmax ? softmax_of(w, LP) : Softmax<opmath_t>{opmath_t(0), opmath_t(0)};
    bool nan = false;  // a sample that reads no pixel adds 0 or, when its term is NaN, NaN
    for (int64_t j0 = 0; j0 < LP; j0 += kBlock) {
      const int count = static_cast<int>(std::min<int64_t>(kBlock, LP - j0));
      if (LP > kBlock || q == q_begin) {  // the same levels in every block of the task
        set_levels(
            b, count, in.levels, pixel_step, [&](int j) { return (j0 + j) / P; }, frames);
      }
      const opmath_t* xy = in.locations + 2 * (sample0 + j0);
      const opmath_t* attn = w + j0;
      if (in.softmax) {
        for (int j = 0; j < count; ++j) b.softmax[j] = softmax(attn[j]);
        attn = b.softmax;
      }
      corners<kLayout>(b, count, xy, attn, pixel_step);
      // Samples outside the map, of a skipped level or with a non-finite weight need the
      // loop below; usually there are none, which one vectorised pass finds out.
      int32_t unusual = 0;
      for (int j = 0; j < count; ++j) {
        unusual |= static_cast<int32_t>(b.status[j] != static_cast<int32_t>(Sample::inside)) |
                   static_cast<int32_t>(!(attn[j] - attn[j] == opmath_t(0)));  // !is_finite
      }
      for (int j = 0; unusual != 0 && j < count; ++j) {
        const int32_t where = b.status[j];
        if (where == kSkipped) continue;
        if (where == static_cast<int32_t>(Sample::inside)) {
          if (!is_finite(attn[j])) {  // rare: taken out of the gather, see sample_first
            const auto corner = [&](int k) -> const scalar_t* {
              return b.corner_in[k][j] != 0 ? row(k, j) : nullptr;
            };
            sample_first<scalar_t>(acc, b, j, attn[j], corner, D);
            b.status[j] = kSkipped;
          }
          continue;
        }
        const opmath_t term =
            unsampled_term(static_cast<Sample>(where), xy[2 * j], xy[2 * j + 1], attn[j]);
        nan = nan || term != opmath_t(0);
      }
      gather<kD, kBytes, scalar_t>(acc, b, count, row, D);
    }
    if (nan) std::fill(acc, acc + D, std::numeric_limits<opmath_t>::quiet_NaN());
    scalar_t* out = out_ptr + (nq * M + m) * D;
    for (int64_t d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
  }
}

// Tasks t in [begin, end): t = (n * M + m) * chunks + c, the queries of chunk c (the queries
// split in `chunks` equal runs) and head m of image n; output (N, Lq, M, D).
template <int kD, int kBytes, typename scalar_t>
MSDA_INLINE void forward_body(const Inputs<scalar_t>& in, scalar_t* out_ptr, int64_t chunks,
                              int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Sizes& s = in.s;
  const int64_t M = s.heads, LP = s.levels * s.points, S = s.length;
  const int64_t D = kD > 0 ? kD : s.channels;
  const int64_t per_chunk = (s.queries + chunks - 1) / chunks;
  std::vector<opmath_t> acc(D);
  std::vector<Frame> frames(s.levels);
  const int64_t framed_pixels = frame_layout(in.levels, 0, s.levels, D, frames.data());
  Block<opmath_t> b;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t c = task % chunks, m = (task / chunks) % M, n = task / (chunks * M);
    const int64_t q_begin = c * per_chunk, q_end = std::min(s.queries, q_begin + per_chunk);
    if (q_begin >= q_end) continue;
    // Pixel i of level l, head m, is at image_m + (start_l + i) * M * D.
    const scalar_t* image_m = in.value + n * S * M * D + m * D;
    // Head m's rows are D values every M * D, and the samples read them anywhere: one head
    // at a time on a contiguous copy of its rows, they stay in the caches (1/M of value:
    // 200 KiB at the encoder's shape, against 1.4 MiB for all heads), and framed by zeros
    // the loops read every corner without a test (Layout::framed).
    if (worth_framing(framed_pixels, (q_end - q_begin) * LP, D, sizeof(scalar_t))) {
      auto* framed = reinterpret_cast<scalar_t*>(
          thread_scratch().get(framed_pixels * D * sizeof(scalar_t)));
      frame_head_rows(framed, image_m, M * D, D, in.levels, frames.data(), 0, s.levels);
      forward_queries<kD, kBytes, Layout::framed>(in, out_ptr, n, m, q_begin, q_end, framed, D,
                                                  frames.data(), acc.data(), b);
    } else {
      forward_queries<kD, kBytes, Layout::plain>(in, out_ptr, n, m, q_begin, q_end, image_m,
                                                 M * D, nullptr, acc.data(), b);
    }
  }
  thread_scratch().trim();
}

// Gradients of one task (n, m, level), see backward_cpu.
template <typename scalar_t>
struct Grads {
  using opmath_t = at::opmath_type<scalar_t>;
  const scalar_t* grad_output;  // (N, Lq, M, D)
  opmath_t* value;              // (N, S, M, D)
  opmath_t* locations;          // (N, Lq, M, L, P, 2)
  opmath_t* weights;            // (N, Lq, M, L, P): d loss / d weight (before softmax)
  // Whether value's gradient arrives uninitialised (see backward_cpu): a task then writes
  // its levels' rows of its head first (zeros, or the framed copy's sums) instead of adding
  // to them.
  bool value_unset;
};

// Whether the levels tile value exactly: all kept by make_level, level l starting where
// level l - 1 ends, the last ending at S (what the Python checks require). Each pixel of a
// head then belongs to one level, whose task writes it.
bool levels_tile_value(const std::vector<Level>& levels, int64_t length) {
  int64_t next = 0;
  for (const Level& lv : levels) {
    if (lv.width == 0 || lv.start != next) return false;
    next += lv.height * lv.width;
  }
  return next == length;
}

// For one inside sample j of b: adds attn * weight_k * g to the gradient rows of its corners
// and returns the dot products <g, row_k> of its corners: 0 for a corner outside in
// Layout::plain; in Layout::framed a corner outside reads (and writes) the frame, and its
// dot product is masked later.
template <int kD, int kBytes, Layout kLayout, typename scalar_t, typename opmath_t>
MSDA_INLINE void sample_backward(const Block<opmath_t>& b, int j, const opmath_t* __restrict__ g,
                                 const scalar_t* image_m, opmath_t* grad_m, int64_t D,
                                 opmath_t dot[4]) {
  const auto offset = [&](int k) -> int64_t {
    if constexpr (kLayout == Layout::framed) {
      return framed_offset(b, k, j, D);
    } else {
      return b.offset[k][j];
    }
  };
#if MSDA_SIMD
  if constexpr (kD > 0) {
    using V = typename Simd<opmath_t, kBytes>::type;
    constexpr int kW = Simd<opmath_t, kBytes>::kWidth, kV = kD / kW;
    V gv[kV], v, gr, part[4];
    for (int i = 0; i < kV; ++i) load(gv[i], g + i * kW);
    for (int k = 0; k < 4; ++k) {
      const int64_t at = offset(k);
      part[k] = V{};
      // Layout::plain: a branch, not a select of a zero row and a scratch gradient row for
      // a corner outside: that select measured ~15 % slower (the gradient rows' addresses
      // then wait for the offsets to load).
      if (kLayout == Layout::plain && at < 0) continue;
      const scalar_t* row = image_m + at;
      opmath_t* grad_row = grad_m + at;
      const opmath_t coef = b.coef[k][j];
      for (int i = 0; i < kV; ++i) {
        load(v, row + i * kW);
        part[k] += gv[i] * v;
        load(gr, grad_row + i * kW);
        gr += coef * gv[i];
        std::memcpy(grad_row + i * kW, &gr, sizeof(gr));
      }
    }
    sum4<opmath_t, kBytes>(part, dot);  // the four lane sums at once
    return;
  }
#endif
  for (int k = 0; k < 4; ++k) {
    const int64_t at = b.corner_in[k][j] != 0 ? offset(k) : -1;
    dot[k] = at < 0 ? opmath_t(0)
                    : dot_and_axpy(g, image_m + at, grad_m + at, b.coef[k][j], D);
  }
}

// The queries of task (n, m, levels [l0, l0 + L / groups)), whose rows of value are read at
// image_m and whose gradient rows are at grad_m (value and grad_value as they are:
// Layout::plain, pixel p at p * pixel_step; or framed copies: Layout::framed, pixel_step = D).
template <int kD, int kBytes, Layout kLayout, typename scalar_t>
MSDA_INLINE void backward_queries(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                                  int64_t n, int64_t m, int64_t l0, int64_t group_levels,
                                  const scalar_t* image_m, at::opmath_type<scalar_t>* grad_m,
                                  int64_t pixel_step, const Frame* frames,
                                  at::opmath_type<scalar_t>* g,
                                  Block<at::opmath_type<scalar_t>>& b) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Sizes& s = in.s;
  const int64_t M = s.heads, L = s.levels, P = s.points;
  const int64_t D = kD > 0 ? kD : s.channels;
  const int64_t per_query = group_levels * P;
  // One query's samples of the task's levels per block (in pieces beyond kBlock samples).
  for (int64_t p0 = 0; p0 < per_query; p0 += kBlock) {
    const int count = static_cast<int>(std::min<int64_t>(kBlock, per_query - p0));
    set_levels(
        b, count, in.levels, pixel_step, [&](int j) { return l0 + (p0 + j) / P; }, frames);
    for (int64_t q = 0; q < s.queries; ++q) {
      const int64_t nqm = (n * s.queries + q) * M + m;
      const int64_t sample0 = (nqm * L + l0) * P + p0;
      const opmath_t* xy = in.locations + 2 * sample0;
      const opmath_t* attn = in.weights + sample0;
      if (q + kAhead < s.queries) {
        // A task reads one head of every query: rows M apart, which the hardware
        // prefetcher does not follow (a perf profile put 17 % of the backward on the load
        // of grad_output). Ask for the rows of the query kAhead on.
        const int64_t ahead = kAhead * M;
        prefetch_span(grad.grad_output + (nqm + ahead) * D, D);
        prefetch_span(xy + 2 * ahead * L * P, 2 * count);
        prefetch_span(attn + ahead * L * P, count);
        prefetch_span(grad.locations + 2 * (sample0 + ahead * L * P), 2 * count, true);
        prefetch_span(grad.weights + sample0 + ahead * L * P, count, true);
      }
      if (in.softmax) {
        const Softmax<opmath_t> softmax = in.softmax_rows[nqm];
        for (int j = 0; j < count; ++j) b.softmax[j] = softmax(attn[j]);
        attn = b.softmax;
      }
      corners<kLayout>(b, count, xy, attn, pixel_step);
      const scalar_t* go = grad.grad_output + nqm * D;
      for (int64_t d = 0; d < D; ++d) g[d] = static_cast<opmath_t>(go[d]);
      // Pass 1, per inside sample: the value gradient rows and the corners' dot products
      // (0 for every other sample, whose corners all lie outside: weights 0).
      bool any_nan = false;
      for (int j = 0; j < count; ++j) {
        const int32_t where = b.status[j];
        any_nan |= where == static_cast<int32_t>(Sample::nan);
        opmath_t dot[4] = {0, 0, 0, 0};
        if (where == static_cast<int32_t>(Sample::inside)) {
          sample_backward<kD, kBytes, kLayout>(b, j, g, image_m, grad_m, D, dot);
        }
        for (int k = 0; k < 4; ++k) b.dot[k][j] = dot[k];
      }
      // Pass 2, every sample at once (no branch: vectorised). An outside sample gets
      // location_grad(attn, 0): 0, or NaN for a non-finite weight; a sample of a skipped
      // level gets 0.
      opmath_t* __restrict__ gw = grad.weights + sample0;
      opmath_t* __restrict__ gl = grad.locations + 2 * sample0;
      for (int j = 0; j < count; ++j) {
        opmath_t d0 = b.dot[0][j], d1 = b.dot[1][j], d2 = b.dot[2][j], d3 = b.dot[3][j];
        if constexpr (kLayout == Layout::framed) {  // a corner outside read a zero row
          d0 = zero_unless(b.corner_in[0][j], d0);
          d1 = zero_unless(b.corner_in[1][j], d1);
          d2 = zero_unless(b.corner_in[2][j], d2);
          d3 = zero_unless(b.corner_in[3][j], d3);
        }
        // d weight_k / d px = (-hy, hy, -ly, ly), d weight_k / d py = (-hx, -lx, hx, lx).
        const opmath_t lx = b.lx[j], ly = b.ly[j], hx = 1 - lx, hy = 1 - ly;
        const opmath_t grad_x = hy * (d1 - d0) + ly * (d3 - d2);
        const opmath_t grad_y = hx * (d2 - d0) + lx * (d3 - d1);
        gw[j] = b.weight[0][j] * d0 + b.weight[1][j] * d1 + b.weight[2][j] * d2 +
                b.weight[3][j] * d3;
        const int32_t read = static_cast<int32_t>(b.status[j] <= 1);  // outside or inside
        // d(pixel x)/dx = W and d(pixel y)/dy = H.
        gl[2 * j] = zero_unless(read, location_grad(attn[j], grad_x * b.width[j]));
        gl[2 * j + 1] = zero_unless(read, location_grad(attn[j], grad_y * b.height[j]));
      }
      if (any_nan) {  // a NaN location: NaN gradients for its weight and location
        for (int j = 0; j < count; ++j) {
          if (b.status[j] == static_cast<int32_t>(Sample::nan)) {
            gw[j] = gl[2 * j] = gl[2 * j + 1] = xy[2 * j] + xy[2 * j + 1];
          }
        }
      }
    }
  }
}

// Tasks t in [begin, end): t = (n * M + m) * groups + group, where the levels are split into
// `groups` equal groups (1 or L, see backward_cpu). A task owns the gradient rows of value its
// levels and head read, and its own location and weight gradients.
template <int kD, int kBytes, typename scalar_t>
MSDA_INLINE void backward_body(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                               int64_t groups, int64_t begin, int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Sizes& s = in.s;
  const int64_t M = s.heads, L = s.levels, P = s.points;
  const int64_t D = kD > 0 ? kD : s.channels;
  const int64_t group_levels = L / groups;
  std::vector<opmath_t> g(D);
  std::vector<Frame> frames(L);
  Block<opmath_t> b;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t l0 = (task % groups) * group_levels, l1 = l0 + group_levels;
    const int64_t m = (task / groups) % M;
    const int64_t n = task / (groups * M);
    const int64_t head_offset = n * s.length * M * D + m * D;
    const scalar_t* image_m = in.value + head_offset;
    // Head m's rows are D values every M * D, at the same offsets in value and grad_value:
    // a value row read just after a gradient row was written often has the low 12 address
    // bits of that store, and the CPU then holds the load back as if it depended on it (the
    // backward at the encoder's shape ran ~15 % slower for it; rows M * D apart also use only
    // 1/M of the cache sets). So the task works on a framed copy of its levels of value
    // (Layout::framed: every corner read without a test) and on zeroed gradient rows in the
    // same layout half a page away from them, written (or, when grad_value came zeroed,
    // added) to grad_value at the end: every row still receives its terms in the same order,
    // from 0, so the result is the same bit for bit.
    const int64_t pixels = frame_layout(in.levels, l0, l1, D, frames.data());
    if (!worth_framing(pixels, s.queries * group_levels * P, D, sizeof(opmath_t))) {
      if (grad.value_unset) {  // the task's rows start at 0 here
        for (int64_t l = l0; l < l1; ++l) {
          const Level& lv = in.levels[l];
          opmath_t* out = grad.value + head_offset + lv.start * M * D;
          for (int64_t p = 0; p < lv.height * lv.width; ++p) {
            std::fill(out + p * M * D, out + p * M * D + D, opmath_t(0));
          }
        }
      }
      backward_queries<kD, kBytes, Layout::plain>(in, grad, n, m, l0, group_levels, image_m,
                                                  grad.value + head_offset, M * D, nullptr,
                                                  g.data(), b);
      continue;
    }
    // The gradient copy starts half a page after the value copy (mod 4096 bytes), see above.
    constexpr int64_t kPage = 4096;
    const int64_t value_bytes = pixels * D * static_cast<int64_t>(sizeof(scalar_t));
    const int64_t grad_at = (value_bytes + kPage - 1) / kPage * kPage + kPage / 2;
    char* scratch = thread_scratch().get(grad_at + pixels * D * sizeof(opmath_t));
    auto* framed_value = reinterpret_cast<scalar_t*>(scratch);
    auto* grad_m = reinterpret_cast<opmath_t*>(scratch + grad_at);
    frame_head_rows(framed_value, image_m, M * D, D, in.levels, frames.data(), l0, l1);
    std::fill(grad_m, grad_m + pixels * D, opmath_t(0));
    backward_queries<kD, kBytes, Layout::framed>(in, grad, n, m, l0, group_levels,
                                                 framed_value, grad_m, D, frames.data(),
                                                 g.data(), b);
    // The levels' own pixels (the frame's rows gathered what corners outside added).
    for (int64_t l = l0; l < l1; ++l) {
      const Level& lv = in.levels[l];
      for (int64_t y = 0; y < lv.height; ++y) {
        const opmath_t* row = grad_m + frames[l].first + y * frames[l].step;
        opmath_t* out = grad.value + head_offset + (lv.start + y * lv.width) * M * D;
        for (int64_t x = 0; x < lv.width; ++x) {
          if (grad.value_unset) {  // = 0 + row bit for bit: a sum from +0 is never -0
            std::memcpy(out + x * M * D, row + x * D, D * sizeof(opmath_t));
          } else {
            for (int64_t d = 0; d < D; ++d) out[x * M * D + d] += row[x * D + d];
          }
        }
      }
    }
  }
  thread_scratch().trim();
}

// The head sizes worth a specialisation get their own copy of the loops (kD = D); others
// take the runtime-D one (kD = 0). A plain switch: lambdas would not be inlined into the
// AVX2/AVX-512 copies and would stay baseline code.
template <int kBytes, typename scalar_t>
MSDA_INLINE void forward_any(const Inputs<scalar_t>& in, scalar_t* out, int64_t chunks,
                             int64_t begin, int64_t end) {
  switch (in.s.channels) {
#if MSDA_SIMD
    case 32:
      return forward_body<32, kBytes>(in, out, chunks, begin, end);
    case 64:
      return forward_body<64, kBytes>(in, out, chunks, begin, end);
#endif
    default:
      return forward_body<0, kBytes>(in, out, chunks, begin, end);
  }
}

template <int kBytes, typename scalar_t>
MSDA_INLINE void backward_any(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                              int64_t groups, int64_t begin, int64_t end) {
  switch (in.s.channels) {
#if MSDA_SIMD
    case 32:
      return backward_body<32, kBytes>(in, grad, groups, begin, end);
    case 64:
      return backward_body<64, kBytes>(in, grad, groups, begin, end);
#endif
    default:
      return backward_body<0, kBytes>(in, grad, groups, begin, end);
  }
}

#if MSDA_X86
template <typename scalar_t>
MSDA_TARGET_AVX512 void forward_avx512(const Inputs<scalar_t>& in, scalar_t* out,
                                       int64_t chunks, int64_t begin, int64_t end) {
  forward_any<64>(in, out, chunks, begin, end);
}

template <typename scalar_t>
MSDA_TARGET_AVX512 void backward_avx512(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                                        int64_t groups, int64_t begin, int64_t end) {
  backward_any<64>(in, grad, groups, begin, end);
}

template <typename scalar_t>
MSDA_TARGET_AVX2 void forward_avx2(const Inputs<scalar_t>& in, scalar_t* out, int64_t chunks,
                                   int64_t begin, int64_t end) {
  forward_any<32>(in, out, chunks, begin, end);
}

template <typename scalar_t>
MSDA_TARGET_AVX2 void backward_avx2(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad,
                                    int64_t groups, int64_t begin, int64_t end) {
  backward_any<32>(in, grad, groups, begin, end);
}

// The widest copy this CPU runs (checked once); MSDA_OPS_CPU_ISA caps it for tests and
// benchmarks ("avx2" or "baseline").
enum class Isa { baseline, avx2, avx512 };

Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = Isa::baseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
    if (best == Isa::avx2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq")) {
      best = Isa::avx512;
    }
    const char* cap = std::getenv("MSDA_OPS_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "baseline") == 0) return Isa::baseline;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && best == Isa::avx512) return Isa::avx2;
    return best;
  }();
  return isa;
}
#endif

template <typename scalar_t>
void forward_range(const Inputs<scalar_t>& in, scalar_t* out, int64_t chunks, int64_t begin,
                   int64_t end) {
#if MSDA_X86
  switch (cpu_isa()) {
    case Isa::avx512:
      return forward_avx512(in, out, chunks, begin, end);
    case Isa::avx2:
      return forward_avx2(in, out, chunks, begin, end);
    case Isa::baseline:
      break;
  }
#endif
  forward_any<16>(in, out, chunks, begin, end);
}

template <typename scalar_t>
void backward_range(const Inputs<scalar_t>& in, const Grads<scalar_t>& grad, int64_t groups,
                    int64_t begin, int64_t end) {
#if MSDA_X86
  switch (cpu_isa()) {
    case Isa::avx512:
      return backward_avx512(in, grad, groups, begin, end);
    case Isa::avx2:
      return backward_avx2(in, grad, groups, begin, end);
    case Isa::baseline:
      break;
  }
#endif
  backward_any<16>(in, grad, groups, begin, end);
}

template <typename scalar_t>
Inputs<scalar_t> view(const Prepared& p, const std::vector<Level>& levels, bool softmax,
                      const std::vector<scalar_t>& zeros) {
  using opmath_t = at::opmath_type<scalar_t>;
  return {p.value.const_data_ptr<scalar_t>(),
          p.locations.const_data_ptr<opmath_t>(),
          p.weights.const_data_ptr<opmath_t>(),
          levels.data(),
          p.s,
          softmax,
          nullptr,
          zeros.data()};
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
        const std::vector<scalar_t> zeros(p.s.channels, scalar_t(0));
        const auto in = view<scalar_t>(p, levels, softmax, zeros);
        scalar_t* out = output.mutable_data_ptr<scalar_t>();
        // One task per (n, m), for the copy of head m's rows (see forward_body), its queries
        // split in chunks when that leaves too few tasks for the threads. The result does not
        // depend on the split.
        const int64_t heads = p.s.batch * p.s.heads;
        const int64_t chunks = std::clamp<int64_t>(
            (4 * at::get_num_threads() + heads - 1) / std::max<int64_t>(heads, 1), 1,
            std::max<int64_t>(p.s.queries, 1));
        at::parallel_for(0, heads * chunks, 1, [&](int64_t begin, int64_t end) {
          forward_range(in, out, chunks, begin, end);
        });
      });
  return output;
}

// One task per (n, m) or (n, m, level): the gradient rows of value that a task writes (its
// levels' pixels, head m of image n) and its location/weight gradients belong to no other
// task, so there are no atomics and no per-thread copies of grad_value, and the result does
// not depend on the number of threads (deterministic by construction).
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, bool softmax) {
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes& s = p.s;
  const std::vector<Level> levels = read_levels(p);
  const auto go = prepare_grad_output(grad_output, value, s);
  // Every task writes the location and weight gradients of all its samples, and, when the
  // levels tile value, the value gradient rows of its levels and head: then nothing is
  // zeroed first (a pass over 2 MiB at the encoder's shape, ~5 % of the backward).
  const bool value_unset = levels_tile_value(levels, s.length);
  Gradients grads = new_gradients(p, !value_unset, false);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const std::vector<scalar_t> zeros(s.channels, scalar_t(0));
        auto in = view<scalar_t>(p, levels, softmax, zeros);
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
                                grads.weights.mutable_data_ptr<opmath_t>(), value_unset};
        // One task per (n, m) reads each query's L*P samples together; split per level as
        // well when that leaves too few tasks for the threads. Either way a gradient row of
        // value receives its terms in the same order (query, then point), so the result is
        // the same bit for bit.
        const int64_t heads = s.batch * s.heads;
        const int64_t groups = heads >= 4 * at::get_num_threads() ? 1 : s.levels;
        at::parallel_for(0, heads * groups, 1, [&](int64_t begin, int64_t end) {
          backward_range(in, g, groups, begin, end);
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
