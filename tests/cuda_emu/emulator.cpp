// Warps of 32 std::threads that run kernels lane by lane, meeting at every shuffle.
//
// A warp's lanes meet at two kinds of points: a __shfl_xor_sync call and the kernel's end.
// The last lane to arrive checks that all 32 are at the same kind of point (same call site,
// mask and width for a shuffle): a lane that returned while the others wait in a shuffle is
// the divergence a GPU would turn into undefined results. Values posted for a shuffle are
// double-buffered by generation, so one barrier per shuffle suffices.
#include "emulator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <thread>

namespace emu {
namespace {

constexpr int kLanes = 32;
constexpr auto kStuck = std::chrono::seconds(120);

std::mutex context_mutex;
std::string context;

enum class Kind { shuffle, exit };

struct Arrival {
  Kind kind = Kind::exit;
  const char* file = "";
  int line = 0;
  unsigned mask = 0;
  int lane_mask = 0;
  int width = 0;
};

std::string describe(const Arrival& a) {
  std::ostringstream out;
  if (a.kind == Kind::exit) {
    out << "returned from the kernel";
  } else {
    out << "__shfl_xor_sync(mask=0x" << std::hex << a.mask << std::dec
        << ", lane_mask=" << a.lane_mask << ", width=" << a.width << ") at " << a.file << ":"
        << a.line;
  }
  return out.str();
}

bool same_call(const Arrival& a, const Arrival& b) {
  if (a.kind != b.kind) return false;
  if (a.kind == Kind::exit) return true;
  return a.line == b.line && std::strcmp(a.file, b.file) == 0 && a.mask == b.mask &&
         a.lane_mask == b.lane_mask && a.width == b.width;
}

}  // namespace

void set_context(std::string what) {
  const std::lock_guard<std::mutex> lock(context_mutex);
  context = std::move(what);
}

void fail(const std::string& message) {
  std::string where;
  {
    const std::lock_guard<std::mutex> lock(context_mutex);
    where = context;
  }
  std::fprintf(stderr, "CUDA-EMU ERROR: %s\n  while running: %s\n", message.c_str(),
               where.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

struct Launch;

// 32 lanes that take (block, warp) jobs from the launch in progress until none is left.
class Warp {
 public:
  explicit Warp(Launch* launch) : launch_(launch) {
    for (int lane = 0; lane < kLanes; ++lane) lanes_.emplace_back([this, lane] { main(lane); });
  }
  ~Warp() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : lanes_) t.join();
  }
  // Starts the current launch on this warp (called with no lane busy).
  void start(int64_t first_job);
  // The rendezvous of one lane; for a shuffle, copies what lane `lane ^ lane_mask` posted.
  // Returns the warp's job after the rendezvous (the next one after an exit).
  int64_t arrive(int lane, const Arrival& a, const void* mine, void* theirs);

 private:
  void main(int lane);

  Launch* launch_;
  std::vector<std::thread> lanes_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t started_ = 0;  // launches started on this warp
  int64_t job_ = -1;      // block * warps_per_block + warp, or -1: nothing to do
  int arrived_ = 0;
  int parked_ = 0;  // lanes done with the current launch
  uint64_t generation_ = 0;
  Arrival arrivals_[kLanes];
  unsigned char posted_[2][kLanes][8] = {};
};

struct Launch {
  int block_size = 0;
  int64_t jobs = 0;
  std::atomic<int64_t> next{0};
  const std::function<void()>* body = nullptr;
  std::mutex mutex;
  std::condition_variable cv;
  int busy = 0;  // warps still working on this launch

  int64_t take() {
    // Relaxed: handing out work must not order the warps' memory for TSan.
    const int64_t job = next.fetch_add(1, std::memory_order_relaxed);
    return job < jobs ? job : -1;
  }
  void warp_done() {
    const std::lock_guard<std::mutex> lock(mutex);
    if (--busy == 0) cv.notify_all();
  }
};

namespace {
thread_local Warp* current_warp = nullptr;
thread_local int current_lane = 0;
}  // namespace

void Warp::start(int64_t first_job) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    job_ = first_job;
    parked_ = 0;
    ++started_;
  }
  cv_.notify_all();
}

void Warp::main(int lane) {
  current_warp = this;
  current_lane = lane;
  uint64_t seen = 0;
  for (;;) {
    int64_t job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || started_ != seen; });
      if (stop_) return;
      seen = started_;
      job = job_;
    }
    const int warps_per_block = launch_->block_size / kLanes;
    while (job >= 0) {
      threadIdx = uint3{static_cast<unsigned>((job % warps_per_block) * kLanes + lane), 0, 0};
      blockIdx = uint3{static_cast<unsigned>(job / warps_per_block), 0, 0};
      blockDim = dim3{static_cast<unsigned>(launch_->block_size), 1, 1};
      (*launch_->body)();
      job = arrive(lane, Arrival{}, nullptr, nullptr);  // the last lane takes the next job
    }
    // Only when all 32 lanes have seen the end may the next launch change job_.
    const std::lock_guard<std::mutex> lock(mutex_);
    if (++parked_ == kLanes) launch_->warp_done();
  }
}

int64_t Warp::arrive(int lane, const Arrival& a, const void* mine, void* theirs) {
  std::unique_lock<std::mutex> lock(mutex_);
  const uint64_t generation = generation_;
  const int parity = static_cast<int>(generation & 1);
  arrivals_[lane] = a;
  if (a.kind == Kind::shuffle) std::memcpy(posted_[parity][lane], mine, 8);
  if (++arrived_ == kLanes) {
    for (int other = 1; other < kLanes; ++other) {
      if (!same_call(arrivals_[0], arrivals_[other])) {
        std::ostringstream out;
        out << "lane divergence in warp " << job_ << ": lane 0 " << describe(arrivals_[0])
            << " but lane " << other << " " << describe(arrivals_[other]);
        fail(out.str());
      }
    }
    arrived_ = 0;
    ++generation_;
    if (a.kind == Kind::exit) job_ = launch_->take();
    cv_.notify_all();
  } else {
    if (!cv_.wait_for(lock, kStuck, [&] { return generation_ != generation; })) {
      fail("warp stuck: " + std::to_string(arrived_) + " of 32 lanes arrived at " +
           describe(a));
    }
  }
  const int64_t job = job_;
  lock.unlock();
  if (a.kind == Kind::shuffle) {
    // CUDA: a source lane in a later group of `width` lanes gives the caller its own value.
    int source = lane ^ a.lane_mask;
    if (source / a.width > lane / a.width || source >= kLanes) source = lane;
    std::memcpy(theirs, posted_[parity][source], 8);
  }
  return job;
}

void exchange(const void* mine, void* theirs, unsigned mask, int lane_mask, int width,
              const char* file, int line) {
  Warp* warp = current_warp;
  if (warp == nullptr) fail("__shfl_xor_sync outside an emulated warp");
  std::ostringstream where;
  where << " at " << file << ":" << line;
  if (mask != 0xffffffffu) {
    fail("__shfl_xor_sync with a partial mask 0x" + std::to_string(mask) + where.str());
  }
  if (width < 1 || width > kLanes || (width & (width - 1)) != 0) {
    fail("__shfl_xor_sync width " + std::to_string(width) +
         " (must be a power of two <= 32)" + where.str());
  }
  if (lane_mask < 0 || lane_mask >= kLanes) {
    fail("__shfl_xor_sync lane mask " + std::to_string(lane_mask) + where.str());
  }
  warp->arrive(current_lane, Arrival{Kind::shuffle, file, line, mask, lane_mask, width}, mine,
               theirs);
}

struct Gpu::Impl {
  Launch launch;
  std::vector<std::unique_ptr<Warp>> warps;
};

Gpu::Gpu(int block_size, int warps_at_once) : block_size_(block_size), impl_(new Impl) {
  if (block_size % kLanes != 0) fail("block size not a multiple of 32");
  impl_->launch.block_size = block_size;
  for (int i = 0; i < std::max(1, warps_at_once); ++i) {
    impl_->warps.push_back(std::make_unique<Warp>(&impl_->launch));
  }
}

Gpu::~Gpu() = default;

void Gpu::run(int64_t blocks, std::function<void()> body) {
  Launch& launch = impl_->launch;
  launch.jobs = blocks * (block_size_ / kLanes);
  launch.next.store(0, std::memory_order_relaxed);
  launch.body = &body;
  std::vector<std::pair<Warp*, int64_t>> starts;
  for (auto& warp : impl_->warps) {
    const int64_t job = launch.take();
    if (job < 0) break;
    starts.emplace_back(warp.get(), job);
  }
  {
    const std::lock_guard<std::mutex> lock(launch.mutex);
    launch.busy = static_cast<int>(starts.size());
  }
  for (auto& [warp, job] : starts) warp->start(job);
  std::unique_lock<std::mutex> lock(launch.mutex);
  if (!launch.cv.wait_for(lock, kStuck * 2, [&] { return launch.busy == 0; })) {
    fail("launch did not finish");
  }
}

}  // namespace emu
