"""Typed command configs: a dataclass per command, loaded from YAML and overridden on the command line.

One mechanism for every command: the fields of `--config FILE.yaml` (optional) become flags placed before
the command line's own, and tyro parses them all, so YAML values are type-checked exactly like flags, a
flag overrides the file, and `--help` documents every field from its docstring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from qsharp_ext.errors import UserError

C = TypeVar("C")


def check_field_types(cfg: Any) -> None:
    """Check (and where it is unambiguous, convert) the field values of a config built in Python, in place.

    The command line's values are parsed by tyro; a config built in Python gets the same types here, from
    its annotations: a str or os.PathLike becomes a Path where a Path is expected (and a string where a str
    is), a list becomes a tuple, and one item where a tuple is expected a tuple of one. A value of another
    type, or outside a Literal's choices, is one UserError naming the field. Call it from `__post_init__`.
    """
    hints = typing.get_type_hints(type(cfg))
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if _is_settings(hints[field.name]):
            object.__setattr__(cfg, field.name, _nested(field.name, hints[field.name], value))
            continue
        object.__setattr__(cfg, field.name, typed_value(field.name, hints[field.name], value))


def typed_value(name: str, hint: Any, value: Any) -> Any:
    """`value` converted to the annotation `hint` (see `check_field_types`), or one UserError naming `name`."""
    ok, converted = _convert(hint, value)
    if not ok:
        raise UserError(f"{name} must be {_describe(hint)}, not {value!r}")
    return converted


def _is_settings(hint: Any) -> bool:
    """Whether a field holds a nested settings dataclass (a pipeline's `train`, `collect`, `evaluate`)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _nested(name: str, cls: type, value: Any) -> Any:
    """A nested settings field: an instance of `cls` as given, or built from a mapping of its fields; an
    error inside it names the field by its dotted path (`train.lr`)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, typing.Mapping):
        raise UserError(f"{name} must be a {cls.__name__} or a mapping of its fields, not {value!r}")
    known, unknown = _known_and_unknown(cls, value)
    if unknown:
        raise UserError(f"{name} has no field(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return cls(**value)
    except UserError as err:
        raise UserError(f"{name}.{err}") from None


def _known_and_unknown(cls: type, keys: typing.Iterable[str]) -> tuple[list[str], list[str]]:
    """(the field names of the dataclass `cls`, the keys that are none of them), each sorted."""
    known = {f.name for f in dataclasses.fields(cls)}
    return sorted(known), sorted(set(keys) - known)


def _convert(hint: Any, value: Any) -> tuple[bool, Any]:
    """(whether `value` fits `hint`, the value converted)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _convert(args[0], value)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted = _convert(option, value)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in args, value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Sequence):
            value = (value,)  # one item: `data="round-1"` means ("round-1",)
        items = [_convert(args[0], item) for item in value]
        return all(ok for ok, _ in items), tuple(item for _, item in items)
    if origin is tuple and args:  # a fixed length: tuple[int, int]
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != len(args):
            return False, value
        items = [_convert(arg, item) for arg, item in zip(args, value, strict=True)]
        return all(ok for ok, _ in items), tuple(item for _, item in items)
    if hint is type(None):
        return value is None, value
    if hint is Path:
        return isinstance(value, str | os.PathLike), Path(value) if isinstance(value, str | os.PathLike) else value
    if hint is str:
        return isinstance(value, str | os.PathLike), os.fspath(value) if isinstance(value, os.PathLike) else value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool), value
    return True, value  # anything else is not checked here


def _describe(hint: Any) -> str:
    """A type annotation in words: "a path", "bernoulli, histogram or mean", "an integer or None"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _describe(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in args)
    if origin is Literal:
        names = [str(a) for a in args]
        return " or ".join(names) if len(names) <= 2 else f"one of {', '.join(names)}"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list, each {_describe(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)}: {', '.join(_describe(arg) for arg in args)}"
    words = {type(None): "None", Path: "a path", str: "a string", bool: "True or False", int: "an integer"}
    return words.get(hint, "a number" if hint is float else getattr(hint, "__name__", str(hint)))


def load_yaml_fields(path: Path, config_cls: type) -> dict[str, Any]:
    """The fields a YAML file sets, checked against `config_cls`: a mapping of known field names."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        fields = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(fields, dict):
        raise UserError(f"config file {path} must hold a mapping of field names to values")
    _check_known(path, fields, config_cls, "")
    return fields


def _check_known(path: Path, fields: dict[str, Any], config_cls: type, prefix: str) -> None:
    """Every key a field of `config_cls`; a nested settings field's mapping checked against its own fields."""
    hints = typing.get_type_hints(config_cls)
    known, unknown = _known_and_unknown(config_cls, fields)
    if unknown:
        unknown_names = ", ".join(prefix + name for name in unknown)
        known_names = ", ".join(prefix + name for name in known)
        raise UserError(f"config file {path} sets unknown field(s) {unknown_names}; known: {known_names}")
    for name, value in fields.items():
        if _is_settings(hints[name]):
            if not isinstance(value, dict):
                raise UserError(f"config file {path}: {prefix}{name} must be a mapping of its fields")
            _check_known(path, value, hints[name], f"{prefix}{name}.")
        elif not _fits_as_flag(hints[name], value):
            raise UserError(f"config file {path}: {prefix}{name} must be {_describe(hints[name])}, not {value!r}")


def _fits_as_flag(hint: Any, value: Any) -> bool:
    """Whether a scalar YAML value, once written as a flag, is one tyro will parse. Checked here so that the error
    names the file and the field; lists, mappings and anything in doubt pass and are left to tyro. YAML reads
    `1e-4` as text and tyro parses a number from text, so a string also fits as the number it spells, and a
    number fits a text field."""
    if isinstance(value, list | tuple | dict):
        return True
    spellings = [value]
    if isinstance(value, str):
        for parse in (int, float):
            with contextlib.suppress(ValueError):
                spellings.append(parse(value))
    elif isinstance(value, int | float):
        spellings.append(str(value))
    return any(_convert(hint, spelling)[0] for spelling in spellings)


def split_config_flag(argv: list[str]) -> tuple[Path | None, list[str]]:
    """Take `--config PATH` / `--config=PATH` out of argv."""
    rest, path = [], None
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            value = next(it, None)
            if value is None:
                raise UserError("--config needs a path to a YAML file")
            path = Path(value)
        elif arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return path, rest


def fields_to_flags(fields: dict[str, Any], config_cls: type | None = None, prefix: str = "--") -> list[str]:
    """YAML fields as tyro flags: `{"top_k": 20, "etas": [1, 0.1], "bf16": true}` → `--top-k 20 --etas 1 0.1 --bf16`.

    A nested settings field's mapping becomes its fields' dotted flags (`train: {lr: 0.001}` → `--train.lr
    0.001`); another mapping becomes KEY=VALUE items (VALUE as JSON), which `parse_key_values` reads back.
    """
    hints = typing.get_type_hints(config_cls) if config_cls is not None else {}
    args: list[str] = []
    for name, value in fields.items():
        dashed = name.replace("_", "-")
        flag = prefix + dashed
        if name in hints and _is_settings(hints[name]):
            args += fields_to_flags(value, hints[name], flag + ".")
        elif isinstance(value, bool):
            args.append(flag if value else prefix + "no-" + dashed)
        elif isinstance(value, list | tuple):
            args += [flag, *map(str, value)]
        elif isinstance(value, dict):
            args += [flag, *(f"{key}={json.dumps(item)}" for key, item in value.items())]
        else:
            args += [flag, str(value)]
    return args


def parse_key_values(items: Sequence[str], what: str) -> dict[str, Any]:
    """`["high=20", 'ops=["+"]', "name=x"]` → `{"high": 20, "ops": ["+"], "name": "x"}`: VALUE is read as
    JSON when it parses, else kept as text; an item without `=` or a key given twice is refused."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{what} {item!r} must be KEY=VALUE, e.g. high=20")
        if key in parsed:
            raise UserError(f"{what} {key} is given twice")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


def parse_config(config_cls: type[C], argv: list[str], prog: str, description: str) -> C:
    """Build `config_cls` from an optional `--config` YAML file plus command-line overrides."""
    import tyro  # here, not at the top: the engine's type checks (sampling settings) run where tyro is absent

    path, rest = split_config_flag(argv)
    file_args = fields_to_flags(load_yaml_fields(path, config_cls), config_cls) if path else []
    description += "\n\nAll fields can also be set from a YAML file with --config FILE.yaml; flags override it."
    _dedent_field_docstrings(tyro)
    return tyro.cli(config_cls, args=file_args + rest, prog=prog, description=description)


_SOFT_BREAK = re.compile(r"(?<!\n)\n(?!\n|[-*] )")  # a line break inside a paragraph, not before a list item


def _dedent_field_docstrings(tyro: types.ModuleType) -> None:
    """Make `--help` rewrap multi-line field docstrings as one paragraph.

    Why: tyro joins a docstring's lines unless the next one starts with a non-letter, and it gets them from
    docstring_parser still indented, so every line break of a field's docstring stayed in `--help` (sentences
    broken mid-line). Here each paragraph's lines are joined before tyro sees them, except before a list item
    (`- `, `* `); a blank line still separates paragraphs. tyro reads them through a private function: if it
    moves, this does nothing, and tests/unit/test_config_types.py says so.
    """
    reader = getattr(getattr(tyro, "_docstrings", None), "parse_docstring_from_object", None)
    if reader is None or getattr(reader, "dedents", False):
        return

    def dedented(obj: object) -> dict[str, str]:
        return {name: _SOFT_BREAK.sub(" ", inspect.cleandoc(text)) for name, text in reader(obj).items()}

    dedented.dedents = True  # type: ignore[attr-defined]
    tyro._docstrings.parse_docstring_from_object = dedented


def base_fields(opts: Any, base: type) -> dict[str, Any]:
    """The fields `opts` inherits from the dataclass `base`, as keyword arguments for another config."""
    return {field.name: getattr(opts, field.name) for field in dataclasses.fields(base)}


def from_recorded(config_cls: type[C], recorded: dict[str, Any], **overrides: Any) -> C:
    """A config rebuilt from its JSON record (lists back to tuples; keys it does not declare ignored)."""
    names = {field.name for field in dataclasses.fields(config_cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names}
    return config_cls(**{**values, **overrides})
