// Python bindings of qsharp_ext._C: argument checks, then the CPU (ATen) or CUDA implementation.
#include <torch/extension.h>

#include "cpu/log_offsets.h"

#ifdef WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/log_offsets.cuh"
#endif

namespace {

void check_eta(double eta) { TORCH_CHECK(eta > 0, "eta must be positive, got ", eta); }

void check_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64, name,
              " must be float32 or float64, got ", t.scalar_type());
}

#ifdef WITH_CUDA
void check_cuda(cudaError_t err) { TORCH_CHECK(err == cudaSuccess, "CUDA kernel failed: ", cudaGetErrorString(err)); }
#endif

[[noreturn]] void no_cuda() { TORCH_CHECK(false, "qsharp_ext._C was built without CUDA kernels"); }

torch::Tensor bernoulli_log_offset(const torch::Tensor& logit, double eta) {
  check_eta(eta);
  check_float(logit, "logit");
  const auto in = logit.contiguous();
  auto out = torch::empty_like(in);
  if (!in.is_cuda()) {
    qsharp::cpu::bernoulli_log_offset(in, eta, out);
    return out;
  }
#ifdef WITH_CUDA
  const c10::cuda::CUDAGuard guard(in.device());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "bernoulli_log_offset_cuda", [&] {
    check_cuda(qsharp::cuda::bernoulli_log_offset<scalar_t>(in.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                            in.numel(), eta, c10::cuda::getCurrentCUDAStream()));
  });
  return out;
#else
  no_cuda();
#endif
}

torch::Tensor histogram_log_offset(const torch::Tensor& logits, const torch::Tensor& atoms, double eta) {
  check_eta(eta);
  check_float(logits, "logits");
  TORCH_CHECK(logits.dim() >= 1 && logits.size(-1) >= 1, "logits must have a non-empty last dimension (atoms)");
  TORCH_CHECK(atoms.dim() == 1 && atoms.size(0) == logits.size(-1), "atoms must be 1-D with one value per logit, got ",
              atoms.sizes(), " for logits ", logits.sizes());
  TORCH_CHECK(atoms.device() == logits.device(), "atoms and logits must be on the same device");
  const auto in = logits.contiguous();
  const auto at_values = atoms.to(in.scalar_type()).contiguous();
  auto out = torch::empty(in.sizes().slice(0, in.dim() - 1), in.options());
  if (!in.is_cuda()) {
    qsharp::cpu::histogram_log_offset(in, at_values, eta, out);
    return out;
  }
#ifdef WITH_CUDA
  const c10::cuda::CUDAGuard guard(in.device());
  const int64_t n = in.size(-1);
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "histogram_log_offset_cuda", [&] {
    check_cuda(qsharp::cuda::histogram_log_offset<scalar_t>(
        in.const_data_ptr<scalar_t>(), at_values.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), in.numel() / n,
        n, eta, c10::cuda::getCurrentCUDAStream()));
  });
  return out;
#else
  no_cuda();
#endif
}

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled Q♯ kernels: C++ (CPU) always, CUDA when built with it.";
  m.def("bernoulli_log_offset", &bernoulli_log_offset, "ln(1 - p + p e^{1/eta}), p = sigmoid(logit)",
        py::arg("logit"), py::arg("eta"));
  m.def("histogram_log_offset", &histogram_log_offset, "logsumexp(log_softmax(logits) + atoms/eta)",
        py::arg("logits"), py::arg("atoms"), py::arg("eta"));
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels were compiled in");
}
