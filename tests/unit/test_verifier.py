"""Best-of-n scores: each completion token's value against one forward pass per prefix, and the folding rules."""

import math

import pytest
import torch

from qsharp_ext.value_model import ValueModel
from qsharp_ext.verifier import SCORE_RULES, answer_score, token_values
from tests.engine.conftest import make_causal_lm, make_tokenizer


@pytest.mark.parametrize(
    ("parameterization", "kind"), [("v", "bernoulli"), ("q", "bernoulli"), ("q", "histogram"), ("v", "mean")]
)
def test_token_values_match_a_forward_pass_per_prefix(parameterization, kind):
    tokenizer = make_tokenizer()
    ref = make_causal_lm("llama", len(tokenizer))
    vm = ValueModel.from_reference(ref, 1, parameterization=parameterization, kind=kind).double()
    torch.nn.init.normal_(vm.head.weight, std=3.0)  # values far from 0.5: a misplaced row would show
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
    draw = lambda n: torch.randint(1, len(tokenizer), (n,), generator=gen).tolist()  # noqa: E731
    prompts = [draw(4), draw(2), draw(1)]
    shape = [(0, 3), (1, 1), (0, 1), (2, 4), (0, 2)]  # (prompt, completion length): prompts 0 and 1 repeat
    sequences = [prompts[p] + draw(n) for p, n in shape]
    prompt_lens = [len(prompts[p]) for p, _ in shape]
    got = token_values(vm, sequences, prompt_lens)
    for seq, start, values in zip(sequences, prompt_lens, got):
        assert len(values) == len(seq) - start
        for t, value in zip(range(start, len(seq)), values):  # the prefix up to and including token t, alone
            if parameterization == "v":
                head = vm(torch.tensor([seq[: t + 1]]))[0][0, -1]
            else:
                head = vm(torch.tensor([seq[:t]]))[0][0, -1, seq[t]]
            want = vm.expected_reward(head).item()
            assert math.isfinite(value) and value == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_answer_score_rules():
    values = [0.2, 0.9, 0.5]
    assert [answer_score(values, rule) for rule in SCORE_RULES] == [0.5, pytest.approx(1.6 / 3), 0.2]
    assert all(answer_score([], rule) == float("-inf") for rule in SCORE_RULES)
