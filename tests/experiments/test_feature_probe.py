"""`python/feature_probe.py`: cached-prefix features equal plain forwards, and a probe finds a planted signal."""

import json
import random

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.rollout_data import Rollout, write_shard
from tests.engine.conftest import make_causal_lm, make_tokenizer

feature_probe = pytest.importorskip("feature_probe")  # python/ is on the path (conftest.py)

SHOTS = [47, 30, 31, 32, 33]  # the few-shot part every prompt starts with
GOOD, BAD, NEUTRAL = range(0, 10), range(10, 20), range(20, 30)


def rollouts(n_prompts: int, samples: int, rng: random.Random) -> list[Rollout]:
    """Reward 1 iff the first completion token is GOOD; the rest of the completion is noise."""
    out = []
    for p in range(n_prompts):
        prompt = SHOTS + [rng.choice(NEUTRAL) for _ in range(rng.randrange(1, 4))]
        for s in range(samples):
            first = rng.choice([*GOOD, *BAD])
            completion = [first] + [rng.choice(NEUTRAL) for _ in range(rng.randrange(0, 3))]
            out.append(Rollout(f"p{p}", s, 1, None, 0, prompt, completion, 0, float(first in GOOD)))
    return out


@pytest.fixture(scope="module")
def ref_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    tokenizer = make_tokenizer()
    make_causal_lm("llama", len(tokenizer), num_layers=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_features_through_the_shared_prefix_cache_equal_one_forward_per_sequence(ref_folder, rng):
    model = make_causal_lm("llama", len(make_tokenizer()), num_layers=2)
    seed = int(torch.randint(2**31, (1,), generator=rng))
    sequences = [r.prompt_ids + r.completion_ids for r in rollouts(5, 3, random.Random(seed))]
    assert feature_probe.shared_prefix_length(sequences) == len(SHOTS)
    got = feature_probe.hidden_states(model, sequences, (0, 1, 2), batch_size=4)
    for i, seq in enumerate(sequences):
        with torch.no_grad():
            alone = model(torch.tensor([seq]), output_hidden_states=True).hidden_states
        for j, layer in enumerate((0, 1, 2)):
            torch.testing.assert_close(got[j, i], alone[layer][0, -1].double(), rtol=1e-5, atol=1e-5)


def test_a_probe_finds_the_planted_signal_only_where_the_prefix_holds_it(ref_folder, tmp_path):
    write_shard(tmp_path / "data", 0, rollouts(60, 6, random.Random(0)))
    common = dict(data=(tmp_path / "data",), ref_model=str(ref_folder), layers=(0, 2), device="cpu")
    after_first = feature_probe.run_probe(feature_probe.Probe(out=tmp_path / "one", step=1, **common))
    assert [r["layer"] for r in after_first] == [0, 2]
    assert after_first[0]["within_prompt_auc"] > 0.95  # the GOOD / BAD token's own embedding
    assert json.loads((tmp_path / "one" / "probe.json").read_text()) == after_first
    prompt_only = feature_probe.run_probe(feature_probe.Probe(out=tmp_path / "zero", step=0, **common))
    assert all(r["within_prompt_auc"] is None for r in prompt_only)  # one prompt's prefixes are all the same
    with pytest.raises(UserError, match=r"layers must lie in \[0, 2\]"):
        feature_probe.run_probe(feature_probe.Probe(out=tmp_path / "bad", **(common | {"layers": (3,)})))
