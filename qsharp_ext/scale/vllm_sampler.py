"""π_ref's own sampling through vLLM: the roll-out after the switch step, and the π_ref rows of evaluation
(pass@1, maj@n, pass@n and best-of-n all read those samples).

What it covers and what it does not: vLLM samples π_ref only. Guided tokens need the value model's scores of
π_ref's top-k candidates at every step, which in vLLM means a logits processor that sees each request's
tokens so far; vLLM V1 dropped per-request logits processors (SamplingParams.logits_processors) and keeps
batch-level ones, which see the persistent batch and cannot hold a per-request value-model KV cache without
reaching into the engine's internals. So the guided roll-in stays on the torch engine (generate.py), which
hands each row's prefix to vLLM as a token prompt. vLLM's random stream is not the torch engine's: with the
same per-row seeds, the samples are π_ref's but not the same tokens, and collect records that in its
settings. Only the public API is used: `vllm.LLM`, `vllm.SamplingParams`, `LLM.generate` on token prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from qsharp_ext.errors import UserError
from qsharp_ext.generate import GenerationOutput
from qsharp_ext.loading import token_id_list


def has_gpu() -> bool:
    """vLLM's engine needs a GPU (its CPU build is a separate install this library does not target)."""
    return torch.cuda.is_available()


def import_vllm() -> Any:
    """The `vllm` module, or one clear sentence why it cannot be used here."""
    try:
        import vllm
    except ImportError:
        raise UserError('vllm=True needs vLLM: pip install "qsharp-ext[vllm]" (and a GPU)') from None
    if not has_gpu():
        raise UserError("vllm=True needs a GPU; this machine has none (drop --vllm to sample with torch)")
    return vllm


class VllmSampler:
    """One vLLM engine on π_ref's weights, fed token ids (vLLM never sees the tokenizer)."""

    def __init__(self, model: str, seed: int, gpu_memory_utilization: float) -> None:
        self.vllm = import_vllm()
        self.llm = self.vllm.LLM(
            model=model, seed=seed, gpu_memory_utilization=gpu_memory_utilization, skip_tokenizer_init=True
        )

    def continue_rows(
        self,
        prompts: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]],
        seeds: Sequence[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        eos_token_id: int | Sequence[int] | None,
    ) -> list[list[int]]:
        """prefix + π_ref's continuation of prompt + prefix, per row, `max_new_tokens` in all, the stop id included.

        `eos_token_id` is the stop id or ids (loading.stop_token_ids: a chat model may declare several).
        A row whose prefix already ended (a stop id, or the length limit) is returned as it is.
        """
        stop = token_id_list(eos_token_id)
        results = [list(p) for p in prefixes]
        open_rows = [i for i, p in enumerate(prefixes) if not _finished(p, max_new_tokens, stop)]
        if not open_rows:
            return results
        requests = [{"prompt_token_ids": list(prompts[i]) + list(prefixes[i])} for i in open_rows]
        params = [
            self.vllm.SamplingParams(
                n=1,
                temperature=temperature,
                top_p=top_p,
                seed=seeds[i],
                max_tokens=max_new_tokens - len(prefixes[i]),
                stop_token_ids=stop,
                detokenize=False,
            )
            for i in open_rows
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        for i, request in zip(open_rows, outputs, strict=True):
            results[i] += completion_tokens(request.outputs[0], stop)
        return results

    def sample(
        self, prompts: Sequence[Sequence[int]], num_samples: int, seeds: Sequence[int], **kwargs: Any
    ) -> GenerationOutput:
        """`num_samples` π_ref completions per prompt (rows prompt-major), as the torch engine returns them."""
        rows = [p for p in prompts for _ in range(num_samples)]
        completions = self.continue_rows(rows, [[] for _ in rows], seeds, **kwargs)
        stop = token_id_list(kwargs.get("eos_token_id"))
        return generation_output(completions, num_samples, pad_id=stop[0] if stop else 0)


def _finished(prefix: Sequence[int], max_new_tokens: int, stop: Sequence[int]) -> bool:
    return len(prefix) >= max_new_tokens or (bool(prefix) and prefix[-1] in stop)


def completion_tokens(output: Any, eos_token_id: int | Sequence[int] | None) -> list[int]:
    """A vLLM CompletionOutput's tokens, ending with the stop id it stopped on (as the torch engine's do).

    vLLM may leave that id out of `token_ids`; its `stop_reason` names a stop id it stopped on, and is None
    when it stopped on the model's own EOS, which is the first id (the tokenizer's).
    """
    stop, tokens = token_id_list(eos_token_id), list(output.token_ids)
    if output.finish_reason != "stop" or not stop or (tokens and tokens[-1] in stop):
        return tokens
    reason = getattr(output, "stop_reason", None)
    return [*tokens, reason if reason in stop else stop[0]]


def generation_output(completions: list[list[int]], num_samples: int, pad_id: int) -> GenerationOutput:
    """π_ref completions as a GenerationOutput: KL to π_ref is 0, log-probs are not computed (left 0)."""
    n, width = len(completions), max(map(len, completions), default=0)
    sequences = torch.full((n, width), pad_id, dtype=torch.long)
    for row, tokens in enumerate(completions):
        sequences[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    zeros = torch.zeros(n, width)
    index = torch.arange(n)
    return GenerationOutput(
        sequences=sequences, lengths=torch.tensor([len(t) for t in completions]), logp_pi=zeros, logp_ref=zeros,
        kl=torch.zeros(n), prompt_index=index // num_samples, eta=[None] * n,
        sample_index=index % num_samples,
    )  # fmt: skip
