// The compiled ops (torch.ops.qsharp_ext.*, loaded by importing qsharp_ext._C): shape, dtype and device checks,
// then the CPU (ATen) or CUDA implementation, which torch's dispatcher picks from the tensors' device.
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

// ---------------------------------------------------------------------------------------------- fused step

void check_f32(const torch::Tensor& t, const char* name, at::IntArrayRef shape, const torch::Device& device) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.device() == device, name, " must be on ", device, ", got ", t.device());
}

// ------------------------------------------------------------------------------------- expand_candidates

struct Expansion {  // the checked input and the outputs, the same for both devices
  torch::Tensor in, ids, ref_logp, lse;
};

Expansion prepare_expansion(const torch::Tensor& logits, int64_t k) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 1, "ref_logits must be (B, V) with V >= 1, got ",
              logits.sizes());
  TORCH_CHECK(logits.scalar_type() == torch::kFloat32, "ref_logits must be float32, got ", logits.scalar_type());
  TORCH_CHECK(k >= 1 && k <= logits.size(1), "k must be in [1, V] = [1, ", logits.size(1), "], got ", k);
  const auto in = logits.contiguous();
  const int64_t rows = in.size(0);
  return {in, torch::empty({rows, k}, in.options().dtype(torch::kInt64)), torch::empty({rows, k}, in.options()),
          torch::empty({rows}, in.options())};
}

void expand_on_cpu(Expansion& e, double temperature, int64_t) {
  qsharp::cpu::expand_candidates(e.in, temperature, e.ids, e.ref_logp, e.lse);
}

#ifdef WITH_CUDA
void expand_on_cuda(Expansion& e, double temperature, int64_t k) {
  const c10::cuda::CUDAGuard guard(e.in.device());
  const int64_t rows = e.in.size(0), vocab = e.in.size(1);
  const auto scratch =
      torch::empty({qsharp::cuda::expand_scratch_bytes(rows, vocab, k)}, e.in.options().dtype(torch::kUInt8));
  check_cuda(qsharp::cuda::expand_candidates(e.in.const_data_ptr<float>(), rows, vocab, static_cast<float>(temperature),
                                             k, e.ids.data_ptr<int64_t>(), e.ref_logp.data_ptr<float>(),
                                             e.lse.data_ptr<float>(), scratch.data_ptr(),
                                             c10::cuda::getCurrentCUDAStream()));
}
#endif

// The op for one device: the shared checks, then that device's kernel.
template <void (*Run)(Expansion&, double, int64_t)>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> expand_candidates(const torch::Tensor& logits,
                                                                         double temperature, int64_t k) {
  auto e = prepare_expansion(logits, k);
  Run(e, temperature, k);
  return {e.ids, e.ref_logp, e.lse};
}

// ----------------------------------------------------------------------------------------- guided_sample

int head_kind(std::string_view head) {
  if (head == "bernoulli") return qsharp::kBernoulliHead;
  if (head == "histogram") return qsharp::kHistogramHead;
  TORCH_CHECK(head == "mean", "head must be bernoulli, histogram or mean, got ", head);
  return qsharp::kMeanHead;
}

struct Draw {  // the checked, contiguous inputs and the outputs, the same for both devices
  torch::Tensor logits, ids, ref_logp, lse, head_out, atoms, eta, floor, noise;
  torch::Tensor token, cand_index, logp_pi, logp_ref, kl;
  int64_t rows, vocab, k, n_atoms;
  int kind;
  std::vector<torch::Tensor> outputs() const { return {token, cand_index, logp_pi, logp_ref, kl}; }
};

Draw prepare_draw(const torch::Tensor& logits, const torch::Tensor& ids, const torch::Tensor& ref_logp,
                  const torch::Tensor& lse, const torch::Tensor& head_out, std::string_view head,
                  const torch::Tensor& atoms, const torch::Tensor& eta, const torch::Tensor& floor,
                  const torch::Tensor& noise) {
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
  const auto int_out = [&] { return torch::empty({rows}, ids.options()); };
  const auto float_out = [&] { return torch::empty({rows}, logits.options()); };
  return {c(logits),  c(ids),       c(ref_logp), c(lse),       c(head_out), c(atoms),   c(eta),
          c(floor),   c(noise),     int_out(),   int_out(),    float_out(), float_out(), float_out(),
          rows,       vocab,        k,           n_atoms,      kind};
}

void draw_on_cpu(Draw& d, double temperature, double top_p, bool candidates_only) {
  qsharp::cpu::guided_sample(d.logits, d.ids, d.ref_logp, d.lse, d.head_out, d.kind, d.atoms, d.eta, d.floor,
                             d.noise, temperature, top_p, candidates_only, d.token, d.cand_index, d.logp_pi,
                             d.logp_ref, d.kl);
}

#ifdef WITH_CUDA
void draw_on_cuda(Draw& d, double temperature, double top_p, bool candidates_only) {
  const c10::cuda::CUDAGuard guard(d.logits.device());
  auto scratch_f = torch::empty({2, d.rows, d.k}, d.logits.options());
  auto scratch_i = torch::empty({2, d.rows, d.k}, d.ids.options());
  qsharp::cuda::GuidedSampleArgs a{};
  a.logits = d.logits.const_data_ptr<float>();
  a.ids = d.ids.const_data_ptr<int64_t>();
  a.ref_logp = d.ref_logp.const_data_ptr<float>();
  a.lse = d.lse.const_data_ptr<float>();
  a.head_out = d.head_out.const_data_ptr<float>();
  a.atoms = d.kind == qsharp::kHistogramHead ? d.atoms.const_data_ptr<float>() : nullptr;
  a.eta = d.eta.const_data_ptr<float>();
  a.floor = d.floor.const_data_ptr<float>();
  a.noise = d.noise.const_data_ptr<double>();
  a.rows = d.rows;
  a.vocab = d.vocab;
  a.k = d.k;
  a.n_atoms = d.n_atoms;
  a.head = d.kind;
  a.temperature = static_cast<float>(temperature);
  a.top_p = top_p;
  a.candidates_only = candidates_only;
  a.scratch_off = scratch_f.data_ptr<float>();
  a.scratch_key = a.scratch_off + d.rows * d.k;
  a.scratch_order = scratch_i.data_ptr<int64_t>();
  a.scratch_sorted_ids = a.scratch_order + d.rows * d.k;
  a.token = d.token.data_ptr<int64_t>();
  a.cand_index = d.cand_index.data_ptr<int64_t>();
  a.logp_pi = d.logp_pi.data_ptr<float>();
  a.logp_ref = d.logp_ref.data_ptr<float>();
  a.kl = d.kl.data_ptr<float>();
  check_cuda(qsharp::cuda::guided_sample(a, c10::cuda::getCurrentCUDAStream()));
}
#endif

// The op for one device: the shared checks, then that device's kernel.
template <void (*Run)(Draw&, double, double, bool)>
std::vector<torch::Tensor> guided_sample(const torch::Tensor& logits, const torch::Tensor& ids,
                                         const torch::Tensor& ref_logp, const torch::Tensor& lse,
                                         const torch::Tensor& head_out, std::string_view head,
                                         const torch::Tensor& atoms, const torch::Tensor& eta,
                                         const torch::Tensor& floor, const torch::Tensor& noise, double temperature,
                                         double top_p, bool candidates_only) {
  auto d = prepare_draw(logits, ids, ref_logp, lse, head_out, head, atoms, eta, floor, noise);
  Run(d, temperature, top_p, candidates_only);
  return d.outputs();
}

bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

// The ops go through torch's dispatcher: it picks the CPU or the CUDA kernel from the tensors' device (one place
// for the choice), and a failed check reaches Python as a RuntimeError through torch's own error path.
TORCH_LIBRARY(qsharp_ext, m) {
  m.def("expand_candidates(Tensor logits, float temperature, int k) -> (Tensor, Tensor, Tensor)");
  m.def(
      "guided_sample(Tensor logits, Tensor ids, Tensor ref_logp, Tensor lse, Tensor head_out, str head, "
      "Tensor atoms, Tensor eta, Tensor floor, Tensor noise, float temperature, float top_p, bool candidates_only) "
      "-> Tensor[]");
}

TORCH_LIBRARY_IMPL(qsharp_ext, CPU, m) {
  m.impl("expand_candidates", &expand_candidates<expand_on_cpu>);
  m.impl("guided_sample", &guided_sample<draw_on_cpu>);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(qsharp_ext, CUDA, m) {
  m.impl("expand_candidates", &expand_candidates<expand_on_cuda>);
  m.impl("guided_sample", &guided_sample<draw_on_cuda>);
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Loads the compiled Q♯ ops into torch.ops.qsharp_ext: C++ (CPU) always, CUDA when built with it.";
  m.def("has_cuda", &has_cuda, "whether the CUDA kernels were compiled in");
}
