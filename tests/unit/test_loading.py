"""stop_token_ids: the tokenizer's EOS and every end-of-turn id the model's generation config declares."""

import types

import pytest

from qsharp_ext.loading import stop_token_ids, token_id_list


def model_with(eos) -> types.SimpleNamespace:
    return types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=eos))


def tokenizer_with(eos) -> types.SimpleNamespace:
    return types.SimpleNamespace(eos_token_id=eos)


@pytest.mark.parametrize(
    ("tokenizer_eos", "model_eos", "expected"),
    [
        (2, None, [2]),
        (2, 7, [2, 7]),
        (2, [7, 9], [2, 7, 9]),
        (128009, [128001, 128008, 128009], [128009, 128001, 128008]),  # Llama-3.1-Instruct: duplicates once
        (2, [7, 2, 7], [2, 7]),
        (None, [7, 9], [7, 9]),
        (None, None, []),
    ],
)
def test_stop_ids_are_the_union_in_a_stable_order(tokenizer_eos, model_eos, expected):
    assert stop_token_ids(model_with(model_eos), tokenizer_with(tokenizer_eos)) == expected


def test_a_model_without_a_generation_config_stops_at_the_tokenizer_eos():
    assert stop_token_ids(types.SimpleNamespace(), tokenizer_with(3)) == [3]
    assert stop_token_ids(types.SimpleNamespace(generation_config=None), tokenizer_with(3)) == [3]


def test_token_id_list_takes_none_one_id_or_several():
    assert token_id_list(None) == [] and token_id_list(0) == [0] and token_id_list((4, 5)) == [4, 5]
