"""Tasks: deterministic disjoint splits, the first-token reward, the tokenizer, make_task, the support check."""

import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.tasks import FirstTokenTask, Problem, Task, make_task
from qsharp_ext.tasks.first_token import make_tiny_reference
from tests.engine.conftest import WORDS


def small_task(**options) -> FirstTokenTask:
    return FirstTokenTask(**{"n_train": 40, "n_eval": 20, **options})


def test_splits_are_deterministic_from_the_seed():
    a, b, c = small_task(seed=1), small_task(seed=1), small_task(seed=2)
    assert a.train_problems() == b.train_problems() and a.eval_problems() == b.eval_problems()
    assert a.good_words == b.good_words
    assert a.train_problems() != c.train_problems()


def test_splits_are_disjoint_and_well_formed():
    task = small_task(n_words=3, prompt_len=(1, 2), n_train=8, n_eval=4)  # 12 distinct prompts exist: all used
    train, evals = task.train_problems(), task.eval_problems()
    assert len(train) == 8 and len(evals) == 4
    assert not {p.prompt for p in train} & {p.prompt for p in evals}
    assert len({p.id for p in train + evals}) == 12
    for problem in train + evals:
        words = problem.prompt.split()
        assert 2 <= len(words) <= 3 and words[-1] == "=" and problem.answer is None  # ends with the separator
    with pytest.raises(UserError, match="distinct prompts"):
        small_task(n_words=3, prompt_len=(1, 2), n_train=10, n_eval=3)


def test_reward_depends_on_the_first_word_only():
    task = small_task(good_fraction=0.3)
    assert len(task.good_words) == round(0.3 * 45)
    good = sorted(task.good_words)[0]
    bad = next(w for w in task.words if w not in task.good_words)
    problem = task.train_problems()[0]
    assert task.reward(problem, f"{good} {bad} {bad}") == 1.0
    assert task.reward(problem, f"{bad} {good}") == 0.0
    assert task.reward(problem, "") == 0.0
    assert task.answer_of(f" {good} {bad}") == good and task.answer_of("") is None
    assert task.answers_equal(good, good) and not task.answers_equal(good, bad)


def test_tokenizer_round_trip_and_vocabulary():
    task = small_task()
    tokenizer = task.tokenizer()
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(45)] == WORDS  # the test models' vocabulary
    for problem in task.train_problems()[:10]:
        ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(problem.prompt.split()) and max(ids) == 45  # the separator follows the words
        assert tokenizer.decode(ids) == problem.prompt


def test_tiny_reference_matches_the_tokenizer():
    task = small_task(n_words=10)
    tokenizer, model = task.tokenizer(), make_tiny_reference(task, seed=3)
    assert model.config.vocab_size == len(tokenizer) == 14  # 10 words, the separator, 3 specials
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
    )  # fmt: skip
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    again = make_tiny_reference(task, seed=3)
    assert all((a == b).all() for a, b in zip(model.parameters(), again.parameters()))
    with pytest.raises(UserError, match="unknown tiny architecture"):
        make_tiny_reference(task, arch="mamba")


def test_make_task():
    task = make_task("first_token", n_train=5, n_eval=2, seed=4)
    assert isinstance(task, FirstTokenTask) and len(task.train_problems()) == 5
    assert task.settings()["seed"] == 4
    with pytest.raises(UserError, match=r"known tasks: .*first_token"):
        make_task("chess")
    with pytest.raises(UserError, match=r"no option.*colour"):
        make_task("first_token", colour="red")


def test_reward_outside_the_support_is_refused():
    class Overshoot(Task):
        name, v_min, v_max = "overshoot", 0.0, 1.0

        def score(self, problem, completion):
            return 2.0

    with pytest.raises(UserError, match=r"reward 2\.0 is outside"):
        Overshoot().reward(Problem("p", "x", None), "y")
