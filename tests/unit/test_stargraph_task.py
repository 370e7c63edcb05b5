"""Star-graph task: graph structure, prompt format through the tokenizer, splits, exact-path reward, diagnostics."""

import time
from collections import Counter

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.tasks import Problem, make_task
from qsharp_ext.tasks.stargraph import StarGraph, StarGraphTask, count_star_graphs, make_stargraph_reference


def small_task(**options) -> StarGraphTask:
    return StarGraphTask(**{"n_pretrain": 60, "n_posttrain": 40, "n_test": 30, **options})


def parse(prompt: str) -> tuple[list[tuple[int, int]], int, int]:
    """Edges, source and goal read straight from the words, independently of StarGraph.from_prompt."""
    words = prompt.split()
    assert words[-4] == "/" and words[-1] == "="
    triples = [words[i : i + 3] for i in range(0, len(words) - 4, 3)]
    assert all(t[2] == "|" for t in triples)
    return [(int(a), int(b)) for a, b, _ in triples], int(words[-3]), int(words[-2])


def arms_of(edges: list[tuple[int, int]], source: int) -> list[list[int]]:
    """Each arm's nodes, walking outward from the source."""
    children = {}
    for a, b in edges:
        children.setdefault(a, []).append(b)
    arms = []
    for first in children[source]:
        arm = [first]
        while arm[-1] in children:
            assert len(children[arm[-1]]) == 1  # only the source branches
            arm.append(children[arm[-1]][0])
        arms.append(arm)
    return arms


def key(problem: Problem) -> tuple:
    edges, source, goal = parse(problem.prompt)
    return source, goal, frozenset(edges)


def other_arm_path(problem: Problem) -> str:
    edges, source, goal = parse(problem.prompt)
    arm = next(arm for arm in arms_of(edges, source) if arm[-1] != goal)
    return " ".join(map(str, [source, *arm]))


@pytest.mark.parametrize(("degree", "path_len"), [(2, 5), (5, 5), (3, 2), (1, 4)])
def test_graphs_have_d_arms_of_l_minus_1_distinct_nodes_and_the_answer_is_the_path(degree, path_len):
    task = small_task(degree=degree, path_len=path_len, n_labels=30)
    for problem in task.eval_problems() + task.train_problems():
        edges, source, goal = parse(problem.prompt)
        nodes = [source, *(b for _, b in edges)]
        assert len(nodes) == len(set(nodes)) == 1 + degree * (path_len - 1) and max(nodes) < 30
        assert len({a for a, _ in edges} | {b for _, b in edges}) == len(nodes)  # edges span exactly these nodes
        arms = arms_of(edges, source)
        assert len(arms) == degree and all(len(arm) == path_len - 1 for arm in arms)
        goal_arm = next(arm for arm in arms if arm[-1] == goal)  # the goal ends an arm
        assert problem.answer == " ".join(map(str, [source, *goal_arm]))
        assert len(problem.prompt.split()) == task.prompt_len == 3 * degree * (path_len - 1) + 4
        graph = StarGraph.from_prompt(problem.prompt)
        assert graph.prompt() == problem.prompt and graph.path() == [source, *goal_arm]
    assert task.max_new_tokens == path_len + 1


def test_edges_are_shuffled_and_goals_vary():
    task = small_task(degree=3, n_test=200)
    first_edge_from_source = [parse(p.prompt)[0][0][0] == parse(p.prompt)[1] for p in task.eval_problems()]
    assert 0.05 < sum(first_edge_from_source) / 200 < 0.5  # 3 of 12 edges leave the source: about 1/4
    goal_arms = Counter()
    for problem in task.eval_problems():
        edges, source, goal = parse(problem.prompt)
        goal_arms[[arm[-1] for arm in arms_of(edges, source)].index(goal)] += 1
    assert min(goal_arms[i] for i in range(3)) > 30  # the goal arm is first, second or third in edge order alike


def test_prompt_and_answer_round_trip_through_the_tokenizer():
    task = small_task(n_labels=50)
    tokenizer = task.tokenizer()
    assert len(tokenizer) == 50 + 3 + 3
    assert [tokenizer.convert_tokens_to_ids(str(i)) for i in range(50)] == list(range(50))  # id = label
    known = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id}
    for problem in task.pretrain_problems()[:20]:
        text = f"{problem.prompt} {problem.answer} {tokenizer.eos_token}"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text.split())  # one token per word
        assert tokenizer.pad_token_id not in ids and ids[-1] == tokenizer.eos_token_id  # no unknown word
        assert tokenizer.decode(ids) == text
        prompt_ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids and prompt_ids[-1] == tokenizer.convert_tokens_to_ids("=")
        answer_ids = ids[len(prompt_ids) : -1]
        assert tokenizer.decode(answer_ids) == problem.answer and not set(answer_ids) & known


def test_splits_are_deterministic_from_the_seed_and_prefix_stable():
    a, b, c = small_task(seed=1), small_task(seed=1), small_task(seed=2)
    for split in ("pretrain_problems", "train_problems", "eval_problems"):
        assert getattr(a, split)() == getattr(b, split)()
        assert getattr(a, split)() != getattr(c, split)()
    assert small_task(seed=1, n_test=10).eval_problems() == a.eval_problems()[:10]
    assert [p.id for p in a.eval_problems()[:2]] == ["test-0", "test-1"]
    assert a.train_problems()[0].id == "train-0" and a.pretrain_problems()[0].id == "pretrain-0"


def test_splits_are_disjoint_even_when_every_graph_is_used():
    # G(2, 2) over 4 labels: 4 · 3 · 2 = 24 graphs (source, goal, the other arm's node).
    assert count_star_graphs(2, 2, 4) == 24 and count_star_graphs(3, 2, 4) == 12
    task = StarGraphTask(degree=2, path_len=2, n_labels=4, n_pretrain=8, n_posttrain=8, n_test=8, seed=3)
    splits = [task.pretrain_problems(), task.train_problems(), task.eval_problems()]
    assert len({key(p) for split in splits for p in split}) == 24
    with pytest.raises(UserError, match="only 24 distinct graphs"):
        StarGraphTask(degree=2, path_len=2, n_labels=4, n_pretrain=9, n_posttrain=8, n_test=8)
    big = small_task(n_pretrain=300, n_posttrain=300, n_test=300)
    keys = [{key(p) for p in split} for split in (big.pretrain_problems(), big.train_problems(), big.eval_problems())]
    assert [len(k) for k in keys] == [300, 300, 300] and len(set.union(*keys)) == 900


def test_reward_is_one_for_the_exact_path_only():
    task = small_task()
    problem = task.eval_problems()[0]
    path = problem.answer.split()
    assert task.reward(problem, problem.answer) == 1.0
    assert task.reward(problem, f" {problem.answer} <eos>") == 1.0
    assert task.reward(problem, f"{problem.answer} <eos> 3 | <pad>") == 1.0  # words after EOS do not count
    assert task.reward(problem, other_arm_path(problem)) == 0.0  # wrong first step
    assert task.reward(problem, " ".join(path[:-1])) == 0.0  # truncated
    assert task.reward(problem, f"{problem.answer} {path[-1]}") == 0.0  # goes on without EOS
    assert task.reward(problem, " ".join(path[1:])) == 0.0  # source left out
    assert task.reward(problem, "") == 0.0 and task.reward(problem, "<eos>") == 0.0
    assert task.answer_of(f"{problem.answer} <eos> 7") == problem.answer and task.answer_of("<eos> 1") is None
    assert task.answers_equal(task.answer_of(problem.answer), problem.answer)


def test_diagnostics_separate_the_first_step_from_following_edges():
    task = small_task(degree=3)
    problem = task.eval_problems()[0]
    path, wrong = problem.answer.split(), other_arm_path(problem)
    assert task.first_step_correct(problem, problem.answer) and task.path_edges_valid(problem, problem.answer)
    assert not task.first_step_correct(problem, wrong) and task.path_edges_valid(problem, wrong)  # Clever Hans
    assert task.first_step_correct(problem, " ".join(path[:2])) and task.path_edges_valid(problem, path[0])
    skip = " ".join([path[0], *path[2:]])
    assert not task.path_edges_valid(problem, skip) and not task.first_step_correct(problem, skip)
    assert not task.path_edges_valid(problem, " ".join(path[::-1]))  # edges have a direction
    assert not task.path_edges_valid(problem, f"{path[0]} |")
    assert task.path_edges_valid(problem, f"{problem.answer} <eos> {path[0]} {path[0]}")  # after EOS: ignored


def test_make_task_settings_and_refusals():
    task = make_task("stargraph", degree=2, path_len=5, n_pretrain=50, n_posttrain=20, n_test=10, seed=4)
    assert isinstance(task, StarGraphTask) and task.name == "stargraph"
    assert [len(task.pretrain_problems()), len(task.train_problems()), len(task.eval_problems())] == [50, 20, 10]
    assert task.settings() == {
        "degree": 2, "path_len": 5, "n_labels": 50, "seed": 4, "n_pretrain": 50, "n_posttrain": 20, "n_test": 10,
    }  # fmt: skip
    assert make_task("stargraph", **task.settings()).eval_problems() == task.eval_problems()
    for bad in ({"n_labels": 8}, {"degree": 0}, {"path_len": 1}, {"n_test": -1}, {"seed": -1}):
        with pytest.raises(UserError):
            small_task(**bad)


def test_reference_model_matches_the_tokenizer():
    task = small_task(degree=5, path_len=5)
    tokenizer = task.tokenizer()
    model = make_stargraph_reference(task, n_layers=1, hidden=32, n_heads=2, seed=1)
    config = model.config
    assert config.vocab_size == len(tokenizer) and config.num_hidden_layers == 1 and config.hidden_size == 32
    assert (config.eos_token_id, config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    problem = task.pretrain_problems()[0]
    ids = tokenizer(f"{problem.prompt} {problem.answer} <eos>", add_special_tokens=False, return_tensors="pt")
    assert ids["input_ids"].shape[1] <= config.max_position_embeddings
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    same = make_stargraph_reference(task, n_layers=1, hidden=32, n_heads=2, seed=1)
    assert torch.equal(same.lm_head.weight, model.lm_head.weight)
    with pytest.raises(UserError):
        make_stargraph_reference(task, arch="gpt5")
    with pytest.raises(UserError):
        make_stargraph_reference(task, hidden=30, n_heads=4)


def test_generation_of_200k_graphs_is_fast():
    task = StarGraphTask(degree=5, path_len=5, n_pretrain=200_000, n_posttrain=0, n_test=0)
    start = time.perf_counter()
    problems = task.pretrain_problems()
    print(f"\n200,000 graphs G(5, 5): {time.perf_counter() - start:.2f} s")
    assert len(problems) == 200_000 and problems[-1].id == "pretrain-199999"


@pytest.mark.parametrize(("degree", "path_len", "k"), [(2, 5, 4), (5, 5, 2), (3, 3, 3)])
def test_future_targets_walk_each_arm_from_the_prompt_alone(degree, path_len, k):
    task = StarGraphTask(degree, path_len, n_labels=40, n_pretrain=0, n_posttrain=0, n_test=20, seed=3)
    tokenizer = task.tokenizer()
    for problem in task.eval_problems():
        graph = StarGraph.from_prompt(problem.prompt)
        child = {a: b for a, b in graph.edges if a != graph.source}  # the source's next node is the choice
        wrong_arm = next(b for a, b in graph.edges if a == graph.source and b != graph.path()[1])
        prompt = tokenizer(problem.prompt)["input_ids"]
        completion = tokenizer(f"{graph.source} {wrong_arm} {graph.goal}")["input_ids"] + [tokenizer.eos_token_id]
        targets = task.future_targets(prompt, completion, k)
        assert len(targets) == len(prompt) + len(completion)
        for token, row in zip(prompt + completion, targets, strict=True):
            word = tokenizer.convert_ids_to_tokens(token)
            node, expected = (int(word) if word.isdigit() and int(word) != graph.source else None), []
            for _ in range(k):  # the nodes further along the arm, then nothing
                node = child.get(node) if node is not None else None
                expected.append(-100 if node is None else node)
            assert row == expected, (word, row, expected)
        first_step = targets[len(prompt) + 1]  # the wrong first step: its own arm, not the goal's
        assert first_step[0] == child.get(wrong_arm, -100) and graph.goal not in first_step
