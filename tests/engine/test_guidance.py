"""QSharpLogitsProcessor inside `model.generate` gives the same guided distribution as guided_generate."""

import torch
import torch.nn.functional as F

from qsharp_ext import distributions as D
from qsharp_ext.generate import guided_generate
from qsharp_ext.guidance import QSharpLogitsProcessor
from tests.engine.test_generate import PROMPTS, models


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
