"""The sharpening baseline: CD guidance by π_ref's own logits at η samples π_ref at 1 / (1/T + 1/η)."""

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
    main(["--ref-model", str(tmp_path / "ref"), "--out", str(tmp_path / "sharp"), "--sharpened", "0.4"])
    assert "--etas 0.8 for T' 0.4" in capsys.readouterr().out
    model = ValueModel.from_pretrained(tmp_path / "sharp", tokenizer=tokenizer)
    assert model.kind == "mean" and model.is_q_type and model.backbone.config.num_hidden_layers == 2
