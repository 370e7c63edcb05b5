"""A value model on π_ref's own frozen layers: decoded from π_ref's pass, saved as its head, loaded with its π_ref."""

import copy

import pytest
import torch
from transformers import AutoModel

from qsharp_ext.errors import UserError
from qsharp_ext.generate import guided_generate
from qsharp_ext.loading import load_reference
from qsharp_ext.shared_trunk import trunk_fingerprint
from qsharp_ext.training import run_train
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm
from tests.engine.test_training import config, data_folder, ref_folder  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py

HEADS = [
    dict(kind="bernoulli"),
    dict(kind="histogram", n_atoms=5, v_min=-1.0, v_max=2.0),
    dict(kind="mean", v_min=-1.0),
]
PROMPTS = [[47, 3, 4], [47, 5], [47, 6, 7, 8, 9]]


def shared_value_model(ref, tokenizer, layers, head, parameterization="q") -> ValueModel:
    vm = ValueModel.from_reference(
        ref, layers, tokenizer, head_init="linear", share_trunk=True, parameterization=parameterization, **head
    )
    return vm.double().eval()


def backbone_calls(vm: ValueModel) -> list[int]:
    calls = []
    vm.backbone.register_forward_hook(lambda *_: calls.append(1))
    return calls


def decode(ref, tokenizer, vm, **kw):
    args = dict(etas=[0.05, 1.0, None], num_samples=2, max_new_tokens=6, top_k=7, seed=3, eos_token_id=[])
    return guided_generate(ref, tokenizer, PROMPTS, vm, **(args | kw))


@pytest.mark.parametrize("head", HEADS, ids=[h["kind"] for h in HEADS])
@pytest.mark.parametrize("layers", [1, 3])
def test_shared_trunk_decodes_exactly_as_the_two_model_path(arch, tokenizer, head, layers):
    """float64: one π_ref pass for both models gives the tokens and log-probs of π_ref + a copy of its layers."""
    ref = make_causal_lm(arch, len(tokenizer), num_layers=3).double()
    vm = shared_value_model(ref, tokenizer, layers, head)
    other = copy.deepcopy(ref)  # the same weights, another object: the value model runs its own copy of the layers
    assert vm.reads(ref) and not vm.reads(other)
    calls = backbone_calls(vm)
    steps = {}
    shared = decode(ref, tokenizer, vm, on_step=lambda s, t: steps.setdefault(("shared", s), t["head_out"].clone()))
    assert not calls  # no backbone pass of the value model's own
    two = decode(other, tokenizer, vm, on_step=lambda s, t: steps.setdefault(("two", s), t["head_out"].clone()))
    assert calls  # the two-model path ran the copy
    assert torch.equal(shared.sequences, two.sequences)
    for name in ("logp_pi", "logp_ref", "kl"):
        torch.testing.assert_close(getattr(shared, name), getattr(two, name), rtol=1e-12, atol=1e-12)
    for step in range(shared.sequences.shape[1]):
        torch.testing.assert_close(steps["shared", step], steps["two", step], rtol=1e-12, atol=1e-12)
    assert shared.kl[[0, 1]].gt(0).all()  # η 0.05 rows are guided (not a trivially equal π_ref run)


def test_candidate_rows_of_the_head_equal_the_full_head(tokenizer, rng):
    ref = make_causal_lm("llama", len(tokenizer), num_layers=2).double()
    for head in HEADS:
        vm = shared_value_model(ref, tokenizer, 2, head)
        hidden = torch.randn(4, 32, generator=rng, dtype=torch.float64)
        cand = torch.randint(0, len(tokenizer), (4, 6), generator=rng)
        full = vm.head_outputs(hidden)  # (4, V[, n])
        index = cand if full.dim() == 2 else cand.unsqueeze(-1).expand(-1, -1, full.shape[-1])
        torch.testing.assert_close(vm.candidate_outputs(hidden, cand), full.gather(1, index), rtol=1e-12, atol=1e-12)


def test_saved_as_the_head_and_loaded_only_with_its_reference(tmp_path, tokenizer):
    ref = make_causal_lm("qwen2", len(tokenizer), num_layers=3).double()
    vm = shared_value_model(ref, tokenizer, 2, HEADS[1])
    vm.save_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    assert not (tmp_path / "vm" / "model.safetensors").exists()  # π_ref's layers are not saved again
    with pytest.raises(UserError, match="ref_model=<π_ref>"):
        ValueModel.from_pretrained(tmp_path / "vm")
    with pytest.raises(UserError, match="ref_model=<π_ref>"):
        AutoModel.from_pretrained(tmp_path / "vm")
    stranger = make_causal_lm("qwen2", len(tokenizer), num_layers=3, seed=1).double()
    with pytest.raises(UserError, match="first 2 layers of another π_ref"):
        ValueModel.from_pretrained(tmp_path / "vm", ref_model=stranger)
    loaded = ValueModel.from_pretrained(tmp_path / "vm", tokenizer=tokenizer, ref_model=ref).double()
    assert loaded.reads(ref)
    a, b = decode(ref, tokenizer, vm), decode(ref, tokenizer, loaded)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.logp_pi, b.logp_pi)


def test_fingerprint_ignores_dtype_and_sees_the_weights(tokenizer):
    ref = make_causal_lm("gpt2", len(tokenizer), num_layers=3)
    assert trunk_fingerprint(ref, 2) == trunk_fingerprint(copy.deepcopy(ref).to(torch.bfloat16), 2)
    assert trunk_fingerprint(ref, 2) == trunk_fingerprint(copy.deepcopy(ref).double(), 2)
    assert trunk_fingerprint(ref, 2) != trunk_fingerprint(ref, 3)
    changed = copy.deepcopy(ref)
    with torch.no_grad():
        changed.transformer.h[1].mlp.c_fc.weight.mul_(2)
    assert trunk_fingerprint(changed, 1) == trunk_fingerprint(ref, 1)  # layer 1 (0-based) is not read by 1 layer
    assert trunk_fingerprint(changed, 2) != trunk_fingerprint(ref, 2)


def test_sharing_refuses_layers_of_its_own(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer), num_layers=2)
    with pytest.raises(UserError, match="cannot add layers of its own"):
        ValueModel.from_reference(ref, 2, tokenizer, share_trunk=True, extra_layers=1)


def test_training_with_a_frozen_copy_of_the_reference_saves_a_shared_trunk(tmp_path, ref_folder, data_folder):  # noqa: F811
    frozen = config(tmp_path / "frozen", ref_folder, data_folder, backbone_lr_scale=0.0, steps=20, parameterization="q")
    run_train(frozen, progress=False)
    assert not (frozen.out / "model" / "model.safetensors").exists()
    assert not (frozen.out / "checkpoints" / "step-10" / "model.safetensors").exists()
    run_train(config(tmp_path / "frozen", ref_folder, data_folder, backbone_lr_scale=0.0, steps=30,
                     parameterization="q"), progress=False)  # fmt: skip  # resumes from step 20 with its π_ref
    ref = AutoModel.from_pretrained(ref_folder)  # the backbone's weights as π_ref holds them
    ref_model, tokenizer = load_reference(str(ref_folder), "cpu", "float32")
    vm = ValueModel.from_pretrained(frozen.out / "model", tokenizer=tokenizer, ref_model=ref_model)
    assert vm.reads(ref_model) and vm.head_config.shared_layers == 1
    for name, tensor in vm.backbone.state_dict().items():  # π_ref's first layer, as it was
        assert torch.equal(tensor, ref.state_dict()[name]), name
    trained = config(tmp_path / "trained", ref_folder, data_folder, steps=10)  # a backbone that learns keeps its own
    run_train(trained, progress=False)
    assert (trained.out / "model" / "model.safetensors").is_file()


def test_the_shared_layers_are_the_references_tensors_not_copies(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer), num_layers=3)
    vm = ValueModel.from_reference(ref, 2, tokenizer, share_trunk=True, parameterization="q")
    own = ref.base_model.state_dict()
    shared = vm.backbone.state_dict()
    assert shared.keys() == {k for k in own if ".layers.2." not in f".{k}"}
    assert all(tensor.data_ptr() == own[name].data_ptr() for name, tensor in shared.items())
    assert vm.backbone.rotary_emb.inv_freq.data_ptr() == ref.base_model.rotary_emb.inv_freq.data_ptr()
