"""Best-of-n scoring rules from an evaluation's samples: the evaluation's own rule reproduced, the others by hand."""

import json

import pytest
import torch
from best_of_n import main

from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, run_evaluate
from qsharp_ext.tasks import FirstTokenTask
from qsharp_ext.tasks.first_token import make_tiny_reference
from qsharp_ext.value_model import ValueModel


def test_rules_side_by_side(tmp_path, capsys):
    task = FirstTokenTask(n_train=8, n_eval=6, seed=1)
    tokenizer, reference = task.tokenizer(), make_tiny_reference(task, seed=0)
    value = ValueModel.from_reference(reference, num_layers=1, tokenizer=tokenizer, parameterization="q")
    with torch.no_grad():  # a spread head: scores that differ between answers and between tokens
        value.head.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    reference.save_pretrained(tmp_path / "ref")
    tokenizer.save_pretrained(tmp_path / "ref")
    value.save_pretrained(tmp_path / "value", tokenizer)
    cfg = EvaluateConfig(
        out=tmp_path / "eval", ref_model=str(tmp_path / "ref"), qsharp_model=str(tmp_path / "value"),
        etas=(None, 0.3), num_samples=4, prompts_per_batch=3, max_new_tokens=3, top_k=5, seed=2, device="cpu",
        verifier_score="last",
    )  # fmt: skip
    evaluated = {(r["method"], r["eta"]): r for r in run_evaluate(cfg, task, progress=False)}

    main(["--evaluation", str(cfg.out), "--out", str(tmp_path / "bon")])
    assert "| pi_ref |" in capsys.readouterr().out and (tmp_path / "bon" / "best_of_n.png").is_file()
    rows = json.loads((tmp_path / "bon" / "best_of_n.json").read_text())
    assert len(rows) == 2 * 3
    records = [json.loads(line) for line in (cfg.out / "samples.jsonl").read_text().splitlines()]
    for row in rows:
        if row["rule"] == "last":  # the evaluation's own rule: the same pick, gain and AUC
            want = evaluated[(row["method"], row["eta"])]
            assert all(row[k] == pytest.approx(want[k]) for k in ("bon_value", "bon_gain", "bon_gain_se", "value_auc"))
        mine = [r for r in records if (r["method"], r["eta"]) == (row["method"], row["eta"])]
        fold = {"last": lambda v: v[-1], "mean": lambda v: sum(v) / len(v), "min": min}[row["rule"]]
        picks = []
        for p in range(0, len(mine), 4):  # prompt by prompt: the sample with the highest score
            group = mine[p : p + 4]
            assert all(0 < len(r["token_values"]) <= 3 for r in group)
            picks.append(max(group, key=lambda r: fold(r["token_values"]))["reward"])
        assert row["bon_value"] == pytest.approx(sum(picks) / len(picks))


def test_an_evaluation_without_a_value_model_is_refused(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "evaluate_config.json").write_text("{}")
    (tmp_path / "eval" / "samples.jsonl").write_text(json.dumps({"method": "pi_ref", "eta": None}) + "\n")
    with pytest.raises(UserError, match="holds no token values"):
        main(["--evaluation", str(tmp_path / "eval"), "--out", str(tmp_path / "bon")])
