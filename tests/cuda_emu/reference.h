// The op in float64, written from its definition (DESIGN.md) rather than from the kernels:
// one (n, q, m) at a time, every corner tested against the map with std::floor, NaN rule
// spelled out. The emulated kernels are compared with it.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace emu {

struct Problem {
  int64_t batch, length, heads, channels, queries, levels, points;
  std::vector<int64_t> shapes;  // (L, 2) rows (H, W)
  std::vector<int64_t> starts;  // (L,)
  std::vector<double> value;    // (N, S, M, D)
  std::vector<double> locations;  // (N, Lq, M, L, P, 2)
  std::vector<double> weights;    // (N, Lq, M, L, P): logits when softmax
  std::vector<double> grad_output;  // (N, Lq, M, D)
  bool softmax = false;
};

struct Result {
  std::vector<double> output, grad_value, grad_locations, grad_weights;
};

inline Result reference(const Problem& p) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int64_t M = p.heads, D = p.channels, L = p.levels, P = p.points;
  Result r;
  r.output.assign(p.batch * p.queries * M * D, 0.0);
  r.grad_value.assign(p.value.size(), 0.0);
  r.grad_locations.assign(p.locations.size(), 0.0);
  r.grad_weights.assign(p.weights.size(), 0.0);
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t q = 0; q < p.queries; ++q) {
      for (int64_t m = 0; m < M; ++m) {
        const int64_t nqm = (n * p.queries + q) * M + m;
        const double* logits = &p.weights[nqm * L * P];
        std::vector<double> a(logits, logits + L * P);
        if (p.softmax) {
          double max = -std::numeric_limits<double>::infinity(), sum = 0;
          bool any_nan = false;
          for (double v : a) {
            any_nan = any_nan || std::isnan(v);
            max = std::fmax(max, v);
          }
          for (double& v : a) sum += (v = std::exp(v - max));
          for (double& v : a) v = any_nan ? nan : v / sum;
        }
        double* out = &r.output[nqm * D];
        const double* g = &p.grad_output[nqm * D];
        std::vector<double> grad_a(L * P, 0.0);
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = p.shapes[2 * l], W = p.shapes[2 * l + 1], start = p.starts[l];
          for (int64_t pt = 0; pt < P; ++pt) {
            const int64_t s = l * P + pt, sample = nqm * L * P + s;
            const double x = p.locations[2 * sample], y = p.locations[2 * sample + 1];
            if (std::isnan(x) || std::isnan(y)) {
              for (int64_t d = 0; d < D; ++d) out[d] = nan;
              grad_a[s] = r.grad_locations[2 * sample] = r.grad_locations[2 * sample + 1] = nan;
              continue;
            }
            // The op's rule for non-finite weights (msda_ops/README.md): the weight times
            // the whole bilinear sample (0 outside the map, so inf * 0 = NaN), and NaN
            // location gradients.
            if (!std::isfinite(a[s])) {
              r.grad_locations[2 * sample] = r.grad_locations[2 * sample + 1] = nan;
            }
            std::vector<double> sampled(D, 0.0);
            const double px = x * W - 0.5, py = y * H - 0.5;
            // Far away (inf included): no corner can be inside; the sample is 0.
            if (std::fabs(px) < 1e15 && std::fabs(py) < 1e15) {
              const double fx = std::floor(px), fy = std::floor(py);
              const double lx = px - fx, ly = py - fy;
              double gx = 0, gy = 0;
              bool any = false;
              for (int corner = 0; corner < 4; ++corner) {
                const double cx = fx + (corner & 1), cy = fy + (corner >> 1);
                if (cx < 0 || cy < 0 || cx > W - 1 || cy > H - 1) continue;
                any = true;
                const double wx = (corner & 1) ? lx : 1 - lx, wy = (corner >> 1) ? ly : 1 - ly;
                const double dwx = (corner & 1) ? 1 : -1, dwy = (corner >> 1) ? 1 : -1;
                const int64_t pixel =
                    start + static_cast<int64_t>(cy) * W + static_cast<int64_t>(cx);
                const int64_t at = ((n * p.length + pixel) * M + m) * D;
                double dot = 0;
                for (int64_t d = 0; d < D; ++d) {
                  sampled[d] += wx * wy * p.value[at + d];
                  dot += g[d] * p.value[at + d];
                  r.grad_value[at + d] += a[s] * wx * wy * g[d];
                }
                grad_a[s] += wx * wy * dot;
                gx += dwx * wy * dot;
                gy += wx * dwy * dot;
              }
              if (any && std::isfinite(a[s])) {
                r.grad_locations[2 * sample] = a[s] * gx * W;
                r.grad_locations[2 * sample + 1] = a[s] * gy * H;
              }
            }
            for (int64_t d = 0; d < D; ++d) out[d] += a[s] * sampled[d];
          }
        }
        double* gw = &r.grad_weights[nqm * L * P];
        if (p.softmax) {
          double dot = 0;
          for (int64_t s = 0; s < L * P; ++s) dot += a[s] * grad_a[s];
          for (int64_t s = 0; s < L * P; ++s) gw[s] = a[s] * (grad_a[s] - dot);
        } else {
          for (int64_t s = 0; s < L * P; ++s) gw[s] = grad_a[s];
        }
      }
    }
  }
  return r;
}

}  // namespace emu
