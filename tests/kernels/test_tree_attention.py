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
