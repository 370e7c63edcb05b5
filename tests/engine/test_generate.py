"""guided_generate on tiny random models: cached candidate scoring equals uncached brute force, and more."""

import math

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.generate import guided_generate
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm

PROMPTS = ["w1 w2 w3 w4 w5", "w7", "w9 w10 w11"]  # different lengths: left padding is exercised


def models(arch, tokenizer, **head):
    ref = make_causal_lm(arch, len(tokenizer))
    vm = ValueModel.from_reference(ref, 2, tokenizer, **head).eval()
    torch.nn.init.normal_(vm.head.weight, std=0.5)  # a head that actually discriminates
    return ref, vm


def record_steps(**kwargs):
    steps = []
    out = guided_generate(
        **kwargs,
        on_step=lambda step, t: steps.append({k: v.clone() if torch.is_tensor(v) else v for k, v in t.items()}),
    )
    return out, steps


@pytest.mark.parametrize("parameterization", ["v", "q"])
@pytest.mark.parametrize("kind", ["bernoulli", "histogram"])
@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_cached_scoring_equals_uncached_brute_force(arch, tokenizer, parameterization, kind, fixed_shapes):
    ref, vm = models(arch, tokenizer, parameterization=parameterization, kind=kind, n_atoms=5)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    out, steps = record_steps(
        ref_model=ref, tokenizer=tokenizer, prompts=PROMPTS, value_model=vm, etas=(0.3,), num_samples=2,
        max_new_tokens=4, top_k=5, seed=3, eos_token_id=[], fixed_shapes=fixed_shapes,
    )  # fmt: skip
    generated = out.token_lists()
    for step, record in enumerate(steps):
        for row in range(len(generated)):
            prefix = prompt_ids[out.prompt_index[row]] + generated[row][:step]
            ids = torch.tensor([prefix])
            expected_logits = ref(ids).logits[0, -1]
            torch.testing.assert_close(record["ref_logits"][row], expected_logits, rtol=1e-4, atol=1e-4)
            for j, cand in enumerate(record["cand"].ids[row].tolist()):
                if parameterization == "v":  # a fresh pass over prefix + candidate, no cache
                    expected = vm(torch.tensor([[*prefix, cand]]))[0][0, -1]
                else:
                    expected = vm(ids)[0][0, -1, cand]
                torch.testing.assert_close(record["head_out"][row, j], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_non_candidate_tokens_resync_the_value_cache(tokenizer, fixed_shapes):
    """top_k = 1 and a flat π_ref: most draws are non-candidates, which must be run through the value model."""
    ref, vm = models("llama", tokenizer)
    prompt_ids = tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    out, steps = record_steps(
        ref_model=ref, tokenizer=tokenizer, prompts=[PROMPTS[0]], value_model=vm, etas=(1.0,), num_samples=4,
        max_new_tokens=5, top_k=1, seed=1, eos_token_id=[], fixed_shapes=fixed_shapes,
    )  # fmt: skip
    assert any((s["result"].cand_index < 0).any() for s in steps)
    generated = out.token_lists()
    for step, record in enumerate(steps):
        for row in range(len(generated)):
            cand = record["cand"].ids[row, 0].item()
            expected = vm(torch.tensor([prompt_ids + generated[row][:step] + [cand]]))[0][0, -1]
            torch.testing.assert_close(record["head_out"][row, 0], expected, rtol=1e-4, atol=1e-4)


def test_unguided_rows_sample_pi_ref(tokenizer):
    ref, vm = models("llama", tokenizer)
    out = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(None, 0.1), num_samples=2, max_new_tokens=6, seed=0)
    assert out.eta == [None, None, 0.1, 0.1] * 3  # prompt-major, then η, then sample
    plain = torch.tensor([eta is None for eta in out.eta])
    assert plain.sum() == 6
    torch.testing.assert_close(out.logp_pi[plain], out.logp_ref[plain])
    assert (out.kl[plain].abs() < 1e-6).all() and (out.kl[~plain] > 1e-3).all()


def test_constant_value_model_leaves_pi_ref_unchanged(tokenizer):
    ref, vm = models("llama", tokenizer)
    torch.nn.init.zeros_(vm.head.weight)  # the same prediction for every prefix
    out = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(0.05,), max_new_tokens=6, top_k=len(tokenizer), seed=0)
    torch.testing.assert_close(out.logp_pi, out.logp_ref, rtol=0, atol=1e-5)
    assert (out.kl.abs() < 1e-5).all()


def test_huge_eta_approaches_pi_ref(tokenizer):
    ref, vm = models("llama", tokenizer)
    out = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(1e4,), max_new_tokens=6, seed=0)
    torch.testing.assert_close(out.logp_pi, out.logp_ref, rtol=0, atol=1e-3)


def test_same_seed_same_samples(tokenizer):
    ref, vm = models("gpt2", tokenizer)
    kwargs = dict(etas=(0.1, None), num_samples=3, max_new_tokens=8)
    a = guided_generate(ref, tokenizer, PROMPTS, vm, seed=7, **kwargs)
    b = guided_generate(ref, tokenizer, PROMPTS, vm, seed=7, **kwargs)
    c = guided_generate(ref, tokenizer, PROMPTS, vm, seed=8, **kwargs)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.kl, b.kl)
    assert not torch.equal(a.sequences, c.sequences)


def test_a_prompt_alone_and_in_a_batch_gets_the_same_distribution(tokenizer):
    ref, vm = models("qwen2", tokenizer)
    _, alone = record_steps(ref_model=ref, tokenizer=tokenizer, prompts=[PROMPTS[1]], value_model=vm, max_new_tokens=1)
    _, batch = record_steps(ref_model=ref, tokenizer=tokenizer, prompts=PROMPTS, value_model=vm, max_new_tokens=1)
    torch.testing.assert_close(alone[0]["ref_logits"][0], batch[0]["ref_logits"][1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone[0]["head_out"][0], batch[0]["head_out"][1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone[0]["result"].kl[0], batch[0]["result"].kl[1], rtol=1e-4, atol=1e-6)


def test_rows_stop_at_eos_independently(tokenizer):
    ref, vm = models("llama", tokenizer)
    eos = tokenizer.eos_token_id
    stops = list(range(20))
    out = guided_generate(
        ref, tokenizer, PROMPTS, vm, etas=(None,), num_samples=8, max_new_tokens=12, top_k=len(tokenizer),
        temperature=3.0, eos_token_id=stops, seed=0,
    )  # fmt: skip
    for row, n in zip(out.sequences.tolist(), out.lengths.tolist()):
        assert all(t >= 20 for t in row[: n - 1])  # no stop token before the end
        assert n == 12 or row[n - 1] < 20
        assert all(t == tokenizer.pad_token_id for t in row[n:])
    assert out.lengths.min() < 12 and eos is not None


def truncate_at(tokens: list[int], stops: set[int]) -> list[int]:
    end = next((i + 1 for i, t in enumerate(tokens) if t in stops), len(tokens))
    return tokens[:end]


def test_rows_stop_at_every_end_of_turn_id_the_model_declares(tokenizer):
    """A chat model's generation config lists more stop ids than the tokenizer's EOS (Llama-3.1: <|eot_id|>)."""
    ref = make_causal_lm("llama", len(tokenizer))
    eos = tokenizer.eos_token_id
    kwargs = dict(etas=(None,), num_samples=2, max_new_tokens=8, row_seeds=list(range(6)))
    plain = guided_generate(ref, tokenizer, PROMPTS, None, eos_token_id=[], **kwargs).token_lists()
    turn_end = plain[0][2]  # a token π_ref samples mid-row: declared as a second stop id below
    assert eos not in plain[0][:3] and turn_end not in plain[0][:2]
    ref.generation_config.eos_token_id = [eos, turn_end]
    default = guided_generate(ref, tokenizer, PROMPTS, None, **kwargs).token_lists()
    assert default == [truncate_at(row, {eos, turn_end}) for row in plain]
    assert default[0] == plain[0][:3]  # stopped at the id only the generation config declares
    tokenizer_only = guided_generate(ref, tokenizer, PROMPTS, None, eos_token_id=eos, **kwargs).token_lists()
    assert tokenizer_only == [truncate_at(row, {eos}) for row in plain]  # an explicit id still wins
    assert guided_generate(ref, tokenizer, PROMPTS, None, eos_token_id=[], **kwargs).token_lists() == plain


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(etas=(0.0,)), "eta must be positive"),
        (dict(etas=(-1.0,)), "eta must be positive"),
        (dict(etas=(math.inf,)), "eta must be positive and finite, or None for unguided"),  # None is "unguided"
        (dict(etas=(math.nan,)), "eta must be positive"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=10_000), "top_k"),
        (dict(temperature=0.0), "temperature"),
        (dict(max_new_tokens=500), "context"),
        (dict(prompts=[]), "no prompts"),
        (dict(max_new_tokens=2.5), "max_new_tokens must be an integer, not 2.5"),
        (dict(num_samples="2"), "num_samples must be an integer"),
    ],
)
def test_bad_input_is_a_clear_error(tokenizer, kwargs, message):
    ref, vm = models("llama", tokenizer)
    args = dict(ref_model=ref, tokenizer=tokenizer, prompts=PROMPTS, value_model=vm) | kwargs
    with pytest.raises(UserError, match=message):
        guided_generate(**args)


def test_a_kernel_backend_that_cannot_run_is_refused_before_decoding(tokenizer, monkeypatch):
    ref, vm = models("llama", tokenizer)
    for backend, message in (("bogus", "unknown kernel backend 'bogus'"), ("cuda", "the cuda backend needs")):
        monkeypatch.setenv("QSHARP_EXT_BACKEND", backend)
        with pytest.raises(UserError, match=f"QSHARP_EXT_BACKEND={backend}: {message}"):
            guided_generate(ref, tokenizer, PROMPTS, vm, max_new_tokens=2)


def test_a_value_model_without_a_tokenizer_and_of_another_vocabulary_is_refused(tokenizer, tmp_path):
    ref = make_causal_lm("llama", len(tokenizer))
    other = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer) + 7), 1)  # no tokenizer: no digest
    with pytest.raises(UserError, match="records no tokenizer and has a vocabulary of"):
        guided_generate(ref, tokenizer, PROMPTS, other, max_new_tokens=2)
    other.save_pretrained(tmp_path / "vm")
    with pytest.raises(UserError, match="records no tokenizer"):
        ValueModel.from_pretrained(tmp_path / "vm", ref_model=ref)
    same = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer), seed=1), 1)  # no digest, same size
    assert guided_generate(ref, tokenizer, PROMPTS, same, max_new_tokens=2).sequences.shape[0] == len(PROMPTS)


def test_guided_decoding_needs_a_value_model(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer))
    with pytest.raises(UserError, match="value model is needed"):
        guided_generate(ref, tokenizer, PROMPTS, None, etas=(0.1,))
    out = guided_generate(ref, tokenizer, PROMPTS, None, etas=(None,), max_new_tokens=3)
    assert out.sequences.shape == (3, 3) and not math.isnan(out.kl.sum().item())


def test_row_seeds_make_a_row_independent_of_its_batch(tokenizer):
    ref, vm = models("llama", tokenizer)
    kwargs = dict(etas=(0.2,), max_new_tokens=6, eos_token_id=[])
    alone = guided_generate(ref, tokenizer, [PROMPTS[2]], vm, row_seeds=[1234], **kwargs)
    batch = guided_generate(ref, tokenizer, PROMPTS, vm, row_seeds=[5, 6, 1234], **kwargs)
    assert alone.token_lists()[0] == batch.token_lists()[2]
    with pytest.raises(UserError, match="one seed per row"):
        guided_generate(ref, tokenizer, PROMPTS, vm, row_seeds=[1, 2], **kwargs)


def test_rollin_steps_switch_rows_to_pi_ref(tokenizer):
    ref, vm = models("llama", tokenizer)
    seeds = [11, 12, 13]
    kwargs = dict(max_new_tokens=6, eos_token_id=[], row_seeds=seeds)
    plain = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(None,), **kwargs)
    switched_at_0 = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(0.05,), rollin_steps=[0, 0, 0], **kwargs)
    assert switched_at_0.token_lists() == plain.token_lists()
    assert (switched_at_0.kl.abs() < 1e-6).all()
    guided = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(0.05,), **kwargs)
    late = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(0.05,), rollin_steps=[6, 6, 6], **kwargs)
    assert late.token_lists() == guided.token_lists()
    partial = guided_generate(ref, tokenizer, PROMPTS, vm, etas=(0.05,), rollin_steps=[2, 2, 2], **kwargs)
    torch.testing.assert_close(partial.logp_pi[:, 2:], partial.logp_ref[:, 2:])  # roll-out: π_ref
    assert (partial.logp_pi[:, :2] != partial.logp_ref[:, :2]).any()  # roll-in: guided
