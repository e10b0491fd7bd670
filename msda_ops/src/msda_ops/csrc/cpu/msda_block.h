// The CPU kernel's building blocks: the corners of a block of samples computed in arrays the
// compiler vectorises, and the channel-loop helpers (GCC/Clang vector types held in
// registers, lane sums). Included by msda_kernel.cpp only; ATen-free.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "msda_sampling.h"

namespace msda {
namespace cpu {

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

// Samples whose corners are computed together, before their channel loops.
constexpr int kBlock = 64;

// A block of samples: the sampling rule of bilinear_corners (msda_sampling.h) for all of them
// at once, in arrays the compiler vectorises (one sample per lane) instead of ~40 scalar
// instructions per sample. The loops that follow hold only loads and multiply-adds.
template <typename T>
struct Block {
  // In: each sample's level: its size (0 x 0 for a level make_level rejected: skipped), the
  // offset of its first pixel (head m) from the image's first value, and the offset between
  // two rows of its pixels. The locations and weights are read where they are (see corners).
  T width[kBlock], height[kBlock];
  int32_t iwidth[kBlock], iheight[kBlock];
  int64_t first[kBlock], row_step[kBlock];
  // Out: whether the sample reads the map (Sample, or kSkipped for a skipped level); per
  // corner the offset of its D values (-1 outside the map), its bilinear weight and
  // attn * weight (both 0 outside: never attn * 0, NaN for attn = inf where nothing is read);
  // the fractions lx, ly of the pixel coordinates (location gradients).
  int32_t status[kBlock];
  int64_t offset[4][kBlock];
  // The framed layout (Layout::framed, see corners) in place of offset: the level's fields (the
  // element offsets of its pixel (0, 0) and between two of its rows) and the element offset
  // of each sample's corner (y0, x0); every corner k then lies at
  // base + (k & 1) * D + (k >> 1) * step, a zero row when outside the map.
  int32_t first32[kBlock], step32[kBlock], base[kBlock];
  int32_t corner_in[4][kBlock];  // whether corner k is inside the map (1) or not (0)
  T weight[4][kBlock], coef[4][kBlock];
  T lx[kBlock], ly[kBlock];
  T softmax[kBlock];  // the weights after the softmax, when the op applies it
  T dot[4][kBlock];   // backward: <grad_output, corner row k> of each sample (0 outside)
};

constexpr int32_t kSkipped = 3;  // a sample of a skipped level: nothing read, nothing added
static_assert(static_cast<int>(Sample::outside) == 0 && static_cast<int>(Sample::inside) == 1 &&
                  static_cast<int>(Sample::nan) == 2,
              "corners() computes the Sample of each sample arithmetically");

// keep ? v : 0, with integer operations on v's bits.
template <typename T>
MSDA_INLINE T zero_unless(int32_t keep, T v) {
  using Bits = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  Bits bits;
  std::memcpy(&bits, &v, sizeof(T));
  bits &= -static_cast<Bits>(keep);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// Where the corners of a block are read from (see corners):
// - Plain: value as it is, pixel p at p * pixel_step; offset[k] is -1 for a corner outside the
//   map, whose row the loops replace by zeros or skip.
// - Framed: a copy of the levels in which each level's pixels are framed by one pixel of
//   zeros on every side (see frame_layout in msda_kernel.cpp). The corners of an inside
//   sample, (y0, x0) to (y0 + 1, x0 + 1) with x0 in [-1, W - 1] and y0 in [-1, H - 1], all
//   lie in the frame, so the loops read all four without a test: a zero row for a corner
//   outside the map. Offsets are int32: the copy is at most kPackBytes.
enum class Layout { plain, framed };

// Samples [0, count) at xy[2 j], xy[2 j + 1] (x, y) with attention weights attn[j]. Levels
// reaching 2^31 pixels in a dimension are rejected by read_levels, so the pixel coordinates
// of inside samples convert to int32 (a vector instruction on every x86-64).
template <Layout kLayout = Layout::plain, typename T>
MSDA_INLINE void corners(Block<T>& b, int count, const T* __restrict__ xy,
                         const T* __restrict__ attn, int64_t pixel_step) {
  // No branch and no short-circuit (&&) in the loop body: GCC vectorises only then.
  for (int j = 0; j < count; ++j) {
    const T x = xy[2 * j], y = xy[2 * j + 1];
    const T px = x * b.width[j] - T(0.5);
    const T py = y * b.height[j] - T(0.5);
    // The test of bilinear_corners; false for NaN, infinite and far-away locations.
    const int32_t inside = static_cast<int32_t>(px >= T(-1)) & static_cast<int32_t>(py >= T(-1)) &
                           static_cast<int32_t>(px < b.width[j]) &
                           static_cast<int32_t>(py < b.height[j]);
    // cx, cy = inside ? px, py : 0 (so that the int32 conversions below are defined), as a
    // bit mask: GCC keeps a branch for that select under -ftrapping-math.
    const T cx = zero_unless(inside, px), cy = zero_unless(inside, py);
    const int32_t tx = static_cast<int32_t>(cx), ty = static_cast<int32_t>(cy);
    const int32_t x0 = tx - static_cast<int32_t>(static_cast<T>(tx) > cx);  // floor
    const int32_t y0 = ty - static_cast<int32_t>(static_cast<T>(ty) > cy);
    const T lx = cx - static_cast<T>(x0), ly = cy - static_cast<T>(y0);
    const T hx = T(1) - lx, hy = T(1) - ly;
    const int32_t x0_in = static_cast<int32_t>(x0 >= 0);
    const int32_t x1_in = static_cast<int32_t>(x0 + 1 <= b.iwidth[j] - 1);
    const int32_t y0_in = inside & static_cast<int32_t>(y0 >= 0);
    const int32_t y1_in = inside & static_cast<int32_t>(y0 + 1 <= b.iheight[j] - 1);
    const int32_t in[4] = {y0_in & x0_in, y0_in & x1_in, y1_in & x0_in, y1_in & x1_in};
    if constexpr (kLayout == Layout::framed) {
      // pixel_step is D here; x0, y0 = 0 outside (cx, cy above): an offset in the copy.
      b.base[j] = b.first32[j] + y0 * b.step32[j] + x0 * static_cast<int32_t>(pixel_step);
    } else {
      const int64_t base =
          b.first[j] + (static_cast<int64_t>(y0) * b.iwidth[j] + x0) * pixel_step;
      const int64_t at[4] = {base, base + pixel_step, base + b.row_step[j],
                             base + b.row_step[j] + pixel_step};
      for (int k = 0; k < 4; ++k) b.offset[k][j] = in[k] ? at[k] : int64_t(-1);
    }
    const T w[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    for (int k = 0; k < 4; ++k) {
      // Computed unconditionally, then selected: a multiplication under a condition could
      // raise an FP exception once vectorised, so GCC would keep the branch.
      const T coef = attn[j] * w[k];
      b.corner_in[k][j] = in[k];
      b.weight[k][j] = in[k] ? w[k] : T(0);
      b.coef[k][j] = in[k] ? coef : T(0);
    }
    b.lx[j] = lx;
    b.ly[j] = ly;
    // Sample::outside = 0, inside = 1, nan = 2 (a NaN location is never inside).
    const int32_t where =
        inside + 2 * (static_cast<int32_t>(x != x) | static_cast<int32_t>(y != y));
    b.status[j] = b.iwidth[j] == 0 ? kSkipped : where;
  }
}

// Where a framed copy (Layout::framed) holds one level: the element offsets of the level's
// pixel (0, 0) and between two of its rows.
struct Frame {
  int32_t first, step;
};

// The framed copy of levels [l0, l1) of one head: level after level, (H + 2) x (W + 2)
// pixels of D values each, the level's own pixels in the middle and zeros around them; a
// level make_level skipped takes no room. Fills frames[l0, l1) and returns the copy's size
// in pixels (the frames are valid when that many pixels of D values fit int32 offsets).
inline int64_t frame_layout(const Level* levels, int64_t l0, int64_t l1, int64_t D,
                            Frame* frames) {
  int64_t pixels = 0;
  for (int64_t l = l0; l < l1; ++l) {
    const Level& lv = levels[l];
    if (lv.width == 0) {
      frames[l] = Frame{0, 0};
      continue;
    }
    const int64_t row = lv.width + 2;
    frames[l] = Frame{static_cast<int32_t>((pixels + row + 1) * D), static_cast<int32_t>(row * D)};
    pixels += row * (lv.height + 2);
  }
  return pixels;
}

// Fills the level fields of b for samples [0, count) at levels level_of(j), pixel p of the
// image at offset p * pixel_step, or in the framed copy of `frames` (Layout::framed).
template <typename T, typename LevelOf>
MSDA_INLINE void set_levels(Block<T>& b, int count, const Level* levels, int64_t pixel_step,
                            LevelOf level_of, const Frame* frames = nullptr) {
  for (int j = 0; j < count; ++j) {
    const int64_t l = level_of(j);
    const Level& lv = levels[l];
    b.width[j] = static_cast<T>(lv.width);
    b.height[j] = static_cast<T>(lv.height);
    b.iwidth[j] = static_cast<int32_t>(lv.width);
    b.iheight[j] = static_cast<int32_t>(lv.height);
    b.first[j] = lv.start * pixel_step;
    b.row_step[j] = lv.width * pixel_step;
    b.first32[j] = frames != nullptr ? frames[l].first : 0;
    b.step32[j] = frames != nullptr ? frames[l].step : 0;
  }
}

#if defined(__GNUC__)
// kBytes of T as one GCC/Clang vector, kBytes the register width of the copy being compiled
// (16, 32 or 64): a few of them stay in registers across a loop where a plain array would be
// stored and reloaded at every step (GCC does not vectorise a register-held array).
template <typename T, int kBytes>
struct Simd {
  static constexpr int kWidth = kBytes / sizeof(T);
  typedef T type __attribute__((vector_size(kBytes)));
};

template <typename V, typename scalar_t>
MSDA_INLINE void load(V& v, const scalar_t* p) {
  using T = std::remove_reference_t<decltype(v[0])>;
  if constexpr (std::is_same_v<scalar_t, T>) {
    std::memcpy(&v, p, sizeof(v));  // an unaligned vector load
  } else {
    for (int i = 0; i < static_cast<int>(sizeof(V) / sizeof(T)); ++i) {
      v[i] = static_cast<T>(p[i]);
    }
  }
}

// The sum of v's lanes as a tree of halves: a running sum over the lanes would be a chain of
// dependent scalar additions (the compiler may not reorder them).
template <typename T, int kBytes>
MSDA_INLINE T lane_sum(const typename Simd<T, kBytes>::type& v) {
  if constexpr (kBytes == 2 * sizeof(T)) {
    return v[0] + v[1];
  } else {
    typename Simd<T, kBytes / 2>::type low, high;
    std::memcpy(&low, &v, kBytes / 2);
    std::memcpy(&high, reinterpret_cast<const char*>(&v) + kBytes / 2, kBytes / 2);
    return lane_sum<T, kBytes / 2>(low + high);
  }
}

// out[k] = the sum of the lanes of part[k], k < 4. One lane_sum each is a chain of
// log2(width) dependent shuffle+add steps per vector; with 4 lanes or more (and
// __builtin_shufflevector, GCC 12+ and Clang) the first two steps here fold two vectors into
// one (a's and b's halves side by side, then all four in quarters), so the four sums share
// the remaining steps. Each lane of a sum adds only lanes of its own vector, so a NaN in one
// stays in its own sum.
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define MSDA_SHUFFLE 1
#endif
#endif
#ifndef MSDA_SHUFFLE
#define MSDA_SHUFFLE 0
#endif

#if MSDA_SHUFFLE
// Lane i of the result is lane Pick::at(i) of x ++ y.
template <typename V, typename Pick, size_t... I>
MSDA_INLINE V shuffle(const V& x, const V& y, Pick, std::index_sequence<I...>) {
  return __builtin_shufflevector(x, y, Pick::at(I)...);
}
#endif

template <typename T, int kBytes>
MSDA_INLINE void sum4(const typename Simd<T, kBytes>::type part[4], T out[4]) {
  using V = typename Simd<T, kBytes>::type;
  constexpr int kW = Simd<T, kBytes>::kWidth, kQ = kW / 4;
#if MSDA_SHUFFLE
  if constexpr (kW >= 4) {
    static_assert(kW <= 16, "vectors of up to 16 lanes");
    const auto lanes = std::make_index_sequence<kW>{};
    // Halves: [x_low, y_low] + [x_high, y_high] = [x folded to W/2 | y folded to W/2].
    struct Low {
      static constexpr int at(int i) { return i < kW / 2 ? i : kW + i - kW / 2; }
    };
    struct High {
      static constexpr int at(int i) { return Low::at(i) + kW / 2; }
    };
    const V ab =
        shuffle(part[0], part[1], Low{}, lanes) + shuffle(part[0], part[1], High{}, lanes);
    const V cd =
        shuffle(part[2], part[3], Low{}, lanes) + shuffle(part[2], part[3], High{}, lanes);
    // Quarters: group g (W/4 lanes) of the result takes half g % 2 of ab (g < 2) or of cd.
    struct First {
      static constexpr int at(int i) {
        return (i / kQ >= 2 ? kW : 0) + (i / kQ % 2) * (kW / 2) + i % kQ;
      }
    };
    struct Second {
      static constexpr int at(int i) { return First::at(i) + kQ; }
    };
    V all = shuffle(ab, cd, First{}, lanes) + shuffle(ab, cd, Second{}, lanes);
    // Within each group of W/4 lanes: lane i += lane i ^ s for s = W/8, ..., 1, until every
    // lane holds its group's sum. Every step pairs the lanes that lane_sum pairs (halves,
    // then quarters, ...), so each sum is the same bit for bit.
    if constexpr (kQ >= 4) {
      struct Swap2 {
        static constexpr int at(int i) { return i ^ 2; }
      };
      all += shuffle(all, all, Swap2{}, lanes);
    }
    if constexpr (kQ >= 2) {
      struct Swap1 {
        static constexpr int at(int i) { return i ^ 1; }
      };
      all += shuffle(all, all, Swap1{}, lanes);
    }
    // Lanes 0, Q, 2Q, 3Q to the front (one permutation, then the first 4 lanes are read).
    struct Front {
      static constexpr int at(int i) { return i < 4 ? i * kQ : i; }
    };
    all = shuffle(all, all, Front{}, lanes);
    for (int k = 0; k < 4; ++k) out[k] = all[k];
    return;
  }
#endif
  (void)kQ;
  for (int k = 0; k < 4; ++k) out[k] = lane_sum<T, kBytes>(part[k]);
}

#define MSDA_SIMD 1
#else
#define MSDA_SIMD 0
#endif

}  // namespace cpu
}  // namespace msda
