// CUDA launchers of msda_ops::ms_deform_attn_{forward,backward}: ATen in, the kernels and
// their launch plan from kernels.cuh (shared with the CPU emulation in tests/cuda_emu).
// c10/cuda/CUDAStream.h, not ATen/cuda/CUDAContext.h: the latter pulls in the cuBLAS,
// cuSPARSE and cuSOLVER headers, and the current stream is all this file needs.
#include <ATen/Context.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "kernels.cuh"
#include "msda_ops.h"

namespace msda {
namespace {

// The `Device` of kernels.cuh: launches on the current stream; scratch memory from the
// caching allocator, kept alive until the launcher returns (stream order makes that safe).
class CudaDevice {
 public:
  explicit CudaDevice(const at::Tensor& like)
      : options_(like.options().dtype(at::kByte)),
        stream_(c10::cuda::getCurrentCUDAStream()) {}

  template <typename Kernel, typename... KernelArgs>
  void launch(Kernel kernel, int64_t threads, KernelArgs... args) {
    if (threads <= 0) return;
    const int64_t blocks = (threads + cuda::kThreads - 1) / cuda::kThreads;
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "msda_ops: problem too large (",
                threads, " threads)");
    kernel<<<dim3(static_cast<unsigned>(blocks)), cuda::kThreads, 0, stream_>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  T* scratch(int64_t count) {
    scratch_.push_back(at::empty({std::max<int64_t>(count, 1) * int64_t(sizeof(T))}, options_));
    return reinterpret_cast<T*>(scratch_.back().mutable_data_ptr());
  }

 private:
  at::TensorOptions options_;
  cudaStream_t stream_;
  std::vector<at::Tensor> scratch_;
};

template <typename scalar_t, typename opmath_t>
cuda::Inputs<scalar_t, opmath_t> inputs_of(const Prepared& p, bool softmax) {
  const Sizes& s = p.s;
  return {p.value.const_data_ptr<scalar_t>(),
          p.shapes.const_data_ptr<int64_t>(),
          p.starts.const_data_ptr<int64_t>(),
          p.locations.const_data_ptr<opmath_t>(),
          p.weights.const_data_ptr<opmath_t>(),
          s.batch,
          s.length,
          s.heads,
          s.channels,
          s.queries,
          s.levels,
          s.points,
          softmax};
}

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights, bool softmax) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes& s = p.s;
  auto output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  CudaDevice device(value);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_forward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    cuda::forward(inputs_of<scalar_t, opmath_t>(p, softmax),
                  output.mutable_data_ptr<scalar_t>(), device);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights, bool softmax) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Prepared p =
      prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const auto go = prepare_grad_output(grad_output, value, p.s);
  Gradients grads = zero_gradients(p);
  // The float atomics sum in a run-dependent order; deterministic mode takes the kernels
  // that own what they write. The alert is a no-op here (the mode is off) but keeps the rule
  // that an atomic backward always reports itself, as torchvision's do.
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  if (!deterministic) at::globalContext().alertNotDeterministic("ms_deform_attn_backward_cuda");
  CudaDevice device(value);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const cuda::GradBuffers<opmath_t> buffers{grads.value.mutable_data_ptr<opmath_t>(),
                                              grads.locations.mutable_data_ptr<opmath_t>(),
                                              grads.weights.mutable_data_ptr<opmath_t>()};
    cuda::backward(inputs_of<scalar_t, opmath_t>(p, softmax), go.const_data_ptr<scalar_t>(),
                   buffers, deterministic, device);
  });
  return finish(grads, value, sampling_locations, attention_weights);
}

}  // namespace

TORCH_LIBRARY_IMPL(msda_ops, CUDA, m) {
  m.impl("ms_deform_attn_forward", &forward_cuda);
  m.impl("ms_deform_attn_backward", &backward_cuda);
}

}  // namespace msda
