"""`qsharp-ext <command>`: each command is a function of one typed config (YAML + flag overrides)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from qsharp_ext import __version__
from qsharp_ext.config import parse_config
from qsharp_ext.errors import UserError


@dataclass(frozen=True)
class Command:
    config_cls: type
    run: Callable[[object], None]
    summary: str


def _demo(cfg) -> None:
    from qsharp_ext.exact import run_exact_demo, summary_line

    rows = run_exact_demo(cfg)
    print(f"{summary_line(rows)}; report in {cfg.out}/results.md")


def _generate(cfg) -> None:
    from qsharp_ext.generate_cli import run_generate

    n = run_generate(cfg)
    print(f"wrote {n} completions to {cfg.out}")


def _commands() -> dict[str, Command]:
    from qsharp_ext.exact import ExactDemoConfig
    from qsharp_ext.generate_cli import GenerateConfig

    return {
        "demo": Command(ExactDemoConfig, _demo, "exact Q♯ vs CD on an enumerable task with a small random Llama"),
        "generate": Command(GenerateConfig, _generate, "sample guided completions of prompts to a JSONL file"),
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
        cfg = parse_config(command.config_cls, rest, f"qsharp-ext {name}", command.summary)
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
