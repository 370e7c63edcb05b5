// CPU (ATen) log-offset ops: Bernoulli and histogram heads, float32 / float64, parallel over rows.
#pragma once

#include <ATen/ATen.h>

namespace qsharp::cpu {

// out[i] = ln E[exp(z/η)], z ~ Bernoulli(sigmoid(logit[i])). `logit` contiguous; `out` like it.
void bernoulli_log_offset(const at::Tensor& logit, double eta, at::Tensor& out);

// out[r] = logsumexp(log_softmax(logits[r, :]) + atoms/η). `logits` contiguous (rows, n); atoms (n,).
void histogram_log_offset(const at::Tensor& logits, const at::Tensor& atoms, double eta, at::Tensor& out);

}  // namespace qsharp::cpu
