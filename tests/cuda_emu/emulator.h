// A CPU stand-in for a GPU that runs __global__ functions of csrc/cuda/kernels.cuh: the
// `Device` those launch plans expect (launch + scratch), warps of 32 real threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "cuda_shim.h"

namespace emu {

// What the harness is running, printed with any failure.
void set_context(std::string what);
[[noreturn]] void fail(const std::string& message);

// Memory with exactly `count` elements after `offset` ones, 64-byte aligned at the start, so
// ASan's redzones sit right after the last element and an offset misaligns on purpose.
template <typename T>
class Buffer {
 public:
  Buffer(size_t count, size_t offset = 0, unsigned char fill = 0)
      : bytes_((count + offset) * sizeof(T)),
        base_(static_cast<unsigned char*>(::operator new(bytes_ > 0 ? bytes_ : 1,
                                                         std::align_val_t{64}))),
        data_(reinterpret_cast<T*>(base_) + offset),
        count_(count) {
    std::memset(base_, fill, bytes_);
  }
  Buffer(Buffer&& other) noexcept
      : bytes_(other.bytes_), base_(other.base_), data_(other.data_), count_(other.count_) {
    other.base_ = nullptr;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer() {
    if (base_ != nullptr) ::operator delete(base_, std::align_val_t{64});
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

 private:
  size_t bytes_;
  unsigned char* base_;
  T* data_;
  size_t count_;
};

class Gpu {
 public:
  // `warps_at_once` warps (of 32 threads each) run concurrently.
  Gpu(int block_size, int warps_at_once);
  ~Gpu();
  Gpu(const Gpu&) = delete;
  Gpu& operator=(const Gpu&) = delete;

  template <typename Kernel, typename... Args>
  void launch(Kernel kernel, int64_t threads, Args... args) {
    if (threads <= 0) return;
    const int64_t blocks = (threads + block_size_ - 1) / block_size_;
    if (blocks > INT32_MAX) fail("grid of more than 2^31 - 1 blocks");
    run(blocks, [=] { kernel(args...); });
  }

  // Scratch memory lives until release_scratch(); it starts as 0xFF bytes (NaN for floats),
  // so a kernel that reads scratch it never wrote shows up as a mismatch.
  template <typename T>
  T* scratch(int64_t count) {
    auto buffer = std::make_shared<Buffer<T>>(static_cast<size_t>(count), 0, 0xFF);
    scratch_.push_back(buffer);
    return buffer->data();
  }
  void release_scratch() { scratch_.clear(); }

 private:
  void run(int64_t blocks, std::function<void()> body);

  struct Impl;
  int block_size_;
  std::unique_ptr<Impl> impl_;
  std::vector<std::shared_ptr<void>> scratch_;
};

}  // namespace emu
