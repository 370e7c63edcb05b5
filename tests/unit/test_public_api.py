"""What `qsharp_ext` exports: every stage beside the decoding API, each with its typed config, the Python
training entry point and what a custom task needs, and a `dir()` that lists the lazily loaded names without
loading them."""

import dataclasses
import inspect
import subprocess
import sys

import pytest

import qsharp_ext
from qsharp_ext import (
    errors,
    evaluation,
    generate,
    generate_cli,
    guidance,
    pipeline,
    rollouts,
    tasks,
    train_api,
    training,
    value_model,
)

STAGES = [
    ("run_collect", "CollectConfig", rollouts),
    ("run_train", "TrainConfig", training),
    ("run_evaluate", "EvaluateConfig", evaluation),
    ("run_pipeline", "PipelineConfig", pipeline),
    ("run_generate", "GenerateConfig", generate_cli),
]


def test_every_exported_name_resolves():
    missing = [name for name in qsharp_ext.__all__ if getattr(qsharp_ext, name, None) is None]
    assert missing == []


@pytest.mark.parametrize(("function", "config", "module"), STAGES)
def test_each_stage_is_exported_with_its_config(function, config, module):
    stage, config_cls = getattr(qsharp_ext, function), getattr(qsharp_ext, config)
    assert stage is getattr(module, function) and config_cls is getattr(module, config)  # the CLI's own objects
    assert dataclasses.is_dataclass(config_cls)
    first = next(iter(inspect.signature(stage).parameters.values()))
    assert (first.name, first.annotation) == ("cfg", config)  # the stage takes its config first
    assert {function, config} <= set(qsharp_ext.__all__)


def test_the_decoding_api_is_the_engines():
    assert qsharp_ext.guided_generate is generate.guided_generate
    assert qsharp_ext.ValueModel is value_model.ValueModel
    assert qsharp_ext.QSharpLogitsProcessor is guidance.QSharpLogitsProcessor


def test_training_from_python_and_custom_tasks_are_exported():
    assert qsharp_ext.train_value_model is train_api.train_value_model
    assert (qsharp_ext.Task, qsharp_ext.Problem, qsharp_ext.make_task) == (tasks.Task, tasks.Problem, tasks.make_task)
    assert qsharp_ext.UserError is errors.UserError  # what every mistake a user can make raises
    assert {"train_value_model", "Task", "Problem", "make_task", "UserError"} <= set(qsharp_ext.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'run_everything'"):
        _ = qsharp_ext.run_everything


def test_dir_lists_the_lazy_names_without_loading_them():
    code = (
        "import sys, qsharp_ext\n"
        "print(sorted(set(qsharp_ext.__all__) - set(dir(qsharp_ext))))\n"
        "print('transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "False"]
