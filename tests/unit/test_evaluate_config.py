"""evaluate's rows come from `etas` alone (None: π_ref itself), and a config that cannot work is refused before any
model loads."""

import dataclasses
import math
from pathlib import Path

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.evaluation import EvaluateConfig, _methods, check_config

BOTH = EvaluateConfig(out=Path("eval"), ref_model="ref", qsharp_model="q", cd_model="cd", etas=(None, 1.0, 0.1))


def test_none_is_pi_ref_once_and_every_eta_is_a_cd_and_a_qsharp_row():
    rows = [("pi_ref", None), ("cd", 1.0), ("cd", 0.1), ("qsharp", 1.0), ("qsharp", 0.1)]
    assert _methods(BOTH) == rows
    assert _methods(dataclasses.replace(BOTH, etas=(0.1,))) == [("cd", 0.1), ("qsharp", 0.1)]  # guided rows only
    assert _methods(dataclasses.replace(BOTH, qsharp_model=None, cd_model=None)) == [("pi_ref", None)]
    assert EvaluateConfig(out=Path("eval"), ref_model="ref").etas[0] is None  # π_ref by default


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(etas=()), "etas must hold at least one value"),
        (dict(etas=(None, math.inf)), "eta must be positive and finite, or None for unguided"),
        (dict(etas=(0.0,)), "eta must be positive"),
        (dict(etas=(0.1,), qsharp_model=None, cd_model=None), "nothing to evaluate"),
        (dict(num_samples=0), "num_samples must be at least 1"),
        (dict(prompts_per_batch=0), "prompts_per_batch must be at least 1"),
        (dict(max_prompts=-1), "max_prompts must be at least 1"),
        (dict(top_k=0), "top_k must be at least 1"),
        (dict(temperature=0.0), "temperature must be positive"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(max_new_tokens=0), "max_new_tokens must be at least 1"),
    ],
)
def test_a_config_that_cannot_work_is_one_user_error(changes, message):
    check_config(BOTH)
    with pytest.raises(UserError, match=message):
        check_config(dataclasses.replace(BOTH, **changes))
