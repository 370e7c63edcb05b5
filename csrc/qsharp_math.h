// Scalar Q♯ numerics shared by the CPU and CUDA kernels (one definition, compiled for host and device).
//
// Log-offsets are the log of E[exp(z/η)] under a reward distribution Z; see qsharp_ext/distributions.py
// for the pure-torch reference these functions are tested against. They never form e^{1/η}, so η = 0.01
// and logits of ±50 stay finite.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define QS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QS_HOST_DEVICE inline
#endif

namespace qsharp {

// ln(1 + e^x), accurate in both tails.
template <typename T>
QS_HOST_DEVICE T softplus(T x) {
  using std::exp;
  using std::log1p;
  return x > T(0) ? x + log1p(exp(-x)) : log1p(exp(x));
}

// ln(e^x - 1) for x >= 0: no overflow for large x, no cancellation for small x; -inf at x = 0.
template <typename T>
QS_HOST_DEVICE T log_expm1(T x) {
  using std::exp;
  using std::expm1;
  using std::log;
  using std::log1p;
  return x > T(0.6931471805599453) ? x + log1p(-exp(-x)) : log(expm1(x));
}

// ln(1 - p + p e^{1/η}) with p = sigmoid(logit), given c = log_expm1(1/η) (computed once per η):
// softplus(ln(e^{1/η} - 1) + ln p).
template <typename T>
QS_HOST_DEVICE T bernoulli_log_offset(T logit, T log_expm1_inv_eta) {
  return softplus(log_expm1_inv_eta - softplus(-logit));
}

// logsumexp(log_softmax(logits) + atoms/η) over one row of n atoms (logits may hold -inf, not all).
template <typename T>
QS_HOST_DEVICE T histogram_log_offset(const T* logits, const T* atoms, int64_t n, T inv_eta) {
  using std::exp;
  using std::log;
  T max_logit = logits[0];
  T max_tilted = logits[0] + atoms[0] * inv_eta;
  for (int64_t i = 1; i < n; ++i) {
    max_logit = logits[i] > max_logit ? logits[i] : max_logit;
    const T tilted = logits[i] + atoms[i] * inv_eta;
    max_tilted = tilted > max_tilted ? tilted : max_tilted;
  }
  T sum = T(0), sum_tilted = T(0);
  for (int64_t i = 0; i < n; ++i) {
    sum += exp(logits[i] - max_logit);
    sum_tilted += exp(logits[i] + atoms[i] * inv_eta - max_tilted);
  }
  return (max_tilted - max_logit) + (log(sum_tilted) - log(sum));
}

}  // namespace qsharp
