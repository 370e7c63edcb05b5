// The shared row code of the fused step (qsharp_math.h): heapsort order, and the O(k) KL against a brute-force
// sum over a small vocabulary.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "qsharp_math.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s\n", what);
    ++failures;
  }
}

void test_heap_sort_orders_by_key_then_index() {
  const std::vector<float> key = {1.f, 3.f, 3.f, -2.f, 1.f, 7.f};
  std::vector<int64_t> order = {0, 1, 2, 3, 4, 5};
  qsharp::heap_sort(order.data(), 6, qsharp::ByKeyDescending<float>{key.data()});
  const std::vector<int64_t> want = {5, 1, 2, 0, 4, 3};
  expect(order == want, "heap_sort by descending key, ties by lower index");
}

// KL(π ‖ π_ref) summed over every token against guided_stats' O(k) formula.
void test_guided_stats_kl_equals_brute_force() {
  std::mt19937_64 gen(11);
  std::normal_distribution<double> normal(0.0, 3.0);
  const int vocab = 40, k = 6;
  for (double floor : {0.0, -2.0, 1.5}) {
    std::vector<double> z(vocab), off(vocab, floor);
    for (auto& x : z) x = normal(gen);
    double lse = -INFINITY;
    for (double x : z) lse = std::fmax(lse, x);
    double s = 0.0;
    for (double x : z) s += std::exp(x - lse);
    lse += std::log(s);
    std::vector<float> ref_logp(k), cand_off(k);
    for (int c = 0; c < k; ++c) {  // candidates: the first k tokens
      off[c] = normal(gen);
      ref_logp[c] = static_cast<float>(z[c] - lse);
      cand_off[c] = static_cast<float>(off[c]);
      off[c] = cand_off[c];
    }
    double log_z = -INFINITY, zsum = 0.0;
    for (int y = 0; y < vocab; ++y) log_z = std::fmax(log_z, z[y] - lse + off[y]);
    for (int y = 0; y < vocab; ++y) zsum += std::exp(z[y] - lse + off[y] - log_z);
    log_z += std::log(zsum);
    double kl = 0.0;
    for (int y = 0; y < vocab; ++y) kl += std::exp(z[y] - lse + off[y] - log_z) * (off[y] - log_z);
    const double log_rest = qsharp::log_rest_mass(ref_logp.data(), k, false);
    const auto st = qsharp::guided_stats(ref_logp.data(), cand_off.data(), k, floor, log_rest);
    expect(std::fabs(st.log_z - log_z) < 1e-5, "guided_stats ln Zg");
    expect(std::fabs(st.kl - kl) < 1e-5 * (1 + kl), "guided_stats KL");
    expect(std::fabs(st.cand_mass + st.rest_mass - 1.0) < 1e-6, "guided masses sum to 1");
  }
}

}  // namespace

int main() {
  test_heap_sort_orders_by_key_then_index();
  test_guided_stats_kl_equals_brute_force();
  std::printf(failures == 0 ? "fused step math: all checks passed\n" : "fused step math: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
