"""`qsharp-ext <command>`: each command is a function of one typed config (YAML + flag overrides)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import yaml

from qsharp_ext import __version__
from qsharp_ext.config import parse_config
from qsharp_ext.errors import UserError


@dataclass(frozen=True)
class Command:
    config: str  # "module:Class", imported only when the command runs (top-level --help stays fast)
    run: Callable[[object], None]
    summary: str

    def config_cls(self) -> type:
        module, name = self.config.split(":")
        return getattr(import_module(module), name)


def _demo(cfg) -> None:
    from qsharp_ext.exact import run_exact_demo, summary_line

    rows = run_exact_demo(cfg)
    print(f"{summary_line(rows)}; report in {cfg.out}/results.md")


def _generate(cfg) -> None:
    from qsharp_ext.generate_cli import run_generate

    n = run_generate(cfg)
    print(f"wrote {n} completions to {cfg.out}")


def _collect(cfg) -> None:
    from qsharp_ext.rollouts import run_collect, summary_line

    start = time.perf_counter()
    print(summary_line(run_collect(cfg), time.perf_counter() - start))


def _train(cfg) -> None:
    from qsharp_ext.train_report import summary_line
    from qsharp_ext.training import run_train

    print(summary_line(run_train(cfg)))


def _evaluate(cfg) -> None:
    from qsharp_ext.evaluation import run_evaluate, summary_line

    print(f"{summary_line(run_evaluate(cfg))}; report in {cfg.out}/results.md")


def _pipeline(cfg) -> None:
    from qsharp_ext.evaluation import summary_line
    from qsharp_ext.pipeline import run_pipeline

    print(f"{summary_line(run_pipeline(cfg))}; report in {cfg.out}/results.md")


def _models(cfg) -> None:
    from qsharp_ext.models_cli import run_models

    print(run_models(cfg))


def _commands() -> dict[str, Command]:
    return {
        "demo": Command(
            "qsharp_ext.exact:ExactDemoConfig", _demo, "exact Q♯ vs CD on an enumerable task with a small random Llama"
        ),
        "generate": Command(
            "qsharp_ext.generate_cli:GenerateConfig", _generate, "sample guided completions of prompts to a JSONL file"
        ),
        "collect": Command(
            "qsharp_ext.rollouts:CollectConfig",
            _collect,
            "roll in with π^k, roll out with π_ref, store rewarded samples",
        ),
        "train": Command(
            "qsharp_ext.training:TrainConfig", _train, "train a value model on collected roll-outs (prefix extension)"
        ),
        "evaluate": Command(
            "qsharp_ext.evaluation:EvaluateConfig", _evaluate, "pass@1, maj@n, pass@n, best-of-n and KL: π_ref, CD, Q♯"
        ),
        "pipeline": Command(
            "qsharp_ext.pipeline:PipelineConfig", _pipeline, "DAgger rounds of collect → train → evaluate, resumable"
        ),
        "models": Command(
            "qsharp_ext.models_cli:ModelsConfig", _models, "prepare an offline model (SmolLM2) and print its folder"
        ),
    }


def _usage(commands: dict[str, Command]) -> str:
    width = max(len(name) for name in commands)
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in commands.items()]
    return (
        "usage: qsharp-ext [--version] <command> [--config FILE.yaml] [--field value ...]\n\n"
        "Q♯: distributional value guidance for frozen language models.\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n`qsharp-ext <command> --help` lists a command's fields.\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(commands))
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"qsharp-ext {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"qsharp-ext: unknown command {name!r}; choose one of {', '.join(commands)}", file=sys.stderr)
        return 2
    command = commands[name]
    try:
        cfg = parse_config(command.config_cls(), rest, f"qsharp-ext {name}", command.summary)
        command.run(cfg)
    except (UserError, yaml.YAMLError) as err:
        print(f"qsharp-ext {name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qsharp-ext {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
