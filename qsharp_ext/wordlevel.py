"""Word-level tokenizers for synthetic tasks: one token per whitespace-separated word, as a HF tokenizer.

Built with `tokenizers` and wrapped as `PreTrainedTokenizerFast`, so synthetic tasks run through the same
model, generation and saving code as real language models.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<eos>", "<bos>")


def word_level_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """Ids 0..len(words)-1 for `words` in order, then <pad>, <eos>, <bos>; left padding."""
    vocab = {tok: i for i, tok in enumerate([*words, *SPECIALS])}
    if len(vocab) != len(words) + len(SPECIALS):
        raise ValueError("words must be distinct and must not include <pad>, <eos> or <bos>")
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", padding_side="left"
    )
