"""guided_generate(): Q♯ decoding of any Hugging Face causal LM, steered by a ValueModel.

Each step: π_ref's logits → top-k candidates → all k candidates scored in one value-model pass → guided
log-probs for every row's η → sample → append. Both models keep KV caches. A V-type value model scores
the k candidates as k tokens at the same position that see the cached prefix and themselves only (a
tree attention mask); the sampled token enters its cache with the next step's candidates (scoring.py).
A Q-type value model gives every token's distribution from a 1-token pass; one that shares π_ref's frozen
layers (shared_trunk.py) reads π_ref's own hidden state instead: one backbone pass serves both models.

Rows are (prompt, η, sample) triples, so several η share one batch; η = None samples π_ref through the
same code (the kernels see it as η = ∞). Every argument is checked once, before any model runs; the
decoding loop checks nothing. It knows nothing of rewards or training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext.errors import UserError
from qsharp_ext.eta import check_etas
from qsharp_ext.fixed_shapes import FixedSlots, GrowingSlots, model_mask
from qsharp_ext.guided_policy import GUIDANCE_RULES, GuidanceRule, GuidedPolicy
from qsharp_ext.kernels import fused_step
from qsharp_ext.kernels.dispatch import check_backend
from qsharp_ext.kv_cache import FixedCache, ReservedCache
from qsharp_ext.loading import stop_token_ids, token_id_list
from qsharp_ext.prompts import prompt_token_ids
from qsharp_ext.sampling_settings import resolve_sampling
from qsharp_ext.scoring import SharedTrunkScorer, cache_kwarg, candidate_scorer, prefill
from qsharp_ext.step_graphs import Decoded, captured
from qsharp_ext.value_model import ValueModel, check_tokenizer, check_vocabulary

StepHook = Callable[[int, dict], None]


@dataclasses.dataclass
class GenerationOutput:
    """Generated tokens and their log-probs; row r is (prompt_index[r], eta[r], sample_index[r]).

    `sequences` hold the completions only, not the prompts (unlike `model.generate`'s output).
    """

    sequences: torch.Tensor  # (N, T) int64 completion tokens, pad_token_id after each row's end
    lengths: torch.Tensor  # (N,) generated tokens per row, EOS included
    logp_pi: torch.Tensor  # (N, T) ln π(token) under the guided policy (0 past the end)
    logp_ref: torch.Tensor  # (N, T) ln π_ref(token) at the sampling temperature (0 past the end)
    kl: torch.Tensor  # (N,) exact KL(π‖π_ref) of the sequence: sum of the per-token KLs
    prompt_index: torch.Tensor  # (N,)
    eta: list[float | None]  # (N,) each row's η as in `etas`: None for unguided rows (π_ref)
    sample_index: torch.Tensor  # (N,)
    seed: int | None = None  # the noise's seed (drawn when none was given; None with row_seeds or greedy)

    def token_lists(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.sequences, self.lengths.tolist(), strict=True)]

    def texts(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return tokenizer.batch_decode(self.token_lists(), skip_special_tokens=True)


@dataclasses.dataclass
class _Rows:
    """The batch being decoded: prompt-major, then η, then sample (`per_prompt` rows per prompt)."""

    prompt_ids: torch.Tensor  # (P, L) the distinct prompts, left-padded: each is prefilled once
    prompt_mask: torch.Tensor  # (P, L)
    per_prompt: int
    attention_mask: torch.Tensor  # (N, L), grows by one column per step
    etas: list[float | None]  # (N,) as given, None = unguided
    eta: torch.Tensor  # (N,) float64 for the kernels: inf = unguided
    prompt_index: torch.Tensor
    sample_index: torch.Tensor


def _left_pad(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, ids))
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    return input_ids, mask


def _check_args(top_k: int, ids: list[list[int]], vocab: int) -> None:
    if not 1 <= top_k <= vocab:
        raise UserError(f"top_k must be between 1 and the vocabulary size {vocab}, got {top_k}")
    outside = next((t for row in ids for t in row if not 0 <= t < vocab), None)
    if outside is not None:
        raise UserError(f"prompt token id {outside} is outside the model's vocabulary of {vocab} tokens")


def _context_limit(model: PreTrainedModel) -> int:
    return getattr(model.config, "max_position_embeddings", None) or math.inf


class _NoiseSource:
    """Uniform noise for sampling, drawn for every step up front: one stream for the batch, or one per row when
    row seeds are given. Drawn before the loop and moved to the device once, so that a step never waits for a
    host-to-device copy; the draws are the same as one per step (torch's generators fill tensors in order).

    Greedy decoding draws u = 0: the fused step then takes the first token of its order, the candidate with
    the highest guided logit, which is π's most likely token (non-candidates have less π_ref mass and the
    floor offset; only a mean head with E[z] below its v_min can put a non-candidate higher).
    """

    def __init__(self, n: int, seed: int, row_seeds: Sequence[int] | None, greedy: bool) -> None:
        if row_seeds is not None and len(row_seeds) != n:
            raise UserError(f"row_seeds needs one seed per row ({n}), got {len(row_seeds)}")
        seeds = [seed] if row_seeds is None else list(row_seeds)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.n, self.greedy = n, greedy

    def draw(self, steps: int, device: torch.device) -> torch.Tensor:
        """(steps, n) float64 noise on `device`, row t for step t."""
        if self.greedy:
            return torch.zeros(steps, self.n, dtype=torch.float64, device=device)
        if len(self.generators) == 1:
            noise = torch.rand(steps, self.n, generator=self.generators[0], dtype=torch.float64)
        else:
            noise = torch.stack([torch.rand(steps, generator=g, dtype=torch.float64) for g in self.generators], 1)
        return noise.to(device)


class _AllStopped:
    """Whether every row has stopped, without making the host wait for the device at each step.

    On a CPU the answer is immediate. On a GPU the flag is copied to pinned host memory behind the step that set
    it and read one step later, when that copy is long done: decoding runs one step past the last stop (its
    tokens are padding, trimmed from the output), instead of stalling the host at every step.
    """

    def __init__(self, device: torch.device) -> None:
        self.lagged = device.type == "cuda"
        if self.lagged:
            self.host = torch.zeros((), dtype=torch.bool, pin_memory=True)
            self.copied = torch.cuda.Event()
            self.pending = False

    def __call__(self, done: torch.Tensor) -> bool:
        if not self.lagged:
            return bool(done.all())
        stopped = False
        if self.pending:  # the previous step's flag: its copy finished while this step was being queued
            self.copied.synchronize()
            stopped = bool(self.host)
        self.host.copy_(done.all(), non_blocking=True)
        self.copied.record()
        self.pending = True
        return stopped


def _per_row(values: Sequence[int] | None, n: int, name: str, device: torch.device) -> torch.Tensor | None:
    if values is None:
        return None
    if len(values) != n:
        raise UserError(f"{name} needs one value per row ({n}), got {len(values)}")
    return torch.tensor(list(values), device=device)


def _build_rows(ids: list[list[int]], pad_id: int, etas: Sequence[float | None], num_samples: int) -> _Rows:
    input_ids, mask = _left_pad(ids, pad_id)
    n_prompts, n_etas = len(ids), len(etas)
    per_prompt = n_etas * num_samples
    row_etas = [eta for _ in ids for eta in etas for _ in range(num_samples)]
    return _Rows(
        prompt_ids=input_ids,
        prompt_mask=mask,
        per_prompt=per_prompt,
        attention_mask=mask.repeat_interleave(per_prompt, 0),
        etas=row_etas,
        eta=torch.tensor([math.inf if eta is None else eta for eta in row_etas], dtype=torch.float64),
        prompt_index=torch.arange(n_prompts).repeat_interleave(per_prompt),
        sample_index=torch.arange(num_samples).repeat(n_prompts * n_etas),
    )


@torch.no_grad()
def guided_generate(
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Any,
    value_model: ValueModel | None = None,
    *,
    attention_mask: Any = None,
    generation_config: GenerationConfig | None = None,
    etas: float | Sequence[float | None] | None = (0.1,),
    num_samples: int | None = None,
    max_new_tokens: int | None = None,
    top_k: int = 20,
    temperature: float | None = None,
    top_p: float | None = None,
    do_sample: bool | None = None,
    candidates_only: bool = False,
    eos_token_id: int | Sequence[int] | None = None,
    seed: int | None = None,
    row_seeds: Sequence[int] | None = None,
    rollin_steps: Sequence[int] | None = None,
    fixed_shapes: bool = False,
    cuda_graphs: bool = False,
    guidance: GuidanceRule = "qsharp",
    progress: bool = False,
    on_step: StepHook | None = None,
) -> GenerationOutput:
    """Sample `num_samples` completions per prompt and per η from π ∝ π_ref · E[exp(z/η)].

    `prompts` is what `model.generate` users hold (see `qsharp_ext.prompts`): a string or a list of strings
    (tokenized without special tokens), token-id lists, a tensor of input_ids with its `attention_mask`
    (left or right padded), a BatchEncoding, or chat messages (one conversation of {"role", "content"}
    dicts or a list of them, rendered with the tokenizer's chat template and generation prompt).
    The output's `sequences` hold the completions only, never the prompt.

    `etas` may mix values and None (plain π_ref sampling); one trained value model serves them all.
    `top_k` is how many of π_ref's most likely tokens the value model scores at each step; it does not
    truncate: other tokens keep π_ref's mass times the floor offset and can still be drawn unless
    `candidates_only`. `temperature` (default 1.0) shapes π_ref before the guidance; `top_p` (default 1.0)
    keeps a nucleus of π; `do_sample=False` decodes greedily (π's most likely token at each step; the
    temperature still shapes π). `max_new_tokens` defaults to 128, `num_samples` to 1.
    `generation_config` (a `transformers.GenerationConfig`) supplies these settings where the keyword is not
    given, as in `model.generate` (see `qsharp_ext.sampling_settings`). Rows stop independently at a stop id
    or after `max_new_tokens`. The stop ids are `eos_token_id` when it is given (`[]`: none), else the
    config's, else `stop_token_ids(ref_model, tokenizer)`: the tokenizer's EOS and the model's own.
    `seed` fixes the noise; None draws a fresh seed from torch's global generator (so `torch.manual_seed`
    repeats a call, as with `model.generate`), returned as the output's `seed`. `row_seeds` (one per row,
    rows ordered prompt-major, then η, then sample) gives every row its own noise stream, so a row's sample
    does not depend on what else is in the batch. `rollin_steps` (one per row) switches a row to plain π_ref
    after that many guided tokens (DAgger roll-in, then roll-out). `fixed_shapes` gives every step after the
    first the same tensor shapes (both models' caches attended whole under 4D masks, fixed_shapes.py), the
    precondition for replaying steps as CUDA graphs; the same samples up to float rounding, and on a CPU slower.
    `cuda_graphs` (π_ref on a CUDA device; implies `fixed_shapes`) captures the second step as a CUDA graph and
    replays it for every later one (step_graphs.py); `on_step` then cannot watch the steps.
    `guidance="cd"` steers by controlled decoding's rule instead, π ∝ π_ref · exp(E[z]/η), with E[z] the value
    model's expected reward (the CD baseline from the same model; a mean head gives one policy under both rules).
    `on_step(step, tensors)` sees each step's logits, candidates and head outputs (tests use it).
    Every input is checked before any model runs; a mistake is a UserError in one sentence.
    """
    etas = check_etas([etas] if etas is None or isinstance(etas, int | float) else etas)
    ids = prompt_token_ids(tokenizer, prompts, attention_mask)
    opts = resolve_sampling(
        generation_config, max(map(len, ids)), do_sample=do_sample, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, num_samples=num_samples, eos_token_id=eos_token_id,
    )  # fmt: skip
    vocab = ref_model.config.vocab_size
    guided = any(e is not None for e in etas)
    _check_args(top_k, ids, vocab)
    if guided and value_model is None:
        raise UserError("a value model is needed for guided decoding (or make every η None: plain π_ref sampling)")
    if guidance not in GUIDANCE_RULES:
        raise UserError(f"guidance must be one of {', '.join(GUIDANCE_RULES)}, got {guidance!r}")
    if value_model is not None:
        check_tokenizer(value_model.head_config, tokenizer, "passed to guided_generate")
        check_vocabulary(value_model.head_config, ref_model, "passed to guided_generate")
    device = ref_model.device
    check_backend(device)
    if cuda_graphs and (device.type != "cuda" or on_step is not None):
        raise UserError("cuda_graphs needs π_ref on a CUDA device and no on_step hook (replayed steps run no Python)")
    fixed_shapes = fixed_shapes or cuda_graphs
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    eos = opts.eos_token_id if opts.eos_token_id is not None else stop_token_ids(ref_model, tokenizer)
    eos_ids = torch.tensor(token_id_list(eos), dtype=torch.long, device=device)
    max_new_tokens, temperature, top_p = opts.max_new_tokens, opts.temperature, opts.top_p

    rows = _build_rows(ids, pad_id, etas, opts.num_samples)
    limit = min(_context_limit(ref_model), _context_limit(value_model.backbone) if value_model else math.inf)
    if rows.prompt_ids.shape[1] + max_new_tokens > limit:
        raise UserError(
            f"prompt ({rows.prompt_ids.shape[1]} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {limit} tokens"
        )
    n = rows.attention_mask.shape[0]
    if seed is None and row_seeds is None and opts.do_sample:  # fresh noise; the global RNG is left alone otherwise
        seed = int(torch.randint(2**62, ()).item())
    noise_source = _NoiseSource(n, seed or 0, row_seeds, greedy=not opts.do_sample)
    switch = _per_row(rollin_steps, n, "rollin_steps", device)
    rows.prompt_ids, rows.prompt_mask = rows.prompt_ids.to(device), rows.prompt_mask.to(device)
    rows.attention_mask, rows.eta = rows.attention_mask.to(device), rows.eta.to(device)
    policy = GuidedPolicy.of(value_model, guidance)

    length = rows.prompt_ids.shape[1] + max_new_tokens
    ref_kv = FixedCache(length) if fixed_shapes else ReservedCache(length)
    ref_cache = cache_kwarg(ref_model, ref_kv)  # the argument name is looked up once
    ref_dtype = next(ref_model.parameters()).dtype
    scorer = None
    if guided:
        scorer = candidate_scorer(
            value_model, ref_model, rows.prompt_ids, rows.prompt_mask, rows.per_prompt, capacity=length + top_k,
            fixed_shapes=fixed_shapes,
        )  # fmt: skip
    reader = scorer if isinstance(scorer, SharedTrunkScorer) else None  # reads π_ref's hidden states

    def run_ref(ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """π_ref's logits (rows, len(ids), V), its KV cache extended by `ids`."""
        out = ref_model(
            input_ids=ids, attention_mask=model_mask(mask, ref_dtype), position_ids=position,
            output_hidden_states=reader is not None, **ref_cache,
        )  # fmt: skip
        if reader is not None:
            reader.read(out.hidden_states)
        return out.logits

    slots = FixedSlots(rows.attention_mask, length + top_k) if fixed_shapes else GrowingSlots(rows.attention_mask)
    logits = prefill(run_ref, rows.prompt_ids, rows.prompt_mask, ref_kv, rows.per_prompt).float()  # (N, V)

    noise = noise_source.draw(max_new_tokens, device)  # (T, N)
    all_stopped = _AllStopped(device)
    out = Decoded.empty(max_new_tokens, n, pad_id, device)
    logits_now = [logits]  # π_ref's logits for the step to draw (a list: a captured step rebinds it)

    def draw(step: int | None) -> None:
        """Draw every row's next token (π_ref's logits and the value model's cache are up to date)."""
        logits = logits_now[0]
        cand = fused_step.expand_candidates(logits, temperature, top_k)
        head_out = scorer.score(cand.ids, slots) if scorer else torch.zeros(cand.ids.shape, device=device)
        eta = rows.eta if switch is None else torch.where(out.step < switch, rows.eta, math.inf)
        u = noise.index_select(0, out.step)[0]  # (N,)
        result = policy.sample(logits, cand, head_out, eta.float(), temperature, u, top_p, candidates_only)
        if on_step is not None:
            on_step(step, {"ref_logits": logits, "cand": cand, "head_out": head_out, "result": result, "slots": slots})
        token = torch.where(out.done, torch.full_like(result.token, pad_id), result.token)
        out.record(token, result.logp_pi, result.logp_ref, result.kl)
        out.done |= torch.isin(token, eos_ids)

    def advance() -> None:
        """Run the last drawn tokens through π_ref (and hand them to the value model's next pass)."""
        slots.append()
        logits = run_ref(out.token.unsqueeze(1), slots.query_mask(length), slots.filled() - 1)[:, -1]  # (N, V)
        logits_now[0] = logits.float()
        if scorer is not None:
            scorer.advance(out.token)

    graph = None
    for step in tqdm(range(max_new_tokens), desc="guided decoding", disable=not progress, leave=False):
        if graph is not None:
            graph.replay()
        elif step and cuda_graphs:  # this step runs for real, then is captured for every later one
            graph = captured(lambda: (advance(), draw(None)))
        else:
            if step:
                advance()
            draw(step)
        if step == max_new_tokens - 1 or all_stopped(out.done):
            break

    width = int(out.lengths.max())  # a lagged stop flag may have run one step more
    return GenerationOutput(
        sequences=out.tokens.T[:, :width].contiguous(),
        lengths=out.lengths,
        logp_pi=out.logp_pi.T[:, :width].contiguous(),
        logp_ref=out.logp_ref.T[:, :width].contiguous(),
        kl=out.kl,
        prompt_index=rows.prompt_index,
        eta=rows.etas,
        sample_index=rows.sample_index,
        seed=seed if row_seeds is None else None,
    )
