"""`qsharp-ext pipeline` end to end on configs/smoke.yaml (about a minute), resumable; evaluate's clear errors."""

import dataclasses
import json
import math

import pytest

from qsharp_ext.config import parse_config
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import load_prompt_rewards
from qsharp_ext.pipeline import PipelineConfig, evaluate_config, run_pipeline, train_config, trains_cd
from qsharp_ext.pipeline import check_config as check_pipeline
from qsharp_ext.tasks import build_task
from qsharp_ext.training import check_config
from tests.e2e.test_cli import run_cli

SMALL: list[str] = []  # the smoke recipe as it ships


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke"
    # about 75 s on 2 idle cores; the limit is only against hangs (a busy shared machine took over 300 s)
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), *SMALL, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_pipeline_writes_every_round_and_the_final_report(finished_run):
    out, result = finished_run
    for k in (1, 2):
        assert (out / f"round-{k}" / "data" / "manifest.json").is_file()
        for head in ("qsharp", "cd"):
            assert (out / f"round-{k}" / head / "model" / "qsharp_value.json").is_file()
        assert (out / f"round-{k}" / "eval" / "results.json").is_file()
    rows = json.loads((out / "results.json").read_text())
    etas = [1.0, 0.3, 0.1, 0.03]
    assert [(r["method"], r["eta"]) for r in rows] == [
        ("pi_ref", None), *[("cd", e) for e in etas], *[("qsharp", e) for e in etas],
    ]  # fmt: skip
    keys = {"pass@1", "pass@1_se", "maj@n", "pass@n", "bon_value", "kl", "n_prompts", "n_samples"}
    for row in rows:
        assert keys <= set(row) and row["n_prompts"] == 64 and row["n_samples"] == 8
        assert 0 <= row["pass@1"] <= 1 and row["kl"] >= 0
    assert (out / "pareto.png").stat().st_size > 1000 and "| qsharp |" in (out / "results.md").read_text()
    assert "report in" in result.stdout


def test_smoke_recipe_qsharp_beats_pi_ref_and_spends_more_kl_as_eta_falls(finished_run):
    out, _ = finished_run
    rows = json.loads((out / "results.json").read_text())
    ref = next(r for r in rows if r["method"] == "pi_ref")
    qsharp = [r for r in rows if r["method"] == "qsharp"]  # in the order of falling η
    best = max(qsharp, key=lambda r: r["pass@1"])
    assert best["pass@1"] - ref["pass@1"] > 2 * math.hypot(best["pass@1_se"], ref["pass@1_se"])
    assert best["gain"] == pytest.approx(best["pass@1"] - ref["pass@1"]) and 0 < best["gain_se"] < best["gain"] / 2
    assert ref["gain"] is None
    kls = [r["kl"] for r in qsharp]  # η 1, 0.3, 0.1, 0.03
    # KL grows as η falls, then saturates (η 0.1 vs 0.03 differ by less than their noise, so they are not
    # ordered here): compare only steps that are many standard errors apart
    assert kls[0] < kls[1] < kls[2] and kls[3] > kls[1], kls


def test_evaluation_keeps_every_sample_and_its_reward(finished_run):
    out, _ = finished_run
    folder = out / "round-2" / "eval"
    records = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    rows = json.loads((folder / "results.json").read_text())
    assert len(records) == len(rows) * 64 * 8
    assert {"method", "eta", "prompt_id", "sample", "completion", "answer", "reward", "kl"} <= set(records[0])
    for row in rows:
        mine = [r for r in records if (r["method"], r["eta"]) == (row["method"], row["eta"])]
        assert sorted(r["sample"] for r in mine if r["prompt_id"] == mine[0]["prompt_id"]) == list(range(8))
        assert sum(r["reward"] for r in mine) / len(mine) == pytest.approx(row["pass@1"])
        assert sum(r["kl"] for r in mine) / len(mine) == pytest.approx(row["kl"])
        per_prompt = load_prompt_rewards(folder, row["method"], row["eta"])
        assert len(per_prompt) == 64 and sum(per_prompt.values()) / 64 == pytest.approx(row["pass@1"])
    with pytest.raises(UserError, match="no samples"):
        load_prompt_rewards(folder, "qsharp", 0.5)


def test_a_finished_pipeline_is_not_redone(finished_run):
    out, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    changed = [p for p, t in before.items() if p.stat().st_mtime_ns != t and p.parent != out]
    assert not changed, changed  # only the top-level copies of the final report are rewritten


def test_a_run_folder_refuses_other_settings(finished_run):
    out, _ = finished_run
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), *SMALL, "--train.steps", "21")
    assert result.returncode == 1 and "other settings (train.steps)" in result.stderr
    assert "Traceback" not in result.stderr


def test_where_the_work_runs_may_change_between_attempts_but_vllm_sampling_may_not(finished_run):
    out, _ = finished_run
    placement = ["--num-workers", "3", "--ray-address", "auto", "--vllm-gpu-memory-utilization", "0.3"]
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), *SMALL, *placement)
    assert result.returncode == 0, result.stderr[-3000:]  # the local backend ignores them; nothing is redone
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), *SMALL, "--vllm")
    assert result.returncode == 1 and "other settings (vllm)" in result.stderr


def test_evaluate_steers_cd_with_the_mean_of_a_bernoulli_model(finished_run, tmp_path):
    """CD from Q♯'s own model: both methods read one folder and differ in the rule (so in their KL)."""
    out, _ = finished_run
    model = str(out / "round-1" / "qsharp" / "model")
    result = run_cli(
        "evaluate", "--out", str(tmp_path), "--ref-model", str(out / "ref_model"), "--qsharp-model", model,
        "--cd-model", model, "--etas", "0.3", "--max-prompts", "4", "--num-samples", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["method"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert set(rows) == {"cd", "qsharp"} and rows["cd"]["kl"] >= 0 and rows["cd"]["kl"] != rows["qsharp"]["kl"]


def test_cd_from_qsharp_trains_no_mean_head_and_evaluates_cd_with_the_qsharp_model():
    cfg = parse_config(PipelineConfig, ["--config", "configs/smoke.yaml", "--cd-from-qsharp"], "pipeline", "t")
    assert not trains_cd(cfg)
    evaluate = evaluate_config(cfg, "ref", 2)
    assert evaluate.cd_model == evaluate.qsharp_model == str(cfg.out / "round-2" / "qsharp" / "model")
    with pytest.raises(UserError, match="needs train_cd"):
        check_pipeline(dataclasses.replace(cfg, train_cd=False), build_task(cfg.task, cfg.task_options))


@pytest.mark.parametrize("head_init", ["fresh", "linear"])
def test_a_random_head_start_applies_to_the_cd_head_too(head_init):
    argv = ["--config", "configs/smoke.yaml", "--train.head-init", head_init]
    cfg = parse_config(PipelineConfig, argv, "pipeline", "t")
    qsharp, cd = train_config(cfg, "ref", 1, "bernoulli"), train_config(cfg, "ref", 1, "mean")
    assert (qsharp.head_init, cd.head_init) == (head_init, head_init)


def test_the_lm_head_recipe_starts_the_qsharp_head_only_as_the_lm_head():
    cfg = parse_config(PipelineConfig, ["--config", "configs/smollm2-arithmetic-lmhead.yaml"], "pipeline", "test")
    assert (cfg.train.num_layers, cfg.train.parameterization, cfg.train.backbone_lr_scale) == (0, "q", 0.0)
    qsharp, cd = train_config(cfg, "ref", 1, "bernoulli"), train_config(cfg, "ref", 1, "mean")
    assert (qsharp.head_init, cd.head_init) == ("lm_head", "fresh")  # CD's mean head cannot start as an LM head
    for train in (qsharp, cd, train_config(cfg, "ref", 2, "bernoulli")):
        check_config(train)  # every training run of the recipe is accepted


def test_future_token_options_reach_both_trainings_from_yaml_and_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  future_tokens: 3\n  future_weight: 0.5\n  group_by_prompt: true\n  extra_layers: 2\n")
    argv = ["--config", str(recipe), "--train.future-targets", "task"]
    cfg = parse_config(PipelineConfig, argv, "pipeline", "test")
    for kind in ("bernoulli", "mean"):
        train = train_config(cfg, "ref", 2, kind)
        assert (train.future_tokens, train.future_weight, train.group_by_prompt) == (3, 0.5, True)
        assert train.future_targets == "task" and train.extra_layers == 2
        check_config(train)


def test_task_targets_on_a_task_without_them_are_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), "--train.future-tokens", "2",
                     "--train.future-targets", "task")  # fmt: skip
    assert result.returncode != 0 and "future_targets hook" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--evaluate.etas", "0.1", "inf"], "evaluate stage: eta must be positive and finite"),
        (["--evaluate.num-samples", "0"], "evaluate stage: num_samples must be at least 1"),
        (["--evaluate.max-prompts", "-1"], "evaluate stage: max_prompts must be at least 1"),
        (["--evaluate.prompts-per-batch", "0"], "evaluate stage: prompts_per_batch must be at least 1"),
        (["--collect.eta", "0"], "collect stage: eta must be positive and finite"),
        (["--collect.prompts-per-shard", "0"], "collect stage: prompts_per_shard must be at least 1"),
        (["--temperature", "0"], "^temperature must be positive"),  # shared by every stage: no stage named
        (["--top-p", "1.5"], "^top_p must be in"),
        (["--top-k", "0"], "^top_k must be at least 1"),
        (["--collect.max-prompts", "0"], "collect stage: max_prompts must be at least 1"),
        (["--train.lr", "0"], "train stage: lr must be positive"),
    ],
)
def test_every_stage_setting_is_checked_before_the_run_folder_is_written(tmp_path, args, message):
    out = tmp_path / "run"
    argv = ["--config", "configs/smoke.yaml", "--out", str(out), *args]
    with pytest.raises(UserError, match=message):
        run_pipeline(parse_config(PipelineConfig, argv, "pipeline", "test"))
    assert not out.exists()


def test_a_bad_eta_ends_the_pipeline_in_one_sentence_before_anything_is_collected(tmp_path):
    out = tmp_path / "run"
    result = run_cli("pipeline", "--config", "configs/smoke.yaml", "--out", str(out), "--evaluate.etas", "0.3", "0")
    assert result.returncode == 1 and "evaluate stage: eta must be positive" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_stage_setting_has_one_name_in_flags_yaml_and_python(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "train:\n  lr: 0.002\n  prefix_extension: false\ncollect:\n  eta: 0.5\nevaluate:\n  etas: [null, 0.3]\n"
    )
    from_yaml = parse_config(PipelineConfig, ["--config", str(recipe)], "pipeline", "test")
    flags = ["--train.lr", "0.002", "--train.no-prefix-extension", "--collect.eta", "0.5"]
    flags += ["--evaluate.etas", "None", "0.3"]
    from_flags = parse_config(PipelineConfig, flags, "pipeline", "test")
    nested = {"lr": 0.002, "prefix_extension": False}
    in_python = PipelineConfig(train=nested, collect={"eta": 0.5}, evaluate={"etas": [None, 0.3]})
    assert from_yaml == from_flags == in_python
    assert train_config(in_python, "ref", 1, "mean").lr == 0.002 and in_python.evaluate.etas == (None, 0.3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lrr: 0.1\n", "unknown field.*train.lrr"),
        ("train: 3\n", "train must be a mapping"),
        ("train_steps: 3\n", "unknown field.*train_steps"),
    ],
)
def test_a_yaml_recipe_with_a_misplaced_setting_is_one_sentence(tmp_path, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(UserError, match=message):
        parse_config(PipelineConfig, ["--config", str(recipe)], "pipeline", "test")


@pytest.mark.parametrize(
    ("nested", "message"),
    [({"lr": "fast"}, "train.lr must be a number"), ({"lrr": 1.0}, "train has no field"), (3, "train must be")],
)
def test_nested_settings_built_in_python_are_checked_where_they_enter(nested, message):
    with pytest.raises(UserError, match=message):
        PipelineConfig(train=nested)
