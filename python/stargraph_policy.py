"""Policy training for the star-graph experiment: π_ref's next-token pretraining and the policy-based
post-training baselines the paper compares with (REINFORCE with a baseline, DPO, RPO).

Experiment code, not library code: the task, sampling and evaluation come from `qsharp_ext`. Every method
here optimises one quantity, the log-probability of answer tokens given the prompt (`answer_logprobs`),
so pretraining, REINFORCE and the preference losses share one forward pass.

DPO / RPO follow Rafailov et al. (2023) and Pang et al. (2024): loss −log σ(β·(Δ_chosen − Δ_rejected)),
Δ = log π(y|x) − log π_ref(y|x) summed over answer tokens; RPO adds α · NLL of the chosen answer,
normalised by its length (as TRL's `rpo_alpha` does).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qsharp_ext import guided_generate
from qsharp_ext.tasks import Problem, StarGraphTask


@dataclasses.dataclass
class AnswerBatch:
    """Prompts followed by answers, right-padded: the answer tokens are where `answer_mask` is 1."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    answer_mask: torch.Tensor  # (B, T) 1 on answer tokens (EOS included)


def encode(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], answers: Sequence[list[int]]) -> AnswerBatch:
    """Tokenised prompts, each followed by its answer's token ids (as given: add EOS before if wanted)."""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = [p + a for p, a in zip(prompt_ids, answers, strict=True)]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    answer_mask = torch.zeros_like(input_ids)
    for i, (p, r) in enumerate(zip(prompt_ids, rows, strict=True)):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention_mask[i, : len(r)] = 1
        answer_mask[i, len(p) : len(r)] = 1
    return AnswerBatch(input_ids, attention_mask, answer_mask)


def path_ids(tokenizer: PreTrainedTokenizerBase, problem: Problem) -> list[int]:
    """The true answer's token ids followed by EOS."""
    return tokenizer(problem.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def answer_logprobs(model: PreTrainedModel, batch: AnswerBatch) -> torch.Tensor:
    """Per-token log-probabilities of the answer tokens: (B, T−1), 0 outside answers."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = batch.input_ids[:, 1:]
    token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return token_logp * batch.answer_mask[:, 1:]


def batches(problems: Sequence[Problem], batch_size: int, steps: int, seed: int):
    """`steps` batches drawn by epochs of a seeded permutation."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(len(problems), generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        yield [problems[i] for i in chosen]


def optimise(
    model: PreTrainedModel, loss_of: Callable[[list[Problem]], tuple[torch.Tensor, dict]], problems: list[Problem],
    *, steps: int, batch_size: int, lr: float, seed: int, desc: str, warmup: int = 20, cosine: bool = True,
) -> list[dict]:  # fmt: skip
    """AdamW with linear warm-up, then cosine decay (or a constant rate); one record per step (loss and
    `loss_of`'s extras)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def factor(s: int) -> float:
        decay = 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1))) if cosine else 1.0
        return min(1.0, (s + 1) / warmup) * decay

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    records = []
    bar = tqdm(batches(problems, batch_size, steps, seed), total=steps, desc=desc, leave=False)
    for step, batch in enumerate(bar):
        loss, extras = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        records.append({"step": step, "loss": loss.item(), **extras})
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return records


def pretrain(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem],
    *, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
) -> list[dict]:  # fmt: skip
    """Next-token prediction on the answers (path + EOS) given the prompt: how π_ref learns the task.

    A constant rate after warm-up: the edge-following circuit forms after a plateau of a few hundred
    steps, which a decaying rate can stretch past the budget."""

    def loss_of(batch: list[Problem]) -> tuple[torch.Tensor, dict]:
        encoded = encode(tokenizer, [p.prompt for p in batch], [path_ids(tokenizer, p) for p in batch])
        token_logp = answer_logprobs(model, encoded)
        return -token_logp.sum() / encoded.answer_mask.sum(), {}

    return optimise(
        model, loss_of, problems, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc="pretrain", cosine=False
    )


@torch.no_grad()
def teacher_forced_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem]
) -> list[float]:
    """Greedy next-token accuracy at each answer position given the true prefix (index 1 = the first step)."""
    encoded = encode(tokenizer, [p.prompt for p in problems], [path_ids(tokenizer, p) for p in problems])
    logits = model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask).logits[:, :-1]
    hits = (logits.argmax(-1) == encoded.input_ids[:, 1:]).float()
    mask = encoded.answer_mask[:, 1:].bool()
    start = mask.float().argmax(dim=1)  # first answer position per row (prompts share one length here)
    n_answer = int(mask[0].sum())
    return [hits[torch.arange(len(problems)), start + j].mean().item() for j in range(n_answer)]


def sample_completions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: StarGraphTask, problems: Sequence[Problem],
    *, num_samples: int, seed: int,
) -> list[list[list[int]]]:  # fmt: skip
    """π's completions at T = 1 through the library's sampler: [problem][sample] → token ids (EOS included)."""
    out = guided_generate(
        model, tokenizer, [p.prompt for p in problems], etas=[None], num_samples=num_samples,
        max_new_tokens=task.max_new_tokens, top_k=1, seed=seed,
    )  # fmt: skip
    tokens = out.token_lists()
    return [tokens[i * num_samples : (i + 1) * num_samples] for i in range(len(problems))]


def completion_reward(
    tokenizer: PreTrainedTokenizerBase, task: StarGraphTask, problem: Problem, ids: list[int]
) -> float:
    return task.reward(problem, tokenizer.decode(ids, skip_special_tokens=False))


def leave_one_out_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """(B, S) rewards → each sample's reward minus the mean of its prompt's other samples (0 when S = 1)."""
    samples = rewards.shape[1]
    if samples == 1:
        return torch.zeros_like(rewards)
    baseline = (rewards.sum(1, keepdim=True) - rewards) / (samples - 1)
    return rewards - baseline


def reinforce(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: StarGraphTask, problems: list[Problem],
    *, steps: int, batch_size: int = 32, samples: int = 4, lr: float = 1e-4, seed: int = 0,
) -> list[dict]:  # fmt: skip
    """On-policy REINFORCE: `samples` completions per prompt, advantage = reward − the prompt's mean reward
    over its other samples (leave-one-out baseline), loss = −advantage · log π(completion)."""

    def loss_of(batch: list[Problem]) -> tuple[torch.Tensor, dict]:
        model.eval()
        completions = sample_completions(model, tokenizer, task, batch, num_samples=samples, seed=seed + next(step))
        model.train()
        rewards = torch.tensor(
            [[completion_reward(tokenizer, task, p, c) for c in cs] for p, cs in zip(batch, completions, strict=True)]
        )  # (B, S)
        advantage = leave_one_out_advantage(rewards).flatten()
        prompts = [p.prompt for p in batch for _ in range(samples)]
        encoded = encode(tokenizer, prompts, [c for cs in completions for c in cs])
        logp = answer_logprobs(model, encoded).sum(-1)  # (B·S,)
        return -(advantage * logp).mean(), {"reward": rewards.mean().item()}

    step = itertools.count(1)  # a fresh noise stream for each step's samples
    return optimise(model, loss_of, problems, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc="REINFORCE")


@dataclasses.dataclass
class PreferencePair:
    problem: Problem
    chosen: list[int]  # token ids, EOS included
    rejected: list[int]


def preference_pairs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: StarGraphTask, problems: list[Problem],
    *, samples: int = 4, seed: int = 0, chunk: int = 256,
) -> list[PreferencePair]:  # fmt: skip
    """As in the paper's code: chosen = the true path, rejected = a failed π_ref sample for the same graph
    (graphs where all `samples` samples succeed give no pair)."""
    pairs = []
    for start in tqdm(range(0, len(problems), chunk), desc="preference pairs", leave=False):
        part = problems[start : start + chunk]
        completions = sample_completions(model, tokenizer, task, part, num_samples=samples, seed=seed + start)
        for problem, cs in zip(part, completions, strict=True):
            failed = [c for c in cs if completion_reward(tokenizer, task, problem, c) == 0.0]
            if failed:
                pairs.append(PreferencePair(problem, path_ids(tokenizer, problem), failed[0]))
    return pairs


def preference_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float, rpo_alpha: float = 0.0, chosen_nll: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Mean DPO loss over pairs from summed answer log-probs (B,); RPO adds `rpo_alpha` · `chosen_nll`."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(beta * margin).mean()
    if rpo_alpha:
        loss = loss + rpo_alpha * chosen_nll.mean()
    return loss


def preference_training(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PreferencePair],
    *, steps: int, batch_size: int = 32, lr: float = 1e-5, beta: float = 0.1, rpo_alpha: float = 0.0, seed: int = 0,
) -> list[dict]:  # fmt: skip
    """DPO (rpo_alpha = 0) or RPO on the pairs, against a frozen copy of the starting model as reference."""
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    by_id = {p.problem.id: p for p in pairs}

    def loss_of(batch: list[Problem]) -> tuple[torch.Tensor, dict]:
        chosen_pairs = [by_id[p.id] for p in batch]
        prompts = [p.problem.prompt for p in chosen_pairs]
        answers = [p.chosen for p in chosen_pairs] + [p.rejected for p in chosen_pairs]
        encoded = encode(tokenizer, prompts + prompts, answers)
        token_logp = answer_logprobs(model, encoded)
        with torch.no_grad():
            ref_logp = answer_logprobs(reference, encoded).sum(-1)
        logp = token_logp.sum(-1)
        n = len(batch)
        chosen_nll = -token_logp[:n].sum(-1) / encoded.answer_mask[:n].sum(-1)
        loss = preference_loss(
            logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], beta=beta, rpo_alpha=rpo_alpha, chosen_nll=chosen_nll
        )
        return loss, {"margin": ((logp[:n] - ref_logp[:n]) - (logp[n:] - ref_logp[n:])).mean().item()}

    problems = [p.problem for p in pairs]
    desc = "RPO" if rpo_alpha else "DPO"
    return optimise(model, loss_of, problems, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc=desc)
