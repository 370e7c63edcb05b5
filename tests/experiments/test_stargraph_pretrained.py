"""`python/stargraph_pretrained.py` on a tiny random Llama with a word-level tokenizer: labels, outputs, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from qsharp_ext.tasks import StarGraphTask
from qsharp_ext.wordlevel import word_level_tokenizer
from tests.experiments.conftest import PYTHON_DIR

pytest.importorskip("tyro")
pytest.importorskip("matplotlib")
pretrained = pytest.importorskip("stargraph_pretrained")  # python/ is on the path (conftest.py)
hops = pytest.importorskip("stargraph_hops")
transformers = pytest.importorskip("transformers")

WORDS = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay", "kiwi", "lark", "mole", "newt"]
N_LABELS = 12


def tiny_tokenizer():
    """Markers first and labels after, so the LM's ids differ from the task's; plus one word that is no label."""
    return word_level_tokenizer(["|", "/", "=", "Zebra", *WORDS])


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A random 2-layer Llama and its tokenizer, saved as a causal-LM folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(out, model, **overrides):
    settings = dict(
        out=out, model=model, degree=2, path_len=4, n_labels=N_LABELS, ref_steps=3, ref_batch=8, batch=8,
        report_at=(16, 40), warmup_steps=2, n_held_out=16, eval_batch=8, device="cpu",
    )  # fmt: skip
    return pretrained.PretrainedHopsConfig(**(settings | overrides))


def test_labels_are_the_first_single_token_words_and_walks_keep_one_token_per_word():
    tokenizer = tiny_tokenizer()
    task = StarGraphTask(2, 4, N_LABELS, n_pretrain=0, n_posttrain=0, n_test=0)
    vocab = pretrained.make_vocab(tokenizer, task, "tiny")
    assert vocab.text == [*WORDS[:N_LABELS], "|", "/", "="]  # lowercase only: "Zebra" is skipped
    graphs = hops.draw(task, np.random.default_rng(0), 6)
    walks = hops.walks(task, graphs, [j % 2 for j in range(6)])
    ids = pretrained.lm_ids(vocab, walks.ids)
    assert ids.shape == walks.ids.shape
    for row, task_row in zip(ids.tolist(), walks.ids.tolist()):
        words = tokenizer.convert_ids_to_tokens(row)
        assert words == [vocab.text[i] for i in task_row]
    answers = pretrained.answer_ids(vocab, task, graphs)
    assert answers.shape == (6, task.prompt_len + task.path_len + 1)
    assert (answers[:, -1] == tokenizer.eos_token_id).all()


def test_a_short_run_writes_its_json_table_and_plot(lm_folder, tmp_path):
    result = pretrained.run(tiny_config(tmp_path, lm_folder, future_tokens=3))  # K = l − 1
    saved = json.loads((tmp_path / "hops.json").read_text())
    assert saved["curve"] == json.loads(json.dumps(result["curve"]))
    assert {"config", "model", "labels", "chance", "reference", "curve", "stopped", "total_seconds"} <= set(saved)
    assert saved["labels"] == WORDS[:N_LABELS] and saved["chance"] == 0.5
    assert [r["sequences"] for r in saved["curve"]] == [0, 16, 40] and saved["stopped"] == "last report point"
    assert all(list(r["accuracy_by_hops"]) == ["2", "1", "0"] for r in saved["curve"])
    assert all(0.0 <= v <= 1.0 for r in saved["curve"] for v in r["accuracy_by_hops"].values())
    assert all(np.isfinite(r["loss"]) for r in saved["curve"][1:])
    reference = saved["reference"]
    assert len(reference["by_position"]) == 4 + 1  # source, 3 nodes, EOS
    assert all(0.0 <= reference[k] <= 1.0 for k in ("source", "first_step", "later_nodes", "eos"))
    table = (tmp_path / "hops.md").read_text()
    assert "| sequences | step | seconds | loss | 2 hops | 1 hop | 0 hops |" in table and "first step" in table
    assert (tmp_path / "hops.png").stat().st_size > 0


def test_the_time_budget_stops_training_and_reports_where_it_got(lm_folder, tmp_path):
    result = pretrained.run(tiny_config(tmp_path, lm_folder, ref_steps=0, time_budget_s=1e-3))
    assert result["stopped"] == "time budget" and result["reference"] is None
    assert [r["sequences"] for r in result["curve"]] == [0, 8]
    assert "not fine-tuned" in (tmp_path / "hops.md").read_text()


def test_help_lists_the_flags():
    cmd = [sys.executable, str(PYTHON_DIR / "stargraph_pretrained.py"), "--help"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(flag in result.stdout for flag in ("--model", "--future-tokens", "--report-at", "--time-budget-s"))


def test_more_labels_than_the_tokenizer_has_words_is_one_clear_error(lm_folder, tmp_path, monkeypatch):
    argv = ["stargraph_pretrained.py", "--model", str(lm_folder), "--out", str(tmp_path), "--n-labels", "40"]
    monkeypatch.setattr(sys, "argv", [*argv, "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        pretrained.main()
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message and "14 lowercase words" in message
    assert not (tmp_path / "hops.json").exists()
