"""fixed_shapes: the same samples as growing caches, and every decoding step after the first of one shape."""

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.fixed_shapes import FixedSlots, GrowingSlots
from qsharp_ext.generate import guided_generate
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm

PROMPTS = ["w1 w2 w3 w4 w5", "w7", "w9 w10 w11"]  # different lengths: left padding is exercised
VALUE_MODELS = ["v", "q", "shared", None]


def value_model(ref, tokenizer, value: str | None) -> ValueModel | None:
    if value is None:
        return None
    share = value == "shared"
    vm = ValueModel.from_reference(
        ref, 0 if share else 2, tokenizer, parameterization="v" if value == "v" else "q", share_trunk=share
    )  # fmt: skip
    torch.nn.init.normal_(vm.head.weight, std=0.5)  # a head that actually discriminates
    return vm.to(ref.dtype).eval()


def generate(ref, tokenizer, vm, fixed_shapes: bool, **kwargs):
    etas = (None,) if vm is None else (0.05, None, 1.0)
    settings = dict(etas=etas, num_samples=2, max_new_tokens=8, top_k=4, seed=5, temperature=2.0) | kwargs
    return guided_generate(ref, tokenizer, PROMPTS, vm, fixed_shapes=fixed_shapes, **settings)


@pytest.mark.parametrize("value", VALUE_MODELS)
def test_fixed_shapes_sample_what_growing_caches_sample(arch, tokenizer, value):
    ref = make_causal_lm(arch, len(tokenizer)).double()
    vm = value_model(ref, tokenizer, value)
    stops = list(range(12))  # rows end at different steps
    growing, fixed = (generate(ref, tokenizer, vm, f, eos_token_id=stops) for f in (False, True))
    assert torch.equal(fixed.sequences, growing.sequences) and torch.equal(fixed.lengths, growing.lengths)
    assert growing.lengths.min() < growing.lengths.max()  # the stops were exercised
    for field in ("logp_pi", "logp_ref", "kl"):
        torch.testing.assert_close(getattr(fixed, field), getattr(growing, field), rtol=1e-10, atol=1e-10)


def forward_shapes(model: torch.nn.Module, calls: list) -> torch.utils.hooks.RemovableHandle:
    """Record the shapes of every tensor argument of each forward call of `model`."""

    def hook(module, args, kwargs):
        tensors = {k: tuple(v.shape) for k, v in kwargs.items() if torch.is_tensor(v)}
        calls.append((tuple(tuple(a.shape) for a in args if torch.is_tensor(a)), tuple(sorted(tensors.items()))))

    return model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("value", VALUE_MODELS)
@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_every_step_after_the_first_has_one_shape(tokenizer, value, fixed_shapes):
    ref = make_causal_lm("llama", len(tokenizer))
    vm = value_model(ref, tokenizer, value)
    models = {"ref": ref} | ({"value": vm.backbone} if value in ("v", "q") else {})
    calls = {name: [] for name in models}
    handles = [forward_shapes(model, calls[name]) for name, model in models.items()]
    generate(ref, tokenizer, vm, fixed_shapes, eos_token_id=[])
    for handle in handles:
        handle.remove()
    for name, made in calls.items():
        steady = made[2:]  # after the prefill and the first step (the V-type pass has no pending token then)
        assert len(steady) >= 5
        assert (len(set(steady)) == 1) == fixed_shapes, (name, set(steady))


def test_fixed_slots_read_what_growing_slots_read():
    """The filled slots of a FixedSlots table are the growing mask's, and a candidate also reads its own slot."""
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    growing, fixed = GrowingSlots(prompt_mask), FixedSlots(prompt_mask, capacity=9)
    for _ in range(2):
        growing.append()
        fixed.append()
    assert torch.equal(fixed.table[:, :5], growing.mask.bool()) and not fixed.table[:, 5:].any()
    assert torch.equal(fixed.filled(), growing.filled())
    k = 3
    tree = growing.candidate_mask(k, new=1)  # (2, 1, 1 + k, 5 + k): prefix columns, then the k candidates
    table = fixed.candidate_mask(k, new=1)  # (2, 1, 1 + k, 9): candidate j at slot 5 + j
    torch.testing.assert_close(table[..., :5], tree[..., :5])
    torch.testing.assert_close(table[..., 5 : 5 + k], tree[..., 5:])
    assert not table[..., 5 + k :].any()


def test_cuda_graphs_need_a_cuda_device(tokenizer):
    ref = make_causal_lm("llama", len(tokenizer))
    with pytest.raises(UserError, match="cuda_graphs needs π_ref on a CUDA device"):
        guided_generate(ref, tokenizer, PROMPTS, None, etas=(None,), max_new_tokens=3, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("value", VALUE_MODELS)
def test_replayed_steps_draw_what_eager_steps_draw(tokenizer, value):
    ref = make_causal_lm("llama", len(tokenizer)).cuda()
    vm = value_model(ref, tokenizer, value)
    eager, replayed = (
        generate(ref, tokenizer, vm, True, cuda_graphs=graphs, eos_token_id=list(range(12))) for graphs in (False, True)
    )  # fmt: skip
    assert torch.equal(replayed.sequences, eager.sequences) and torch.equal(replayed.lengths, eager.lengths)
    for field in ("logp_pi", "logp_ref", "kl"):
        torch.testing.assert_close(getattr(replayed, field), getattr(eager, field), rtol=1e-5, atol=1e-5)
