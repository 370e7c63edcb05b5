"""Atomic writes: a failure mid-write leaves the old file intact and no temporary behind."""

import math

import pytest

from qsharp_ext.io import atomic_write_text, markdown_table, write_json


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
