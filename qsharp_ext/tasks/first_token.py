"""The smoke task: reward 1 when the first word of the completion is one of a hidden set of "good" words.

Words are `w0 .. w{n-1}`, one token each (a word-level tokenizer). Prompts are random word sequences
ending with the separator `=` (so that a value model can tell where the completion starts), all distinct,
split into train and eval from the seed; the good words are a seeded random subset. The
best policy is obvious (start with a good word) and a tiny random π_ref starts with one only by chance,
so guidance has room to show, in seconds, on a CPU. `make_tiny_reference` builds such a π_ref.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from qsharp_ext.errors import UserError
from qsharp_ext.tasks.base import Problem, Task
from qsharp_ext.wordlevel import word_level_tokenizer

SEPARATOR = "="  # ends every prompt: the completion's first word follows it
TINY_ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


class FirstTokenTask(Task):
    """Reward 1.0 if the completion's first word is good, else 0.0."""

    name = "first_token"

    def __init__(
        self,
        n_words: int = 45,
        n_train: int = 256,
        n_eval: int = 64,
        prompt_len: tuple[int, int] = (3, 6),
        good_fraction: float = 0.3,
        seed: int = 0,
    ) -> None:
        lo, hi = prompt_len
        if n_words < 2 or not 1 <= lo <= hi or n_train < 0 or n_eval < 0:
            raise UserError(
                "first_token needs n_words >= 2, 1 <= prompt_len[0] <= prompt_len[1] and n_train, n_eval >= 0"
            )
        if not 0 < good_fraction < 1:
            raise UserError(f"good_fraction must be in (0, 1), got {good_fraction}")
        possible = sum(n_words**length for length in range(lo, hi + 1))
        if n_train + n_eval > possible:
            raise UserError(f"only {possible} distinct prompts exist; ask for fewer than {n_train} + {n_eval}")
        self.n_words, self.n_train, self.n_eval = n_words, n_train, n_eval
        self.prompt_len, self.good_fraction, self.seed = (lo, hi), good_fraction, seed
        self.words = [f"w{i}" for i in range(n_words)]
        rng = random.Random(seed)
        n_good = max(1, round(good_fraction * n_words))
        self.good_words = frozenset(rng.sample(self.words, n_good))
        prompts = self._distinct_prompts(rng, n_train + n_eval)
        self._train = [Problem(f"train-{i}", p, None) for i, p in enumerate(prompts[:n_train])]
        self._eval = [Problem(f"eval-{i}", p, None) for i, p in enumerate(prompts[n_train:])]

    def _distinct_prompts(self, rng: random.Random, n: int) -> list[str]:
        """`n` distinct random word sequences, so that no eval prompt is also a train prompt."""
        seen: dict[str, None] = {}
        while len(seen) < n:
            length = rng.randint(*self.prompt_len)
            seen.setdefault(" ".join([*rng.choices(self.words, k=length), SEPARATOR]))
        return list(seen)

    def train_problems(self) -> list[Problem]:
        return list(self._train)

    def eval_problems(self) -> list[Problem]:
        return list(self._eval)

    def answer_of(self, completion: str) -> str | None:
        words = completion.split()
        return words[0] if words else None

    def score(self, problem: Problem, completion: str) -> float:
        return float(self.answer_of(completion) in self.good_words)

    def settings(self) -> dict[str, Any]:
        return {
            "n_words": self.n_words, "n_train": self.n_train, "n_eval": self.n_eval,
            "prompt_len": list(self.prompt_len), "good_fraction": self.good_fraction, "seed": self.seed,
        }  # fmt: skip

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """One token per word, the separator, then <pad>, <eos>, <bos>; left padding."""
        return word_level_tokenizer([*self.words, SEPARATOR])


def make_tiny_reference(task: FirstTokenTask, arch: str = "llama", seed: int = 0) -> LlamaForCausalLM:
    """A tiny random causal LM (hidden 64, 2 layers, 4 heads) over the task's vocabulary, as π_ref."""
    if arch not in TINY_ARCHS:
        raise UserError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    tokenizer = task.tokenizer()
    config_cls, model_cls = TINY_ARCHS[arch]
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return model_cls(config).eval()
