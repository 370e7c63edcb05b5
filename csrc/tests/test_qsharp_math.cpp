// Unit tests of the scalar numerics in qsharp_math.h against naive long-double formulas (no torch needed).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "qsharp_math.h"

namespace {

int failures = 0;

void expect_close(long double got, long double want, long double rtol, long double atol, const char* what, double a,
                  double b) {
  const bool ok = std::isfinite(static_cast<double>(got)) && std::fabs(got - want) <= rtol * std::fabs(want) + atol;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s(%g, %g): got %.17Lg, want %.17Lg\n", what, a, b, got, want);
  }
}

// ln(1 - p + p e^{1/η}) = log1p(p (e^{1/η} - 1)), direct in long double (e^{100} fits easily).
long double naive_bernoulli(long double logit, long double eta) {
  const long double p = 1.0L / (1.0L + std::exp(-logit));
  return std::log1p(p * std::expm1(1.0L / eta));
}

long double naive_histogram(const std::vector<long double>& logits, const std::vector<long double>& atoms,
                            long double eta) {
  long double z = 0, tilted = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    z += std::exp(logits[i]);
    tilted += std::exp(logits[i]) * std::exp(atoms[i] / eta);
  }
  return std::log(tilted / z);
}

template <typename T>
void test_bernoulli(T rtol) {
  std::mt19937_64 gen(12345);
  std::normal_distribution<double> normal(0.0, 15.0);
  std::vector<double> logits = {-50, 50, 0, -20.7, 20.7, -1e-4, 1e-4};
  for (int i = 0; i < 200; ++i) logits.push_back(normal(gen));
  for (double eta : {0.01, 0.1, 1.0, 100.0}) {
    const T c = qsharp::log_expm1(static_cast<T>(1.0 / eta));
    for (double logit : logits) {
      const T x = static_cast<T>(logit);
      expect_close(qsharp::bernoulli_log_offset(x, c), naive_bernoulli(x, eta), rtol, 0.0L, "bernoulli", logit, eta);
    }
  }
  // η = ∞: the offset is exactly 0.
  const T c_inf = qsharp::log_expm1(T(0));
  if (qsharp::bernoulli_log_offset(T(3), c_inf) != T(0)) {
    ++failures;
    std::printf("FAIL bernoulli at eta = inf is not 0\n");
  }
}

template <typename T>
void test_histogram(T rtol, T atol) {
  std::mt19937_64 gen(777);
  std::normal_distribution<double> normal(0.0, 10.0);
  for (int n : {2, 11, 51}) {
    std::vector<T> logits(n), atoms(n);
    std::vector<long double> logits_ld(n), atoms_ld(n);
    for (int i = 0; i < n; ++i) {
      logits[i] = static_cast<T>(normal(gen));
      atoms[i] = static_cast<T>(static_cast<double>(i) / (n - 1));
      logits_ld[i] = logits[i];
      atoms_ld[i] = atoms[i];
    }
    for (double eta : {0.01, 0.1, 1.0, 100.0}) {
      const T got = qsharp::histogram_log_offset(logits.data(), atoms.data(), n, static_cast<T>(1.0 / eta));
      expect_close(got, naive_histogram(logits_ld, atoms_ld, eta), rtol, atol, "histogram", n, eta);
    }
  }
}

// Every head's candidate offset from the η terms computed once per row (row_eta), at extreme η and logits, against
// the naive formulas; η = ∞ (an unguided row) gives exactly 0 for every head.
void test_head_log_offsets_from_row_eta() {
  const std::vector<double> hist = {-50.0, 2.0, 0.3, 50.0}, atoms = {-1.0, 0.0, 0.5, 1.0};
  const std::vector<long double> hist_ld(hist.begin(), hist.end()), atoms_ld(atoms.begin(), atoms.end());
  for (double eta : {0.01, 1.0, 100.0}) {
    for (double x : {-50.0, -1.0, 0.0, 50.0}) {
      const auto b = qsharp::row_eta(qsharp::kBernoulliHead, eta), m = qsharp::row_eta(qsharp::kMeanHead, eta);
      expect_close(qsharp::head_log_offset(qsharp::kBernoulliHead, &x, atoms.data(), 1, b), naive_bernoulli(x, eta),
                   1e-12, 0.0L, "row_eta bernoulli", x, eta);
      expect_close(qsharp::head_log_offset(qsharp::kMeanHead, &x, atoms.data(), 1, m),
                   x / static_cast<long double>(eta), 1e-15, 0.0L, "row_eta mean", x, eta);
    }
    const auto h = qsharp::row_eta(qsharp::kHistogramHead, eta);
    expect_close(qsharp::head_log_offset(qsharp::kHistogramHead, hist.data(), atoms.data(), 4, h),
                 naive_histogram(hist_ld, atoms_ld, eta), 1e-12, 1e-13, "row_eta histogram", 4, eta);
  }
  const double x = 3.0;
  for (int head : {qsharp::kBernoulliHead, qsharp::kHistogramHead, qsharp::kMeanHead}) {
    const auto e = qsharp::row_eta(head, static_cast<double>(INFINITY));
    if (qsharp::head_log_offset(head, head == qsharp::kHistogramHead ? hist.data() : &x, atoms.data(), 4, e) != 0.0) {
      ++failures;
      std::printf("FAIL head %d at eta = inf is not 0\n", head);
    }
  }
}

}  // namespace

int main() {
  test_bernoulli<double>(1e-12);
  test_bernoulli<float>(1e-5f);
  // The histogram offset is a difference of two log-sum-exps of size up to 1/η: its error is absolute
  // (a few ulps of 1/η), which is what matters once it is added to a logit.
  test_histogram<double>(1e-12, 1e-13);
  test_histogram<float>(1e-6f, 2e-5f);
  test_head_log_offsets_from_row_eta();
  if (failures == 0) std::printf("qsharp_math: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
