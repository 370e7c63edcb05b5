// CUDA fused guided decoding step on raw device pointers (no torch dependency, so CMake can build it alone).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace qsharp::cuda {

// The top-k expansion of `logits` (rows, vocab): lse (rows,) of logits/T, the top-k ids (rows, k) by descending
// logit (ties: lower id first) and their ln π_ref (rows, k). Two passes: one block per (row, 4,096 logits) finds its
// chunk's top k and (max, Σ e^{z - max}), one block per row merges them. `scratch` holds expand_scratch_bytes(rows,
// vocab, k) bytes of device memory, 16-byte aligned.
int64_t expand_scratch_bytes(int64_t rows, int64_t vocab, int64_t k);
cudaError_t expand_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, int64_t k,
                              int64_t* ids, float* ref_logp, float* lse, void* scratch, cudaStream_t stream);

// Device pointers of one guided draw (see qsharp_ext/kernels/fused_step.py); scratch holds rows × k entries each.
struct GuidedSampleArgs {
  const float* logits;    // (rows, vocab)
  const int64_t* ids;     // (rows, k)
  const float* ref_logp;  // (rows, k)
  const float* lse;       // (rows,)
  const float* head_out;  // (rows, k) or (rows, k, n_atoms)
  const float* atoms;     // (n_atoms,), histogram heads only
  const float* eta;       // (rows,)
  const float* floor;     // (rows,)
  const double* noise;    // (rows,) uniform in [0, 1)
  int64_t rows, vocab, k, n_atoms;
  int head;  // qsharp::HeadKind
  float temperature;
  double top_p;
  bool candidates_only;
  float* scratch_off;  // (rows, k)
  float* scratch_key;  // (rows, k)
  int64_t* scratch_order;       // (rows, k)
  int64_t* scratch_sorted_ids;  // (rows, k)
  int64_t* token;               // (rows,)
  int64_t* cand_index;          // (rows,)
  float* logp_pi;               // (rows,)
  float* logp_ref;              // (rows,)
  float* kl;                    // (rows,)
};

// One thread per row runs the shared O(k) step of qsharp_math.h (and, when u falls past the candidates, its
// O(vocab) walk over the non-candidates).
cudaError_t guided_sample(const GuidedSampleArgs& args, cudaStream_t stream);

}  // namespace qsharp::cuda
