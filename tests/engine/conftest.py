"""Tiny random causal LMs (Llama, Qwen2, GPT-2) and a word-level tokenizer that they share (with or without a
chat template)."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from qsharp_ext.wordlevel import word_level_tokenizer

WORDS = [f"w{i}" for i in range(45)]


def make_tokenizer(words: list[str] = WORDS) -> PreTrainedTokenizerFast:
    return word_level_tokenizer(words)


# Turns as `<bos> w40|w41 content <pad>`: the pad token also ends every turn, as SmolLM2's <|im_end|> does, so
# masking by the pad id would hide real tokens.
CHAT_TEMPLATE = (
    "{% for m in messages %}<bos> {{ 'w40' if m['role'] == 'user' else 'w41' }} {{ m['content'] }} <pad> "
    "{% endfor %}{% if add_generation_prompt %}<bos> w41{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "w1 w2 w3"}],
    [{"role": "user", "content": "w5"}, {"role": "assistant", "content": "w6 w7"}, {"role": "user", "content": "w8"}],
]


def make_chat_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_causal_lm(arch: str, vocab_size: int, num_layers: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size, bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 2, pad_token_id=vocab_size - 3
    )
    if arch in ("llama", "qwen2"):
        config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
        config = config_cls(
            hidden_size=32, intermediate_size=64, num_hidden_layers=num_layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, **common,
        )  # fmt: skip
        return model_cls(config).eval()
    config = GPT2Config(n_embd=32, n_layer=num_layers, n_head=4, n_positions=128, **common)
    return GPT2LMHeadModel(config).eval()


ARCHS = ["llama", "qwen2", "gpt2"]


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread is faster than two on a shared machine, and is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
