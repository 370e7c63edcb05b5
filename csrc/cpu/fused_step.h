// CPU (ATen) fused guided decoding step: candidate expansion and the guided draw, float32, parallel over rows.
#pragma once

#include <ATen/ATen.h>

namespace qsharp::cpu {

// One pass over each row of `logits` (B, V) float32 contiguous: lse (B,) of logits/T, the top-k ids (B, k) by
// descending logit (ties: lower id first) and their ln π_ref (B, k).
void expand_candidates(const at::Tensor& logits, double temperature, at::Tensor& ids, at::Tensor& ref_logp,
                       at::Tensor& lse);

// The guided draw of qsharp_ext/kernels/fused_step.py; every tensor contiguous float32 / int64, one row per
// batch entry. `head` is a qsharp::HeadKind; `atoms` (n,) is read for histogram heads only.
void guided_sample(const at::Tensor& logits, const at::Tensor& ids, const at::Tensor& ref_logp, const at::Tensor& lse,
                   const at::Tensor& head_out, int head, const at::Tensor& atoms, const at::Tensor& eta,
                   const at::Tensor& floor, const at::Tensor& noise, double temperature, double top_p,
                   bool candidates_only, at::Tensor& token, at::Tensor& cand_index, at::Tensor& logp_pi,
                   at::Tensor& logp_ref, at::Tensor& kl);

}  // namespace qsharp::cpu
