"""Value-model training: prefix extension in one pass equals one pass per prefix, it learns, it resumes exactly."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qsharp_ext import finished_runs, train_batches, train_checkpoints, training
from qsharp_ext.errors import UserError
from qsharp_ext.rollout_data import Rollout, record_tokenizer, write_shard
from qsharp_ext.tasks.base import Task
from qsharp_ext.train_batches import collate, target_positions, target_prefixes
from qsharp_ext.train_report import summary_line
from qsharp_ext.training import TrainConfig, batch_loss, run_train
from qsharp_ext.value_model import ValueModel, tokenizer_digest
from tests.engine.conftest import make_causal_lm, make_tokenizer

# The synthetic task: reward 1 iff the first completion token is one of GOOD; every other token is NEUTRAL.
GOOD, BAD, NEUTRAL = range(0, 10), range(10, 20), range(20, 45)
BOS = 47


def synthetic_rollouts(n_prompts: int, samples: int, seed: int = 0) -> list[Rollout]:
    rng = random.Random(seed)
    out = []
    for p in range(n_prompts):
        prompt = [BOS] + [rng.choice(NEUTRAL) for _ in range(2)]
        for s in range(samples):
            first = rng.choice([*GOOD, *BAD])
            completion = [first] + [rng.choice(NEUTRAL) for _ in range(5)]
            out.append(Rollout(f"p{p}", s, 1, None, seed, prompt, completion, rng.randrange(3), float(first in GOOD)))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.fixture(scope="module")
def ref_folder(tmp_path_factory) -> Path:
    """π_ref on disk: a tiny 2-layer Llama with the shared word-level tokenizer."""
    folder = tmp_path_factory.mktemp("ref")
    tokenizer = make_tokenizer()
    make_causal_lm("llama", len(tokenizer), num_layers=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rollouts")
    rollouts = synthetic_rollouts(60, 4)
    write_shard(folder, 0, rollouts[:120])
    write_shard(folder, 1, rollouts[120:])
    return folder


def config(tmp_path: Path, ref_folder: Path, data_folder: Path, **overrides) -> TrainConfig:
    fields = dict(
        out=tmp_path / "run", data=(data_folder,), ref_model=str(ref_folder), num_layers=1, steps=30,
        batch_size=8, lr=3e-3, warmup_steps=10, eval_fraction=0.25, eval_every=10, save_every=10, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


def saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {**load_file(folder / "model.safetensors"), **load_file(folder / "value_head.safetensors")}


def assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = saved_tensors(a), saved_tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


# ---------------------------------------------------------------------------------- prefix extension


def test_target_positions_by_hand():
    # prompt of 3 tokens (positions 0-2), completion of 4 (positions 3-6), switch 1
    assert target_positions(3, 4, 1, q_type=False, prefix_extension=True) == range(3, 7)
    assert target_positions(3, 4, 1, q_type=True, prefix_extension=True) == range(3, 6)
    assert target_positions(3, 4, 1, q_type=False, prefix_extension=False) == range(3, 4)
    assert target_positions(3, 4, 4, q_type=True, prefix_extension=True) == range(6, 6)  # no next token: none
    assert target_positions(0, 4, 0, q_type=False, prefix_extension=True) == range(0, 4)  # empty prefix skipped


def naive_loss(vm: ValueModel, rollouts: list[Rollout], prefix_extension: bool) -> torch.Tensor:
    """Each target prefix through its own forward pass; the head output at its last position."""
    outs, rewards = [], []
    for r in rollouts:
        seq = r.prompt_ids + r.completion_ids
        args = (len(r.prompt_ids), len(r.completion_ids), r.switch, vm.is_q_type, prefix_extension)
        for t in target_positions(*args):
            head_out = vm(torch.tensor([seq[: t + 1]]))[0][0, -1]  # () / (n,); Q-type: (V,) / (V, n)
            outs.append(head_out[seq[t + 1]] if vm.is_q_type else head_out)
            rewards.append(r.reward)
    return vm.loss(torch.stack(outs), torch.tensor(rewards, dtype=torch.float32))


@pytest.mark.parametrize("kind", ["bernoulli", "histogram"])
@pytest.mark.parametrize("parameterization", ["v", "q"])
def test_one_pass_loss_equals_one_pass_per_prefix(tokenizer, kind, parameterization):
    torch.manual_seed(0)
    vm = ValueModel.from_reference(
        make_causal_lm("llama", len(tokenizer)), 2, tokenizer, kind=kind, parameterization=parameterization, n_atoms=7
    ).double()
    torch.nn.init.normal_(vm.head.weight)  # a head far from uniform
    rng = random.Random(1)
    rollouts = []
    for i in range(4):  # different lengths: right padding must not leak into any target
        prompt = [BOS] + [rng.randrange(45) for _ in range(rng.randrange(0, 4))]
        completion = [rng.randrange(45) for _ in range(rng.randrange(2, 7))]
        reward = rng.random() if kind == "histogram" else float(rng.random() < 0.5)
        rollouts.append(Rollout(f"p{i}", 0, 1, None, 0, prompt, completion, rng.randrange(len(completion)), reward))
    for prefix_extension in (True, False):
        batch = collate(rollouts, vm.is_q_type, prefix_extension, pad_id=tokenizer.pad_token_id)
        expected = naive_loss(vm, rollouts, prefix_extension)
        torch.testing.assert_close(batch_loss(vm, batch), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["bernoulli", "histogram"])
def test_mse_fit_regresses_the_expected_reward(tokenizer, kind):
    """fit="mse": mean squared error of E[z] against the reward, checked against a float64 hand computation."""
    torch.manual_seed(2)
    vm = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer)), 1, tokenizer, kind=kind, n_atoms=5)
    head_out = torch.randn(64, 5) * 20 if kind == "histogram" else torch.randn(64) * 20  # saturated heads too
    reward = torch.rand(64) if kind == "histogram" else (torch.rand(64) < 0.5).float()
    if kind == "histogram":
        expected = (torch.softmax(head_out.double(), -1) * torch.linspace(0, 1, 5, dtype=torch.float64)).sum(-1)
    else:
        expected = 1 / (1 + torch.exp(-head_out.double()))
    want = ((expected - reward.double()) ** 2).mean()
    got = vm.loss(head_out, reward, fit="mse")
    assert torch.isfinite(got) and abs(got.item() - want.item()) < 1e-6
    assert abs(vm.loss(head_out, reward).item() - want.item()) > 1e-3  # the likelihood loss is another number


def two_hot_float64(reward: float, n_atoms: int) -> list[float]:
    """The two-hot projection of one reward on n evenly spaced atoms of [0, 1], by hand."""
    pos = reward * (n_atoms - 1)
    lower = min(int(pos), n_atoms - 2)
    weights = [0.0] * n_atoms
    weights[lower], weights[lower + 1] = 1 - (pos - lower), pos - lower
    return weights


@pytest.mark.parametrize("rate", [None, 0.0, 1e-3, 0.999, 1.0])
@pytest.mark.parametrize(("kind", "fit"), [("bernoulli", "likelihood"), ("bernoulli", "mse"), ("mean", "likelihood"),
                                           ("histogram", "likelihood"), ("histogram", "mse")])  # fmt: skip
def test_constant_loss_is_the_loss_of_the_best_constant_float64(tokenizer, kind, fit, rate):
    """The held-out mean (Bernoulli entropy, variance) or mean two-hot histogram (its entropy), by hand."""
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    vm = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer)), 1, tokenizer, kind=kind, n_atoms=6)
    n = 2000
    if kind == "histogram":
        reward = torch.rand(n, generator=gen, dtype=torch.float64)
    else:  # 0/1 rewards at a random rate, or at rates near and at 0 and 1
        p = torch.rand((), generator=gen).item() if rate is None else rate
        reward = (torch.rand(n, generator=gen, dtype=torch.float64) < p).double()
    rs, mean = reward.tolist(), reward.mean().item()
    if fit == "mse" or kind == "mean":
        want = sum((r - mean) ** 2 for r in rs) / n
    elif kind == "bernoulli":
        q = min(max(mean, 1e-6), 1 - 1e-6)
        want = -sum(r * math.log(q) + (1 - r) * math.log(1 - q) for r in rs) / n
    else:
        avg = [sum(col) / n for col in zip(*(two_hot_float64(r, 6) for r in rs), strict=True)]
        want = -sum(a * math.log(a) for a in avg if a > 0)
    got = training.constant_loss(vm, reward.float(), fit)
    assert math.isfinite(got) and got == pytest.approx(want, rel=1e-4, abs=1e-5), (seed, got, want)


def test_summary_warns_when_the_held_out_loss_is_no_better_than_a_constant():
    metrics = {"step": 10, "train_trajectories": 90, "train_loss": 0.3, "eval_trajectories": 10,
               "eval_positions": 40, "model": "m", "eval_loss": 0.70, "constant_loss": 0.69}  # fmt: skip
    assert "warning: the held-out loss is no lower than a constant" in summary_line(metrics)
    assert "warning" not in summary_line(metrics | {"eval_loss": 0.5})
    assert "warning" not in summary_line(metrics | {"constant_loss": None})  # runs from before the metric
    assert "no held-out prompts" in summary_line(metrics | {"eval_trajectories": 0, "eval_loss": None})


def test_target_prefix_keys_follow_collate_order():
    a = Rollout("p", 0, 1, None, 0, [1, 2, 3], [4, 5, 6, 7], 1, 1.0)
    b = Rollout("q", 0, 1, None, 0, [1, 2], [8, 9], 0, 0.0)
    steps, prefixes = target_prefixes([a, b], q_type=False, prefix_extension=True)
    assert steps == [("p", 1), ("p", 2), ("p", 3), ("p", 4), ("q", 0), ("q", 1), ("q", 2)]
    assert prefixes[:2] == [("p", (4,)), ("p", (4, 5))] and prefixes[4:] == [("q", ()), ("q", (8,)), ("q", (8, 9))]
    assert len(steps) == collate([a, b], q_type=False, prefix_extension=True).rewards.numel()
    steps, prefixes = target_prefixes([a], q_type=True, prefix_extension=True)  # position t scores token t + 1
    assert steps == [("p", 2), ("p", 3), ("p", 4)] and prefixes[0] == ("p", (4, 5))


def test_data_order_is_a_seeded_permutation_per_epoch():
    n, batch = 10, 4
    stream = [i for step in range(5) for i in train_batches.batch_indices(step, batch, n, seed=3)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]
    assert train_batches.batch_indices(3, batch, n, seed=3) == stream[12:16]
    assert train_batches.batch_indices(0, batch, n, seed=4) != stream[:4]


def test_split_keeps_each_prompt_on_one_side():
    rollouts = synthetic_rollouts(20, 3)
    train, held_out = train_batches.split_by_prompt(rollouts, 0.25)
    assert len({r.prompt_id for r in held_out}) == 5 and len(held_out) == 15
    assert not {r.prompt_id for r in train} & {r.prompt_id for r in held_out}
    assert train_batches.split_by_prompt(list(reversed(rollouts)), 0.25)[1] == list(reversed(held_out))
    assert train_batches.split_by_prompt(rollouts, 0.0) == (rollouts, [])


# ------------------------------------------------------------------------------------------ training


def test_training_learns_and_writes_the_run_folder(tmp_path, ref_folder, data_folder, monkeypatch):
    cfg = config(tmp_path, ref_folder, data_folder, steps=150, eval_every=50, save_every=50)
    metrics = run_train(cfg, progress=False)
    assert metrics["roc_auc"] > 0.9 and metrics["within_prompt_auc"] > 0.9, metrics  # reward: the first token
    assert metrics["step"] == 150 and metrics["eval_trajectories"] == 60 and metrics["train_trajectories"] == 180
    run = cfg.out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-100", "step-150"]  # last two kept
    assert (run / "checkpoints" / "step-150" / "trainer_state.pt").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(151))
    assert [r["step"] for r in records if "roc_auc" in r] == [0, 50, 100, 150]
    assert (run / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"] == metrics
    tokenizer = make_tokenizer()
    ValueModel.from_pretrained(run / "model", tokenizer=tokenizer)  # a loadable value model
    assert "ROC-AUC" in summary_line(metrics) and "warning" not in summary_line(metrics)
    assert metrics["eval_loss"] < 0.5 * metrics["constant_loss"], metrics  # it learned what carries over
    rescored = finished_runs.score_held_out(cfg.out)  # the saved model, read back, scores the same held-out prompts
    assert rescored == pytest.approx({k: metrics[k] for k in rescored}, abs=1e-6)

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(training, "train_step", must_not_train)
    assert run_train(cfg, progress=False) == metrics

    # a saved value model can start another run; one with another head cannot
    again = config(tmp_path / "again", ref_folder, data_folder, steps=2, init_value_model=str(run / "model"))
    monkeypatch.undo()
    assert run_train(again, progress=False)["roc_auc"] > 0.9
    other = config(tmp_path / "other", ref_folder, data_folder, init_value_model=str(run / "model"), kind="mean")
    with pytest.raises(UserError, match="kind='bernoulli'"):
        run_train(other, progress=False)


def test_mse_fit_also_learns_and_its_eval_loss_is_the_mse(tmp_path, ref_folder, data_folder):
    metrics = run_train(config(tmp_path, ref_folder, data_folder, steps=150, fit="mse"), progress=False)
    assert metrics["roc_auc"] > 0.9, metrics
    assert 0 <= metrics["eval_loss"] < 0.25, metrics  # an MSE of probabilities, below the constant 0.5 guess


def test_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one(tmp_path, ref_folder, data_folder):
    # extending a finished 15-step run to 30 steps (constant schedule: the lr does not depend on `steps`)
    straight = config(tmp_path / "straight", ref_folder, data_folder, schedule="constant", save_every=15)
    run_train(straight, progress=False)
    extended = config(tmp_path / "extended", ref_folder, data_folder, schedule="constant", save_every=15)
    run_train(dataclass_replace(extended, steps=15), progress=False)
    run_train(extended, progress=False)
    assert_same_weights(straight.out / "model", extended.out / "model")
    loss = [json.loads(line).get("train_loss") for line in (straight.out / "metrics.jsonl").read_text().splitlines()]
    loss2 = [json.loads(line).get("train_loss") for line in (extended.out / "metrics.jsonl").read_text().splitlines()]
    assert loss == loss2


def dataclass_replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig(**{**cfg.__dict__, **changes})


def test_crash_and_resume_with_a_cosine_schedule(tmp_path, ref_folder, data_folder, monkeypatch):
    straight = config(tmp_path / "straight", ref_folder, data_folder, save_every=15)
    run_train(straight, progress=False)
    crashed = config(tmp_path / "crashed", ref_folder, data_folder, save_every=15)
    real_save = train_checkpoints.save_checkpoint

    def save_then_crash(*args):
        real_save(*args)
        raise KeyboardInterrupt  # after the step-15 checkpoint, with steps 16.. never taken

    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)  # the name run_train calls
    with pytest.raises(KeyboardInterrupt):
        run_train(crashed, progress=False)
    monkeypatch.undo()
    assert not (crashed.out / "model").exists()
    run_train(crashed, progress=False)
    assert_same_weights(straight.out / "model", crashed.out / "model")
    assert_same_weights(straight.out / "checkpoints" / "step-30", crashed.out / "checkpoints" / "step-30")


@pytest.mark.parametrize(("kind", "parameterization", "bf16"), [("histogram", "q", False), ("mean", "v", True)])
def test_other_heads_and_bf16_train(tmp_path, ref_folder, tokenizer, kind, parameterization, bf16):
    rollouts = synthetic_rollouts(8, 2)
    for i, r in enumerate(rollouts):
        r.reward = -1.0 + 3.0 * (i % 5) / 4  # in [-1, 2]
    write_shard(tmp_path / "data", 0, rollouts)
    cfg = config(
        tmp_path, ref_folder, tmp_path / "data", kind=kind, parameterization=parameterization, bf16=bf16,
        v_min=-1.0, v_max=2.0, n_atoms=5, steps=4, eval_every=2, save_every=4,
    )  # fmt: skip
    metrics = run_train(cfg, progress=False)
    assert metrics["eval_loss"] is not None and metrics["eval_loss"] == metrics["eval_loss"]  # finite, not NaN
    assert ValueModel.from_pretrained(cfg.out / "model").head_config.kind == kind


# ----------------------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_clear_sentence(tmp_path, ref_folder, data_folder):
    with pytest.raises(UserError, match="no roll-out data"):
        run_train(config(tmp_path, ref_folder, data_folder, data=()), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no roll-out shards"):
        run_train(config(tmp_path, ref_folder, tmp_path / "empty"), progress=False)
    with pytest.raises(UserError, match="does not exist"):
        run_train(config(tmp_path, tmp_path / "no-such-model", data_folder), progress=False)
    with pytest.raises(UserError, match="bernoulli head"):
        run_train(config(tmp_path, ref_folder, data_folder, v_max=5.0), progress=False)
    with pytest.raises(UserError, match="schedule"):
        run_train(config(tmp_path, ref_folder, data_folder, schedule="linear"), progress=False)
    with pytest.raises(UserError, match="fit must be likelihood or mse"):
        run_train(config(tmp_path, ref_folder, data_folder, fit="l2"), progress=False)

    rollouts = synthetic_rollouts(4, 2)
    rollouts[3].reward = 1.5
    write_shard(tmp_path / "bad", 0, rollouts)
    with pytest.raises(UserError, match=r"reward 1\.5 of prompt 'p1' sample 1 .* outside .*\[0\.0, 1\.0\]"):
        run_train(config(tmp_path, ref_folder, tmp_path / "bad"), progress=False)


def test_data_collected_with_another_tokenizer_is_refused(tmp_path, ref_folder):
    folder = tmp_path / "data"
    write_shard(folder, 0, synthetic_rollouts(8, 2))
    record_tokenizer(folder, "0123456789abcdef")  # what collect records: here another vocabulary's digest
    with pytest.raises(UserError, match=r"collected with another tokenizer than π_ref's .*0123456789abcdef"):
        run_train(config(tmp_path, ref_folder, folder, steps=2), progress=False)
    record_tokenizer(folder, tokenizer_digest(make_tokenizer()))  # π_ref's own: it trains
    assert run_train(config(tmp_path, ref_folder, folder, steps=2, eval_every=1, save_every=1), progress=False)


def test_resuming_under_another_config_is_refused(tmp_path, ref_folder, data_folder):
    cfg = config(tmp_path, ref_folder, data_folder, steps=4, save_every=2)
    run_train(cfg, progress=False)
    with pytest.raises(UserError, match=r"another config \(lr: 0\.003 → 0\.01\)"):
        run_train(dataclass_replace(cfg, lr=0.01, steps=8), progress=False)
    with pytest.raises(UserError, match="already past steps=2"):
        run_train(dataclass_replace(cfg, steps=2), progress=False)


# ------------------------------------------------------------------------------------- frozen backbone


def test_a_frozen_backbone_stays_as_copied_while_the_head_learns(tmp_path, ref_folder, data_folder):
    # with a layer of its own (extra_layers), a frozen backbone is saved with the model (test_shared_trunk.py: without)
    frozen = config(tmp_path / "frozen", ref_folder, data_folder, backbone_lr_scale=0.0, extra_layers=1)
    run_train(frozen, progress=False)
    trained = config(tmp_path / "trained", ref_folder, data_folder, extra_layers=1)
    run_train(trained, progress=False)

    def step(run: TrainConfig, n: int, part: str) -> dict[str, torch.Tensor]:  # part: model or value_head
        return load_file(run.out / "checkpoints" / f"step-{n}" / f"{part}.safetensors")

    early, late, other = step(frozen, 20, "model"), step(frozen, 30, "model"), step(trained, 30, "model")
    assert all(torch.equal(early[name], late[name]) for name in late)
    assert any(not torch.equal(late[name], other[name]) for name in late)  # training the backbone moves it
    early_head, late_head = step(frozen, 20, "value_head"), step(frozen, 30, "value_head")
    assert all(not torch.equal(early_head[name], late_head[name]) for name in late_head)


def test_calibrated_bias_matches_the_reward_rate_and_keeps_the_ranking(tokenizer, rng):
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    ref = make_causal_lm("llama", len(tokenizer), num_layers=2, seed=seed)
    vm = ValueModel.from_reference(ref, 2, tokenizer, head_init="lm_head", parameterization="q")
    with torch.no_grad():
        vm.head.weight.mul_(40.0)  # logits spread over tens of nats, as a real LM head's are
        vm.head.bias.add_(30.0)  # and far above 0: as Bernoulli logits they say "always right"
    batch = collate(synthetic_rollouts(6, 4, seed=seed % 1000), True, True)
    before = train_batches.target_outputs(vm, batch).double()
    training.calibrate_bias(vm, batch)
    after = train_batches.target_outputs(vm, batch).double()
    shift = after - before
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-4)  # one constant: the ranking is kept
    assert abs(torch.sigmoid(after).mean().item() - batch.rewards.double().mean().item()) < 1e-4
    assert torch.sigmoid(before).mean().item() > 0.99 > batch.rewards.double().mean().item()  # "always right"


def test_a_run_started_from_the_lm_head_learns(tmp_path, ref_folder, data_folder):
    cfg = config(tmp_path, ref_folder, data_folder, num_layers=0, parameterization="q", head_init="lm_head")
    metrics = run_train(dataclass_replace(cfg, steps=150, eval_every=50, save_every=50), progress=False)
    records = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    first_loss = records[1]["train_loss"]
    assert first_loss < 1.0, first_loss  # calibrated before the first step: not the loss of "always right"
    assert metrics["within_prompt_auc"] > 0.9, metrics
    with pytest.raises(UserError, match="Q-type bernoulli"):
        run_train(config(tmp_path / "v", ref_folder, data_folder, num_layers=0, head_init="lm_head"), progress=False)
    with pytest.raises(UserError, match="set num_layers to 0"):
        run_train(dataclass_replace(cfg, out=tmp_path / "one", num_layers=1), progress=False)


def test_a_run_started_from_a_linear_scale_head_saves_that_start_and_unknown_starts_are_refused(
    tmp_path, ref_folder, data_folder
):
    cfg = config(tmp_path, ref_folder, data_folder, head_init="linear", steps=1, lr=1e-7, save_every=1)
    run_train(cfg, progress=False)
    weight = load_file(cfg.out / "model" / "value_head.safetensors")["weight"].double()
    hidden = weight.shape[1]
    assert weight.abs().max() <= hidden**-0.5 + 1e-6 and weight.std() > 0.3 * hidden**-0.5  # not the 0.02/√H start
    with pytest.raises(UserError, match="head_init must be one of fresh, linear, lm_head"):
        run_train(config(tmp_path / "bad", ref_folder, data_folder, head_init="random"), progress=False)


def test_a_checkpoint_resumes_only_under_the_settings_it_recorded(tmp_path, ref_folder, data_folder):
    cfg = config(tmp_path, ref_folder, data_folder, steps=10, save_every=10)
    run_train(cfg, progress=False)
    with pytest.raises(UserError, match=r"backbone_lr_scale: 1\.0 → 0\.5"):
        run_train(dataclass_replace(cfg, steps=20, backbone_lr_scale=0.5), progress=False)
    with pytest.raises(UserError, match=r"backbone_lr_scale must be in \[0, 1\], got 2"):
        run_train(dataclass_replace(cfg, backbone_lr_scale=2.0), progress=False)
    state_file = cfg.out / "checkpoints" / "step-10" / train_checkpoints.STATE_FILE
    state = torch.load(state_file, weights_only=True)
    recorded = json.loads(state["config"])
    del recorded["backbone_lr_scale"]  # a checkpoint that does not record a setting is not guessed at
    torch.save({**state, "config": json.dumps(recorded)}, state_file)
    with pytest.raises(UserError, match=r"backbone_lr_scale: None → 1\.0"):
        run_train(dataclass_replace(cfg, steps=20), progress=False)


# ------------------------------------------------------------------------------ future-token objective


def test_future_tokens_off_reproduces_plain_training_and_on_changes_it(tmp_path, ref_folder, data_folder):
    plain = config(tmp_path / "plain", ref_folder, data_folder, steps=10)
    run_train(plain, progress=False)
    off = config(tmp_path / "off", ref_folder, data_folder, steps=10, future_tokens=3, future_weight=0.0)
    run_train(off, progress=False)
    assert_same_weights(plain.out / "model", off.out / "model")
    on = config(tmp_path / "on", ref_folder, data_folder, steps=10, future_tokens=3)
    run_train(on, progress=False)
    files = [sorted(p.name for p in (run.out / "model").iterdir()) for run in (on, plain)]
    assert files[0] == files[1]
    assert saved_tensors(on.out / "model").keys() == saved_tensors(plain.out / "model").keys()  # heads not saved
    assert not torch.equal(saved_tensors(on.out / "model")["weight"], saved_tensors(plain.out / "model")["weight"])
    records = [json.loads(line) for line in (on.out / "metrics.jsonl").read_text().splitlines()]
    future = [r["future_loss"] for r in records if "future_loss" in r]
    assert len(future) == 10 and all(math.isfinite(x) for x in future)
    assert future[-1] < future[0]  # the completion's neutral tokens are learnable: 25 equally likely, not 45


def test_future_token_heads_resume_exactly_after_a_crash(tmp_path, ref_folder, data_folder, monkeypatch):
    straight = config(tmp_path / "straight", ref_folder, data_folder, save_every=15, future_tokens=2)
    run_train(straight, progress=False)
    crashed = config(tmp_path / "crashed", ref_folder, data_folder, save_every=15, future_tokens=2)
    real_save = train_checkpoints.save_checkpoint

    def save_then_crash(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)  # the name run_train calls
    with pytest.raises(KeyboardInterrupt):
        run_train(crashed, progress=False)
    monkeypatch.undo()
    run_train(crashed, progress=False)
    assert_same_weights(straight.out / "model", crashed.out / "model")


def test_grouped_batches_keep_each_prompt_together():
    rollouts = synthetic_rollouts(9, 3)
    groups = train_batches.prompt_groups(rollouts)
    assert groups == tuple(i // 3 for i in range(27))
    for step in range(12):  # 9 groups of 3 in batches of 6: every batch holds two whole prompts
        batch = train_batches.batch_indices(step, 6, len(rollouts), seed=1, groups=groups)
        assert sorted(batch) == sorted(i for g in {groups[i] for i in batch} for i in range(3 * g, 3 * g + 3))
    first_epoch = [i for step in range(9) for i in train_batches.batch_indices(step, 3, 27, seed=1, groups=groups)]
    assert sorted(first_epoch) == list(range(27)) and first_epoch != list(range(27))


def test_grouped_training_runs(tmp_path, ref_folder, data_folder):
    metrics = run_train(config(tmp_path, ref_folder, data_folder, steps=5, group_by_prompt=True), progress=False)
    assert metrics["step"] == 5


class EchoTask(Task):
    """Future-token targets from the prompt alone: every position names the prompt's last token, k times."""

    def future_targets(self, prompt_ids, completion_ids, k):
        return [[prompt_ids[-1]] * k for _ in prompt_ids + completion_ids]


def test_task_future_targets_fill_every_position_and_train(tmp_path, ref_folder, data_folder):
    rollouts = synthetic_rollouts(2, 2)
    batch = collate(rollouts, False, True, future_targets=EchoTask().future_targets, k=2)
    assert batch.future_ids.shape == (*batch.input_ids.shape, 2)
    for i, r in enumerate(rollouts):
        assert (batch.future_ids[i] == r.prompt_ids[-1]).all()  # every sequence has the same length here
    cfg = config(tmp_path, ref_folder, data_folder, steps=10, future_tokens=2, future_targets="task")
    run_train(cfg, progress=False, task=EchoTask())
    records = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    future = [r["future_loss"] for r in records if "future_loss" in r]
    assert len(future) == 10 and future[-1] < future[0]
    with pytest.raises(UserError, match="future_targets hook"):
        run_train(config(tmp_path / "none", ref_folder, data_folder, future_tokens=2, future_targets="task"))
    with pytest.raises(UserError, match="future_targets must be"):
        run_train(config(tmp_path / "bad", ref_folder, data_folder, future_targets="prompt"))
