"""The star-graph task (Bachmann & Nagarajan, 2024): find the path from a source to a goal in a star graph.

A graph G(d, l) has a source with d arms; each arm is a chain of l − 1 further nodes, so the path from
the source to the end of an arm has l nodes, the source included. The 1 + d(l − 1) node labels are drawn
without replacement from N labels written as the words "0" .. "N-1"; the goal is the end of one arm,
chosen at random. Edges point away from the source.

Format (one token per whitespace-separated word): the edges in shuffled order, each written `a b |`,
then the marker `/`, the source and the goal, then the marker `=`; the answer follows `=` directly and is
the path from source to goal, the source included, then EOS (the tokenizer's `<eos>`). For G(2, 3):

    prompt:  40 25 | 7 12 | 12 3 | 7 40 | / 7 25 =
    answer:  7 40 25                                  (Problem.answer; the model then writes <eos>)

A prompt has 3·d·(l − 1) + 4 tokens (`prompt_len`) and a correct completion l + 1 (`max_new_tokens`).
The vocabulary is the N labels (ids 0 .. N-1, so a label's id is its value), then `|`, `/`, `=`, then
<pad>, <eos>, <bos>.

Splits: pretraining (the answers teach π_ref by next-token prediction), post-training (prompts for DAgger
or RL) and test. Each comes from its own seeded random stream and is generated on first use; no graph
(compared by source, goal and edge set, whatever the edge order) appears twice in a split or in two
splits. The test split is drawn first, then post-training, then pretraining, so the test set depends
only on the seed, the graph size and n_test.

Reward: 1.0 iff the completion's words before the first `<eos>` (if any) are exactly the path, else 0.0.
`first_step_correct` and `path_edges_valid` diagnose the "Clever Hans" shortcut (edges followed
correctly, first step guessed). The task knows nothing of models or training; `make_stargraph_reference`
only builds an untrained π_ref whose vocabulary matches the tokenizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from qsharp_ext.errors import UserError
from qsharp_ext.tasks.base import Problem, Task
from qsharp_ext.tasks.first_token import TINY_ARCHS
from qsharp_ext.wordlevel import word_level_tokenizer

EDGE_END = "|"  # closes every edge `a b |`
QUERY = "/"  # precedes the source and the goal
ANSWER = "="  # ends every prompt: the path follows it
EOS = "<eos>"  # the word-level tokenizer's end-of-sequence token
SPLITS = ("test", "train", "pretrain")  # drawn in this order; later splits skip graphs of earlier ones
BATCH = 4096  # graphs drawn at a time; fixed, so that a smaller split is a prefix of a larger one
Edge = tuple[int, int]


def edge_words(a: int, b: int) -> str:
    return f"{a} {b} {EDGE_END}"


def query_words(source: int, goal: int) -> str:
    return f"{QUERY} {source} {goal} {ANSWER}"


@dataclasses.dataclass(frozen=True)
class StarGraph:
    """One graph as a prompt states it: edges in prompt order (pointing away from the source), source, goal."""

    edges: tuple[Edge, ...]
    source: int
    goal: int

    def path(self) -> list[int]:
        """The nodes from source to goal, both included (walks back from the goal: one parent per node)."""
        parent = {b: a for a, b in self.edges}
        nodes = [self.goal]
        while nodes[-1] != self.source:
            nodes.append(parent[nodes[-1]])
        return nodes[::-1]

    def prompt(self) -> str:
        return " ".join([*(edge_words(a, b) for a, b in self.edges), query_words(self.source, self.goal)])

    @classmethod
    def from_prompt(cls, prompt: str) -> StarGraph:
        """Parse a prompt of this task."""
        words = prompt.split()
        split = words.index(QUERY)
        edge_part, (source, goal, _) = words[:split], words[split + 1 :]
        edges = tuple((int(edge_part[i]), int(edge_part[i + 1])) for i in range(0, len(edge_part), 3))
        return cls(edges, int(source), int(goal))


def random_star_graphs(
    rng: np.random.Generator, n: int, degree: int, path_len: int, n_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """`n` random graphs G(degree, path_len) over labels 0 .. n_labels-1: edges (n, E, 2), shuffled, and the
    path from source to goal (n, path_len), the goal being the end of a random arm. E = degree·(path_len − 1).
    """
    arm_len = path_len - 1
    labels = rng.random((n, n_labels)).argsort(axis=1)[:, : 1 + degree * arm_len]  # (n, nodes), distinct
    source, arms = labels[:, :1], labels[:, 1:].reshape(n, degree, arm_len)
    parents = np.concatenate([np.repeat(source[:, None], degree, axis=1), arms[:, :, :-1]], axis=2)  # (n, d, l-1)
    edges = np.stack([parents, arms], axis=-1).reshape(n, degree * arm_len, 2)
    order = rng.random(edges.shape[:2]).argsort(axis=1)  # (n, E)
    goal_arm = rng.integers(degree, size=n)
    path = np.concatenate([source, arms[np.arange(n), goal_arm]], axis=1)  # (n, path_len)
    return np.take_along_axis(edges, order[:, :, None], axis=1), path


def graph_keys(edges: np.ndarray, path: np.ndarray, n_labels: int) -> list[bytes]:
    """One key per graph that ignores the edge order: the goal and the sorted edges, as bytes."""
    codes = np.sort(edges[..., 0] * n_labels + edges[..., 1], axis=1)  # (n, E)
    keys = np.ascontiguousarray(np.concatenate([path[:, -1:], codes], axis=1), dtype=np.int64)
    return keys.view(np.dtype((np.void, keys.shape[1] * keys.itemsize))).ravel().tolist()


def count_star_graphs(degree: int, path_len: int, n_labels: int) -> int:
    """How many distinct graphs exist: ordered labellings, arms other than the goal's unordered."""
    return math.perm(n_labels, 1 + degree * (path_len - 1)) // math.factorial(degree - 1)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (if enabled) inside the block."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def completion_nodes(completion: str) -> list[str]:
    """The completion's words up to its first `<eos>` (words after it do not count)."""
    words = completion.split()
    return words[: words.index(EOS)] if EOS in words else words


class StarGraphTask(Task):
    """Path finding in G(degree, path_len): reward 1.0 for the exact path from source to goal, else 0.0."""

    name = "stargraph"

    def __init__(
        self,
        degree: int = 2,
        path_len: int = 5,
        n_labels: int = 50,
        n_pretrain: int = 200_000,
        n_posttrain: int = 200_000,
        n_test: int = 20_000,
        seed: int = 0,
    ) -> None:
        if degree < 1 or path_len < 2:
            raise UserError(f"a star graph needs degree >= 1 and path_len >= 2, got {degree} and {path_len}")
        n_nodes = 1 + degree * (path_len - 1)
        if n_labels < n_nodes:
            raise UserError(f"G({degree}, {path_len}) has {n_nodes} nodes: n_labels must be >= {n_nodes}")
        if min(n_pretrain, n_posttrain, n_test, seed) < 0:
            raise UserError("n_pretrain, n_posttrain, n_test and seed must be >= 0")
        possible = count_star_graphs(degree, path_len, n_labels)
        if n_pretrain + n_posttrain + n_test > possible:
            raise UserError(f"only {possible} distinct graphs G({degree}, {path_len}) exist over {n_labels} labels")
        self.degree, self.path_len, self.n_labels, self.seed = degree, path_len, n_labels, seed
        self.sizes = {"test": n_test, "train": n_posttrain, "pretrain": n_pretrain}
        self._splits: dict[str, list[Problem]] = {}
        self._seen: set[bytes] = set()  # keys of every graph drawn so far, all splits
        self._edge_words = np.array([edge_words(a, b) for a in range(n_labels) for b in range(n_labels)], object)

    @property
    def prompt_len(self) -> int:
        """Tokens of every prompt: three per edge, then `/`, source, goal, `=`."""
        return 3 * self.degree * (self.path_len - 1) + 4

    @property
    def max_new_tokens(self) -> int:
        """Tokens of a correct completion: the path and EOS."""
        return self.path_len + 1

    def _split(self, split: str) -> list[Problem]:
        """The split's problems, generated on first use after every split drawn before it."""
        for name in SPLITS[: SPLITS.index(split) + 1]:
            if name not in self._splits:
                with gc_paused():  # hundreds of thousands of new objects: the cyclic collector would double the time
                    self._splits[name] = self._generate(name)
        return self._splits[split]

    def _generate(self, split: str) -> list[Problem]:
        """`sizes[split]` graphs from the split's own stream, skipping any graph already drawn."""
        rng = np.random.default_rng([self.seed, SPLITS.index(split)])
        problems: list[Problem] = []
        while len(problems) < self.sizes[split]:
            edges, path = random_star_graphs(rng, BATCH, self.degree, self.path_len, self.n_labels)
            keys = graph_keys(edges, path, self.n_labels)
            edge_rows = self._edge_words[edges[..., 0] * self.n_labels + edges[..., 1]].tolist()  # (B, E) words
            for key, edge_row, nodes in zip(keys, edge_rows, path.tolist(), strict=True):
                if key in self._seen:
                    continue
                self._seen.add(key)
                prompt = " ".join([*edge_row, query_words(nodes[0], nodes[-1])])
                problems.append(Problem(f"{split}-{len(problems)}", prompt, " ".join(map(str, nodes))))
                if len(problems) == self.sizes[split]:
                    break
        return problems

    def pretrain_problems(self) -> list[Problem]:
        """Graphs for next-token pretraining of π_ref: the answer is the path (append EOS when training)."""
        return list(self._split("pretrain"))

    def train_problems(self) -> list[Problem]:
        """The post-training split: prompts for DAgger roll-outs or RL."""
        return list(self._split("train"))

    def eval_problems(self) -> list[Problem]:
        """The test split."""
        return list(self._split("test"))

    def answer_of(self, completion: str) -> str | None:
        nodes = completion_nodes(completion)
        return " ".join(nodes) if nodes else None

    def score(self, problem: Problem, completion: str) -> float:
        return float(completion_nodes(completion) == problem.answer.split())

    def first_step_correct(self, problem: Problem, completion: str) -> bool:
        """Whether the completion starts with the source and then the right arm's first node."""
        return completion_nodes(completion)[:2] == problem.answer.split()[:2]

    def path_edges_valid(self, problem: Problem, completion: str) -> bool:
        """Whether every consecutive pair of the completion's nodes is an edge of the graph, in its direction.

        True for fewer than two nodes. Words that are not node labels make it False.
        """
        nodes = completion_nodes(completion)
        edges = {(str(a), str(b)) for a, b in StarGraph.from_prompt(problem.prompt).edges}
        return all(pair in edges for pair in itertools.pairwise(nodes))

    def future_targets(self, prompt_ids: list[int], completion_ids: list[int], k: int) -> list[list[int]]:
        """At every node label of prompt + completion, the labels 1 … k steps further along its arm, read off
        the prompt's edges (−100 past the arm's end, at the source, whose next node is the choice to be valued,
        and at tokens that are not labels). Why: π_ref's own answers need not follow edges (one trained on true
        paths may jump to the goal at the end), so its roll-outs do not teach the lookups the first step needs.
        """
        n_edges = self.degree * (self.path_len - 1)
        child = {prompt_ids[3 * e]: prompt_ids[3 * e + 1] for e in range(n_edges)}
        source = prompt_ids[3 * n_edges + 1]
        rows = []
        for token in prompt_ids + completion_ids:
            node, row = (token if token < self.n_labels and token != source else None), []
            for _ in range(k):
                node = child.get(node)
                row.append(-100 if node is None else node)
            rows.append(row)
        return rows

    def settings(self) -> dict[str, Any]:
        return {
            "degree": self.degree, "path_len": self.path_len, "n_labels": self.n_labels, "seed": self.seed,
            "n_pretrain": self.sizes["pretrain"], "n_posttrain": self.sizes["train"], "n_test": self.sizes["test"],
        }  # fmt: skip

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """One token per label ("0" .. "N-1", ids equal to the labels), `|`, `/`, `=`; then <pad>, <eos>, <bos>."""
        return word_level_tokenizer([*map(str, range(self.n_labels)), EDGE_END, QUERY, ANSWER])


def make_stargraph_reference(
    task: StarGraphTask, arch: str = "llama", n_layers: int = 4, hidden: int = 128, seed: int = 0, n_heads: int = 4
) -> PreTrainedModel:
    """An untrained causal LM (arch "llama" or "qwen2": rotary positions) over the task's vocabulary, as π_ref.

    Feed-forward width 4 · hidden; the special ids (pad, eos, bos) are the tokenizer's.
    """
    if arch not in TINY_ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    if n_layers < 1 or n_heads < 1 or hidden % n_heads or (hidden // n_heads) % 2:
        raise UserError(f"need n_layers >= 1 and an even head size: hidden {hidden} / n_heads {n_heads}")
    tokenizer = task.tokenizer()
    sequence_len = task.prompt_len + task.max_new_tokens
    config_cls, model_cls = TINY_ARCHS[arch]
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, num_key_value_heads=n_heads, max_position_embeddings=max(64, sequence_len),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return model_cls(config).eval()
