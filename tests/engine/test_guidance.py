"""QSharpLogitsProcessor inside `model.generate` gives the same guided distribution as guided_generate: token by
token with the same noise (or greedily) on padded, chat-templated and multi-return batches; padded batches
without their mask, beam search and a stale mask are refused."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LogitsProcessor

from qsharp_ext import distributions as D
from qsharp_ext.errors import UserError
from qsharp_ext.generate import guided_generate
from qsharp_ext.guidance import QSharpLogitsProcessor
from qsharp_ext.kernels import fused_step
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import CONVERSATIONS, make_causal_lm, make_chat_tokenizer
from tests.engine.test_generate import PROMPTS, models, record_steps


def brute_force_guided_logp(ref, vm, prefix: list[int], eta: float, top_k: int, temperature: float) -> torch.Tensor:
    """ln π(· | prefix) from uncached passes: π_ref's logits, then each top-k candidate scored alone."""
    logits = ref(torch.tensor([prefix])).logits[0, -1] / temperature
    cand = logits.topk(top_k).indices
    head = torch.stack([vm(torch.tensor([[*prefix, c]]))[0][0, -1] for c in cand.tolist()])
    offsets = vm.log_offset(head, eta)
    return F.log_softmax(D.guided_logits(logits[None], cand[None], offsets[None]), -1)[0]


def test_processor_in_generate_matches_brute_force(tokenizer):
    ref, vm = models("llama", tokenizer)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    eta, top_k, temperature = 0.2, 6, 0.9
    processor = QSharpLogitsProcessor(
        vm, eta=eta, top_k=top_k, temperature=temperature, attention_mask=batch["attention_mask"]
    )
    out = ref.generate(
        **batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=4, min_new_tokens=4,
        logits_processor=[processor], output_scores=True, return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
    )  # fmt: skip
    prompt_len = batch["input_ids"].shape[1]
    for row in range(len(PROMPTS)):
        prompt = [t for t, m in zip(batch["input_ids"][row].tolist(), batch["attention_mask"][row].tolist()) if m]
        generated = out.sequences[row, prompt_len:].tolist()
        for step, scores in enumerate(out.scores):
            expected = brute_force_guided_logp(ref, vm, prompt + generated[:step], eta, top_k, temperature)
            torch.testing.assert_close(F.log_softmax(scores[row], -1), expected, rtol=1e-4, atol=1e-4)


def test_processor_and_guided_generate_agree_on_the_first_step(tokenizer):
    ref, vm = models("qwen2", tokenizer)
    steps = []
    guided_generate(
        ref, tokenizer, PROMPTS, vm, etas=(0.5,), top_k=5, max_new_tokens=1,
        on_step=lambda step, t: steps.append(t),
    )  # fmt: skip
    record = steps[0]
    offsets = vm.log_offset(record["head_out"], 0.5)
    engine_logp = F.log_softmax(D.guided_logits(record["ref_logits"], record["cand"].ids, offsets), -1)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    processor = QSharpLogitsProcessor(vm, eta=0.5, top_k=5, attention_mask=batch["attention_mask"])
    position_logits = ref(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp_min(0),
    ).logits[:, -1]  # π_ref's raw scores, positions counted as generate counts them  # fmt: skip
    torch.testing.assert_close(processor(batch["input_ids"], position_logits), engine_logp, rtol=1e-4, atol=1e-4)


class Recorder(LogitsProcessor):
    def __init__(self) -> None:
        self.scores = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


class SameNoise(LogitsProcessor):
    """Test-only, after the Q♯ processor: draws each row's token from the scores it gets with the fused step's
    rule (candidates by descending score, then the rest by id; inverse CDF of one uniform per row from that
    row's seed, as guided_generate's `row_seeds`) and leaves `generate` only that token. It keeps the scores.
    The candidates are π_ref's top k, from the scores `raw` (a Recorder ahead of the Q♯ processor) saw."""

    def __init__(self, raw: Recorder, top_k: int, row_seeds: list[int]) -> None:
        self.raw, self.top_k, self.scores = raw, top_k, []
        self.generators = [torch.Generator().manual_seed(s) for s in row_seeds]

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        noise = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        candidates = fused_step.expand_candidates(self.raw.scores[-1].float(), 1.0, self.top_k).ids
        order, p = fused_step.sampling_probs(scores.double(), candidates, 1.0, False)
        token = fused_step.inverse_cdf(order, p, noise)
        return torch.full_like(scores, -math.inf).scatter(1, token.unsqueeze(1), 0.0)


def engine_steps(ref, tok, prompts, vm, **kwargs):
    """guided_generate's completions and ln π at every step (bernoulli head: the floor offset is 0)."""
    out, steps = record_steps(ref_model=ref, tokenizer=tok, prompts=prompts, value_model=vm, **kwargs)
    eta, temperature = kwargs["etas"][0], kwargs.get("temperature", 1.0)
    logps = [
        F.log_softmax(
            D.guided_logits(s["ref_logits"] / temperature, s["cand"].ids, vm.log_offset(s["head_out"], eta)), -1
        )
        for s in steps
    ]
    return out, logps


def hf_generate(ref, batch, processors, new_tokens, **kwargs):
    out = ref.generate(
        **batch, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        logits_processor=processors, pad_token_id=ref.config.pad_token_id, eos_token_id=None, **kwargs,
    )  # fmt: skip
    return out[:, batch["input_ids"].shape[1] :]


def assert_steps_agree(hf_tokens, hf_scores, out, logps):
    assert hf_tokens.tolist() == out.token_lists()  # token by token
    for hf, engine in zip(hf_scores, logps, strict=True):
        torch.testing.assert_close(F.log_softmax(hf, -1), engine, rtol=1e-4, atol=1e-4)


ETA, TOP_K, TEMPERATURE, NEW = 0.2, 6, 0.9, 4


@pytest.mark.parametrize("chat", [False, True])
def test_processor_and_guided_generate_draw_the_same_tokens_with_the_same_noise(chat):
    """Padded (or chat-templated and padded) prompts, two return sequences each: the same tokens and ln π."""
    tok = make_chat_tokenizer()
    ref, vm = models("llama", tok)
    prompts = CONVERSATIONS if chat else PROMPTS
    if chat:
        batch = tok.apply_chat_template(prompts, add_generation_prompt=True, return_tensors="pt", padding=True)
    else:
        batch = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    seeds = list(range(100, 100 + 2 * len(prompts)))
    out, logps = engine_steps(
        ref, tok, prompts, vm, etas=(ETA,), num_samples=2, top_k=TOP_K, temperature=TEMPERATURE,
        max_new_tokens=NEW, eos_token_id=[], row_seeds=seeds,
    )  # fmt: skip
    processor = QSharpLogitsProcessor(
        vm, eta=ETA, top_k=TOP_K, temperature=TEMPERATURE, attention_mask=batch["attention_mask"]
    )
    raw = Recorder()
    draw = SameNoise(raw, processor.top_k, seeds)
    tokens = hf_generate(ref, batch, [raw, processor, draw], NEW, do_sample=True, num_return_sequences=2)
    assert_steps_agree(tokens, draw.scores, out, logps)


@pytest.mark.parametrize(
    ("kind", "head"),
    [("bernoulli", {}), ("histogram", dict(n_atoms=5, v_min=-1.0, v_max=1.0)), ("mean", dict(v_min=-1.0, v_max=1.0))],
)
def test_processor_and_guided_generate_give_identical_log_probs_for_every_head(tokenizer, kind, head):
    """One policy in both: the candidates' offsets and the non-candidates' floor v_min/η (-5 here for the
    histogram and mean heads). Two candidates only, so that the non-candidates hold most of π_ref's mass and
    the floor weighs on every step: ln π of every drawn token is the same under the fused kernel and the
    processor."""
    ref, vm = models("llama", tokenizer, kind=kind, **head)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    seeds, top_k, new = [11, 12, 13], 2, 6
    out = guided_generate(
        ref, tokenizer, PROMPTS, vm, etas=(ETA,), top_k=top_k, max_new_tokens=new, eos_token_id=[], row_seeds=seeds
    )
    processor = QSharpLogitsProcessor(vm, eta=ETA, top_k=top_k, attention_mask=batch["attention_mask"])
    raw = Recorder()
    draw = SameNoise(raw, processor.top_k, seeds)
    tokens = hf_generate(ref, batch, [raw, processor, draw], new, do_sample=True)
    assert tokens.tolist() == out.token_lists()
    logp = torch.stack([F.log_softmax(s, -1).gather(1, tokens[:, i, None])[:, 0] for i, s in enumerate(draw.scores)], 1)
    torch.testing.assert_close(logp, out.logp_pi, rtol=1e-5, atol=1e-4)


def test_processor_greedy_matches_guided_generate_greedy_on_chat_prompts():
    tok = make_chat_tokenizer()
    ref, vm = models("qwen2", tok)
    out, logps = engine_steps(
        ref, tok, CONVERSATIONS, vm, etas=(ETA,), top_k=TOP_K, temperature=TEMPERATURE, max_new_tokens=NEW,
        eos_token_id=[], do_sample=False,
    )  # fmt: skip
    batch = tok.apply_chat_template(
        CONVERSATIONS, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
    )
    processor = QSharpLogitsProcessor(
        vm, eta=ETA, top_k=TOP_K, temperature=TEMPERATURE, attention_mask=batch["attention_mask"]
    )
    recorder = Recorder()
    tokens = hf_generate(ref, batch, [processor, recorder], NEW, do_sample=False)
    assert_steps_agree(tokens, recorder.scores, out, logps)


def test_a_pad_id_that_is_a_real_token_is_never_masked():
    """One chat prompt, whose turns end with the pad token (as SmolLM2's <|im_end|>): nothing is padding."""
    tok = make_chat_tokenizer()
    ref, vm = models("llama", tok)
    batch = tok.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = batch["input_ids"][0].tolist()
    assert tok.pad_token_id in prompt
    out, logps = engine_steps(
        ref, tok, [prompt], vm, etas=(ETA,), top_k=TOP_K, max_new_tokens=NEW, eos_token_id=[], row_seeds=[5]
    )
    processor = QSharpLogitsProcessor(vm, eta=ETA, top_k=TOP_K, pad_token_id=tok.pad_token_id)
    raw = Recorder()
    draw = SameNoise(raw, processor.top_k, [5])
    tokens = hf_generate(ref, batch, [raw, processor, draw], NEW, do_sample=True)  # generate gets the mask, not it
    assert_steps_agree(tokens, draw.scores, out, logps)


def test_a_padded_batch_without_its_attention_mask_is_refused(tokenizer):
    ref, vm = models("llama", tokenizer)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    for pad in (None, tokenizer.pad_token_id):
        processor = QSharpLogitsProcessor(vm, eta=0.2, top_k=6, pad_token_id=pad)
        with pytest.raises(UserError, match="no attention_mask"):
            hf_generate(ref, batch, [processor], 2, do_sample=True)
    # Different prompts of one length: with the pad id known and at no row's ends, nothing is padding.
    even = tokenizer(["w1 w2", "w3 w4"], return_tensors="pt", add_special_tokens=False)
    by_pad, by_mask = Recorder(), Recorder()
    pad_known = QSharpLogitsProcessor(vm, eta=0.2, top_k=6, pad_token_id=tokenizer.pad_token_id)
    hf_generate(ref, even, [pad_known, by_pad], 3, do_sample=False)
    masked = QSharpLogitsProcessor(vm, eta=0.2, top_k=6, attention_mask=even["attention_mask"])
    hf_generate(ref, even, [masked, by_mask], 3, do_sample=False)
    torch.testing.assert_close(by_pad.scores, by_mask.scores)


def test_the_cache_starts_afresh_on_the_next_generate_call(tokenizer):
    """A second call whose prompt is one token longer than the first call's last rows is a new prompt."""
    ref, vm = models("llama", tokenizer)
    processor = QSharpLogitsProcessor(vm, eta=ETA, top_k=TOP_K)
    first = tokenizer(["w1 w2"], return_tensors="pt", add_special_tokens=False)
    hf_generate(ref, first, [processor], 3, do_sample=True)  # its last call saw 4 tokens
    second = tokenizer(["w9 w8 w7 w6 w5"], return_tensors="pt", add_special_tokens=False)
    out, logps = engine_steps(
        ref, tokenizer, ["w9 w8 w7 w6 w5"], vm, etas=(ETA,), top_k=TOP_K, max_new_tokens=NEW, eos_token_id=[],
        row_seeds=[9],
    )  # fmt: skip
    raw = Recorder()
    draw = SameNoise(raw, processor.top_k, [9])
    tokens = hf_generate(ref, second, [raw, processor, draw], NEW, do_sample=True)
    assert_steps_agree(tokens, draw.scores, out, logps)


def test_an_attention_mask_belongs_to_its_batch(tokenizer):
    ref, vm = models("llama", tokenizer)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    processor = QSharpLogitsProcessor(vm, eta=ETA, top_k=TOP_K, attention_mask=batch["attention_mask"])
    hf_generate(ref, batch, [processor], 2, do_sample=True)
    hf_generate(ref, batch, [processor], 2, do_sample=True, num_return_sequences=3)  # the same prompts again
    other = tokenizer(["w3 w4", "w5", "w6 w7 w8 w9 w10"], return_tensors="pt", padding=True, add_special_tokens=False)
    with pytest.raises(UserError, match="belongs to the batch of its first generate call"):
        hf_generate(ref, other, [processor], 2, do_sample=True)
    wider = tokenizer([*PROMPTS, "w1 w2 w3 w4 w5 w6"], return_tensors="pt", padding=True, add_special_tokens=False)
    with pytest.raises(UserError, match="give it the mask of the batch passed to generate"):
        hf_generate(ref, wider, [processor], 2, do_sample=True)
    with pytest.raises(UserError, match="the \\(prompts, length\\) mask"):
        QSharpLogitsProcessor(vm, eta=ETA, attention_mask=batch["attention_mask"][0])


def test_beam_search_is_refused(tokenizer):
    ref, vm = models("llama", tokenizer)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    processor = QSharpLogitsProcessor(vm, eta=ETA, top_k=TOP_K, attention_mask=batch["attention_mask"])
    with pytest.raises(UserError, match="beam search"):
        hf_generate(ref, batch, [processor], 4, do_sample=False, num_beams=3)


def test_a_value_model_of_a_smaller_vocabulary_is_refused(tokenizer):
    ref, _ = models("llama", tokenizer)
    small = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer) - 5), 1)
    batch = tokenizer(["w1 w2"], return_tensors="pt", add_special_tokens=False)
    with pytest.raises(UserError, match="the value model knows only"):
        hf_generate(ref, batch, [QSharpLogitsProcessor(small, eta=ETA, top_k=TOP_K)], 2, do_sample=True)
