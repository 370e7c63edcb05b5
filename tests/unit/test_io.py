"""Atomic writes leave the old file intact on failure; run folders refuse other settings."""

import math

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.io import atomic_write_text, markdown_table, record_run_settings, write_json


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "deep" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"ok": 1})
    with pytest.raises(ValueError):
        write_json(path, {"bad": math.nan})  # NaN is not JSON: refused, old file kept
    assert path.read_text().strip().endswith("}") and '"ok": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_markdown_table():
    text = markdown_table([{"a": 1, "b": 0.123456}, {"a": None}], ["a", "b"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| – | – |"]


def test_run_settings_refuse_a_change_but_not_an_ignored_key(tmp_path):
    path = tmp_path / "run.json"
    record_run_settings(path, {"lr": 0.1, "device": "cpu"}, ignore=("device",))
    record_run_settings(path, {"lr": 0.1, "device": "cuda"}, ignore=("device",))
    with pytest.raises(UserError, match=r"other settings \(lr\)"):
        record_run_settings(path, {"lr": 0.2, "device": "cpu"}, ignore=("device",))


def test_a_setting_introduced_later_holds_its_old_value_in_older_records(tmp_path):
    path = tmp_path / "run.json"
    record_run_settings(path, {"lr": 0.1})  # recorded before the option existed
    record_run_settings(path, {"lr": 0.1, "vllm": False}, introduced={"vllm": False})
    with pytest.raises(UserError, match=r"other settings \(vllm\)"):
        record_run_settings(path, {"lr": 0.1, "vllm": True}, introduced={"vllm": False})
    with pytest.raises(UserError, match=r"other settings \(vllm\)"):
        record_run_settings(path, {"lr": 0.1, "vllm": False})  # without the default, the key is new
    fresh = tmp_path / "new.json"
    record_run_settings(fresh, {"lr": 0.1, "vllm": False}, introduced={"vllm": False})
    assert '"vllm": false' in fresh.read_text()  # new folders record every setting
