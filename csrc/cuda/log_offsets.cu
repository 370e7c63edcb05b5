#include "log_offsets.cuh"

#include "../qsharp_math.h"

namespace qsharp::cuda {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

template <typename T>
__global__ void bernoulli_log_offset_kernel(const T* __restrict__ logit, T* __restrict__ out, int64_t n,
                                            T log_expm1_inv_eta) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = qsharp::bernoulli_log_offset(logit[i], log_expm1_inv_eta);
}

// One thread per row: histograms have tens of atoms, so a row is a short serial loop.
template <typename T>
__global__ void histogram_log_offset_kernel(const T* __restrict__ logits, const T* __restrict__ atoms,
                                            T* __restrict__ out, int64_t rows, int64_t n_atoms, T inv_eta) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < rows) out[r] = qsharp::histogram_log_offset(logits + r * n_atoms, atoms, n_atoms, inv_eta);
}

}  // namespace

template <typename T>
cudaError_t bernoulli_log_offset(const T* logit, T* out, int64_t n, double eta, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const T c = qsharp::log_expm1(static_cast<T>(1.0 / eta));
  bernoulli_log_offset_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(logit, out, n, c);
  return cudaGetLastError();
}

template <typename T>
cudaError_t histogram_log_offset(const T* logits, const T* atoms, T* out, int64_t rows, int64_t n_atoms,
                                 double eta, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  histogram_log_offset_kernel<T><<<blocks_for(rows), kThreads, 0, stream>>>(logits, atoms, out, rows, n_atoms,
                                                                            static_cast<T>(1.0 / eta));
  return cudaGetLastError();
}

template cudaError_t bernoulli_log_offset<float>(const float*, float*, int64_t, double, cudaStream_t);
template cudaError_t bernoulli_log_offset<double>(const double*, double*, int64_t, double, cudaStream_t);
template cudaError_t histogram_log_offset<float>(const float*, const float*, float*, int64_t, int64_t, double,
                                                 cudaStream_t);
template cudaError_t histogram_log_offset<double>(const double*, const double*, double*, int64_t, int64_t, double,
                                                  cudaStream_t);

}  // namespace qsharp::cuda
