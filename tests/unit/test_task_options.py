"""Task options from flags and YAML reach the task's constructor; bad ones are one clear sentence; the
decoding settings name the task without importing the tasks."""

import subprocess
import sys

import pytest

from qsharp_ext.config import fields_to_flags, parse_config, parse_key_values
from qsharp_ext.decode_options import decode_fields
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig
from qsharp_ext.pipeline import PipelineConfig
from qsharp_ext.rollouts import CollectConfig
from qsharp_ext.tasks import build_task


def test_values_are_json_when_they_parse_and_text_otherwise():
    parsed = parse_key_values(["high=20", 'ops=["+", "-"]', "flag=true", "name=x y", "ratio=0.5", "empty="], "opt")
    assert parsed == {"high": 20, "ops": ["+", "-"], "flag": True, "name": "x y", "ratio": 0.5, "empty": ""}


@pytest.mark.parametrize(("items", "message"), [(["high"], "must be KEY=VALUE"), (["=3"], "must be KEY=VALUE"),
                                                (["a=1", "a=2"], "given twice")])  # fmt: skip
def test_malformed_items_are_refused(items, message):
    with pytest.raises(UserError, match=message):
        parse_key_values(items, "task option")


def test_a_yaml_mapping_round_trips_through_flags(tmp_path):
    options = {"high": 20, "ops": ["+", "-"], "nonnegative": False, "label": "a=b"}
    flags = fields_to_flags({"task_options": options})
    assert flags[0] == "--task-options"
    assert parse_key_values(flags[1:], "task option") == options


def test_yaml_task_options_build_the_task(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("task: arithmetic\ntask_options: {high: 20, n_eval: 300, n_train: 290, ops: ['+', '-']}\n")
    cfg = parse_config(PipelineConfig, ["--config", str(config)], "prog", "")
    task = build_task(cfg.task, cfg.task_options)
    assert (task.high, task.ops, len(task.eval_problems()), len(task.train_problems())) == (20, ("+", "-"), 300, 290)


def test_an_unknown_task_option_names_the_known_ones():
    with pytest.raises(UserError, match=r"has no option.*colour.*its options: high"):
        build_task("arithmetic", ("colour=red",))


@pytest.mark.parametrize(
    ("items", "message"),
    [(("n_words=abc",), "first_token's option n_words must be an integer, not 'abc'"),
     (("n_words=2.5",), "n_words must be an integer, not 2.5"),
     (("prompt_len=3",), "prompt_len must be a list of 2: an integer, an integer, not 3"),
     (("prompt_len=[1, 2, 3]",), "prompt_len must be a list of 2")],
)  # fmt: skip
def test_a_task_option_of_the_wrong_type_is_one_sentence(items, message):
    with pytest.raises(UserError, match=message):
        build_task("first_token", items)
    assert build_task("first_token", ("n_words=30", "good_fraction=1e-1")).tokenizer()  # an int where a float goes


@pytest.mark.parametrize("config_cls", [CollectConfig, EvaluateConfig])
def test_every_stage_takes_the_pipelines_decoding_settings(config_cls, tmp_path):
    pipeline = PipelineConfig(task="arithmetic", task_options=("high=12",), top_k=7, temperature=0.8, top_p=0.9,
                              max_new_tokens=5, seed=3, device="cpu", dtype="float32")  # fmt: skip
    stage = config_cls(out=tmp_path, ref_model="m", **decode_fields(pipeline))
    assert decode_fields(stage) == decode_fields(pipeline)
    stage_task, pipeline_task = (build_task(cfg.task, cfg.task_options) for cfg in (stage, pipeline))
    assert stage_task.settings() == pipeline_task.settings()


def test_the_decoding_settings_do_not_import_the_tasks():
    """`generate` shares them and knows no task: only the stages build one."""
    code = "import sys, qsharp_ext.decode_options\nprint('qsharp_ext.tasks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
