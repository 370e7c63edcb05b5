"""The GPU recipe's settings: its YAML loads and type-checks, a separate value-model base, dtype on load."""

import json
import types
import typing
from pathlib import Path

import pytest
import torch

from qsharp_ext import evaluation
from qsharp_ext.config import parse_config
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, run_evaluate
from qsharp_ext.generate import guided_generate
from qsharp_ext.loading import load_reference, load_value_model, resolve_dtype
from qsharp_ext.pipeline import PipelineConfig, run_pipeline
from qsharp_ext.tasks import make_task
from qsharp_ext.tasks.first_token import make_tiny_reference
from qsharp_ext.training import TrainConfig, check_config, initial_model, layer_source
from qsharp_ext.value_model import ValueModel
from qsharp_ext.wordlevel import word_level_tokenizer
from tests.e2e.test_cli import run_cli
from tests.engine.conftest import make_causal_lm, make_tokenizer

RECIPE = Path(__file__).parents[2] / "configs" / "gpu" / "llama8b-gsm8k.yaml"


def matches(value, hint) -> bool:
    """isinstance for the annotations config fields use: plain types, X | None, tuple[X, ...], Literal[...]."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arm) for arm in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, tuple) and all(matches(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, float)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


@pytest.fixture(scope="module")
def recipe() -> PipelineConfig:
    return parse_config(PipelineConfig, ["--config", str(RECIPE)], "qsharp-ext pipeline", "test")


def test_the_gpu_recipe_loads_with_every_field_of_its_declared_type(recipe):
    hints = typing.get_type_hints(PipelineConfig)
    wrong = {name: getattr(recipe, name) for name in hints if not matches(getattr(recipe, name), hints[name])}
    assert not wrong


def test_the_gpu_recipe_holds_the_papers_settings(recipe):
    assert (recipe.task, recipe.ref_model) == ("gsm8k", "meta-llama/Llama-3.1-8B-Instruct")
    assert recipe.train.value_model_base == "meta-llama/Llama-3.2-1B-Instruct" and not recipe.train.num_layers
    assert (recipe.top_k, recipe.temperature, recipe.top_p, recipe.evaluate.etas) == (20, 0.8, 0.9, (None, 0.1))
    assert (recipe.collect.samples_per_prompt, recipe.evaluate.num_samples, recipe.rounds) == (16, 8, 2)
    assert (recipe.kind, recipe.train.parameterization, recipe.train.lr) == ("bernoulli", "v", 2e-5)
    assert (recipe.device, recipe.dtype) == ("auto", "bfloat16")
    assert resolve_dtype(recipe.dtype) == torch.bfloat16


def test_the_gpu_recipe_goes_through_the_command_line():
    result = run_cli("pipeline", "--config", str(RECIPE), "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--dtype", "--top-p", "--train.value-model-base"):
        assert flag in result.stdout


# ------------------------------------------------------------------------------------ value_model_base


def save_model(folder: Path, model, tokenizer) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """π_ref (2 layers), a base with its tokenizer (3 layers, other weights), a base with another tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tokenizer, other = make_tokenizer(), word_level_tokenizer([f"v{i}" for i in range(45)])
    return {
        "ref": save_model(root / "ref", make_causal_lm("llama", len(tokenizer), num_layers=2), tokenizer),
        "base": save_model(root / "base", make_causal_lm("llama", len(tokenizer), num_layers=3, seed=1), tokenizer),
        "other": save_model(root / "other", make_causal_lm("llama", len(other), num_layers=3, seed=2), other),
    }


def train_config(folders, **fields) -> TrainConfig:
    return TrainConfig(out=Path("unused"), data=(Path("unused"),), ref_model=folders["ref"], device="cpu", **fields)


@pytest.mark.parametrize(("num_layers", "expected"), [(None, 3), (0, 3), (2, 2)])
def test_a_value_model_base_gives_its_first_layers(folders, num_layers, expected):
    cfg = train_config(folders, value_model_base=folders["base"], num_layers=num_layers)
    source, tokenizer = layer_source(cfg)
    model = initial_model(cfg, tokenizer, source)
    assert model.backbone.config.num_hidden_layers == expected
    base = load_reference(folders["base"], "cpu")[0]
    assert torch.equal(model.backbone.embed_tokens.weight, base.model.embed_tokens.weight)
    assert torch.equal(model.backbone.layers[-1].mlp.up_proj.weight, base.model.layers[expected - 1].mlp.up_proj.weight)


def test_without_a_base_the_value_model_is_built_from_pi_ref(folders):
    cfg = train_config(folders, num_layers=0)
    source, tokenizer = layer_source(cfg)
    model = initial_model(cfg, tokenizer, source)
    assert model.backbone.config.num_hidden_layers == 2
    ref = load_reference(folders["ref"], "cpu")[0]
    assert torch.equal(model.backbone.embed_tokens.weight, ref.model.embed_tokens.weight)


def test_a_value_model_base_with_another_tokenizer_is_refused(folders):
    cfg = train_config(folders, value_model_base=folders["other"])
    with pytest.raises(UserError, match="different tokenizer than π_ref") as err:
        layer_source(cfg)
    assert str(err.value).count(".") <= 1 and "\n" not in str(err.value)


def test_a_negative_layer_count_is_refused(folders):
    with pytest.raises(UserError, match="num_layers must not be negative"):
        check_config(train_config(folders, num_layers=-1))


def test_a_missing_value_model_base_is_refused(folders, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        layer_source(train_config(folders, value_model_base=str(tmp_path / "nowhere")))


def test_the_pipeline_trains_on_a_value_model_base_with_top_p(tmp_path):
    """One small round on the synthetic task; value models from a separate 3-layer, 32-wide Llama over its words
    (π_ref made on the fly has 2 layers, 64 wide)."""
    task = make_task("first_token")
    base = save_model(tmp_path / "base", make_causal_lm("llama", len(task.tokenizer()), num_layers=3), task.tokenizer())
    cfg = PipelineConfig(
        out=tmp_path / "run", rounds=1, collect=dict(samples_per_prompt=2, max_prompts=8), max_new_tokens=3,
        top_p=0.9, train=dict(value_model_base=base, num_layers=None, steps=3, batch_size=4), train_cd=False,
        evaluate=dict(etas=(None, 0.1), num_samples=2, max_prompts=4), device="cpu", dtype="float32",
    )  # fmt: skip
    rows = run_pipeline(cfg)
    assert [(r["method"], r["eta"]) for r in rows] == [("pi_ref", None), ("qsharp", 0.1)]
    model = tmp_path / "run" / "round-1" / "qsharp" / "model"
    saved = json.loads((model / "config.json").read_text())["backbone_config"]  # the value model's backbone
    assert (saved["hidden_size"], saved["num_hidden_layers"]) == (32, 3)
    manifest = json.loads((tmp_path / "run" / "round-1" / "data" / "manifest.json").read_text())
    assert (manifest["settings"]["top_p"], manifest["settings"]["dtype"]) == (0.9, "float32")


# ------------------------------------------------------------------------------------------------ dtype


def test_bfloat16_loads_pi_ref_and_a_value_model_in_bfloat16(folders, tmp_path):
    ref, tokenizer = load_reference(folders["ref"], "cpu", "bfloat16")
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    ValueModel.from_reference(load_reference(folders["ref"], "cpu")[0], 1, tokenizer).save_pretrained(tmp_path / "v")
    value_model = load_value_model(str(tmp_path / "v"), tokenizer, "cpu", "bfloat16")
    assert {p.dtype for p in value_model.parameters()} == {torch.bfloat16}


def test_a_bfloat16_source_still_trains_in_float32_weights(folders):
    cfg = train_config(folders, value_model_base=folders["base"], dtype="bfloat16")
    source, tokenizer = layer_source(cfg)
    assert next(source.parameters()).dtype == torch.bfloat16
    assert {p.dtype for p in initial_model(cfg, tokenizer, source).parameters()} == {torch.float32}


def test_auto_is_float32_on_the_cpu_and_an_unknown_dtype_is_refused(folders):
    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(UserError, match="dtype must be one of auto, float32, bfloat16, float16"):
        load_reference(folders["ref"], "cpu", "half")


def test_the_pipeline_refuses_an_unknown_dtype_before_making_its_folder(tmp_path):
    with pytest.raises(UserError, match="dtype"):
        run_pipeline(PipelineConfig(out=tmp_path / "run", dtype="fp8", device="cpu"))
    assert not (tmp_path / "run").exists()


def test_evaluate_decodes_with_both_models_in_the_configured_dtype(tmp_path, monkeypatch):
    task = make_task("first_token")
    ref = save_model(tmp_path / "ref", make_tiny_reference(task), task.tokenizer())
    ValueModel.from_reference(load_reference(ref, "cpu")[0], 1, task.tokenizer()).save_pretrained(tmp_path / "v")
    seen = []

    def spy(ref_model, tokenizer, prompts, value_model=None, **kwargs):
        seen.append({p.dtype for m in (ref_model, value_model) if m is not None for p in m.parameters()})
        return guided_generate(ref_model, tokenizer, prompts, value_model, **kwargs)

    monkeypatch.setattr(evaluation, "guided_generate", spy)
    cfg = EvaluateConfig(
        out=tmp_path / "eval", ref_model=ref, qsharp_model=str(tmp_path / "v"), etas=(None, 0.1), num_samples=2,
        max_prompts=2, max_new_tokens=3, device="cpu", dtype="bfloat16",
    )  # fmt: skip
    rows = run_evaluate(cfg, task=task, progress=False)
    assert [r["method"] for r in rows] == ["pi_ref", "qsharp"] and all(0 <= r["pass@1"] <= 1 for r in rows)
    assert seen and all(dtypes == {torch.bfloat16} for dtypes in seen)
