"""`qsharp-ext generate` end to end on tiny saved models, and its clear errors."""

import json

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.generate_cli import GenerateConfig, read_prompts
from qsharp_ext.value_model import ValueModel
from tests.e2e.test_cli import run_cli
from tests.engine.conftest import WORDS, make_causal_lm, make_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tokenizer = make_tokenizer()
    ref = make_causal_lm("llama", len(tokenizer))
    ref.save_pretrained(root / "ref")
    tokenizer.save_pretrained(root / "ref")
    ValueModel.from_reference(ref, 1, tokenizer).save_pretrained(root / "vm", tokenizer=tokenizer)
    other = make_tokenizer(list(reversed(WORDS)))
    other.save_pretrained(root / "ref_other")
    ref.save_pretrained(root / "ref_other")
    return root


def test_generate_writes_one_line_per_completion(saved, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w1 w2\nw3\n")
    out = tmp_path / "c.jsonl"
    result = run_cli(
        "generate", "--ref-model", str(saved / "ref"), "--value-model", str(saved / "vm"), "--prompts-file",
        str(prompts), "--prompt", "w5 w6 w7", "--etas", "0.1", "None", "--num-samples", "2", "--max-new-tokens", "4",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2
    assert {r["eta"] for r in rows} == {0.1, None}
    assert all(abs(r["kl"]) < 1e-6 for r in rows if r["eta"] is None) and all(r["kl"] > 0 for r in rows if r["eta"])
    assert all(1 <= r["tokens"] <= 4 for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--etas", "0"], "eta must be positive"),
        (["--top-k", "0"], "top_k"),
        (["--top-k", "100000"], "top_k"),
        (["--max-new-tokens", "1000"], "context"),
        (["--ref-model", "/no/such/folder"], "does not exist"),
        (["--value-model", "/no/such/vm"], "does not exist"),
        (["--ref-model", "{root}/ref_other"], "different tokenizer"),
        (["--ref-model", "{tmp}"], "holds no config.json"),
        (["--ref-model", "{tmp}/prompts.txt"], "is a file"),
        (["--device", "cuda"], "sees no CUDA GPU"),
    ],
)
def test_bad_input_is_one_clear_sentence(saved, tmp_path, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is there: asking for it is no mistake")
    (tmp_path / "prompts.txt").write_text("\n  \n")
    base = {"--ref-model": str(saved / "ref"), "--value-model": str(saved / "vm")}
    args = [a.replace("{root}", str(saved)).replace("{tmp}", str(tmp_path)) for a in args]
    for flag in list(base):
        if flag in args:
            base.pop(flag)
    flat = [x for pair in base.items() for x in pair]
    result = run_cli("generate", *flat, "--prompt", "w1", "--out", str(tmp_path / "o.jsonl"), *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_empty_prompts_file_is_named(tmp_path):
    (tmp_path / "prompts.txt").write_text("\n  \n")
    cfg = GenerateConfig(ref_model="ref", prompts_file=tmp_path / "prompts.txt")
    with pytest.raises(UserError, match=r"prompts\.txt holds no non-empty line"):
        read_prompts(cfg)
