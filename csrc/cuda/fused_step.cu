#include "fused_step.cuh"

#include "../qsharp_math.h"

namespace qsharp::cuda {

namespace {

constexpr int kThreads = 256;

// (max, Σ e^{z - max}) of a set of z, merged associatively.
struct MaxSum {
  float m, s;
};

__device__ MaxSum merge(MaxSum a, MaxSum b) {
  if (b.m > a.m) {
    const MaxSum t = a;
    a = b;
    b = t;
  }
  if (b.m == -INFINITY) return a;
  return {a.m, a.s + b.s * expf(b.m - a.m)};
}

// A (logit, id) candidate; `better` is the top-k order: higher logit, then lower id. id < 0 means none.
struct Best {
  float x;
  int64_t id;
};

__device__ bool better(Best a, Best b) {
  if (b.id < 0) return a.id >= 0;
  if (a.id < 0) return false;
  return a.x > b.x || (a.x == b.x && a.id < b.id);
}

template <typename V, typename Op>
__device__ V block_reduce(V v, V* shared, Op op) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  const V out = shared[0];
  __syncthreads();
  return out;
}

struct MergeOp {
  __device__ MaxSum operator()(MaxSum a, MaxSum b) const { return merge(a, b); }
};

struct BetterOp {
  __device__ Best operator()(Best a, Best b) const { return better(a, b) ? a : b; }
};

__global__ void expand_kernel(const float* __restrict__ logits, int64_t vocab, float temperature, int64_t k,
                              int64_t* __restrict__ ids, float* __restrict__ ref_logp, float* __restrict__ lse) {
  __shared__ MaxSum shared_ms[kThreads];
  __shared__ Best shared_best[kThreads];
  const float* x = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  MaxSum ms{-INFINITY, 0.0f};
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) ms = merge(ms, MaxSum{x[i] / temperature, 1.0f});
  ms = block_reduce(ms, shared_ms, MergeOp{});
  const float row_lse = ms.m + logf(ms.s);
  if (threadIdx.x == 0) lse[blockIdx.x] = row_lse;
  Best prev{INFINITY, -1};  // every element comes after it
  for (int64_t r = 0; r < k; ++r) {
    Best mine{0.0f, -1};
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const Best cand{x[i], i};
      const bool after_prev = prev.id < 0 || better(prev, cand);
      if (after_prev && better(cand, mine)) mine = cand;
    }
    prev = block_reduce(mine, shared_best, BetterOp{});
    if (threadIdx.x == 0) {
      ids[blockIdx.x * k + r] = prev.id;
      ref_logp[blockIdx.x * k + r] = prev.x / temperature - row_lse;
    }
  }
}

__global__ void guided_kernel(GuidedSampleArgs a) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.rows) return;
  const int64_t stride = a.head == kHistogramHead ? a.n_atoms : 1;
  const StepRow<float> row{a.logits + r * a.vocab, a.vocab, a.temperature, a.ids + r * a.k, a.ref_logp + r * a.k,
                           a.lse[r], a.k, a.head_out + r * a.k * stride, a.head, a.atoms, a.n_atoms, a.eta[r],
                           a.floor[r], a.candidates_only, a.top_p, a.noise[r]};
  const StepScratch<float> scratch{a.scratch_off + r * a.k, a.scratch_key + r * a.k, a.scratch_order + r * a.k,
                                   a.scratch_sorted_ids + r * a.k};
  const StepOut<float> o = guided_step_row(row, scratch);
  a.token[r] = o.token;
  a.cand_index[r] = o.cand_index;
  a.logp_pi[r] = o.logp_pi;
  a.logp_ref[r] = o.logp_ref;
  a.kl[r] = o.kl;
}

}  // namespace

cudaError_t expand_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, int64_t k,
                              int64_t* ids, float* ref_logp, float* lse, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  expand_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, temperature, k, ids, ref_logp,
                                                                      lse);
  return cudaGetLastError();
}

cudaError_t guided_sample(const GuidedSampleArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  constexpr int kRowThreads = 64;
  const auto blocks = static_cast<unsigned>((args.rows + kRowThreads - 1) / kRowThreads);
  guided_kernel<<<blocks, kRowThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace qsharp::cuda
