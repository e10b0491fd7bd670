// Runs the CUDA kernels of csrc/cuda/kernels.cuh, unmodified, on emulated warps against the
// float64 reference: every dtype, vector width and group size (shuffle and atomic paths),
// deterministic and atomic backward, softmax on and off, misaligned storage, N = 0 and
// Lq = 0, NaN/inf/out-of-map locations. Exit status 0 only when every case matches and
// every kernel instance that ships has run; any sanitizer report aborts the run.
//
//   cuda_emu [--quick] [--warps K]
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda_shim.h"
// The shim first: kernels.cuh uses its __global__, threadIdx, __shfl_xor_sync, atomicAdd.
#include "cuda/kernels.cuh"
#include "emulator.h"
#include "reference.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

using msda::cuda::GradBuffers;
using msda::cuda::Inputs;

template <typename T>
struct Traits;
template <>
struct Traits<double> {
  using opmath = double;
  static constexpr const char* name = "float64";
  static constexpr double out_tol = 1e-12, grad_tol = 1e-12;
};
template <>
struct Traits<float> {
  using opmath = float;
  static constexpr const char* name = "float32";
  static constexpr double out_tol = 2e-5, grad_tol = 2e-5;
};
template <>
struct Traits<c10::Half> {
  using opmath = float;
  static constexpr const char* name = "float16";
  // The output is stored in float16; gradients stay in the float32 buffers.
  static constexpr double out_tol = 2e-3, grad_tol = 2e-5;
};
template <>
struct Traits<c10::BFloat16> {
  using opmath = float;
  static constexpr const char* name = "bfloat16";
  static constexpr double out_tol = 1.6e-2, grad_tol = 2e-5;
};

struct Case {
  int64_t batch, queries, heads, channels, points;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  size_t value_offset, grad_offset;
  bool softmax, deterministic, special;
  uint64_t seed;
};

std::string describe(const char* dtype, const Case& c) {
  std::ostringstream out;
  out << dtype << " N=" << c.batch << " Lq=" << c.queries << " M=" << c.heads
      << " D=" << c.channels << " L=" << c.shapes.size() << " P=" << c.points << " shapes=";
  for (auto [h, w] : c.shapes) out << h << "x" << w << ",";
  out << " offsets=" << c.value_offset << "/" << c.grad_offset << " softmax=" << c.softmax
      << " deterministic=" << c.deterministic << " special=" << c.special << " seed=" << c.seed;
  return out.str();
}

// Kernel instances seen: (dtype, vec, path, deterministic, softmax).
std::set<std::tuple<std::string, int, std::string, bool, bool>> seen;

template <typename T>
void compare(const std::string& what, const T* got, const std::vector<double>& want, double tol) {
  double scale = 0;
  for (double w : want) {
    if (std::isfinite(w)) scale = std::max(scale, std::fabs(w));
  }
  const double limit = tol * std::max(scale, 1e-3);
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = want[i];
    const bool ok = std::isnan(w) ? std::isnan(g)
                    : (std::isinf(w) || std::isinf(g)) ? g == w
                                                       : std::fabs(g - w) <= limit;
    if (!ok) {
      std::ostringstream out;
      out << what << "[" << i << "] = " << g << ", expected " << w << " (limit " << limit
          << ")";
      emu::fail(out.str());
    }
  }
}

// Inputs of one case, drawn in float64 and rounded to what the kernels read.
template <typename scalar_t>
emu::Problem draw(const Case& c) {
  using opmath_t = typename Traits<scalar_t>::opmath;
  std::mt19937_64 rng(c.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  emu::Problem p;
  p.batch = c.batch;
  p.queries = c.queries;
  p.heads = c.heads;
  p.channels = c.channels;
  p.points = c.points;
  p.levels = static_cast<int64_t>(c.shapes.size());
  p.length = 0;
  for (auto [h, w] : c.shapes) {
    p.shapes.insert(p.shapes.end(), {h, w});
    p.starts.push_back(p.length);
    p.length += h * w;
  }
  p.softmax = c.softmax;
  auto as_scalar = [](double v) { return static_cast<double>(static_cast<scalar_t>(v)); };
  auto as_opmath = [](double v) { return static_cast<double>(static_cast<opmath_t>(v)); };
  p.value.resize(p.batch * p.length * p.heads * p.channels);
  for (double& v : p.value) v = as_scalar(normal(rng));
  const int64_t samples = p.batch * p.queries * p.heads * p.levels * p.points;
  p.locations.resize(2 * samples);
  for (double& v : p.locations) v = as_opmath(unit(rng) * 1.4 - 0.2);  // some off the map
  p.weights.resize(samples);
  for (double& v : p.weights) v = as_opmath(c.softmax ? 2 * normal(rng) : unit(rng));
  p.grad_output.resize(p.batch * p.queries * p.heads * p.channels);
  for (double& v : p.grad_output) v = as_scalar(normal(rng));
  if (c.special && samples > 0) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    const double odd[] = {nan, inf, -inf, 1e30, -1e30, 0.0, 1.0, 1.0 - 1e-7};
    std::uniform_int_distribution<int64_t> pick(0, samples - 1);
    for (double v : odd) p.locations[2 * pick(rng) + (rng() & 1)] = as_opmath(v);
    p.weights[pick(rng)] = nan;
    // Infinite weights (non-softmax: logits of inf would only make NaN rows again).
    if (!c.softmax) {
      p.weights[pick(rng)] = inf;
      p.weights[pick(rng)] = -inf;
    }
    if (!p.value.empty()) {
      std::uniform_int_distribution<size_t> any(0, p.value.size() - 1);
      p.value[any(rng)] = nan;
    }
  }
  return p;
}

template <typename T>
emu::Buffer<T> to_buffer(const std::vector<double>& v, size_t offset = 0) {
  emu::Buffer<T> b(v.size(), offset);
  for (size_t i = 0; i < v.size(); ++i) b[i] = static_cast<T>(v[i]);
  return b;
}

template <typename scalar_t>
void run_case(const Case& c, emu::Gpu& gpu) {
  using opmath_t = typename Traits<scalar_t>::opmath;
  const char* dtype = Traits<scalar_t>::name;
  const std::string context = describe(dtype, c);
  emu::set_context(context);
  const emu::Problem p = draw<scalar_t>(c);
  const emu::Result want = emu::reference(p);

  auto value = to_buffer<scalar_t>(p.value, c.value_offset);
  auto shapes = to_buffer<int64_t>(std::vector<double>(p.shapes.begin(), p.shapes.end()));
  auto starts = to_buffer<int64_t>(std::vector<double>(p.starts.begin(), p.starts.end()));
  auto locations = to_buffer<opmath_t>(p.locations);
  auto weights = to_buffer<opmath_t>(p.weights);
  auto grad_output = to_buffer<scalar_t>(p.grad_output, c.grad_offset);
  const Inputs<scalar_t, opmath_t> in{value.data(), shapes.data(),  starts.data(),
                                      locations.data(), weights.data(), p.batch,
                                      p.length,     p.heads,        p.channels,
                                      p.queries,    p.levels,       p.points,
                                      c.softmax};

  emu::Buffer<scalar_t> output(want.output.size(), 0, 0xFF);
  msda::cuda::forward(in, output.data(), gpu);
  gpu.release_scratch();
  compare(context + " output", output.data(), want.output, Traits<scalar_t>::out_tol);

  const int64_t groups_of = c.channels;
  auto backward = [&](bool deterministic) {
    auto g_value = std::make_unique<emu::Buffer<opmath_t>>(p.value.size());
    auto g_loc = std::make_unique<emu::Buffer<opmath_t>>(p.locations.size());
    auto g_w = std::make_unique<emu::Buffer<opmath_t>>(p.weights.size());
    msda::cuda::backward(in, grad_output.data(),
                         GradBuffers<opmath_t>{g_value->data(), g_loc->data(), g_w->data()},
                         deterministic, gpu);
    gpu.release_scratch();
    const std::string mode = deterministic ? " deterministic" : " atomic";
    compare(context + mode + " grad_value", g_value->data(), want.grad_value,
            Traits<scalar_t>::grad_tol);
    compare(context + mode + " grad_locations", g_loc->data(), want.grad_locations,
            Traits<scalar_t>::grad_tol);
    compare(context + mode + " grad_weights", g_w->data(), want.grad_weights,
            Traits<scalar_t>::grad_tol);
    return std::make_tuple(std::move(g_value), std::move(g_loc), std::move(g_w));
  };
  if (!p.grad_output.empty()) {
    const int vec =
        msda::cuda::pick_vec<scalar_t>(c.channels, {value.data(), grad_output.data()});
    const bool shuffle = msda::cuda::use_group_shuffle(groups_of / vec);
    seen.emplace(dtype, vec, shuffle ? "shuffle" : "atomic", c.deterministic, c.softmax);
  }
  auto first = backward(c.deterministic);
  if (c.deterministic) {  // bitwise repeatable, and the atomic one agrees (both vs reference)
    backward(false);
    auto again = backward(true);
    auto same = [](const auto& a, const auto& b) {
      return std::memcmp(a->data(), b->data(), a->size() * sizeof((*a)[0])) == 0;
    };
    if (!same(std::get<0>(first), std::get<0>(again)) ||
        !same(std::get<1>(first), std::get<1>(again)) ||
        !same(std::get<2>(first), std::get<2>(again))) {
      emu::fail("deterministic backward differs between two runs");
    }
  }
}

// Cases for one dtype: every vector width x group size, each with its own sizes.
template <typename scalar_t>
std::vector<Case> cases(bool quick, uint64_t& seed) {
  constexpr int kMaxVec = 16 / static_cast<int>(sizeof(scalar_t));
  // Shuffle groups (powers of two <= 32) and atomic ones (not a power of two, or > 32).
  const std::vector<int64_t> groups =
      quick ? std::vector<int64_t>{1, 4, 32, 3, 64}
            : std::vector<int64_t>{1, 2, 4, 8, 16, 32, 3, 5, 6, 64};
  std::vector<Case> out;
  int i = 0;
  for (int vec = kMaxVec; vec >= 1; vec /= 2) {
    int shuffle_index = 0, atomic_index = 0;
    for (int64_t g : groups) {
      const bool shuffle = g <= 32 && (g & (g - 1)) == 0;
      const int k = shuffle ? shuffle_index++ : atomic_index++;
      Case c;
      c.channels = vec * g;
      // An offset of `vec` elements keeps vectors of `vec` aligned, never wider ones;
      // grad_output takes offsets 0..3 in turn (the backward uses the narrower of the two).
      c.value_offset = vec == kMaxVec ? 0 : vec;
      c.grad_offset = vec == kMaxVec ? 0 : (i % 2 == 0 ? vec : static_cast<size_t>(3 * vec));
      if (vec == 1) c.value_offset = i % 2 == 0 ? 1 : 3, c.grad_offset = i % 4;
      c.deterministic = (k & 1) != 0;
      c.softmax = (k & 2) != 0;
      c.special = i % 2 == 0;
      c.batch = 1 + i % 2;
      c.queries = 1 + (i * 7) % 5;
      c.heads = g >= 32 ? 1 : 1 + i % 3;
      c.points = 1 + i % 8;
      const int levels = 1 + i % 5;
      for (int l = 0; l < levels; ++l) c.shapes.emplace_back(1 + (i + 3 * l) % 6, 1 + (2 * i + l) % 5);
      c.seed = seed++;
      out.push_back(c);
      ++i;
    }
  }
  // Empty problems: N = 0 and Lq = 0.
  for (int empty = 0; empty < 2; ++empty) {
    Case c{empty == 0 ? 0 : 2, empty == 0 ? 3 : 0, 2, 8, 2, {{3, 4}, {2, 2}}, 0, 0,
           empty == 1, false, false, seed++};
    out.push_back(c);
  }
  return out;
}

template <typename scalar_t>
void expect_all_instances() {
  constexpr int kMaxVec = 16 / static_cast<int>(sizeof(scalar_t));
  for (int vec = 1; vec <= kMaxVec; vec *= 2) {
    for (const char* path : {"shuffle", "atomic"}) {
      for (bool deterministic : {false, true}) {
        for (bool softmax : {false, true}) {
          if (!seen.count({Traits<scalar_t>::name, vec, path, deterministic, softmax})) {
            std::ostringstream out;
            out << "no case ran the " << Traits<scalar_t>::name << " backward with vec=" << vec
                << " path=" << path << " deterministic=" << deterministic
                << " softmax=" << softmax;
            emu::set_context("coverage check");
            emu::fail(out.str());
          }
        }
      }
    }
  }
}

template <typename scalar_t>
int run_all(bool quick, emu::Gpu& gpu, uint64_t& seed) {
  const auto list = cases<scalar_t>(quick, seed);
  for (const Case& c : list) run_case<scalar_t>(c, gpu);
  if (!quick) expect_all_instances<scalar_t>();
  return static_cast<int>(list.size());
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int warps = 2;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--warps") == 0 && i + 1 < argc) {
      warps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--warps K]\n", argv[0]);
      return 2;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  emu::Gpu gpu(msda::cuda::kThreads, warps);
  uint64_t seed = 1;
  int count = 0;
  count += run_all<double>(quick, gpu, seed);
  count += run_all<float>(quick, gpu, seed);
  count += run_all<c10::Half>(quick, gpu, seed);
  count += run_all<c10::BFloat16>(quick, gpu, seed);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("cuda-emu: %d cases (forward + backward, %zu backward instances) match the "
              "float64 reference in %.1f s\n",
              count, seen.size(), seconds);
  return 0;
}
