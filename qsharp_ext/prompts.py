"""Prompts as `model.generate` users hold them → one list of token ids per prompt, padding removed.

Accepted, each as one prompt or a batch of them:
- text: a string or a list of strings, tokenized without special tokens (as tasks write their prompts; pass
  token ids or a BatchEncoding to keep a BOS that the tokenizer adds);
- token ids: a list of ids, a list of such lists, or a 1-D / 2-D integer tensor, with an `attention_mask` of
  the same shape when it is padded (left or right);
- a `BatchEncoding` (or dict) with `input_ids` and, when padded, `attention_mask`: what a tokenizer or
  `apply_chat_template(..., return_dict=True)` returns;
- chat messages: one conversation (a list of {"role", "content"} dicts) or a list of conversations, rendered
  with the tokenizer's chat template and its generation prompt.

A tensor (or BatchEncoding) without attention_mask that has the pad id at the start or end of a row is
refused: padding would be read as text. A pad id inside a row is a real token (SmolLM2 pads with
<|im_end|>, which ends every chat turn). Every mistake is one sentence in a UserError.
It knows nothing of models, of batching or of decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from qsharp_ext.errors import UserError

KINDS = "a string, a list of strings, token ids, a tensor of input_ids, a BatchEncoding or chat messages"


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompts: Any, attention_mask: Any = None) -> list[list[int]]:
    """The token ids of every prompt, without padding. `attention_mask` goes with token ids only."""
    pad_id = tokenizer.pad_token_id
    if isinstance(prompts, Mapping) and "input_ids" in prompts:  # a BatchEncoding or a plain dict
        if attention_mask is not None and prompts.get("attention_mask") is not None:
            raise UserError("attention_mask is given twice: in the BatchEncoding and as an argument")
        mask = prompts.get("attention_mask") if attention_mask is None else attention_mask
        return _unpadded(_id_rows(prompts["input_ids"]), mask, pad_id, check_ends=True)
    texts = _texts(tokenizer, prompts)
    if texts is not None:
        if attention_mask is not None:
            raise UserError("attention_mask goes with token ids, not with text or chat messages")
        return [_known_words(tokenizer, text, _non_empty(tokenizer(text, add_special_tokens=False)["input_ids"]))
                for text in texts]  # fmt: skip
    return _unpadded(_id_rows(prompts), attention_mask, pad_id, check_ends=torch.is_tensor(prompts))


def prompt_texts(tokenizer: PreTrainedTokenizerBase, prompts: Any) -> list[str]:
    """The text of every prompt given as text or chat messages (rendered with the chat template), for what
    stores prompts as text (training data); token ids are refused."""
    texts = _texts(tokenizer, prompts)
    if texts is None:
        raise UserError(f"prompts here must be text or chat messages (not token ids); got {str(prompts)[:60]}")
    if not all(texts):
        raise UserError("a prompt is empty: every prompt needs at least one character")
    return texts


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _is_conversation(value: Any) -> bool:
    return _is_list(value) and len(value) > 0 and all(isinstance(m, Mapping) for m in value)


def _texts(tokenizer: PreTrainedTokenizerBase, prompts: Any) -> list[str] | None:
    """Strings as they are, conversations rendered; None when the prompts are token ids."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Mapping):  # one message
        return [_render(tokenizer, [prompts])]
    if not _is_list(prompts):
        return None
    if not prompts:
        raise UserError("no prompts given")
    if all(isinstance(p, str) for p in prompts):
        return list(prompts)
    if _is_conversation(prompts):
        return [_render(tokenizer, prompts)]
    if all(_is_conversation(p) for p in prompts):
        return [_render(tokenizer, p) for p in prompts]
    if any(isinstance(p, str | Mapping) or _is_conversation(p) for p in prompts):
        raise UserError(f"prompts mix strings, chat messages or token ids; give one kind: {KINDS}")
    return None


def _render(tokenizer: PreTrainedTokenizerBase, conversation: Sequence[Mapping]) -> str:
    if not all("role" in m and "content" in m for m in conversation):
        raise UserError("every chat message must be a dict with 'role' and 'content'")
    if tokenizer.chat_template is None:
        raise UserError("the tokenizer has no chat template: give prompts as text or token ids, not chat messages")
    return tokenizer.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=False)


def _id_rows(ids: Any) -> list[list[int]]:
    """A 1-D / 2-D integer tensor, one list of ids or a list of them, as rows of ints."""
    if torch.is_tensor(ids):
        if ids.dim() not in (1, 2) or ids.is_floating_point() or ids.is_complex() or ids.numel() == 0:
            raise UserError(
                f"input_ids must be a non-empty 1-D or 2-D tensor of token ids, got {ids.dtype} {tuple(ids.shape)}"
            )
        return ids.reshape(-1, ids.shape[-1]).tolist()
    if not _is_list(ids):
        raise UserError(f"prompts must be {KINDS}, not {type(ids).__name__}")
    if not ids:
        raise UserError("no prompts given")
    one_prompt = not (_is_list(ids[0]) or (torch.is_tensor(ids[0]) and ids[0].dim() == 1))
    return [_int_list(row) for row in ([ids] if one_prompt else ids)]


def _int_list(row: Any) -> list[int]:
    values = row.tolist() if torch.is_tensor(row) else list(row) if _is_list(row) else None
    values = None if values is None else [t.item() if torch.is_tensor(t) and t.dim() == 0 else t for t in values]
    if values is None or not all(isinstance(t, int) and not isinstance(t, bool) for t in values):
        raise UserError(f"a prompt given as token ids must hold ints only, got {str(row)[:60]}")
    return values


def _unpadded(rows: list[list[int]], mask: Any, pad_id: int | None, check_ends: bool) -> list[list[int]]:
    if mask is None:
        if check_ends and pad_id is not None and any(row and pad_id in (row[0], row[-1]) for row in rows):
            raise UserError(
                f"input_ids has the pad id {pad_id} at the start or end of a row and no attention_mask: pass the "
                "tokenizer's attention_mask too, so that padding is not read as text"
            )
        return [_non_empty(row) for row in rows]
    mask_rows = _mask_rows(mask)
    if len(mask_rows) != len(rows) or any(len(m) != len(r) for m, r in zip(mask_rows, rows, strict=True)):
        raise UserError("attention_mask must have the shape of input_ids: one 0 or 1 per token")
    return [_unpad(row, m, i) for i, (row, m) in enumerate(zip(rows, mask_rows, strict=True))]


def _mask_rows(mask: Any) -> list[list[int]]:
    if torch.is_tensor(mask):
        return mask.reshape(-1, mask.shape[-1]).tolist() if mask.dim() in (1, 2) else []
    rows = list(mask) if _is_list(mask) else []
    return [rows] if rows and not _is_list(rows[0]) else [list(r) if _is_list(r) else [] for r in rows]


def _unpad(row: list[int], mask: list[int], index: int) -> list[int]:
    """The tokens the mask keeps: one run of 1s (left or right padding, no gaps)."""
    if any(m not in (0, 1) for m in mask):
        raise UserError(f"attention_mask row {index} must hold only 0s and 1s")
    kept = [i for i, m in enumerate(mask) if m]
    if kept and kept[-1] - kept[0] + 1 != len(kept):
        raise UserError(f"attention_mask row {index} has a gap: only left or right padding is supported")
    return _non_empty([row[i] for i in kept])


def _known_words(tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]) -> list[int]:
    """Refuse text that the tokenizer could only encode as padding: a word-level tokenizer (the synthetic tasks')
    maps a word outside its vocabulary to <pad>, which would silently change the prompt. Real text never turns into
    the pad token unless it spells it out."""
    pad_id, pad = tokenizer.pad_token_id, tokenizer.pad_token
    if pad_id is None or pad_id not in ids or (pad and pad in text):
        return ids
    words = [w for w in text.split() if tokenizer(w, add_special_tokens=False)["input_ids"] == [pad_id]]
    unknown = ", ".join(repr(w) for w in words[:3]) or "a word"
    raise UserError(
        f"the prompt {text[:60]!r} holds {unknown}, which the tokenizer does not know (it would become {pad})"
    )


def _non_empty(ids: list[int]) -> list[int]:
    if not ids:
        raise UserError("a prompt is empty: every prompt needs at least one token")
    return list(ids)
