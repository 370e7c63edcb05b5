"""`python/value_model_study.py` on a tiny 2-round pipeline run: the depth sweep and the ablations."""

import dataclasses
import json
import math

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.finished_runs import score_held_out
from qsharp_ext.pipeline import PipelineConfig, run_pipeline
from qsharp_ext.training import check_config

value_model_study = pytest.importorskip("value_model_study")  # python/ is on the path (conftest.py)


def paired_rewards(folder) -> dict[str, float]:
    """Mean reward per prompt of an evaluation folder's samples.jsonl, read without the library."""
    rewards: dict[str, list[float]] = {}
    for line in (folder / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        rewards.setdefault(record["prompt_id"], []).append(record["reward"])
    return {prompt: sum(r) / len(r) for prompt, r in rewards.items()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    cfg = PipelineConfig(
        out=out, task="first_token", task_options=("n_train=24", "n_eval=8"), collect=dict(samples_per_prompt=4),
        max_new_tokens=3, top_k=49,
        train=dict(num_layers=1, steps=40, batch_size=16, lr=1e-3, eval_every=20, save_every=20),
        evaluate=dict(etas=(None, 0.3), num_samples=2), evaluate_every_round=False, device="cpu",
    )  # fmt: skip
    run_pipeline(cfg)
    return out


def test_a_run_folder_gives_back_its_config(tiny_run):
    cfg = value_model_study.load_run(tiny_run)
    assert cfg.task_options == ("n_train=24", "n_eval=8") and cfg.evaluate.etas == (None, 0.3) and cfg.out == tiny_run
    with pytest.raises(UserError, match="not a pipeline run folder"):
        value_model_study.load_run(tiny_run / "round-1")


def test_sweep_trains_each_depth_and_reuses_the_runs_own(tiny_run, monkeypatch):
    summary_path = tiny_run / "round-1" / "qsharp" / "summary.json"
    original = summary_path.read_text()
    summary = json.loads(original)
    within = summary["metrics"].pop("within_prompt_auc")  # as a run finished before the metric existed
    summary_path.write_text(json.dumps(summary))
    trained_here = []
    real = value_model_study.run_train
    monkeypatch.setattr(value_model_study, "run_train", lambda cfg: trained_here.append(cfg.num_layers) or real(cfg))
    rows = value_model_study.run_sweep(value_model_study.Sweep(run=tiny_run, layers=(1, 2)))
    assert [r["layers"] for r in rows] == [1, 2]
    assert not (tiny_run / "sweep" / "L1").exists()  # L = 1 is the run's round-1 Q♯, read back
    assert (tiny_run / "sweep" / "L2" / "model").is_dir()
    assert rows[1]["value_params"] > rows[0]["value_params"] and rows[0]["ref_params"] > rows[1]["value_params"]
    for r in rows:
        assert 0 <= r["roc_auc"] <= 1 and 0 <= r["within_prompt_auc"] <= 1 and r["train_seconds"] > 0
    assert rows[0]["within_prompt_auc"] == pytest.approx(within, abs=1e-6)  # the saved model, scored again
    summary_path.write_text(original)  # the shared run as it was
    assert json.loads((tiny_run / "sweep" / "sweep.json").read_text()) == rows
    assert (tiny_run / "sweep" / "sweep.png").stat().st_size > 1000


def test_ablations_change_one_thing_each_and_share_the_noise(tiny_run):
    opts = value_model_study.Ablations(run=tiny_run, eta=0.3, rounds=1)
    rows = value_model_study.run_ablations(opts)
    names = [r["variant"] for r in rows]
    assert names[:2] == ["Q♯ as run, 1 DAgger round", "2 DAgger rounds"] and len(names) == 5
    assert rows[0]["delta"] == 0 and rows[0]["delta_se"] == 0
    assert all(0 <= r["pass@1"] <= 1 and r["kl"] >= 0 for r in rows)
    evals = next((tiny_run / "ablations").glob("eval-*"))
    base = paired_rewards(evals / "q-as-run-1-dagger-round")
    for row in rows[1:]:  # delta ± SE from the per-prompt differences, counted here from samples.jsonl
        diffs = [r - base[p] for p, r in paired_rewards(evals / value_model_study.slug(row["variant"])).items()]
        mean = sum(diffs) / len(diffs)
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
        assert row["delta"] == pytest.approx(mean) and row["delta_se"] == pytest.approx(se)
    configs = {}
    for folder in (tiny_run / "ablations").glob("*-r1"):
        summary = json.loads((folder / "round-1" / "summary.json").read_text())["config"]
        configs[folder.name] = {
            k: v for k, v in summary.items() if k in ("parameterization", "fit", "prefix_extension")
        }
    assert sorted(configs.values(), key=str) == sorted([
        {"parameterization": "q", "fit": "likelihood", "prefix_extension": True},
        {"parameterization": "v", "fit": "mse", "prefix_extension": True},
        {"parameterization": "v", "fit": "likelihood", "prefix_extension": False},
    ], key=str)  # fmt: skip
    assert "| MSE regression of the mean |" in (tiny_run / "ablations" / "ablations.md").read_text()
    assert value_model_study.run_ablations(opts) == rows  # finished work is read back


def test_steps_breaks_the_roc_auc_down_by_completion_step(tiny_run, tmp_path):
    model = tiny_run / "round-1" / "qsharp"
    rows = value_model_study.run_steps(value_model_study.Steps(models=(model,), out=tmp_path))
    overall = score_held_out(model)
    assert rows[0]["step"] == "all"
    assert rows[0]["within_prompt_auc"] == pytest.approx(overall["within_prompt_auc"], abs=1e-6)
    assert rows[0]["roc_auc"] == pytest.approx(overall["roc_auc"], abs=1e-6)
    assert [r["step"] for r in rows[1:]] == sorted(r["step"] for r in rows[1:]) and len(rows) > 2
    assert sum(r["positions"] for r in rows[1:]) == rows[0]["positions"]
    assert all(0 <= r["mixed_prompts"] <= r["prompts"] for r in rows)
    first = next(r for r in rows if r["step"] == 1)  # first_token's reward is decided by the first token
    assert first["within_prompt_auc"] > 0.5 and first["roc_auc"] > 0.5
    assert json.loads((tmp_path / "steps.json").read_text()) == json.loads(json.dumps(rows))


def test_every_ablation_of_an_lm_head_started_q_type_run_is_a_config_training_accepts(tmp_path):
    lm_head_start = dict(parameterization="q", head_init="lm_head", backbone_lr_scale=0.0)
    cfg = PipelineConfig(out=tmp_path / "run", train=lm_head_start)
    base = value_model_study.train_config(cfg, "ref", 1, "bernoulli")
    for name, changes in value_model_study.variants(cfg).items():
        check_config(dataclasses.replace(base, out=tmp_path / value_model_study.slug(name), **changes))
    assert value_model_study.variants(cfg)["V-type head"]["head_init"] == "fresh"
