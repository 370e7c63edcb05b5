// The fused step on the CPU. Candidate expansion reads each row once: blocks of kBlock logits update a running
// max and an online sum of exponentials (a polynomial exp on GCC/Clang vectors), and only blocks whose
// max beats the current k-th best are scanned into a size-k min-heap. The guided O(k) part is the shared scalar
// code of qsharp_math.h.
#include "fused_step.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "../qsharp_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vectors inside always-inlined helpers only

namespace qsharp::cpu {

namespace {

constexpr int64_t kBlock = 256;  // logits per block: the unit of the max/sum update and of the top-k skip test
constexpr int kWidth = 8;        // floats per vector

// GCC/Clang vector extensions: portable source that becomes SSE, AVX2 or NEON code.
using f8 = float __attribute__((vector_size(kWidth * sizeof(float))));
using i8 = int32_t __attribute__((vector_size(kWidth * sizeof(int32_t))));

// AVX2 and baseline clones of the hot row function, chosen at load time (GCC on x86-64 only).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif
#define QS_INLINE inline __attribute__((always_inline))  // inlined into each clone, compiled for its target

QS_INLINE f8 splat(float v) { return f8{} + v; }

QS_INLINE f8 load(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

QS_INLINE float horizontal_max(f8 v) {
  float m = v[0];
  for (int j = 1; j < kWidth; ++j) m = std::max(m, v[j]);
  return m;
}

// e^x for x <= 0 to about 2 ulp (x below -87 gives ~1e-38, not 0: harmless next to the row's max term of 1).
// Range reduction x = n ln2 + r with |r| <= ln2/2, degree-6 Taylor polynomial, 2^n built in the exponent bits.
QS_INLINE f8 exp_nonpositive(f8 x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const f8 shifter = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
  const f8 t = x * 1.44269504f + shifter;
  const f8 n = t - shifter;
  const f8 r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  f8 p = splat(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const i8 bits = ((i8)t - 0x4B400000 + 127) << 23;  // vector casts reinterpret the bits
  return p * (f8)bits;
}

QS_INLINE float exp_nonpositive(float x) { return exp_nonpositive(splat(x))[0]; }

QS_INLINE float block_max(const float* x, int64_t n) {
  f8 lanes = splat(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    const f8 v = load(x + i);
    lanes = v > lanes ? v : lanes;
  }
  float m = horizontal_max(lanes);
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// Σ e^{x/T - m} over one block, m >= every x/T.
QS_INLINE float block_exp_sum(const float* x, int64_t n, float temperature, float m) {
  f8 acc0 = {}, acc1 = {};
  int64_t i = 0;
  for (; i + 2 * kWidth <= n; i += 2 * kWidth) {
    acc0 += exp_nonpositive(load(x + i) / temperature - m);
    acc1 += exp_nonpositive(load(x + i + kWidth) / temperature - m);
  }
  const f8 acc = acc0 + acc1;
  float s = 0.0f;
  for (int j = 0; j < kWidth; ++j) s += acc[j];
  for (; i < n; ++i) s += exp_nonpositive(x[i] / temperature - m);
  return s;
}

// The k best (logit, id) pairs seen so far; the heap's front is the worst of them (lowest logit, then highest id).
class TopK {
 public:
  explicit TopK(int64_t k) : k_(k) { heap_.reserve(k); }
  bool full() const { return static_cast<int64_t>(heap_.size()) == k_; }
  float threshold() const { return heap_.front().first; }

  // Ids arrive in ascending order, so an equal logit never displaces a kept one (ties: lower id first).
  void offer(float x, int64_t id) {
    if (!full()) {
      heap_.emplace_back(x, id);
      std::push_heap(heap_.begin(), heap_.end(), better);
    } else if (x > heap_.front().first) {
      std::pop_heap(heap_.begin(), heap_.end(), better);
      heap_.back() = {x, id};
      std::push_heap(heap_.begin(), heap_.end(), better);
    }
  }

  std::vector<std::pair<float, int64_t>>& sorted() {
    std::sort_heap(heap_.begin(), heap_.end(), better);
    return heap_;
  }

 private:
  static bool better(const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  }
  int64_t k_;
  std::vector<std::pair<float, int64_t>> heap_;
};

QS_VECTOR_CLONES void expand_row(const float* x, int64_t vocab, float temperature, int64_t k, int64_t* ids, float* ref_logp,
                float* lse) {
  TopK top(k);
  float max_logit = -std::numeric_limits<float>::infinity();
  double sum = 0.0;  // Σ e^{x/T - max_logit/T}, rescaled whenever the max grows
  for (int64_t start = 0; start < vocab; start += kBlock) {
    const int64_t n = std::min(kBlock, vocab - start);
    const float* block = x + start;
    const float m = block_max(block, n);
    if (m > max_logit) {
      sum *= std::exp(static_cast<double>(max_logit / temperature) - static_cast<double>(m / temperature));
      max_logit = m;
    }
    if (max_logit > -std::numeric_limits<float>::infinity())
      sum += block_exp_sum(block, n, temperature, max_logit / temperature);
    if (top.full() && !(m > top.threshold())) continue;
    for (int64_t i = 0; i < n; ++i) top.offer(block[i], start + i);
  }
  *lse = static_cast<float>(static_cast<double>(max_logit / temperature) + std::log(sum));
  const auto& best = top.sorted();
  for (int64_t j = 0; j < k; ++j) {
    ids[j] = best[j].second;
    ref_logp[j] = best[j].first / temperature - *lse;
  }
}

}  // namespace

void expand_candidates(const at::Tensor& logits, double temperature, at::Tensor& ids, at::Tensor& ref_logp,
                       at::Tensor& lse) {
  const int64_t rows = logits.size(0), vocab = logits.size(1), k = ids.size(1);
  const float* x = logits.const_data_ptr<float>();
  int64_t* id_ptr = ids.data_ptr<int64_t>();
  float* logp_ptr = ref_logp.data_ptr<float>();
  float* lse_ptr = lse.data_ptr<float>();
  const float t = static_cast<float>(temperature);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      expand_row(x + r * vocab, vocab, t, k, id_ptr + r * k, logp_ptr + r * k, lse_ptr + r);
  });
}

void guided_sample(const at::Tensor& logits, const at::Tensor& ids, const at::Tensor& ref_logp, const at::Tensor& lse,
                   const at::Tensor& head_out, int head, const at::Tensor& atoms, const at::Tensor& eta,
                   const at::Tensor& floor, const at::Tensor& noise, double temperature, double top_p,
                   bool candidates_only, at::Tensor& token, at::Tensor& cand_index, at::Tensor& logp_pi,
                   at::Tensor& logp_ref, at::Tensor& kl) {
  const int64_t rows = logits.size(0), vocab = logits.size(1), k = ids.size(1);
  const int64_t n_atoms = head == kHistogramHead ? atoms.numel() : 1;
  const float* x = logits.const_data_ptr<float>();
  const float* out_ptr = head_out.const_data_ptr<float>();
  const float* atom_ptr = head == kHistogramHead ? atoms.const_data_ptr<float>() : nullptr;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> off(k), key(k);
    std::vector<int64_t> order(k), sorted_ids(k);
    const StepScratch<float> scratch{off.data(), key.data(), order.data(), sorted_ids.data()};
    for (int64_t r = begin; r < end; ++r) {
      const StepRow<float> row{x + r * vocab,
                               vocab,
                               static_cast<float>(temperature),
                               ids.const_data_ptr<int64_t>() + r * k,
                               ref_logp.const_data_ptr<float>() + r * k,
                               lse.const_data_ptr<float>()[r],
                               k,
                               out_ptr + r * k * n_atoms,
                               head,
                               atom_ptr,
                               n_atoms,
                               eta.const_data_ptr<float>()[r],
                               floor.const_data_ptr<float>()[r],
                               candidates_only,
                               top_p,
                               noise.const_data_ptr<double>()[r]};
      const StepOut<float> o = guided_step_row(row, scratch);
      token.data_ptr<int64_t>()[r] = o.token;
      cand_index.data_ptr<int64_t>()[r] = o.cand_index;
      logp_pi.data_ptr<float>()[r] = o.logp_pi;
      logp_ref.data_ptr<float>()[r] = o.logp_ref;
      kl.data_ptr<float>()[r] = o.kl;
    }
  });
}

}  // namespace qsharp::cpu
