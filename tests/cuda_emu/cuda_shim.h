// Just enough CUDA for csrc/cuda/kernels.cuh to compile as plain C++ and run on CPU threads.
//
// Each emulated warp is 32 std::threads. __shfl_xor_sync really exchanges values through a
// barrier, and checks what a GPU leaves undefined: the full mask, the width (a power of two
// <= 32), and that all 32 lanes of the warp meet in the same call (a lane that returned
// early, or waits at another call, is reported as divergence). atomicAdd goes through
// std::atomic_ref, so TSan sees real atomics and flags a plain `+=` between threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;

namespace emu {

// The rendezvous of the 32 lanes of the current warp; defined in emulator.cpp.
// Returns the 8 bytes that lane `source` posted for this call.
void exchange(const void* mine, void* theirs, unsigned mask, int lane_mask, int width,
              const char* file, int line);

}  // namespace emu

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  unsigned char mine[8] = {}, theirs[8] = {};
  std::memcpy(mine, &var, sizeof(T));
  emu::exchange(mine, theirs, mask, lane_mask, width, file, line);
  T out;
  std::memcpy(&out, theirs, sizeof(T));
  return out;
}

template <typename T>
T atomicAdd(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_add(val, std::memory_order_relaxed);
}
