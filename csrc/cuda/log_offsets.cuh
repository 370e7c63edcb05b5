// CUDA log-offset kernels on raw device pointers (no torch dependency, so CMake can build them alone).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace qsharp::cuda {

// out[i] = ln E[exp(z/η)], z ~ Bernoulli(sigmoid(logit[i])), for i < n.
template <typename T>
cudaError_t bernoulli_log_offset(const T* logit, T* out, int64_t n, double eta, cudaStream_t stream);

// out[r] = logsumexp(log_softmax(logits[r, :]) + atoms/η) for r < rows; logits row-major (rows, n_atoms).
template <typename T>
cudaError_t histogram_log_offset(const T* logits, const T* atoms, T* out, int64_t rows, int64_t n_atoms,
                                 double eta, cudaStream_t stream);

}  // namespace qsharp::cuda
