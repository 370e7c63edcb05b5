"""The candidate tree attention mask: its layout, and one clear error for arguments it cannot use."""

import pytest
import torch

from qsharp_ext.kernels.tree_attention import tree_attention_mask


def test_tree_attention_mask_layout():
    prefix_mask = torch.tensor([[False, True, True]])
    mask = tree_attention_mask(prefix_mask, 2)
    expected = torch.tensor([[[[False, True, True, True, False], [False, True, True, False, True]]]])
    assert mask.shape == (1, 1, 2, 5) and torch.equal(mask, expected)


@pytest.mark.parametrize(
    ("prefix_mask", "k", "message"),
    [
        (torch.ones(2, 5), 3, "bool tensor"),
        (torch.ones(5, dtype=torch.bool), 3, "bool tensor"),
        (torch.ones(2, 5, dtype=torch.bool), 0, "at least one candidate"),
    ],
)
def test_bad_arguments_raise_value_error(prefix_mask, k, message):
    with pytest.raises(ValueError, match=message):
        tree_attention_mask(prefix_mask, k)


def test_tokens_entering_the_cache_with_the_candidates_see_the_prefix_up_to_themselves():
    prefix_mask = torch.tensor([[False, True, True, True]])  # the last two positions are not cached yet
    mask = tree_attention_mask(prefix_mask, 2, new_prefix=2)
    expected = torch.tensor(
        [[[
            [False, True, True, False, False, False],  # the first new token: the cached prefix and itself
            [False, True, True, True, False, False],  # the second: one more
            [False, True, True, True, True, False],  # candidate 0: the whole prefix and itself
            [False, True, True, True, False, True],  # candidate 1
        ]]]
    )  # fmt: skip
    assert mask.shape == (1, 1, 4, 6) and torch.equal(mask, expected)
    with pytest.raises(ValueError, match="new_prefix must be between 0 and the prefix length 4"):
        tree_attention_mask(prefix_mask, 2, new_prefix=5)
