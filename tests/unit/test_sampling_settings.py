"""resolve_sampling: keywords over a GenerationConfig over defaults; what cannot be honoured is refused."""

import pytest
from transformers import GenerationConfig

from qsharp_ext.errors import UserError
from qsharp_ext.sampling_settings import Sampling, resolve_sampling

NONE = dict(do_sample=None, temperature=None, top_p=None, max_new_tokens=None, num_samples=None, eos_token_id=None)


def test_defaults_without_a_config():
    assert resolve_sampling(None, 5, **NONE) == Sampling()


def test_the_config_sets_the_shared_fields_and_keywords_win():
    config = GenerationConfig(
        do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=12, eos_token_id=[3, 4], num_return_sequences=2
    )
    assert resolve_sampling(config, 5, **NONE) == Sampling(True, 0.7, 0.9, 12, 2, [3, 4])
    given = NONE | dict(do_sample=False, temperature=1.3, max_new_tokens=2, eos_token_id=[])
    assert resolve_sampling(config, 5, **given) == Sampling(False, 1.3, 0.9, 2, 2, [])
    assert not resolve_sampling(GenerationConfig(do_sample=False), 5, **NONE).do_sample  # greedy


def test_max_length_counts_from_the_longest_prompt():
    assert resolve_sampling(GenerationConfig(max_length=20), 5, **NONE).max_new_tokens == 15
    assert resolve_sampling(GenerationConfig(max_length=20, max_new_tokens=3), 5, **NONE).max_new_tokens == 3
    with pytest.raises(UserError, match="max_length 4 leaves no room"):
        resolve_sampling(GenerationConfig(max_length=4), 5, **NONE)


def test_a_model_generation_config_and_no_op_values_are_accepted():
    config = GenerationConfig(bos_token_id=1, pad_token_id=2, eos_token_id=3, num_beams=1, repetition_penalty=1.0)
    assert resolve_sampling(config, 5, **NONE) == Sampling(eos_token_id=3)


@pytest.mark.parametrize(
    ("config", "given", "message"),
    [
        (GenerationConfig(num_beams=4), {}, "num_beams=4"),
        (GenerationConfig(top_k=50, repetition_penalty=1.1), {}, "repetition_penalty=1.1, top_k=50"),
        (GenerationConfig(min_new_tokens=3), {}, "min_new_tokens=3"),
        ({"temperature": 0.5}, {}, "must be a transformers.GenerationConfig"),
        (GenerationConfig(do_sample=True, temperature=0.0), {}, "temperature must be positive"),
        (None, {"top_p": 1.5}, "top_p"),
        (None, {"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        (None, {"num_samples": 0}, "num_samples must be at least 1"),
    ],
)
def test_what_guided_generate_cannot_honour_is_refused(config, given, message):
    with pytest.raises(UserError, match=message):
        resolve_sampling(config, 5, **(NONE | given))
