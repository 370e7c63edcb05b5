"""ValueModel: heads and parameterizations on Llama / Qwen2 / GPT-2 backbones, from_reference, save/load."""

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.shared_trunk import layer_index
from qsharp_ext.value_model import ValueModel, tokenizer_digest
from tests.engine.conftest import WORDS, make_causal_lm, make_tokenizer


@pytest.mark.parametrize("kind", ["bernoulli", "histogram", "mean"])
@pytest.mark.parametrize("parameterization", ["v", "q"])
def test_head_output_shapes(arch, tokenizer, kind, parameterization):
    ref = make_causal_lm(arch, len(tokenizer))
    vm = ValueModel.from_reference(ref, 2, tokenizer, kind=kind, parameterization=parameterization, n_atoms=7)
    ids = torch.randint(0, len(WORDS), (3, 5))
    out, _ = vm(ids)
    per_token = (7,) if kind == "histogram" else ()
    vocab = (len(tokenizer),) if parameterization == "q" else ()
    assert out.shape == (3, 5, *vocab, *per_token)
    assert torch.isfinite(vm.log_offset(out, 0.1)).all()


def test_from_reference_copies_the_first_layers(arch, tokenizer):
    ref = make_causal_lm(arch, len(tokenizer), num_layers=4)
    vm = ValueModel.from_reference(ref, 2, tokenizer)
    assert vm.backbone.config.num_hidden_layers == 2
    ref_state = ref.base_model.state_dict()
    copied = vm.backbone.state_dict()
    assert set(copied) <= set(ref_state)
    for name, value in copied.items():
        torch.testing.assert_close(value, ref_state[name], rtol=0, atol=0)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in vm.backbone.parameters()) < n_ref


def test_extra_layers_sit_fresh_on_top_of_the_copied_ones_and_survive_save_and_load(arch, tokenizer, tmp_path):
    ref = make_causal_lm(arch, len(tokenizer), num_layers=3)
    vm = ValueModel.from_reference(ref, 2, tokenizer, extra_layers=2).eval()
    assert vm.backbone.config.num_hidden_layers == 4
    ref_state, state = ref.base_model.state_dict(), vm.backbone.state_dict()
    for name, value in state.items():
        index = layer_index(name)
        if index is None or index < 2:  # embeddings, final norm, the copied layers: π_ref's exactly
            torch.testing.assert_close(value, ref_state[name], rtol=0, atol=0)
        elif index == 2 and value.dim() == 2:  # π_ref's own third layer is not copied into the first extra one
            assert not torch.equal(value, ref_state[name]), name
    assert {layer_index(n) for n in state} == {None, 0, 1, 2, 3}
    ids = torch.randint(0, len(WORDS), (2, 5))
    vm.save_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    again = ValueModel.from_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    torch.testing.assert_close(again(ids)[0], vm(ids)[0], rtol=0, atol=0)
    with pytest.raises(UserError, match="extra_layers"):
        ValueModel.from_reference(ref, 2, tokenizer, extra_layers=-1)


def test_lm_head_start_gives_pi_refs_logits_centred_over_the_vocabulary(arch, tokenizer, rng):
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    ref = make_causal_lm(arch, len(tokenizer), num_layers=3, seed=seed)
    vm = ValueModel.from_reference(ref, 3, tokenizer, head_init="lm_head", parameterization="q").eval()  # no dropout
    ids = torch.randint(0, len(WORDS), (2, 6), generator=rng)
    with torch.no_grad():
        out, _ = vm(ids)  # (B, T, V)
        logits = ref(ids).logits.double()  # (B, T, V)
    expected = logits - logits.mean(-1, keepdim=True)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out.double(), logits, atol=1e-3)  # centred: not π_ref's raw logits


@pytest.mark.parametrize("parameterization, kind", [("v", "bernoulli"), ("q", "bernoulli"), ("v", "histogram")])
def test_linear_start_draws_the_head_at_torch_linears_scale_and_keeps_the_backbone(parameterization, kind, tokenizer):
    ref = make_causal_lm("llama", len(tokenizer), num_layers=2)
    fresh = ValueModel.from_reference(ref, 2, tokenizer, parameterization=parameterization, kind=kind, n_atoms=5)
    linear = ValueModel.from_reference(
        ref, 2, tokenizer, head_init="linear", parameterization=parameterization, kind=kind, n_atoms=5
    )
    hidden = ref.config.hidden_size
    weight = linear.head.weight.detach().double()
    bound = hidden**-0.5
    assert weight.abs().max() <= bound and torch.all(linear.head.bias == 0)
    assert abs(weight.std().item() - bound / 3**0.5) < 0.15 * bound  # uniform on ±1/√H: std 1/√(3H)
    assert weight.std() > 10 * fresh.head.weight.detach().double().std()  # the fresh head is 0.02/√H
    for (name, a), b in zip(linear.backbone.state_dict().items(), fresh.backbone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_lm_head_start_is_refused_where_it_cannot_mean_pi_refs_logits(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer), num_layers=3)
    with pytest.raises(UserError, match="all 3 layers"):
        ValueModel.from_reference(ref, 2, tokenizer, head_init="lm_head", parameterization="q")
    with pytest.raises(UserError, match="Q-type bernoulli"):
        ValueModel.from_reference(ref, 3, tokenizer, head_init="lm_head", parameterization="v")
    with pytest.raises(UserError, match="Q-type bernoulli"):
        ValueModel.from_reference(ref, 3, tokenizer, head_init="lm_head", parameterization="q", kind="mean")
    with pytest.raises(UserError, match="head_init must be"):
        ValueModel.from_reference(ref, 3, tokenizer, head_init="random")


def test_from_reference_rejects_too_many_layers(tokenizer):
    with pytest.raises(UserError, match="num_layers"):
        ValueModel.from_reference(make_causal_lm("llama", len(tokenizer), num_layers=2), 3)


def test_num_layers_0_and_none_both_mean_all_layers_as_in_the_configs(tokenizer):
    """The command line, TrainConfig and from_reference read num_layers the same way (0 or None: all)."""
    ref = make_causal_lm("llama", len(tokenizer), num_layers=3)
    for all_layers in (None, 0):
        assert ValueModel.from_reference(ref, all_layers, tokenizer).backbone.config.num_hidden_layers == 3
    assert ValueModel.from_reference(ref).backbone.config.num_hidden_layers == 3  # the default: all
    for bad in (-1, 1.5, "2"):
        with pytest.raises(UserError, match="num_layers"):
            ValueModel.from_reference(ref, bad, tokenizer)
    # the lm_head start's advice names a value that from_reference itself accepts
    with pytest.raises(UserError, match="set num_layers to 0 or None"):
        ValueModel.from_reference(ref, 2, tokenizer, head_init="lm_head", parameterization="q")
    ValueModel.from_reference(ref, None, tokenizer, head_init="lm_head", parameterization="q")


@pytest.mark.parametrize("kind", ["bernoulli", "histogram"])
def test_save_and_load_round_trip(arch, tokenizer, tmp_path, kind):
    support = {"v_min": -1.0, "v_max": 2.0} if kind == "histogram" else {}
    vm = ValueModel.from_reference(make_causal_lm(arch, len(tokenizer)), 1, kind=kind, **support)
    torch.nn.init.normal_(vm.head.weight)
    vm.save_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    loaded = ValueModel.from_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    ids = torch.randint(0, len(WORDS), (2, 6))
    torch.testing.assert_close(loaded(ids)[0], vm.eval()(ids)[0])
    assert loaded.head_config == vm.head_config
    torch.testing.assert_close(loaded.atoms, vm.atoms)
    assert sorted(p.name for p in (tmp_path / "vm").iterdir()) == sorted(
        ["config.json", "model.safetensors", "value_head.safetensors", "qsharp_value.json", "README.md"]
    )


def test_loading_with_another_tokenizer_is_one_clear_sentence(tokenizer, tmp_path):
    vm = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer)), 1)
    vm.save_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    other = make_tokenizer(list(reversed(WORDS)))  # same size, different ids
    with pytest.raises(UserError, match="different tokenizer"):
        ValueModel.from_pretrained(tmp_path / "vm", tokenizer=other)
    with pytest.raises(UserError, match="not a saved value model"):
        ValueModel.from_pretrained(tmp_path / "missing")


def test_a_tokenizer_larger_than_pi_refs_vocabulary_is_refused_at_build(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer))
    bigger = make_tokenizer([*WORDS, *(f"x{i}" for i in range(20))])
    with pytest.raises(UserError, match=r"the tokenizer has \d+ tokens but π_ref's vocabulary only"):
        ValueModel.from_reference(ref, 1, bigger)
    ValueModel.from_reference(ref, 1, tokenizer)  # its own tokenizer is fine


def test_tokenizer_digest_is_kept_per_tokenizer_until_its_vocabulary_grows(monkeypatch):
    tokenizer = make_tokenizer()
    first = tokenizer_digest(tokenizer)
    calls = []
    real = type(tokenizer).get_vocab
    monkeypatch.setattr(type(tokenizer), "get_vocab", lambda self: calls.append(1) or real(self))
    assert tokenizer_digest(tokenizer) == first and not calls  # kept: not hashed again
    tokenizer.add_tokens(["brand_new_word"])
    grown = tokenizer_digest(tokenizer)
    assert calls and grown != first  # a new token is a new vocabulary
    assert tokenizer_digest(make_tokenizer()) == first  # another object with the same vocabulary: same digest


def test_bad_head_config_is_a_clear_error(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer))
    with pytest.raises(UserError, match="kind"):
        ValueModel.from_reference(ref, 1, kind="poisson")
    with pytest.raises(UserError, match="bernoulli head"):
        ValueModel.from_reference(ref, 1, kind="bernoulli", v_max=5.0)
