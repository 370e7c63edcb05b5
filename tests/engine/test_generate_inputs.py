"""guided_generate takes what `model.generate` users hold, decodes greedily on request and draws fresh noise
when no seed is given."""

import pytest
import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from qsharp_ext import distributions as D
from qsharp_ext.errors import UserError
from qsharp_ext.generate import guided_generate
from tests.engine.conftest import CONVERSATIONS, make_chat_tokenizer, make_tokenizer
from tests.engine.test_generate import PROMPTS, models, record_steps

KW = dict(max_new_tokens=4, eos_token_id=[], seed=3)


@pytest.fixture(scope="module")
def ref_vm():
    return models("llama", make_tokenizer())


def test_every_prompt_form_gives_the_same_samples(ref_vm):
    ref, vm = ref_vm
    tok = make_tokenizer()
    expected = guided_generate(ref, tok, PROMPTS, vm, **KW).token_lists()
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert guided_generate(ref, tok, ids, vm, **KW).token_lists() == expected
    for side in ("left", "right"):
        tok.padding_side = side
        batch = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
        assert guided_generate(ref, tok, batch, vm, **KW).token_lists() == expected
        tensor_out = guided_generate(ref, tok, batch["input_ids"], vm, attention_mask=batch["attention_mask"], **KW)
        assert tensor_out.token_lists() == expected


def test_a_bare_string_is_one_prompt(ref_vm):
    ref, vm = ref_vm
    tok = make_tokenizer()
    out = guided_generate(ref, tok, PROMPTS[0], vm, **KW)
    assert out.sequences.shape[0] == 1  # not one row per character
    assert out.token_lists() == guided_generate(ref, tok, PROMPTS[:1], vm, **KW).token_lists()


def test_chat_messages_are_rendered_with_the_chat_template(ref_vm):
    ref, vm = ref_vm
    tok = make_chat_tokenizer()
    rendered = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in CONVERSATIONS]
    ids = [tok(text, add_special_tokens=False)["input_ids"] for text in rendered]
    kwargs = dict(max_new_tokens=4, eos_token_id=[], row_seeds=[7, 8])  # a row's noise: its own seed
    expected = guided_generate(ref, tok, ids, vm, **kwargs).token_lists()
    assert guided_generate(ref, tok, CONVERSATIONS, vm, **kwargs).token_lists() == expected
    one = guided_generate(ref, tok, CONVERSATIONS[1], vm, **(kwargs | dict(row_seeds=[8])))  # one conversation
    assert one.token_lists() == expected[1:]
    batch = tok.apply_chat_template(
        CONVERSATIONS, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
    )
    assert guided_generate(ref, tok, batch, vm, **kwargs).token_lists() == expected


def test_sequences_hold_the_completion_only(ref_vm):
    ref, vm = ref_vm
    out = guided_generate(ref, make_tokenizer(), PROMPTS, vm, **KW)
    assert out.sequences.shape == (3, KW["max_new_tokens"])


def test_no_seed_draws_fresh_noise_and_a_returned_seed_repeats_it(ref_vm):
    ref, vm = ref_vm
    tok = make_tokenizer()
    kwargs = dict(etas=(0.1, None), num_samples=2, max_new_tokens=8, eos_token_id=[])
    a, b = (guided_generate(ref, tok, PROMPTS, vm, **kwargs) for _ in range(2))
    assert a.seed != b.seed and not torch.equal(a.sequences, b.sequences)
    again = guided_generate(ref, tok, PROMPTS, vm, seed=a.seed, **kwargs)
    assert torch.equal(again.sequences, a.sequences)
    torch.manual_seed(5)
    c = guided_generate(ref, tok, PROMPTS, vm, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(guided_generate(ref, tok, PROMPTS, vm, **kwargs).sequences, c.sequences)


def engine_logp(record, vm, eta, temperature):
    """ln π over the vocabulary at one recorded step (bernoulli head: floor 0)."""
    offsets = vm.log_offset(record["head_out"], eta)
    return F.log_softmax(D.guided_logits(record["ref_logits"] / temperature, record["cand"].ids, offsets), -1)


def test_do_sample_false_takes_the_most_likely_token_under_pi(ref_vm):
    ref, vm = ref_vm
    tok = make_tokenizer()
    kwargs = dict(ref_model=ref, tokenizer=tok, prompts=PROMPTS, value_model=vm, etas=(0.3,), top_k=6)
    out, steps = record_steps(**kwargs, do_sample=False, temperature=0.8, max_new_tokens=5, eos_token_id=[])
    for step, record in enumerate(steps):
        assert torch.equal(out.sequences[:, step], engine_logp(record, vm, 0.3, 0.8).argmax(-1))
        torch.testing.assert_close(out.logp_pi[:, step], engine_logp(record, vm, 0.3, 0.8).max(-1).values)
    config = GenerationConfig(do_sample=False, temperature=0.8, max_new_tokens=5, eos_token_id=[])
    for seed in (1, 2):
        again = guided_generate(**kwargs, generation_config=config, seed=seed)
        assert torch.equal(again.sequences, out.sequences)


def test_a_generation_config_supplies_the_shared_settings(ref_vm):
    ref, vm = ref_vm
    tok = make_tokenizer()
    config = GenerationConfig(
        do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=3, eos_token_id=[], num_return_sequences=2
    )
    out = guided_generate(ref, tok, PROMPTS, vm, generation_config=config, seed=4)
    expected = guided_generate(
        ref, tok, PROMPTS, vm, temperature=0.7, top_p=0.9, max_new_tokens=3, eos_token_id=[], num_samples=2, seed=4
    )
    assert torch.equal(out.sequences, expected.sequences) and out.sequences.shape == (6, 3)
    shorter = guided_generate(ref, tok, PROMPTS, vm, generation_config=config, max_new_tokens=2, seed=4)
    assert shorter.sequences.shape == (6, 2)  # a keyword wins over the config
    guided_generate(ref, tok, PROMPTS, vm, generation_config=ref.generation_config, max_new_tokens=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompts=torch.tensor([[45, 1, 2], [3, 4, 5]])), "no attention_mask"),
        (dict(prompts=CONVERSATIONS), "no chat template"),
        (dict(prompts=[[1, 2, 99]]), "outside the model's vocabulary"),
        (dict(generation_config=GenerationConfig(num_beams=2)), "num_beams=2"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(etas=()), "at least one"),
    ],
)
def test_bad_input_is_refused_before_any_model_runs(ref_vm, kwargs, message):
    ref, vm = ref_vm
    calls = []
    hook = ref.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        args = dict(ref_model=ref, tokenizer=make_tokenizer(), prompts=PROMPTS, value_model=vm) | kwargs
        with pytest.raises(UserError, match=message):
            guided_generate(**args)
    finally:
        hook.remove()
    assert not calls
