"""A frozen backbone's features at the targets, from one packed pass per prompt, against one pass per sequence."""

import json

import pytest
import torch

import qsharp_ext.frozen_features as F
import qsharp_ext.prompt_packing as P
from qsharp_ext.train_batches import collate, target_hidden
from qsharp_ext.training import run_train
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm
from tests.engine.test_training import config, data_folder, ref_folder, synthetic_rollouts  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_packed_pass_equals_one_pass_per_sequence_float64(arch, tokenizer, rng):
    backbone = make_causal_lm(arch, len(tokenizer), num_layers=2).double().base_model
    prompt = torch.randint(0, len(tokenizer), (5,), generator=rng).tolist()
    completions = [torch.randint(0, len(tokenizer), (n,), generator=rng).tolist() for n in (3, 1, 6, 2)]
    got = P.packed_hidden(backbone, prompt, completions)
    for completion, hidden in zip(completions, got, strict=True):
        alone = backbone(input_ids=torch.tensor([prompt + completion])).last_hidden_state[0, len(prompt) - 1 :]
        assert hidden.shape == alone.shape and torch.isfinite(hidden).all()
        torch.testing.assert_close(hidden, alone, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("parameterization", "prefix_extension"), [("q", True), ("v", True), ("q", False)])
@pytest.mark.parametrize("packed_tokens", [2048, 7])  # 7: a prompt's roll-outs split over several passes
def test_features_at_the_targets_equal_the_batch_path(tokenizer, parameterization, prefix_extension, packed_tokens,
                                                      monkeypatch):  # fmt: skip
    monkeypatch.setattr(P, "PACKED_TOKENS", packed_tokens)
    ref = make_causal_lm("llama", len(tokenizer), num_layers=2).double()
    model = ValueModel.from_reference(ref, 2, tokenizer, parameterization=parameterization).double()
    rollouts = synthetic_rollouts(5, 4)  # switch steps 0–2: targets start at different places
    features = F.FrozenFeatures(model.backbone, rollouts, parameterization == "q", prefix_extension)
    for start in range(0, len(rollouts), 6):  # batches that cut across prompts
        part = rollouts[start : start + 6]
        batch = collate(part, parameterization == "q", prefix_extension, features=features.at_targets)
        torch.testing.assert_close(batch.features, target_hidden(model, batch), rtol=1e-10, atol=1e-10)


def test_training_on_a_frozen_trunk_reads_the_features_not_the_backbone(tmp_path, ref_folder, data_folder,  # noqa: F811
                                                                         monkeypatch):  # fmt: skip
    calls = []
    original = F.FrozenFeatures.__init__

    def counting(self, backbone, *args, **kwargs):
        backbone.register_forward_hook(lambda *_: calls.append(1))
        original(self, backbone, *args, **kwargs)
        calls.append("built")

    monkeypatch.setattr(F.FrozenFeatures, "__init__", counting)
    kept = config(tmp_path / "kept", ref_folder, data_folder, backbone_lr_scale=0.0, steps=20, parameterization="q")
    run_train(kept, progress=False)
    assert "built" in calls and calls[calls.index("built") + 1 :] == []  # no backbone pass after the features
    monkeypatch.setattr(F.FrozenFeatures, "__init__", original)
    monkeypatch.setattr("qsharp_ext.training.BUDGET_BYTES", 0)  # too large to keep: a pass per batch, as before
    per_batch = config(tmp_path / "per-batch", ref_folder, data_folder, backbone_lr_scale=0.0, steps=20,
                       parameterization="q")  # fmt: skip
    run_train(per_batch, progress=False)
    a, b = (json.loads((c.out / "summary.json").read_text())["metrics"] for c in (kept, per_batch))
    for key in ("eval_loss", "train_loss", "roc_auc"):  # the same training up to float32 rounding
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
