#include "fused_step.cuh"

#include "../qsharp_math.h"

namespace qsharp::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // logits per block of the top-k's first pass: 32 blocks per row at V = 128,256

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

// k rounds of a block argmax over the n candidates `at(i)`, each round taking the best one that comes after the
// previous pick in the `better` order; thread 0 passes round r's pick to `emit(r, pick)`. Fewer than k candidates:
// the later picks are none (id -1).
template <typename At, typename Emit>
__device__ void top_k_rounds(int64_t n, int64_t k, At at, Emit emit, Best* shared) {
  Best prev{0.0f, -1};
  for (int64_t r = 0; r < k; ++r) {
    Best mine{0.0f, -1};
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const Best cand = at(i);
      if ((r == 0 || better(prev, cand)) && better(cand, mine)) mine = cand;
    }
    prev = block_reduce(mine, shared, BetterOp{});
    if (threadIdx.x == 0) emit(r, prev);
  }
}

// One block per (row, chunk of kChunk logits), block index row * n_chunks + chunk: the chunk's (max, Σ e^{z - max})
// of z = x / T and its own top k, which stay in L1 across the k rounds (the row is read from memory once).
__global__ void chunk_topk_kernel(const float* __restrict__ logits, int64_t vocab, int64_t n_chunks,
                                  float temperature, int64_t k, Best* __restrict__ part_best,
                                  MaxSum* __restrict__ part_ms) {
  __shared__ MaxSum shared_ms[kThreads];
  __shared__ Best shared_best[kThreads];
  const int64_t slot = blockIdx.x;
  const int64_t begin = (slot % n_chunks) * kChunk;
  const int64_t n = vocab - begin < kChunk ? vocab - begin : kChunk;
  const float* x = logits + (slot / n_chunks) * vocab + begin;
  MaxSum ms{-INFINITY, 0.0f};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ms = merge(ms, MaxSum{x[i] / temperature, 1.0f});
  ms = block_reduce(ms, shared_ms, MergeOp{});
  if (threadIdx.x == 0) part_ms[slot] = ms;
  Best* out = part_best + slot * k;
  top_k_rounds(
      n, k, [&](int64_t i) { return Best{x[i], begin + i}; }, [&](int64_t r, Best b) { out[r] = b; }, shared_best);
}

// One block per row: the row's lse from its chunks' (max, Σ), and the top k of the chunks' n_chunks · k finalists.
__global__ void merge_topk_kernel(const Best* __restrict__ part_best, const MaxSum* __restrict__ part_ms,
                                  int64_t n_chunks, float temperature, int64_t k, int64_t* __restrict__ ids,
                                  float* __restrict__ ref_logp, float* __restrict__ lse) {
  __shared__ MaxSum shared_ms[kThreads];
  __shared__ Best shared_best[kThreads];
  const int64_t row = blockIdx.x;
  MaxSum ms{-INFINITY, 0.0f};
  for (int64_t c = threadIdx.x; c < n_chunks; c += blockDim.x) ms = merge(ms, part_ms[row * n_chunks + c]);
  ms = block_reduce(ms, shared_ms, MergeOp{});
  const float row_lse = ms.m + logf(ms.s);
  if (threadIdx.x == 0) lse[row] = row_lse;
  const Best* finalists = part_best + row * n_chunks * k;
  top_k_rounds(
      n_chunks * k, k, [&](int64_t i) { return finalists[i]; },
      [&](int64_t r, Best b) {
        ids[row * k + r] = b.id;
        ref_logp[row * k + r] = b.x / temperature - row_lse;
      },
      shared_best);
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

int64_t expand_scratch_bytes(int64_t rows, int64_t vocab, int64_t k) {
  const int64_t slots = rows * ((vocab + kChunk - 1) / kChunk);
  return slots * k * static_cast<int64_t>(sizeof(Best)) + slots * static_cast<int64_t>(sizeof(MaxSum));
}

cudaError_t expand_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, int64_t k,
                              int64_t* ids, float* ref_logp, float* lse, void* scratch, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int64_t n_chunks = (vocab + kChunk - 1) / kChunk;
  Best* part_best = static_cast<Best*>(scratch);
  MaxSum* part_ms = reinterpret_cast<MaxSum*>(part_best + rows * n_chunks * k);
  chunk_topk_kernel<<<static_cast<unsigned>(rows * n_chunks), kThreads, 0, stream>>>(
      logits, vocab, n_chunks, temperature, k, part_best, part_ms);
  merge_topk_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(part_best, part_ms, n_chunks, temperature,
                                                                         k, ids, ref_logp, lse);
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
