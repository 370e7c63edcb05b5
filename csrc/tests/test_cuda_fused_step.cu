// CUDA fused step against host computation: top-k and lse by brute force, the guided draw by the same shared
// row code (qsharp_math.h) run on the host. Exits 77 (skipped) without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <utility>
#include <vector>

#include "cuda/fused_step.cuh"
#include "qsharp_math.h"
#include "tests/cuda_test_main.h"

namespace {

template <typename T>
T* to_device(const std::vector<T>& host) {
  T* ptr = nullptr;
  cudaMalloc(&ptr, host.size() * sizeof(T));
  cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return ptr;
}

template <typename T>
std::vector<T> to_host(const T* ptr, size_t n) {
  std::vector<T> host(n);
  cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
  return host;
}

bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1.0 + std::fabs(b)); }

// Counts a failed check and prints the first few, so that a failure on a GPU machine says what differed.
void mismatch(int& failures, const char* what, int64_t row, int64_t j, double got, double want) {
  if (++failures <= 12) std::printf("  %s row %ld [%ld]: got %.9g, want %.9g\n", what, static_cast<long>(row),
                                    static_cast<long>(j), got, want);
}

// The expansion's outputs on the device.
struct DeviceExpansion {
  int64_t* ids = nullptr;
  float* logp = nullptr;
  float* lse = nullptr;
};

// Expands the device rows `d_logits` (rows, vocab) into fresh device buffers; false when a launch failed.
bool expand(const float* d_logits, int64_t rows, int64_t vocab, int64_t k, float temperature, DeviceExpansion& out) {
  cudaMalloc(&out.ids, rows * k * sizeof(int64_t));
  cudaMalloc(&out.logp, rows * k * sizeof(float));
  cudaMalloc(&out.lse, rows * sizeof(float));
  void* scratch = nullptr;
  cudaMalloc(&scratch, qsharp::cuda::expand_scratch_bytes(rows, vocab, k));
  const bool ok = qsharp::cuda::expand_candidates(d_logits, rows, vocab, temperature, k, out.ids, out.logp, out.lse,
                                                  scratch, nullptr) == cudaSuccess;
  return cudaFree(scratch) == cudaSuccess && ok;
}

// The device's top-k ids, their ln π_ref and each row's lse against a brute-force host computation.
void check_expansion(const std::vector<float>& logits, int64_t rows, int64_t vocab, int64_t k, float temperature,
                     const DeviceExpansion& d, int& failures) {
  const auto ids = to_host(d.ids, rows * k);
  const auto logp = to_host(d.logp, rows * k);
  const auto lse = to_host(d.lse, rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<std::pair<float, int64_t>> all(vocab);
    double m = -INFINITY, s = 0.0;
    for (int64_t y = 0; y < vocab; ++y) {
      all[y] = {logits[r * vocab + y], y};
      m = std::max(m, static_cast<double>(logits[r * vocab + y] / temperature));
    }
    for (int64_t y = 0; y < vocab; ++y) s += std::exp(logits[r * vocab + y] / temperature - m);
    std::partial_sort(all.begin(), all.begin() + k, all.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    if (!close(lse[r], m + std::log(s), 1e-5)) mismatch(failures, "lse", r, 0, lse[r], m + std::log(s));
    for (int64_t j = 0; j < k; ++j) {
      if (ids[r * k + j] != all[j].second) mismatch(failures, "id", r, j, ids[r * k + j], all[j].second);
      const double want = all[j].first / temperature - lse[r];
      if (!close(logp[r * k + j], want, 1e-5)) mismatch(failures, "ref_logp", r, j, logp[r * k + j], want);
    }
  }
}

// Vocabularies of several 4,096-logit chunks (one of a single logit, 4,097), k up to a whole chunk, ties within and
// across chunks, a ±50 logit in the last chunk.
void check_chunked_expansion(std::mt19937_64& gen, int& failures) {
  struct Shape {
    int64_t rows, vocab, k;
  };
  std::normal_distribution<float> normal(0.f, 5.f);
  for (const Shape shape : {Shape{2, 4097, 20}, Shape{3, 9000, 64}, Shape{2, 128256, 20}, Shape{1, 5000, 4096}}) {
    std::vector<float> logits(shape.rows * shape.vocab);
    for (auto& x : logits) x = std::round(normal(gen) * 2.f) / 2.f;
    logits[shape.vocab - 1] = 50.f;
    logits[logits.size() - 1] = -50.f;
    float* d_logits = to_device(logits);
    DeviceExpansion d;
    if (!expand(d_logits, shape.rows, shape.vocab, shape.k, 0.7f, d)) {
      mismatch(failures, "launch, vocab", 0, shape.vocab, 0, 0);
      continue;
    }
    check_expansion(logits, shape.rows, shape.vocab, shape.k, 0.7f, d, failures);
  }
}

int run() {
  const int64_t rows = 6, vocab = 3000, k = 8, n_atoms = 5;
  const float temperature = 0.7f;
  std::mt19937_64 gen(7);
  std::normal_distribution<float> normal(0.f, 5.f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<float> logits(rows * vocab), head_out(rows * k * n_atoms), atoms(n_atoms), eta(rows), floor(rows, 0.f);
  for (auto& x : logits) x = std::round(normal(gen) * 4.f) / 4.f;  // coarse values: ties happen
  logits[0] = 50.f;
  logits[vocab + 1] = -50.f;
  for (auto& x : head_out) x = normal(gen);
  for (int i = 0; i < n_atoms; ++i) atoms[i] = static_cast<float>(i) / (n_atoms - 1);
  const float etas[] = {0.01f, 1.f, 100.f, INFINITY, 0.5f, 2.f};
  std::copy(etas, etas + rows, eta.begin());
  std::vector<double> noise(rows);
  for (auto& u : noise) u = uniform(gen);

  float* d_logits = to_device(logits);
  DeviceExpansion d;
  if (!expand(d_logits, rows, vocab, k, temperature, d)) {
    std::printf("FAIL expand launch\n");
    return 1;
  }
  int failures = 0;
  check_expansion(logits, rows, vocab, k, temperature, d, failures);
  check_chunked_expansion(gen, failures);
  const auto ids = to_host(d.ids, rows * k);  // the guided draw's host reference reads the same candidates
  const auto logp = to_host(d.logp, rows * k);
  const auto lse = to_host(d.lse, rows);

  float *d_head = to_device(head_out), *d_atoms = to_device(atoms), *d_eta = to_device(eta),
        *d_floor = to_device(floor);
  double* d_noise = to_device(noise);
  std::vector<float> scratch_f(2 * rows * k);
  std::vector<int64_t> scratch_i(2 * rows * k), zeros_i(rows);
  std::vector<float> zeros_f(rows);
  float* d_scratch_f = to_device(scratch_f);
  int64_t* d_scratch_i = to_device(scratch_i);
  int64_t *d_token = to_device(zeros_i), *d_cand = to_device(zeros_i);
  float *d_pi = to_device(zeros_f), *d_ref = to_device(zeros_f), *d_kl = to_device(zeros_f);
  for (int head = 0; head < 3; ++head) {
    for (double top_p : {1.0, 0.9}) {
      for (bool cands_only : {false, true}) {
        const int64_t n = head == qsharp::kHistogramHead ? n_atoms : 1;
        qsharp::cuda::GuidedSampleArgs a{d_logits, d.ids, d.logp, d.lse, d_head, d_atoms, d_eta, d_floor, d_noise,
                                         rows, vocab, k, n, head, temperature, top_p, cands_only,
                                         d_scratch_f, d_scratch_f + rows * k, d_scratch_i, d_scratch_i + rows * k,
                                         d_token, d_cand, d_pi, d_ref, d_kl};
        if (qsharp::cuda::guided_sample(a, nullptr) != cudaSuccess) {
          std::printf("FAIL guided launch\n");
          return 1;
        }
        const auto token = to_host(d_token, rows), cand = to_host(d_cand, rows);
        const auto pi = to_host(d_pi, rows), ref = to_host(d_ref, rows), kl = to_host(d_kl, rows);
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<float> off(k), key(k);
          std::vector<int64_t> order(k), sorted_ids(k);
          const qsharp::StepRow<float> row{logits.data() + r * vocab, vocab, temperature, ids.data() + r * k,
                                           logp.data() + r * k, lse[r], k, head_out.data() + r * k * n, head,
                                           atoms.data(), n, eta[r], floor[r], cands_only, top_p, noise[r]};
          const auto want = qsharp::guided_step_row(row, {off.data(), key.data(), order.data(), sorted_ids.data()});
          const int64_t config = (head * 2 + (top_p < 1.0)) * 2 + cands_only;  // which of the 12 settings
          if (token[r] != want.token) mismatch(failures, "token", r, config, token[r], want.token);
          if (cand[r] != want.cand_index) mismatch(failures, "cand", r, config, cand[r], want.cand_index);
          if (!close(pi[r], want.logp_pi, 1e-4)) mismatch(failures, "logp_pi", r, config, pi[r], want.logp_pi);
          if (!close(ref[r], want.logp_ref, 1e-5)) mismatch(failures, "logp_ref", r, config, ref[r], want.logp_ref);
          if (!close(kl[r], want.kl, 1e-4)) mismatch(failures, "kl", r, config, kl[r], want.kl);
        }
      }
    }
  }
  std::printf(failures == 0 ? "cuda fused step: all checks passed\n" : "cuda fused step: %d mismatches\n", failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main() { return qsharp::testing::run_if_gpu(run); }
