// CUDA log-offset kernels against the same scalar code run on the host. Exits 77 (skipped) without a GPU.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/log_offsets.cuh"
#include "qsharp_math.h"
#include "tests/cuda_test_main.h"

namespace {

bool check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) std::printf("FAIL %s: %s\n", what, cudaGetErrorString(err));
  return err == cudaSuccess;
}

int run() {
  const int n_atoms = 11, rows = 1000;
  std::mt19937_64 gen(3);
  std::normal_distribution<float> normal(0.f, 15.f);
  std::vector<float> logits(rows * n_atoms), atoms(n_atoms), bern(rows), hist(rows);
  for (auto& x : logits) x = normal(gen);
  for (int i = 0; i < n_atoms; ++i) atoms[i] = static_cast<float>(i) / (n_atoms - 1);
  float *d_logits, *d_atoms, *d_out;
  if (!check(cudaMalloc(&d_logits, logits.size() * sizeof(float)), "malloc") ||
      !check(cudaMalloc(&d_atoms, atoms.size() * sizeof(float)), "malloc") ||
      !check(cudaMalloc(&d_out, rows * sizeof(float)), "malloc"))
    return 1;
  cudaMemcpy(d_logits, logits.data(), logits.size() * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(d_atoms, atoms.data(), atoms.size() * sizeof(float), cudaMemcpyHostToDevice);
  int failures = 0;
  for (double eta : {0.01, 1.0, 100.0}) {
    if (!check(qsharp::cuda::bernoulli_log_offset(d_logits, d_out, rows, eta, nullptr), "bernoulli")) return 1;
    cudaMemcpy(bern.data(), d_out, rows * sizeof(float), cudaMemcpyDeviceToHost);
    if (!check(qsharp::cuda::histogram_log_offset(d_logits, d_atoms, d_out, rows, n_atoms, eta, nullptr), "hist"))
      return 1;
    cudaMemcpy(hist.data(), d_out, rows * sizeof(float), cudaMemcpyDeviceToHost);
    const float c = qsharp::log_expm1(static_cast<float>(1.0 / eta));
    for (int r = 0; r < rows; ++r) {
      const float want_b = qsharp::bernoulli_log_offset(logits[r], c);
      const float want_h =
          qsharp::histogram_log_offset(logits.data() + r * n_atoms, atoms.data(), n_atoms, static_cast<float>(1.0 / eta));
      if (!(std::fabs(bern[r] - want_b) <= 1e-5f * std::fabs(want_b) + 1e-30f) ||
          !(std::fabs(hist[r] - want_h) <= 1e-4f * std::fabs(want_h) + 1e-5f))
        ++failures;
    }
  }
  cudaFree(d_logits);
  cudaFree(d_atoms);
  cudaFree(d_out);
  std::printf(failures == 0 ? "cuda log-offsets: all checks passed\n" : "cuda log-offsets: %d mismatches\n", failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main() { return qsharp::testing::run_if_gpu(run); }
