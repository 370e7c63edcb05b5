"""Atomic writes leave the old file intact on failure and give the user's umask's mode; output locations are
checked in one sentence; run folders refuse other settings."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.io import (
    atomic_write_text,
    check_output_file,
    check_output_folder,
    make_temp_folder,
    markdown_table,
    record_run_settings,
    write_folder,
    write_json,
)


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


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_written_files_and_temp_folders_get_the_umasks_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = tmp_path / "r.json"
        write_json(path, {"ok": 1})  # a new file
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
        path.chmod(0o600)
        atomic_write_text(path, "two")  # a replaced one: as a new file, not 0600 (tempfile.mkstemp's)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
        folder = make_temp_folder(tmp_path, "model")
        assert folder.parent == tmp_path and folder.name.startswith(".model.") and folder.is_dir()
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    finally:
        os.umask(previous)


def test_an_output_folder_is_not_a_file_nor_inside_one(tmp_path):
    check_output_folder(tmp_path / "new" / "deeper")  # made when needed
    check_output_folder(tmp_path)  # an existing folder
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"^out .*f is a file, not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(UserError, match=r"^data .*f/sub cannot be created: .*f is a file, not a folder$"):
        check_output_folder(tmp_path / "f" / "sub", "data")


def test_an_output_file_is_not_a_folder_nor_inside_a_file(tmp_path):
    check_output_file(tmp_path / "new" / "c.jsonl")
    (tmp_path / "f").write_text("x")
    check_output_file(tmp_path / "f")  # replaced
    with pytest.raises(UserError, match=r"is a folder: give the path of the file to write"):
        check_output_file(tmp_path)
    with pytest.raises(UserError, match=r"cannot be created: .*f is a file, not a folder"):
        check_output_file(tmp_path / "f" / "c.jsonl")


def test_the_nearest_existing_folder_must_be_writable(tmp_path, monkeypatch):
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.realpath(path) != str(tmp_path) and access(path, mode))
    for check, name in ((check_output_folder, "run"), (check_output_file, "c.jsonl")):
        with pytest.raises(UserError, match=f"cannot be written: no permission to write in {tmp_path}$"):
            check(tmp_path / "a" / "b" / name)
    (tmp_path / "mine").mkdir()
    check_output_folder(tmp_path / "mine" / "run")  # the nearest existing folder is writable


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(UserError, match="no permission to write in"):
            check_output_folder(locked / "sub")
    finally:
        locked.chmod(0o755)


def test_markdown_table():
    text = markdown_table([{"a": 1, "b": 0.123456}, {"a": None}], ["a", "b"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| – | – |"]


def test_run_settings_refuse_a_change_but_not_an_ignored_key(tmp_path):
    path = tmp_path / "run.json"
    record_run_settings(path, {"lr": 0.1, "device": "cpu"}, ignore=("device",))
    record_run_settings(path, {"lr": 0.1, "device": "cuda"}, ignore=("device",))
    with pytest.raises(UserError, match=r"other settings \(lr\)"):
        record_run_settings(path, {"lr": 0.2, "device": "cpu"}, ignore=("device",))


def test_a_changed_nested_setting_is_named_by_its_dotted_path(tmp_path):
    path = tmp_path / "run.json"
    record_run_settings(path, {"rounds": 2, "train": {"lr": 0.1, "steps": 5}, "evaluate": {"etas": [None, 0.1]}})
    assert json.loads(path.read_text())["train"] == {"lr": 0.1, "steps": 5}  # recorded nested, as the config is
    record_run_settings(path, {"rounds": 2, "train": {"lr": 0.1, "steps": 5}, "evaluate": {"etas": (None, 0.1)}})
    with pytest.raises(UserError, match=r"other settings \(train\.steps\)"):
        record_run_settings(path, {"rounds": 2, "train": {"lr": 0.1, "steps": 6}, "evaluate": {"etas": [None, 0.1]}})
    with pytest.raises(UserError, match=r"other settings \(evaluate\.etas, train\.vllm\)"):
        record_run_settings(path, {"rounds": 2, "train": {"lr": 0.1, "steps": 5, "vllm": True}})


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    def fill(tmp):
        (tmp / "a.txt").write_text("a")

    assert write_folder(tmp_path / "m", fill) == tmp_path / "m" and (tmp_path / "m" / "a.txt").read_text() == "a"
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "empty", fill)  # an empty folder there is replaced
    assert (tmp_path / "empty" / "a.txt").is_file()

    def crash(tmp):
        fill(tmp)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "n", crash)
    with pytest.raises(OSError):
        write_folder(tmp_path / "m", fill)  # a folder with files there stops the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "m"]  # no half-written folder, no temp left


def test_a_writer_killed_before_its_rename_leaves_nothing_behind_once_the_name_is_written_again(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getpid()  # a finished process's pid; this one's
    host = socket.gethostname()
    killed_folder = tmp_path / f".model.{host}-{dead}.0a1b2c3d.tmp"  # as a kill -9 during fill() leaves it
    (killed_folder / "weights").mkdir(parents=True)
    killed_file = tmp_path / f".model.{host}-{dead}.4e5f6a7b.tmp"
    killed_file.write_text("half")
    running = tmp_path / f".model.{host}-{alive}.8c9d0e1f.tmp"  # a writer still at work
    running.mkdir()
    elsewhere = tmp_path / f".model.other-host-{dead}.2a3b4c5d.tmp"  # another machine's: not ours to judge
    elsewhere.mkdir()
    other_name = tmp_path / f".results.json.{host}-{dead}.6e7f8a9b.tmp"
    other_name.write_text("{")
    write_folder(tmp_path / "model", lambda tmp: (tmp / "config.json").write_text("{}"))
    assert not killed_folder.exists() and not killed_file.exists()
    assert running.is_dir() and elsewhere.is_dir() and other_name.is_file()
    atomic_write_text(tmp_path / "results.json", "{}")
    assert not other_name.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, elsewhere.name, "model", "results.json"])
