"""The vLLM path with vLLM's public API (LLM, SamplingParams, LLM.generate on token prompts) replaced at its
boundary by a fake that samples the tiny π_ref with torch; and a real run that skips without vLLM or a GPU."""

import dataclasses
import sys
import types
from typing import ClassVar

import pytest
import torch

from qsharp_ext.evaluation import EvaluateConfig, run_evaluate
from qsharp_ext.loading import load_reference
from qsharp_ext.rollout_data import read_rollouts
from qsharp_ext.rollouts import CollectConfig, run_collect, sample_seed_and_switch
from qsharp_ext.scale.vllm_sampler import VllmSampler, completion_tokens


@dataclasses.dataclass
class FakeParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 16
    stop_token_ids: list | None = None
    detokenize: bool = True


class FakeLLM:
    """Samples the model folder with torch, seeded per request; stop tokens are left out of token_ids."""

    calls: ClassVar[list] = []

    def __init__(self, model: str, **kwargs) -> None:
        self.model, _ = load_reference(model, "cpu")
        self.kwargs = kwargs

    @torch.no_grad()
    def generate(self, prompts, params, use_tqdm=True):
        FakeLLM.calls.append((prompts, params, self.kwargs))
        outputs = []
        for prompt, p in zip(prompts, params, strict=True):
            assert p.n == 1 and not p.detokenize and p.max_tokens >= 1
            generator, ids, tokens, reason, stopped_on = (
                torch.Generator().manual_seed(p.seed),
                list(prompt["prompt_token_ids"]),
                [],
                "length",
                None,
            )
            while len(tokens) < p.max_tokens:
                logits = self.model(torch.tensor([ids + tokens])).logits[0, -1] / p.temperature
                token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
                if token in (p.stop_token_ids or []):
                    reason, stopped_on = "stop", token  # vLLM's stop_reason: the stop token id
                    break
                tokens.append(token)
            completion = types.SimpleNamespace(token_ids=tokens, finish_reason=reason, stop_reason=stopped_on)
            outputs.append(types.SimpleNamespace(outputs=[completion]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    FakeLLM.calls = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeParams))
    monkeypatch.setattr("qsharp_ext.scale.vllm_sampler.has_gpu", lambda: True)
    return FakeLLM


def test_completion_tokens_end_with_eos_when_stopped_on_it():
    stop = types.SimpleNamespace(token_ids=[4, 5], finish_reason="stop")
    assert completion_tokens(stop, 9) == [4, 5, 9]
    assert completion_tokens(types.SimpleNamespace(token_ids=[4, 9], finish_reason="stop"), 9) == [4, 9]
    assert completion_tokens(types.SimpleNamespace(token_ids=[4, 5], finish_reason="length"), 9) == [4, 5]


def test_completion_tokens_end_with_whichever_stop_id_ended_them():
    def output(tokens, reason, stop_reason=None):
        return types.SimpleNamespace(token_ids=tokens, finish_reason=reason, stop_reason=stop_reason)

    assert completion_tokens(output([4, 5], "stop", stop_reason=3), [9, 3]) == [4, 5, 3]
    assert completion_tokens(output([4, 5], "stop"), [9, 3]) == [4, 5, 9]  # vLLM's own EOS: the tokenizer's
    assert completion_tokens(output([4, 3], "stop", stop_reason=3), [9, 3]) == [4, 3]  # already there
    assert completion_tokens(output([4, 5], "length"), [9, 3]) == [4, 5]
    assert completion_tokens(output([4, 5], "stop"), []) == [4, 5]


def test_rows_that_ended_on_any_stop_id_are_not_sent(fake_vllm, model_dirs):
    sampler = VllmSampler(str(model_dirs[0]), seed=0, gpu_memory_utilization=0.5)
    out = sampler.continue_rows(
        [[1, 2], [1, 2], [3]], [[7, 5], [7, 0], [7]], seeds=[1, 2, 3], max_new_tokens=4, temperature=1.0,
        top_p=1.0, eos_token_id=[0, 5],
    )  # fmt: skip
    (prompts, params, _) = fake_vllm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [[3, 7]]  # ended by the second id, then by the first
    assert params[0].stop_token_ids == [0, 5]
    assert out[:2] == [[7, 5], [7, 0]] and out[2][:1] == [7]
    assert all(t not in (0, 5) for t in out[2][:-1]) and (len(out[2]) == 4 or out[2][-1] in (0, 5))


def test_sample_stops_at_a_second_stop_id_and_pads_with_the_first(fake_vllm, small_task, model_dirs):
    sampler = VllmSampler(str(model_dirs[0]), seed=0, gpu_memory_utilization=0.5)
    eos = small_task.tokenizer().eos_token_id
    common = dict(num_samples=2, seeds=[1, 2, 3, 4], max_new_tokens=6, temperature=1.0, top_p=1.0)
    plain = sampler.sample([[1, 2], [3]], eos_token_id=[], **common).token_lists()
    turn_end = plain[0][1]  # a token π_ref samples mid-row: the second stop id below
    assert eos not in plain[0][:2] and plain[0][0] != turn_end
    out = sampler.sample([[1, 2], [3]], eos_token_id=[eos, turn_end], **common)
    assert fake_vllm.calls[-1][1][0].stop_token_ids == [eos, turn_end]
    assert out.token_lists()[0] == plain[0][:2]  # the fake leaves the stop id out; its stop_reason puts it back
    assert out.sequences.shape[1] > 2 and (out.sequences[0, 2:] == eos).all()  # padded with the first stop id


def test_rows_that_already_ended_are_not_sent(fake_vllm, model_dirs):
    sampler = VllmSampler(str(model_dirs[0]), seed=0, gpu_memory_utilization=0.5)
    out = sampler.continue_rows(
        [[1, 2], [1, 2], [3]], [[7, 0], [7], [5, 5, 5]], seeds=[1, 2, 3], max_new_tokens=3, temperature=1.0,
        top_p=1.0, eos_token_id=0,
    )  # fmt: skip
    (prompts, params, kwargs) = fake_vllm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [[1, 2, 7]]  # ended by EOS / by length: kept as they are
    assert params[0].max_tokens == 2 and params[0].seed == 2 and params[0].stop_token_ids == [0]
    assert kwargs["skip_tokenizer_init"] and kwargs["gpu_memory_utilization"] == 0.5
    assert out[0] == [7, 0] and out[2] == [5, 5, 5] and out[1][:1] == [7] and 2 <= len(out[1]) <= 3


def test_collect_rolls_in_with_torch_and_out_with_vllm(fake_vllm, small_task, model_dirs, tmp_path):
    torch_cfg = CollectConfig(
        out=tmp_path / "torch", ref_model=str(model_dirs[0]), value_model=str(model_dirs[1]), round=2, eta=0.3,
        samples_per_prompt=3, max_new_tokens=5, top_k=5, prompts_per_shard=4, max_prompts=4, seed=3, device="cpu",
    )  # fmt: skip
    vllm_cfg = dataclasses.replace(torch_cfg, out=tmp_path / "vllm", vllm=True)
    for cfg in (torch_cfg, vllm_cfg):
        run_collect(cfg, small_task, progress=False)
    plain, mixed = read_rollouts([torch_cfg.out]), read_rollouts([vllm_cfg.out])
    eos = small_task.tokenizer().eos_token_id
    sent = [p for prompts, _, _ in fake_vllm.calls for p in prompts]
    params = [p for _, ps, _ in fake_vllm.calls for p in ps]
    assert sent and all(p.seed in {r.seed for r in mixed} for p in params)
    for a, b in zip(plain, mixed):
        _, h = sample_seed_and_switch(3, 2, b.prompt_id, b.sample_index, 5)
        assert a.seed == b.seed and b.switch == min(h, len(b.completion_ids))
        assert b.completion_ids[: b.switch] == a.completion_ids[: b.switch]  # the same guided roll-in
        assert 1 <= len(b.completion_ids) <= 5 and eos not in b.completion_ids[:-1]
        problem = next(p for p in small_task.train_problems() if p.id == b.prompt_id)
        assert b.reward == small_task.reward(problem, small_task.tokenizer().decode(b.completion_ids))
    assert read_rollouts([vllm_cfg.out]) != plain  # π_ref's part came from vLLM's stream


def test_evaluate_samples_pi_ref_with_vllm(fake_vllm, small_task, model_dirs, tmp_path):
    cfg = EvaluateConfig(
        out=tmp_path / "eval", ref_model=str(model_dirs[0]), qsharp_model=str(model_dirs[1]), etas=(None, 0.3),
        num_samples=3, prompts_per_batch=2, max_new_tokens=4, top_k=5, seed=2, device="cpu", vllm=True,
    )  # fmt: skip
    rows = run_evaluate(cfg, small_task, progress=False)
    pi_ref = rows[0]
    assert pi_ref["method"] == "pi_ref" and pi_ref["kl"] == 0.0 and pi_ref["bon_value"] is not None
    n_rows = sum(len(prompts) for prompts, _, _ in fake_vllm.calls)
    assert n_rows == 4 * 3  # every π_ref sample, and only those, went through vLLM


def test_vllm_needs_the_extra(monkeypatch, model_dirs):
    from qsharp_ext.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(UserError, match=r"qsharp-ext\[vllm\]"):
        VllmSampler(str(model_dirs[0]), seed=0, gpu_memory_utilization=0.5)


def test_real_vllm_samples_pi_ref(model_dirs):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    sampler = VllmSampler(str(model_dirs[0]), seed=0, gpu_memory_utilization=0.3)
    out = sampler.continue_rows([[1, 2, 3]] * 4, [[]] * 4, [1, 2, 3, 1], 5, 1.0, 1.0, eos_token_id=0)
    assert all(1 <= len(row) <= 5 for row in out) and out[0] == out[3]  # same seed, same sample
