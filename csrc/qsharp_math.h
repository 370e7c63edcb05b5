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

// ---------------------------------------------------------------------------------------------------------------
// One row of the fused guided decoding step (qsharp_ext/kernels/fused_step.py has the torch reference): the O(k)
// part that follows candidate expansion. Serial per row, so that the CPU kernel and one CUDA thread run the same
// code. Accumulates in double; inputs and outputs are float.

namespace qsharp {

enum HeadKind : int { kBernoulliHead = 0, kHistogramHead = 1, kMeanHead = 2 };

// What a row's η contributes to every candidate's log-offset, computed once per row: 1/η and, for the
// Bernoulli head, ln(e^{1/η} - 1) (a log and an exp per row, not per candidate). η = ∞ (unguided) gives
// 1/η = 0 and ln(e^0 - 1) = -∞: offsets of 0 for every head.
template <typename T>
struct RowEta {
  T eta, inv_eta, log_expm1_inv_eta;
};

template <typename T>
QS_HOST_DEVICE RowEta<T> row_eta(int head, T eta) {
  const T inv_eta = T(1) / eta;
  return {eta, inv_eta, head == kBernoulliHead ? log_expm1(inv_eta) : T(0)};
}

// The log-offset of one candidate; `out` points at its head output (one value, or n_atoms histogram logits).
template <typename T>
QS_HOST_DEVICE T head_log_offset(int head, const T* out, const T* atoms, int64_t n_atoms, const RowEta<T>& e) {
  if (head == kBernoulliHead) return bernoulli_log_offset(out[0], e.log_expm1_inv_eta);
  if (head == kHistogramHead) return histogram_log_offset(out, atoms, n_atoms, e.inv_eta);
  return out[0] / e.eta;
}

// In-place heapsort of a[0..n) by `less` (no recursion, no allocation: it runs inside one GPU thread too).
template <typename I, typename Less>
QS_HOST_DEVICE void sift_down(I* a, int64_t root, int64_t n, const Less& less) {
  for (int64_t child = 2 * root + 1; child < n; child = 2 * root + 1) {
    if (child + 1 < n && less(a[child], a[child + 1])) ++child;
    if (!less(a[root], a[child])) return;
    const I tmp = a[root];
    a[root] = a[child];
    a[child] = tmp;
    root = child;
  }
}

template <typename I, typename Less>
QS_HOST_DEVICE void heap_sort(I* a, int64_t n, const Less& less) {
  for (int64_t s = n / 2 - 1; s >= 0; --s) sift_down(a, s, n, less);
  for (int64_t end = n - 1; end > 0; --end) {
    const I tmp = a[0];
    a[0] = a[end];
    a[end] = tmp;
    sift_down(a, 0, end, less);
  }
}

// Sampling order of the candidates: descending guided logit, ties by lower candidate position.
template <typename T>
struct ByKeyDescending {
  const T* key;
  QS_HOST_DEVICE bool operator()(int64_t a, int64_t b) const { return key[a] > key[b] || (key[a] == key[b] && a < b); }
};

struct Ascending {
  QS_HOST_DEVICE bool operator()(int64_t a, int64_t b) const { return a < b; }
};

// ln Σ_{y not a candidate} π_ref(y) = ln(1 - Σ_c π_ref(c)); -inf when nothing is left.
template <typename T>
QS_HOST_DEVICE double log_rest_mass(const T* ref_logp, int64_t k, bool whole_vocab) {
  if (whole_vocab) return -HUGE_VAL;
  double s = 0.0;
  for (int64_t c = 0; c < k; ++c) s += exp(static_cast<double>(ref_logp[c]));
  return s < 1.0 ? log1p(-s) : -HUGE_VAL;
}

// The guided distribution summarized in O(k): ln Zg = ln Σ_y π_ref(y) e^{offset(y)}, the guided mass of the
// candidates and of the rest, and the exact KL(π ‖ π_ref) = Σ_y π(y) (offset(y) - ln Zg).
struct GuidedStats {
  double log_z, cand_mass, rest_mass, kl;
};

// `log_rest` is log_rest_mass(), or -inf when sampling is restricted to the candidates.
template <typename T>
QS_HOST_DEVICE GuidedStats guided_stats(const T* ref_logp, const T* off, int64_t k, double floor, double log_rest) {
  const bool has_rest = log_rest > -HUGE_VAL;
  double m = has_rest ? floor + log_rest : -HUGE_VAL;
  for (int64_t c = 0; c < k; ++c) m = fmax(m, static_cast<double>(ref_logp[c]) + off[c]);
  double s = has_rest ? exp(floor + log_rest - m) : 0.0;
  for (int64_t c = 0; c < k; ++c) s += exp(static_cast<double>(ref_logp[c]) + off[c] - m);
  GuidedStats st{m + log(s), 0.0, 0.0, 0.0};
  for (int64_t c = 0; c < k; ++c) {
    const double p = exp(static_cast<double>(ref_logp[c]) + off[c] - st.log_z);
    st.cand_mass += p;
    if (p > 0.0) st.kl += p * (off[c] - st.log_z);
  }
  if (has_rest) {
    st.rest_mass = exp(floor + log_rest - st.log_z);
    if (st.rest_mass > 0.0) st.kl += st.rest_mass * (floor - st.log_z);
  }
  st.kl = fmax(st.kl, 0.0);
  return st;
}

// Inverse-CDF draw over the candidates in sampling order. Top-p keeps the smallest prefix whose guided mass
// reaches top_p when the candidates hold at least top_p; otherwise nothing is truncated. `cand` is the drawn
// candidate position, or -1 when u falls past the candidates: then `excess` of mass is left to find among the
// non-candidates (in id order). `last` is the last candidate with positive mass (the fallback under rounding).
struct Pick {
  int64_t cand, last;
  double excess;
};

template <typename T>
QS_HOST_DEVICE Pick pick_candidate(const T* ref_logp, const T* off, const int64_t* order, int64_t k,
                                   const GuidedStats& st, double top_p, double u) {
  int64_t n_keep = k;
  double total = st.cand_mass + st.rest_mass;
  const bool truncate = top_p < 1.0 && st.cand_mass >= top_p;
  if (truncate) {
    double cum = 0.0;
    for (int64_t i = 0; i < k && !(cum >= top_p); ++i) {
      cum += exp(static_cast<double>(ref_logp[order[i]]) + off[order[i]] - st.log_z);
      n_keep = i + 1;
    }
    total = cum;
  }
  const double target = u * total;
  double cum = 0.0;
  Pick pick{-1, -1, 0.0};
  for (int64_t i = 0; i < n_keep; ++i) {
    const int64_t c = order[i];
    const double p = exp(static_cast<double>(ref_logp[c]) + off[c] - st.log_z);
    cum += p;
    if (p > 0.0) pick.last = c;
    if (cum > target) {
      pick.cand = c;
      return pick;
    }
  }
  if (pick.last < 0) pick.last = order[0];
  if (truncate || !(st.rest_mass > 0.0)) {
    pick.cand = pick.last;
    return pick;
  }
  pick.excess = target - cum;
  return pick;
}

// ln Σ_{y not a candidate} π_ref(y) summed exactly over the vocabulary (O(V)): needed when the candidates hold
// nearly all of π_ref's mass, so that 1 - Σ_c π_ref(c) has lost its digits, yet the floor offset is large enough
// that those digits matter. `sorted_ids` are the candidate ids, ascending.
template <typename T>
QS_HOST_DEVICE double exact_log_rest_mass(const T* logits, int64_t vocab, T temperature, T lse,
                                          const int64_t* sorted_ids, int64_t k) {
  double m = -HUGE_VAL;
  for (int64_t y = 0, next = 0; y < vocab; ++y) {
    if (next < k && sorted_ids[next] == y) {
      ++next;
      continue;
    }
    m = fmax(m, static_cast<double>(logits[y] / temperature - lse));
  }
  if (m == -HUGE_VAL) return m;
  double s = 0.0;
  for (int64_t y = 0, next = 0; y < vocab; ++y) {
    if (next < k && sorted_ids[next] == y) {
      ++next;
      continue;
    }
    s += exp(static_cast<double>(logits[y] / temperature - lse) - m);
  }
  return m + log(s);
}

// The first non-candidate (ascending id) whose cumulative guided mass exceeds `excess`; -1 if rounding leaves
// none (the caller then falls back to the last candidate). `sorted_ids` are the candidate ids, ascending.
template <typename T>
QS_HOST_DEVICE int64_t walk_non_candidates(const T* logits, int64_t vocab, T temperature, T lse,
                                           const int64_t* sorted_ids, int64_t k, double floor_minus_log_z,
                                           double excess) {
  double cum = 0.0;
  int64_t next = 0, last = -1;
  for (int64_t y = 0; y < vocab; ++y) {
    if (next < k && sorted_ids[next] == y) {
      ++next;
      continue;
    }
    const T ref_logp = logits[y] / temperature - lse;
    const double p = exp(static_cast<double>(ref_logp) + floor_minus_log_z);
    cum += p;
    if (p > 0.0) last = y;
    if (cum > excess) return y;
  }
  return last;
}

// 1 - Σ_c π_ref(c) from float candidates is accurate to ~1e-6 absolute. That error moves ln Zg by about
// 1e-6 · e^{floor - ln Zg}: negligible unless the non-candidates outweigh the candidates' guided mass (offsets
// below the floor, as a mean head with negative E[z] gives). Then, if little mass is left, sum it exactly.
template <typename T>
QS_HOST_DEVICE bool needs_exact_rest(double log_rest, T floor, double log_z) {
  return log_rest < -4.6 && static_cast<double>(floor) - log_z > 1.0;  // rest < 1 %
}

// One row's inputs to the guided step; head outputs are (k,) or (k, n_atoms) row-major.
template <typename T>
struct StepRow {
  const T* logits;
  int64_t vocab;
  T temperature;
  const int64_t* ids;
  const T* ref_logp;
  T lse;
  int64_t k;
  const T* head_out;
  int head;
  const T* atoms;
  int64_t n_atoms;
  T eta, floor;
  bool candidates_only;
  double top_p, u;
};

// Per-row scratch of k entries each.
template <typename T>
struct StepScratch {
  T* off;
  T* key;
  int64_t* order;
  int64_t* sorted_ids;
};

template <typename T>
struct StepOut {
  int64_t token, cand_index;
  T logp_pi, logp_ref, kl;
};

template <typename T>
QS_HOST_DEVICE StepOut<T> guided_step_row(const StepRow<T>& r, const StepScratch<T>& s) {
  const int64_t stride = r.head == kHistogramHead ? r.n_atoms : 1;
  const RowEta<T> e = row_eta(r.head, r.eta);
  for (int64_t c = 0; c < r.k; ++c) {
    s.off[c] = head_log_offset(r.head, r.head_out + c * stride, r.atoms, r.n_atoms, e);
    s.key[c] = r.logits[r.ids[c]] / r.temperature + s.off[c];  // the guided logit
    s.order[c] = c;
  }
  heap_sort(s.order, r.k, ByKeyDescending<T>{s.key});
  for (int64_t c = 0; c < r.k; ++c) s.sorted_ids[c] = r.ids[c];
  const bool has_rest = !r.candidates_only && r.k < r.vocab;
  double log_rest = has_rest ? log_rest_mass(r.ref_logp, r.k, false) : -HUGE_VAL;
  GuidedStats st = guided_stats(r.ref_logp, s.off, r.k, static_cast<double>(r.floor), log_rest);
  bool ids_sorted = false;
  if (has_rest && needs_exact_rest(log_rest, r.floor, st.log_z)) {
    heap_sort(s.sorted_ids, r.k, Ascending{});
    ids_sorted = true;
    log_rest = exact_log_rest_mass(r.logits, r.vocab, r.temperature, r.lse, s.sorted_ids, r.k);
    st = guided_stats(r.ref_logp, s.off, r.k, static_cast<double>(r.floor), log_rest);
  }
  const Pick pick = pick_candidate(r.ref_logp, s.off, s.order, r.k, st, r.top_p, r.u);
  StepOut<T> out{-1, pick.cand, T(0), T(0), static_cast<T>(st.kl)};
  if (pick.cand < 0) {
    if (!ids_sorted) heap_sort(s.sorted_ids, r.k, Ascending{});
    const double floor_minus_log_z = static_cast<double>(r.floor) - st.log_z;
    out.token = walk_non_candidates(r.logits, r.vocab, r.temperature, r.lse, s.sorted_ids, r.k, floor_minus_log_z,
                                    pick.excess);
    if (out.token < 0) out.cand_index = pick.last;
  }
  if (out.cand_index >= 0) {
    out.token = r.ids[out.cand_index];
    out.logp_ref = r.ref_logp[out.cand_index];
    out.logp_pi = static_cast<T>(static_cast<double>(out.logp_ref) + s.off[out.cand_index] - st.log_z);
  } else {
    out.logp_ref = r.logits[out.token] / r.temperature - r.lse;
    out.logp_pi = static_cast<T>(static_cast<double>(out.logp_ref) + r.floor - st.log_z);
  }
  return out;
}

}  // namespace qsharp
