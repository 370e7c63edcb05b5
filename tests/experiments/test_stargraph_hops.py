"""`python/stargraph_hops.py`: the walks down every arm, their labels, and the per-hop accuracy it reports."""

import itertools
import json
import random

import numpy as np
import pytest
import torch

from qsharp_ext.tasks import StarGraphTask

hops = pytest.importorskip("stargraph_hops")  # python/ is on the path (conftest.py)


@pytest.fixture
def seed() -> int:
    value = random.SystemRandom().randrange(2**31)
    print(f"seed={value}")
    return value


@pytest.mark.parametrize("degree, path_len", [(2, 5), (5, 5), (3, 2)])
def test_every_arm_is_a_chain_of_edges_from_the_source_and_one_ends_at_the_goal(degree, path_len, seed):
    task = StarGraphTask(degree, path_len, n_pretrain=0, n_posttrain=0, n_test=0)
    for graph in hops.draw(task, np.random.default_rng(seed), 20):
        arms = hops.arms(graph)
        edges = set(graph.edges)
        assert len(arms) == degree and all(len(arm) == path_len - 1 for arm in arms)
        assert all((graph.source, arm[0]) in edges for arm in arms)
        assert all(pair in edges for arm in arms for pair in itertools.pairwise(arm))
        assert len({node for arm in arms for node in arm}) == degree * (path_len - 1)  # disjoint arms
        assert [graph.source, *arms[hops.goal_arm(graph)]] == graph.path()


def test_walks_are_prompt_source_and_arm_labelled_by_whether_the_arm_ends_at_the_goal(seed):
    task = StarGraphTask(2, 5, n_pretrain=0, n_posttrain=0, n_test=0)
    graphs = hops.draw(task, np.random.default_rng(seed), 8)
    choice = [j % 2 for j in range(8)]
    w = hops.walks(task, graphs, choice)
    tokenizer = task.tokenizer()
    for row, graph, j, label in zip(w.ids.tolist(), graphs, choice, w.labels.tolist(), strict=True):
        words = tokenizer.decode(row).split()
        assert " ".join(words[: task.prompt_len]) == graph.prompt()
        nodes = [int(x) for x in words[task.prompt_len :]]
        assert nodes == [graph.source, *hops.arms(graph)[j]]
        assert row[w.first_node] == hops.arms(graph)[j][0]
        assert label == float(nodes == graph.path())


class Oracle(torch.nn.Module):
    """Values from the walk's own label (read off the tokens): 1 down the goal's arm, else 0; `sign` -1 flips it."""

    def __init__(self, task: StarGraphTask, sign: float) -> None:
        super().__init__()
        self.goal_at, self.sign = task.prompt_len - 2, sign

    def forward(self, ids: torch.Tensor):
        on_goal_arm = (ids[:, -1] == ids[:, self.goal_at]).float()
        return self.sign * on_goal_arm[:, None].expand(ids.shape).clone(), None


@pytest.mark.parametrize("degree", [2, 5])
def test_accuracy_by_hops_is_one_for_an_oracle_and_zero_for_its_opposite(degree, seed):
    task = StarGraphTask(degree, 5, n_pretrain=0, n_posttrain=0, n_test=0)
    graphs = hops.draw(task, np.random.default_rng(seed), 30)
    right = hops.accuracy_by_hops(Oracle(task, 1.0), task, graphs, "cpu")
    wrong = hops.accuracy_by_hops(Oracle(task, -1.0), task, graphs, "cpu")
    assert list(right) == ["3", "2", "1", "0"]
    assert all(v == 1.0 for v in right.values()) and all(v == 0.0 for v in wrong.values())


def test_a_short_run_writes_its_curve_table_and_plot(tmp_path):
    cfg = hops.HopsConfig(out=tmp_path, layers=1, hidden=32, steps=4, every=2, batch=8, n_held_out=12, lr=1e-3)
    result = hops.run(cfg)
    hops.report(result, tmp_path)
    saved = json.loads((tmp_path / "hops.json").read_text())
    assert [r["step"] for r in saved["curve"]] == [2, 4] and saved["curve"][-1]["graphs"] == 32
    assert all(0.0 <= v <= 1.0 for r in saved["curve"] for v in r["accuracy_by_hops"].values())
    assert np.isfinite([r["loss"] for r in saved["curve"]]).all()
    table = (tmp_path / "hops.md").read_text()
    assert "| 3 hops | 2 hops | 1 hop | 0 hops |" in table
    assert (tmp_path / "hops.png").stat().st_size > 0
