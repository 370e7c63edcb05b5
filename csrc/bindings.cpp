// Python bindings of qsharp_ext._C: shape, dtype and device checks, then the CPU (ATen) or CUDA implementation.
// Values (η, temperature, top_p) are not checked here: the Python entry points check them where a user gives
// them (qsharp_ext/eta.py), and a check here would read the device's memory at every decoding step.
#include <torch/extension.h>

#include "cpu/fused_step.h"
#include "qsharp_math.h"

#ifdef WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/fused_step.cuh"
#endif

namespace {

#ifdef WITH_CUDA
void check_cuda(cudaError_t err) { TORCH_CHECK(err == cudaSuccess, "CUDA kernel failed: ", cudaGetErrorString(err)); }
#endif

[[noreturn]] void no_cuda() { TORCH_CHECK(false, "qsharp_ext._C was built without CUDA kernels"); }

// ---------------------------------------------------------------------------------------------- fused step

void check_f32(const torch::Tensor& t, const char* name, at::IntArrayRef shape, const torch::Device& device) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.device() == device, name, " must be on ", device, ", got ", t.device());
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> expand_candidates(const torch::Tensor& logits,
                                                                         double temperature, int64_t k) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "ref_logits must be (B, V) with V >= 1, got ",
              logits.sizes());
  TORCH_CHECK(logits.scalar_type() == torch::kFloat32, "ref_logits must be float32, got ", logits.scalar_type());
  TORCH_CHECK(k >= 1 && k <= logits.size(1), "k must be in [1, V] = [1, ", logits.size(1), "], got ", k);
  const auto in = logits.contiguous();
  const int64_t rows = in.size(0);
  auto ids = torch::empty({rows, k}, in.options().dtype(torch::kInt64));
  auto ref_logp = torch::empty({rows, k}, in.options());
  auto lse = torch::empty({rows}, in.options());
  if (!in.is_cuda()) {
    qsharp::cpu::expand_candidates(in, temperature, ids, ref_logp, lse);
    return {ids, ref_logp, lse};
  }
#ifdef WITH_CUDA
  const c10::cuda::CUDAGuard guard(in.device());
  check_cuda(qsharp::cuda::expand_candidates(in.const_data_ptr<float>(), rows, in.size(1),
                                             static_cast<float>(temperature), k, ids.data_ptr<int64_t>(),
                                             ref_logp.data_ptr<float>(), lse.data_ptr<float>(),
                                             c10::cuda::getCurrentCUDAStream()));
  return {ids, ref_logp, lse};
#else
  no_cuda();
#endif
}

int head_kind(const std::string& head) {
  if (head == "bernoulli") return qsharp::kBernoulliHead;
  if (head == "histogram") return qsharp::kHistogramHead;
  TORCH_CHECK(head == "mean", "head must be bernoulli, histogram or mean, got ", head);
  return qsharp::kMeanHead;
}

std::vector<torch::Tensor> guided_sample(const torch::Tensor& logits, const torch::Tensor& ids,
                                         const torch::Tensor& ref_logp, const torch::Tensor& lse,
                                         const torch::Tensor& head_out, const std::string& head,
                                         const torch::Tensor& atoms, const torch::Tensor& eta,
                                         const torch::Tensor& floor, const torch::Tensor& noise, double temperature,
                                         double top_p, bool candidates_only) {
  TORCH_CHECK(logits.dim() == 2 && ids.dim() == 2, "ref_logits must be (B, V) and ids (B, k)");
  const int64_t rows = logits.size(0), vocab = logits.size(1), k = ids.size(1);
  const auto device = logits.device();
  const int kind = head_kind(head);
  TORCH_CHECK(k >= 1 && k <= vocab && ids.size(0) == rows, "ids must be (B, k) with 1 <= k <= V, got ", ids.sizes());
  TORCH_CHECK(ids.scalar_type() == torch::kInt64 && ids.device() == device, "ids must be int64 on ", device);
  check_f32(logits, "ref_logits", {rows, vocab}, device);
  check_f32(ref_logp, "ref_logp", {rows, k}, device);
  check_f32(lse, "lse", {rows}, device);
  check_f32(eta, "eta", {rows}, device);
  check_f32(floor, "floor", {rows}, device);
  const int64_t n_atoms = kind == qsharp::kHistogramHead ? atoms.numel() : 1;
  if (kind == qsharp::kHistogramHead) {
    TORCH_CHECK(n_atoms >= 1, "a histogram head needs atoms");
    check_f32(atoms, "atoms", {n_atoms}, device);
    check_f32(head_out, "head_out", {rows, k, n_atoms}, device);
  } else {
    check_f32(head_out, "head_out", {rows, k}, device);
  }
  TORCH_CHECK(noise.scalar_type() == torch::kFloat64 && noise.sizes() == at::IntArrayRef{rows} &&
                  noise.device() == device,
              "noise must be float64 (B,) on ", device);
  const auto c = [](const torch::Tensor& t) { return t.contiguous(); };
  const auto x = c(logits), id = c(ids), lp = c(ref_logp), ls = c(lse), ho = c(head_out), at_v = c(atoms),
             et = c(eta), fl = c(floor), u = c(noise);
  auto token = torch::empty({rows}, ids.options());
  auto cand_index = torch::empty({rows}, ids.options());
  auto logp_pi = torch::empty({rows}, logits.options());
  auto logp_ref = torch::empty({rows}, logits.options());
  auto kl = torch::empty({rows}, logits.options());
  if (!x.is_cuda()) {
    qsharp::cpu::guided_sample(x, id, lp, ls, ho, kind, at_v, et, fl, u, temperature, top_p, candidates_only, token,
                               cand_index, logp_pi, logp_ref, kl);
    return {token, cand_index, logp_pi, logp_ref, kl};
  }
#ifdef WITH_CUDA
  const c10::cuda::CUDAGuard guard(device);
  auto scratch_f = torch::empty({2, rows, k}, logits.options());
  auto scratch_i = torch::empty({2, rows, k}, ids.options());
  qsharp::cuda::GuidedSampleArgs a{};
  a.logits = x.const_data_ptr<float>();
  a.ids = id.const_data_ptr<int64_t>();
  a.ref_logp = lp.const_data_ptr<float>();
  a.lse = ls.const_data_ptr<float>();
  a.head_out = ho.const_data_ptr<float>();
  a.atoms = kind == qsharp::kHistogramHead ? at_v.const_data_ptr<float>() : nullptr;
  a.eta = et.const_data_ptr<float>();
  a.floor = fl.const_data_ptr<float>();
  a.noise = u.const_data_ptr<double>();
  a.rows = rows;
  a.vocab = vocab;
  a.k = k;
  a.n_atoms = n_atoms;
  a.head = kind;
  a.temperature = static_cast<float>(temperature);
  a.top_p = top_p;
  a.candidates_only = candidates_only;
  a.scratch_off = scratch_f.data_ptr<float>();
  a.scratch_key = a.scratch_off + rows * k;
  a.scratch_order = scratch_i.data_ptr<int64_t>();
  a.scratch_sorted_ids = a.scratch_order + rows * k;
  a.token = token.data_ptr<int64_t>();
  a.cand_index = cand_index.data_ptr<int64_t>();
  a.logp_pi = logp_pi.data_ptr<float>();
  a.logp_ref = logp_ref.data_ptr<float>();
  a.kl = kl.data_ptr<float>();
  check_cuda(qsharp::cuda::guided_sample(a, c10::cuda::getCurrentCUDAStream()));
  return {token, cand_index, logp_pi, logp_ref, kl};
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
  m.def("expand_candidates", &expand_candidates,
        "top-k candidates of ref_logits/T: (ids (B, k), ref_logp (B, k), lse (B,)) in one pass per row",
        py::arg("logits"), py::arg("temperature"), py::arg("k"));
  m.def("guided_sample", &guided_sample,
        "the guided draw: [token, cand_index, logp_pi, logp_ref, kl]; see qsharp_ext/kernels/fused_step.py",
        py::arg("logits"), py::arg("ids"), py::arg("ref_logp"), py::arg("lse"), py::arg("head_out"), py::arg("head"),
        py::arg("atoms"), py::arg("eta"), py::arg("floor"), py::arg("noise"), py::arg("temperature"),
        py::arg("top_p"), py::arg("candidates_only"));
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels were compiled in");
}
