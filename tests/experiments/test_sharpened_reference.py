"""The sharpening baseline: CD guidance by π_ref's own logits at η samples π_ref at 1 / (1/T + 1/η)."""

import json
import math
import random

import pytest
import torch
from sharpened_reference import eta_for_temperature, main, sharpening_model

from qsharp_ext import guided_generate
from qsharp_ext.errors import UserError
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm, make_tokenizer


def test_guidance_is_pi_ref_at_the_lower_temperature_float64(rng):
    tokenizer = make_tokenizer()
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    ref = make_causal_lm("llama", len(tokenizer), num_layers=2, seed=seed)
    with torch.no_grad():
        ref.lm_head.weight.mul_(30.0)  # logits of tens of nats, as a real LM's
    temperature, sharpened = 0.8, 0.3
    eta = eta_for_temperature(temperature, sharpened)
    out = guided_generate(
        ref, tokenizer, [[3, 4, 5], [7, 8]], sharpening_model(ref, tokenizer), etas=[eta], num_samples=3,
        max_new_tokens=5, top_k=len(tokenizer), temperature=temperature, candidates_only=True,
        eos_token_id=[], seed=seed,
    )  # fmt: skip
    prompts = [[3, 4, 5], [7, 8]]
    for row, tokens in enumerate(out.token_lists()):
        prompt = prompts[int(out.prompt_index[row])]
        with torch.no_grad():
            logits = ref(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].double()  # (T, V)
        log_pi = torch.log_softmax(logits / sharpened, -1)
        log_ref = torch.log_softmax(logits / temperature, -1)
        chosen = torch.tensor(tokens).unsqueeze(-1)
        expected_logp = log_pi.gather(-1, chosen).squeeze(-1)
        torch.testing.assert_close(out.logp_pi[row, : len(tokens)].double(), expected_logp, rtol=0, atol=2e-4)
        kl = (log_pi.exp() * (log_pi - log_ref)).sum(-1).sum()
        assert torch.isfinite(out.kl[row]) and abs(out.kl[row].item() - kl.item()) < 1e-3 * max(1.0, kl.item())


def test_eta_for_temperature_and_bad_temperatures():
    assert eta_for_temperature(0.8, 0.4) == pytest.approx(0.8)
    assert 1 / 0.8 + 1 / eta_for_temperature(0.8, 0.2) == pytest.approx(1 / 0.2)
    for bad in (0.0, 0.8, 1.2):
        with pytest.raises(UserError, match="sharpened temperature"):
            eta_for_temperature(0.8, bad)


def test_the_command_writes_a_loadable_mean_head_model(tmp_path, capsys):
    tokenizer = make_tokenizer()
    make_causal_lm("llama", len(tokenizer), num_layers=2).save_pretrained(tmp_path / "ref")
    tokenizer.save_pretrained(tmp_path / "ref")
    main(["model", "--ref-model", str(tmp_path / "ref"), "--out", str(tmp_path / "sharp"), "--sharpened", "0.4"])
    assert "--etas 0.8 for T' 0.4" in capsys.readouterr().out
    model = ValueModel.from_pretrained(tmp_path / "sharp", tokenizer=tokenizer)
    assert model.kind == "mean" and model.is_q_type and model.backbone.config.num_hidden_layers == 2


def write_evaluation(folder, rows, samples):
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(rows))
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))


def test_compare_pairs_every_sharpened_row_with_pi_ref_by_prompt(tmp_path, capsys):
    rng = random.Random(7)
    ids = [f"p{i}" for i in range(20)]
    ref = {i: [float(rng.random() < 0.3) for _ in range(4)] for i in ids}
    sharp = {i: [float(rng.random() < 0.5) for _ in range(4)] for i in ids}
    row = {"pass@1": 0.3, "pass@1_se": 0.1, "maj@n": 0.3, "pass@n": 0.5, "kl": 0.0}
    write_evaluation(tmp_path / "eval", [{**row, "method": "pi_ref", "eta": None}], [
        {"method": "pi_ref", "eta": None, "prompt_id": i, "reward": r} for i in ids for r in ref[i]
    ])  # fmt: skip
    write_evaluation(tmp_path / "sharp", [{**row, "method": "cd", "eta": 0.8, "kl": 0.2}], [
        {"method": "cd", "eta": 0.8, "prompt_id": i, "reward": r} for i in ids for r in sharp[i]
    ])  # fmt: skip
    argv = ["compare", "--evaluation", str(tmp_path / "eval"), "--sharpened", str(tmp_path / "sharp")]
    main([*argv, "--out", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [r["method"] for r in rows] == ["pi_ref", "sharpened"]
    diffs = [sum(sharp[i]) / 4 - sum(ref[i]) / 4 for i in ids]
    mean = sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    assert rows[1]["gain"] == pytest.approx(mean) and rows[1]["gain_se"] == pytest.approx(se)
    assert rows[1]["temperature"] == pytest.approx(0.4)  # 1 / (1/0.8 + 1/0.8)
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "sharpened" in (tmp_path / "out" / "comparison.md").read_text()

    (tmp_path / "sharp" / "samples.jsonl").write_text(
        json.dumps({"method": "cd", "eta": 0.8, "prompt_id": "p0", "reward": 1.0})
    )
    with pytest.raises(SystemExit, match="same prompts"):
        main([*argv, "--out", str(tmp_path / "again")])
