"""`collect` on a tiny random π_ref: shard contents, rewards, switch steps, round 2, resume, changed settings."""

import dataclasses

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.rollout_data import MANIFEST, read_manifest, read_rollouts, shard_name, write_manifest
from qsharp_ext.rollouts import CollectConfig, run_collect, sample_seed_and_switch, summary_line
from qsharp_ext.tasks import FirstTokenTask, build_task
from qsharp_ext.tasks.first_token import make_tiny_reference
from qsharp_ext.value_model import ValueModel, tokenizer_digest

N_PROMPTS, SAMPLES, PER_SHARD, MAX_NEW = 5, 3, 2, 6  # shards of 2, 2 and 1 prompts


@pytest.fixture(scope="module")
def task() -> FirstTokenTask:
    return FirstTokenTask(n_train=N_PROMPTS, n_eval=2, seed=1)


@pytest.fixture(scope="module")
def models(task, tmp_path_factory):
    """π_ref and a value model built from it (with a head that discriminates), saved as folders."""
    root = tmp_path_factory.mktemp("models")
    tokenizer, ref = task.tokenizer(), make_tiny_reference(task, seed=0)
    ref.save_pretrained(root / "ref")
    tokenizer.save_pretrained(root / "ref")
    value_model = ValueModel.from_reference(ref, 1, tokenizer)
    torch.nn.init.normal_(value_model.head.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    value_model.save_pretrained(root / "value", tokenizer)
    return root / "ref", root / "value"


def config(out, models, **changes) -> CollectConfig:
    base = CollectConfig(
        out=out, ref_model=str(models[0]), samples_per_prompt=SAMPLES, max_new_tokens=MAX_NEW, top_k=5,
        prompts_per_shard=PER_SHARD, seed=7, device="cpu",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def round_one(task, models, tmp_path_factory):
    cfg = config(tmp_path_factory.mktemp("data") / "round1", models)
    run_collect(cfg, task, progress=False)
    return cfg


def test_shards_hold_every_sample_of_every_prompt(task, round_one):
    manifest = read_manifest(round_one.out)
    assert manifest["shards"] == {shard_name(0): 6, shard_name(1): 6, shard_name(2): 3}
    assert manifest["settings"]["samples_per_prompt"] == SAMPLES and manifest["settings"]["eta"] is None
    rollouts = read_rollouts([round_one.out])
    problems = task.train_problems()
    assert [(r.prompt_id, r.sample_index) for r in rollouts] == [(p.id, s) for p in problems for s in range(SAMPLES)]
    assert len({r.seed for r in rollouts}) == len(rollouts)
    assert all(r.round == 1 and r.eta is None for r in rollouts)


def test_rows_match_the_task_and_the_switch_steps(task, round_one):
    tokenizer = task.tokenizer()
    problems = {p.id: p for p in task.train_problems()}
    for r in read_rollouts([round_one.out]):
        problem = problems[r.prompt_id]
        assert r.prompt_ids == tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        assert 1 <= len(r.completion_ids) <= MAX_NEW
        assert tokenizer.eos_token_id not in r.completion_ids[:-1]  # generation stops at EOS
        text = tokenizer.decode(r.completion_ids, skip_special_tokens=True)
        assert r.reward == task.reward(problem, text)
        seed, _ = sample_seed_and_switch(7, 1, r.prompt_id, r.sample_index, MAX_NEW)
        assert r.seed == seed and r.switch == 0  # round 1 rolls in with π_ref itself: every prefix is a target


def test_the_manifest_records_the_tokenizer_that_wrote_the_ids(task, round_one):
    assert read_manifest(round_one.out)["tokenizer_digest"] == tokenizer_digest(task.tokenizer())


def test_summary_line(round_one):
    line = summary_line(round_one.out, 1.25)
    assert "15 samples" in line and "1.2 s" in line and "mean reward" in line


def test_round_two_rolls_in_with_the_value_model(task, models, tmp_path):
    cfg = config(tmp_path / "round2", models, value_model=str(models[1]), round=2, eta=0.5)
    run_collect(cfg, task, progress=False)
    rollouts = read_rollouts([cfg.out])
    assert len(rollouts) == N_PROMPTS * SAMPLES
    assert all(r.round == 2 and r.eta == 0.5 for r in rollouts)
    assert read_manifest(cfg.out)["settings"]["value_model"] == str(models[1].resolve())


def test_guidance_acts_before_the_switch_only(task, models, tmp_path):
    """Same seeds with and without a value model: samples that switch at 0 are π_ref's, others may differ."""
    plain = config(tmp_path / "plain", models, samples_per_prompt=8)
    guided = dataclasses.replace(plain, out=tmp_path / "guided", value_model=str(models[1]), eta=0.05)
    for cfg in (plain, guided):
        run_collect(cfg, task, progress=False)
    pairs = list(zip(read_rollouts([plain.out]), read_rollouts([guided.out])))
    assert all(a.seed == b.seed for a, b in pairs) and any(b.switch == 0 for _, b in pairs)
    for _, b in pairs:  # guided rows store the drawn switch step, cut at the completion's length
        _, h = sample_seed_and_switch(guided.seed, guided.round, b.prompt_id, b.sample_index, guided.max_new_tokens)
        assert b.switch == min(h, len(b.completion_ids))
    assert all(a.completion_ids == b.completion_ids for a, b in pairs if b.switch == 0)
    assert any(a.completion_ids != b.completion_ids for a, b in pairs if b.switch > 0)


def test_resumed_run_equals_an_uninterrupted_one(task, models, round_one, tmp_path):
    cfg = dataclasses.replace(round_one, out=tmp_path / "resumed")
    run_collect(cfg, task, progress=False)
    manifest = read_manifest(cfg.out)
    del manifest["shards"][shard_name(2)]  # as if killed while writing the last shard
    write_manifest(cfg.out, manifest)
    (cfg.out / shard_name(2)).unlink()
    run_collect(cfg, task, progress=False)
    assert read_rollouts([cfg.out]) == read_rollouts([round_one.out])


def test_finished_folder_is_not_redone(task, round_one, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished folder loaded the models again")

    monkeypatch.setattr("qsharp_ext.rollouts.load_reference", fail)
    before = (round_one.out / MANIFEST).stat().st_mtime_ns
    run_collect(round_one, task, progress=False)
    assert (round_one.out / MANIFEST).stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("change", "named"),
    [({"samples_per_prompt": 4}, "samples_per_prompt"), ({"seed": 8}, "seed"), ({"max_new_tokens": 5}, "max_new")],
)
def test_changed_settings_are_refused(task, round_one, change, named):
    with pytest.raises(UserError, match=rf"collected with other settings.*{named}"):
        run_collect(dataclasses.replace(round_one, **change), task, progress=False)


def test_other_task_options_are_refused(round_one):
    with pytest.raises(UserError, match=r"other settings.*task_settings"):
        run_collect(round_one, FirstTokenTask(n_train=N_PROMPTS, n_eval=2, seed=2), progress=False)


def test_bad_input_is_a_clear_error_and_leaves_no_folder(task, models, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_collect(config(tmp_path / "a", models, ref_model=str(tmp_path / "missing")), task, progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(UserError, match="samples_per_prompt must be at least 1"):
        run_collect(config(tmp_path / "b", models, samples_per_prompt=0), task, progress=False)


def test_prompts_the_tokenizer_cannot_encode_are_refused_before_any_shard(models, tmp_path):
    arithmetic = build_task("arithmetic")  # "Q: 12 + 7" ...: words the first-token task's tokenizer does not know
    with pytest.raises(UserError, match="which the tokenizer does not know"):
        run_collect(config(tmp_path / "a", models, task="arithmetic"), arithmetic, progress=False)
    assert not (tmp_path / "a").exists()
