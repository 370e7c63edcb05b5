#include "log_offsets.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "../qsharp_math.h"

namespace qsharp::cpu {

namespace {
constexpr int64_t kGrainElements = 4096;  // below this, threading costs more than it saves
}

void bernoulli_log_offset(const at::Tensor& logit, double eta, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(logit.scalar_type(), "bernoulli_log_offset_cpu", [&] {
    const scalar_t c = qsharp::log_expm1(static_cast<scalar_t>(1.0 / eta));
    const scalar_t* in = logit.const_data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    at::parallel_for(0, logit.numel(), kGrainElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) res[i] = qsharp::bernoulli_log_offset(in[i], c);
    });
  });
}

void histogram_log_offset(const at::Tensor& logits, const at::Tensor& atoms, double eta, at::Tensor& out) {
  const int64_t n = logits.size(-1);
  const int64_t rows = n == 0 ? 0 : logits.numel() / n;
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "histogram_log_offset_cpu", [&] {
    const scalar_t inv_eta = static_cast<scalar_t>(1.0 / eta);
    const scalar_t* in = logits.const_data_ptr<scalar_t>();
    const scalar_t* at_ptr = atoms.const_data_ptr<scalar_t>();
    scalar_t* res = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElements / n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) res[r] = qsharp::histogram_log_offset(in + r * n, at_ptr, n, inv_eta);
    });
  });
}

}  // namespace qsharp::cpu
