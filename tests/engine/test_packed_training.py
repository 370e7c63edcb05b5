"""Training batches with each prompt packed once (pack_prompts) give the losses and gradients of the unpacked batch."""

import json

import pytest
import torch

from qsharp_ext.future_tokens import FutureTokenHeads
from qsharp_ext.rollout_data import Rollout
from qsharp_ext.train_batches import collate
from qsharp_ext.training import batch_losses, run_train
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm
from tests.engine.test_training import config, data_folder, ref_folder  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


def prompt_sum_targets(prompt_ids: list[int], completion_ids: list[int], k: int) -> list[list[int]]:
    """A task-like hook: at a prompt position, targets from the prompt alone; at a completion position, from the
    completion; −100 at some positions (no target)."""
    rows = [[(t + j + sum(prompt_ids)) % 40 if t % 3 else -100 for j in range(k)] for t in prompt_ids]
    return rows + [[(t * (j + 2)) % 40 for j in range(k)] for t in completion_ids]


def random_rollouts(generator: torch.Generator, vocab: int) -> list[Rollout]:
    """Prompts of different lengths with 1–3 roll-outs each (the first 3; any lengths and switch steps), interleaved."""

    def draw(n: int) -> list[int]:
        return torch.randint(0, vocab - 3, (n,), generator=generator).tolist()

    rollouts = []
    for p in range(4):
        prompt = draw(int(torch.randint(1, 7, (), generator=generator)))
        for s in range(3 if p == 0 else int(torch.randint(1, 4, (), generator=generator))):  # one prompt shared
            completion = draw(int(torch.randint(1, 6, (), generator=generator)))
            switch = int(torch.randint(0, len(completion) + 1, (), generator=generator))
            reward = float(torch.rand((), generator=generator) < 0.5)
            rollouts.append(Rollout(f"p{p}", s, 1, None, 0, prompt, completion, switch, reward))
    order = torch.randperm(len(rollouts), generator=generator).tolist()
    return [rollouts[i] for i in order]


def losses_and_gradients(model, heads, batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    parameters = [*model.parameters(), *heads.parameters()]
    value, future = batch_losses(model, batch, "likelihood", heads)
    gradients = torch.autograd.grad(value + 0.7 * future, parameters, allow_unused=True)
    return [value, future], [g if g is not None else torch.zeros_like(p) for g, p in zip(gradients, parameters)]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("parameterization", ["v", "q"])
@pytest.mark.parametrize("source", ["rollout", "task"])
def test_packed_batch_has_the_unpacked_losses_and_gradients_float64(tokenizer, rng, arch, parameterization, source):
    ref = make_causal_lm(arch, len(tokenizer), num_layers=2).double()
    model = ValueModel.from_reference(ref, 2, tokenizer, parameterization=parameterization, extra_layers=1).double()
    model.eval()  # GPT-2's dropout off: the two batches must see the same function
    torch.nn.init.normal_(model.head.weight)
    heads = FutureTokenHeads(model.backbone.get_input_embeddings().weight.detach(), k=3).double()
    rollouts = random_rollouts(rng, len(tokenizer))
    hook = prompt_sum_targets if source == "task" else None
    args = (rollouts, parameterization == "q", True, tokenizer.pad_token_id, hook, 3)
    plain, packed = collate(*args), collate(*args, pack_prompts=True)
    assert packed.input_ids.shape[0] == len({tuple(r.prompt_ids) for r in rollouts}) < len(rollouts)
    assert packed.attention_mask.sum() < plain.attention_mask.sum()  # the shared prompt once
    assert torch.equal(packed.rewards, plain.rewards) and torch.equal(packed.next_ids, plain.next_ids)
    want_losses, want_grads = losses_and_gradients(model, heads, plain)
    got_losses, got_grads = losses_and_gradients(model, heads, packed)
    for got, want in zip(got_losses, want_losses, strict=True):  # the losses are float32 (their heads cast)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)
    for got, want in zip(got_grads, want_grads, strict=True):
        # Llama's and Qwen2's RMSNorm and rotary tables compute in float32 even in a float64 model, and a shared
        # prompt position receives its branches' gradients summed before the norm rather than after: about 1e-7
        # of the gradient's size apart, where a wrong mask, position or weight is of the order of the gradient.
        assert torch.isfinite(got).all()
        assert (got - want).norm() <= 1e-5 * want.norm() + 1e-12


def test_packed_training_starts_with_the_unpacked_loss_and_records_the_setting(tmp_path, ref_folder, data_folder):  # noqa: F811
    """The first step's loss is taken before any update: packed and unpacked must agree to float32 rounding."""
    runs = {}
    for pack in (False, True):
        cfg = config(tmp_path / str(pack), ref_folder, data_folder, steps=3, group_by_prompt=True,
                     pack_prompts=pack, future_tokens=2)  # fmt: skip
        metrics = run_train(cfg, progress=False)
        records = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
        runs[pack] = (records, metrics)
        summary = json.loads((cfg.out / "summary.json").read_text())
        assert summary["config"]["pack_prompts"] is pack
    (plain, plain_metrics), (packed, packed_metrics) = runs[False], runs[True]
    for key in ("train_loss", "future_loss"):
        assert packed[1][key] == pytest.approx(plain[1][key], rel=1e-5)
    assert packed[0]["eval_loss"] == pytest.approx(plain[0]["eval_loss"], rel=1e-5)  # held-out batches packed too
    assert packed_metrics["eval_loss"] == pytest.approx(plain_metrics["eval_loss"], rel=1e-3)
