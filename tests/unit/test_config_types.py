"""Configs built in Python get the command line's types (paths, tuples, choices) or one sentence, and every
choice field lists its choices in `--help`."""

import dataclasses
import typing
from pathlib import Path
from typing import Literal

import pytest

from qsharp_ext.cli import _commands, main
from qsharp_ext.config import check_field_types, load_yaml_fields, parse_config
from qsharp_ext.decode_options import TaskName
from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, EvaluateSettings
from qsharp_ext.generate_cli import GenerateConfig
from qsharp_ext.pipeline import PipelineConfig
from qsharp_ext.rollouts import CollectConfig
from qsharp_ext.tasks import TASKS
from qsharp_ext.training import TrainConfig, check_config


def test_paths_given_as_strings_become_paths():
    cfg = TrainConfig(out="run", data=["round-1", Path("round-2")], ref_model=Path("ref"))
    assert (cfg.out, cfg.data, cfg.ref_model) == (Path("run"), (Path("round-1"), Path("round-2")), "ref")
    assert cfg.out / "model" == Path("run/model")  # what run_train does with it
    check_config(cfg)
    assert TrainConfig(out="run", data="round-1", ref_model="ref").data == (Path("round-1"),)  # one folder
    assert CollectConfig(out="data", ref_model="ref").out == Path("data")
    assert EvaluateConfig(out="eval", ref_model="ref").out == Path("eval")
    assert GenerateConfig(ref_model="ref", out="c.jsonl", prompt="w1").prompt == ("w1",)
    listed = PipelineConfig(out="runs/p", evaluate={"etas": [0.3, 0.1]})
    assert listed == PipelineConfig(out=Path("runs/p"), evaluate=EvaluateSettings(etas=(0.3, 0.1)))
    with pytest.raises(UserError, match=r"train\.steps must be an integer"):
        PipelineConfig(out="runs/p", train={"steps": "10"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"steps": "10"}, "steps must be an integer, not '10'"),
        ({"lr": "1e-3"}, "lr must be a number"),
        ({"bf16": 1}, "bf16 must be True or False"),
        ({"kind": "poisson"}, "kind must be one of bernoulli, histogram, mean, not 'poisson'"),
        ({"parameterization": "V"}, "parameterization must be v or q"),
        ({"num_layers": 1.5}, "num_layers must be an integer or None"),
        ({"data": [3]}, "data must be a list, each a path"),
    ],
)
def test_a_wrong_type_or_choice_is_one_sentence_naming_the_field(fields, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**{"out": "run", "data": ("d",), "ref_model": "ref", **fields})


def test_unions_literals_and_tuples():
    @dataclasses.dataclass
    class Example:
        etas: tuple[float | None, ...] = (0.1,)
        mode: Literal["a", "b"] | None = None

        def __post_init__(self) -> None:
            check_field_types(self)

    assert Example(etas=[None, 1]).etas == (None, 1)
    assert Example(etas=0.3).etas == (0.3,)
    assert Example(mode="b").mode == "b"
    with pytest.raises(UserError, match="mode must be a or b or None, not 'c'"):
        Example(mode="c")
    with pytest.raises(UserError, match="etas must be a list, each a number or None"):
        Example(etas=["x"])


def test_the_task_names_are_the_tasks():
    assert set(typing.get_args(TaskName)) == set(TASKS)


def choice_fields(config_cls: type, prefix: str = "") -> dict[str, tuple]:
    """Every field whose annotation is a Literal (or an optional one): its choices; a nested settings field's
    under their dotted names (`train.head_init`)."""
    choices = {}
    for name, hint in typing.get_type_hints(config_cls).items():
        if dataclasses.is_dataclass(hint):
            choices |= choice_fields(hint, f"{prefix}{name}.")
            continue
        name = prefix + name
        options = [hint, *typing.get_args(hint)] if typing.get_origin(hint) is not Literal else [hint]
        for option in options:
            if typing.get_origin(option) is Literal:
                choices[name] = typing.get_args(option)
    return choices


@pytest.mark.parametrize("command", ["collect", "train", "evaluate", "pipeline", "generate", "demo", "models"])
def test_help_lists_the_choices_of_every_choice_field(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside a list of choices
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for name, choices in choice_fields(_commands()[command].config_cls()).items():
        if name == "action":  # `models`' positional verb
            continue
        assert f"--{name.replace('_', '-')} {{{','.join(map(str, choices))}}}" in text, name


def test_the_head_and_training_choices_are_listed():
    train = choice_fields(TrainConfig)
    assert train["kind"] == ("bernoulli", "histogram", "mean") and train["parameterization"] == ("v", "q")
    assert train["head_init"] == ("fresh", "linear", "lm_head")
    assert {"fit", "future_targets", "schedule", "dtype"} <= set(train)
    pipeline = set(choice_fields(_commands()["pipeline"].config_cls()))
    nested = {"train.parameterization", "train.head_init", "train.fit", "train.future_targets"}
    assert {"kind", "dtype", "task", "backend", "evaluate.verifier_score", *nested} <= pipeline


def help_text(command: str, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_help_says_what_the_surprising_defaults_mean(capsys, monkeypatch):
    train = help_text("train", capsys, monkeypatch)
    assert "0 or None: all of them (the same meaning as in `ValueModel.from_reference`)" in train
    assert "The default 2 is a small, fast value model for a first try, not a recipe's choice" in train
    assert "The default 3e-4 suits a few copied layers of a small π_ref" in train
    collect = help_text("collect", capsys, monkeypatch)
    assert "Not a truncation as in `model.generate`" in collect  # top_k: candidates scored
    assert "the same seed draws the same samples in every run" in collect


def test_yaml_values_that_tyro_reads_pass_the_files_own_check(tmp_path):
    """YAML reads `1e-4` as text and tyro parses a number from it, so the file's early type check must let it
    through (as it does a number for a text field, and lists, which tyro checks item by item)."""
    config = tmp_path / "train.yaml"
    config.write_text("lr: 1e-4\nsteps: 3\nout: 7\ndata: [a, b]\nref_model: ref\n")
    cfg = parse_config(TrainConfig, ["--config", str(config)], prog="train", description="")
    assert (cfg.lr, cfg.steps, cfg.out, cfg.data) == (1e-4, 3, Path("7"), (Path("a"), Path("b")))
    config.write_text("lr: fast\nref_model: ref\n")
    with pytest.raises(UserError, match=r"train\.yaml: lr must be a number, not 'fast'"):
        load_yaml_fields(config, TrainConfig)


def test_help_rewraps_multi_line_field_docstrings(capsys, monkeypatch):
    """A field's docstring spans several source lines; on a terminal wide enough, its help is one line (tyro
    alone kept every source line break, which broke sentences mid-line)."""
    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    lines = capsys.readouterr().out.splitlines()
    top_k = next(line for line in lines if "--top-k" in line)
    assert "Not a truncation" in top_k and "can still be drawn" in top_k
    etas = lines[next(i for i, line in enumerate(lines) if "--etas" in line) + 1]
    assert "(`None` on the command line, `null` in YAML)" in etas  # a source line starting with ` is joined too
