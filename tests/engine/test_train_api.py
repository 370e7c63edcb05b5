"""`train_value_model`: π_ref in memory, prompts (strings, chat messages, a Dataset column or a Task) and a reward
function in, a trained ValueModel out; the run folder resumes; every mistake is one sentence before any work."""

import json
import tempfile

import pytest
import torch

from qsharp_ext import ValueModel, train_api, train_value_model, training
from qsharp_ext.errors import UserError
from qsharp_ext.rollout_data import read_manifest, read_rollouts
from qsharp_ext.tasks import FirstTokenTask
from qsharp_ext.tasks.first_token import make_tiny_reference
from tests.engine.conftest import CHAT_TEMPLATE

SMALL = dict(samples_per_prompt=4, max_new_tokens=3, steps=6, batch_size=8, lr=1e-3, eval_every=3, save_every=3,
             num_layers=1, progress=False)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py


@pytest.fixture(scope="module")
def task() -> FirstTokenTask:
    return FirstTokenTask(n_train=12, n_eval=4, seed=3)


@pytest.fixture(scope="module")
def ref(task):
    return make_tiny_reference(task, seed=1)


@pytest.fixture(scope="module")
def tok(task):
    return task.tokenizer()


def first_word_reward(task: FirstTokenTask):
    def reward(prompt: str, completion: str) -> float:
        words = completion.split()
        return float(bool(words) and words[0] in task.good_words)

    return reward


def prompts(task: FirstTokenTask) -> list[str]:
    return [p.prompt for p in task.train_problems()]


def weights(model: ValueModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_trains_from_memory_with_a_reward_function_and_leaves_no_folder(task, ref, tok, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temporary run folder goes
    seen = []

    def reward(prompt: str, completion: str) -> float:
        seen.append(prompt)
        return first_word_reward(task)(prompt, completion)

    vm = train_value_model(ref, tok, prompts(task), reward, **SMALL)
    assert isinstance(vm, ValueModel) and not vm.training
    assert next(vm.parameters()).device == ref.device and next(vm.parameters()).dtype == torch.float32
    assert set(seen) == set(prompts(task)) and len(seen) == 12 * 4  # every prompt as given, every sample
    info = vm.training_info
    assert info["task"] == "reward_fn" and info["rounds"] == [1] and info["steps"] == 6
    assert info["reference_fingerprint"] and "eval_loss" in info["metrics"]
    assert list(tmp_path.iterdir()) == []  # the temporary run folder is gone


def test_out_is_a_resumable_run_folder_with_a_model_card(task, ref, tok, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = dict(SMALL, out=out, seed=5)
    real_step = training.train_step

    def crash_after_three(*args, **kwargs):
        if crash_after_three.calls == 3:
            raise KeyboardInterrupt
        crash_after_three.calls += 1
        return real_step(*args, **kwargs)

    crash_after_three.calls = 0
    monkeypatch.setattr(training, "train_step", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        train_value_model(ref, tok, prompts(task), first_word_reward(task), **settings)
    monkeypatch.setattr(training, "train_step", real_step)
    resumed = train_value_model(ref, tok, prompts(task), first_word_reward(task), **settings)  # from step 3
    straight = train_value_model(ref, tok, prompts(task), first_word_reward(task), **dict(settings, out=tmp_path / "b"))
    for name, value in weights(straight).items():
        assert torch.equal(value, weights(resumed)[name]), name

    model = out / "round-1" / "qsharp" / "model"
    assert (out / "round-1" / "data" / "manifest.json").is_file() and (model / "value_head.safetensors").is_file()
    card = (model / "README.md").read_text()
    assert "reward_fn" in card and resumed.training_info["reference_fingerprint"] in card and "held-out" in card
    settings_on_disk = read_manifest(out / "round-1" / "data")["settings"]
    assert settings_on_disk["task_settings"] == {"reward_fn": "first_word_reward.<locals>.reward"}

    def no_work(*args, **kwargs):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(training, "train_step", no_work)
    monkeypatch.setattr(train_api.rollouts, "collect_shard", no_work)
    again = train_value_model(ref, tok, prompts(task), first_word_reward(task), **settings)
    for name, value in weights(again).items():
        assert torch.equal(value, weights(resumed)[name]), name


def test_two_rounds_roll_in_with_the_first_rounds_model(task, ref, tok, tmp_path):
    out = tmp_path / "run"
    train_value_model(ref, tok, prompts(task), first_word_reward(task), **dict(SMALL, out=out, rounds=2, eta=0.5))
    manifest = read_manifest(out / "round-2" / "data")["settings"]
    assert manifest["value_model"].endswith("round-1/qsharp/model") and manifest["eta"] == 0.5
    assert {r.round for r in read_rollouts([out / "round-2" / "data"])} == {2}
    summary = json.loads((out / "round-2" / "qsharp" / "summary.json").read_text())["config"]
    assert summary["init_value_model"].endswith("round-1/qsharp/model") and len(summary["data"]) == 2


class FakeDataset:
    """What train_value_model reads of a datasets.Dataset: column_names and a column by name."""

    def __init__(self, columns: dict[str, list]):
        self.columns = columns
        self.column_names = list(columns)

    def __getitem__(self, name: str) -> list:
        return self.columns[name]


def test_dataset_columns_chat_messages_and_tasks_are_prompts(task, ref, tok, tmp_path):
    texts = prompts(task)
    from_dataset = train_value_model(ref, tok, FakeDataset({"question": texts, "answer": ["x"] * len(texts)}),
                                     first_word_reward(task), prompt_column="question", **SMALL)  # fmt: skip
    from_list = train_value_model(ref, tok, texts, first_word_reward(task), **SMALL)
    for name, value in weights(from_list).items():
        assert torch.equal(value, weights(from_dataset)[name]), name

    chat_tok = task.tokenizer()
    chat_tok.chat_template = CHAT_TEMPLATE  # user turns start `<bos> w40`, the assistant's `<bos> w41`
    conversations = [[{"role": "user", "content": text.removesuffix(" =")}] for text in texts]
    seen = []

    def reward(prompt, completion: str) -> float:
        seen.append(prompt)
        return 0.0 if len(completion) % 2 else 1.0

    train_value_model(ref, chat_tok, conversations, reward, out=tmp_path / "chat", **SMALL)
    assert seen[0] in conversations  # the reward sees the conversation as given
    stored = read_rollouts([tmp_path / "chat" / "round-1" / "data"])[0].prompt_ids
    assert chat_tok.decode(stored).startswith("<bos> w40 ")  # the chat template rendered it

    vm = train_value_model(ref, tok, task, out=tmp_path / "task", **SMALL)  # a Task brings its own reward
    assert vm.training_info["task"] == "first_token"


def test_a_real_datasets_dataset(task, ref, tok):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"prompt": prompts(task)})
    assert isinstance(train_value_model(ref, tok, dataset, first_word_reward(task), **SMALL), ValueModel)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stepz": 3}, "unknown training setting.s. stepz; train_value_model takes: .*steps"),
        ({"seed": 1, "device": "cpu"}, "device is not a setting of train_value_model: the value model trains on"),
        ({"steps": "many"}, "steps must be an integer, not 'many'"),
        ({"kind": "poisson"}, "kind must be one of bernoulli, histogram, mean"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"samples_per_prompt": 0}, "samples_per_prompt must be at least 1"),
        ({"rounds": 0}, "rounds must be an integer of at least 1"),
        ({"reward_fn": None}, "reward_fn must be a function"),
        ({"reward_fn": lambda completion: 1.0}, r"reward_fn must take two arguments"),
        ({"prompts": [[3, 4, 5]]}, "must be text or chat messages"),
        ({"prompts": []}, "no prompts given"),
        ({"prompts": ["hello ="]}, "holds 'hello', which the tokenizer does not know"),
        ({"prompts": FakeDataset({"text": ["a"]})}, r"no column 'prompt' \(its columns: text\)"),
        ({"prompts": "task", "reward_fn": "reward"}, "either a Task .* or prompts with a reward_fn"),
        ({"future_tokens": 2, "future_targets": "task"}, "needs a task with a future_targets hook"),
        ({"out": "file"}, "is a file"),
        ({"out": 3}, "out must be a folder"),
        ({"tokenizer": "big"}, "pass π_ref's own tokenizer"),
    ],
)
def test_mistakes_are_one_sentence_before_any_work(task, ref, tok, tmp_path, monkeypatch, change, message):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(train_api, "run_collect", no_work)
    monkeypatch.setattr(train_api, "run_train", no_work)
    (tmp_path / "file").write_text("")
    args = {"prompts": prompts(task), "reward_fn": first_word_reward(task), "tokenizer": tok, **SMALL, **change}
    args["prompts"] = task if args["prompts"] == "task" else args["prompts"]
    args["reward_fn"] = first_word_reward(task) if args["reward_fn"] == "reward" else args["reward_fn"]
    args["out"] = tmp_path / "file" if args.get("out") == "file" else args.get("out")
    if args["tokenizer"] == "big":
        args["tokenizer"] = FirstTokenTask(n_words=60, n_train=1, n_eval=0).tokenizer()
    with pytest.raises(UserError, match=message):
        train_value_model(ref, args.pop("tokenizer"), args.pop("prompts"), args.pop("reward_fn"), **args)


def test_a_reward_outside_the_heads_support_names_the_function_and_the_way_out(task, ref, tok):
    message = r"reward_fn returned 2\.0 for prompt '.+' \(prompt-0\) and completion .* \[0\.0, 1\.0\] .*histogram"
    with pytest.raises(UserError, match=message):
        train_value_model(ref, tok, prompts(task), lambda prompt, completion: 2.0, **SMALL)
    vm = train_value_model(ref, tok, prompts(task), lambda prompt, completion: float(len(completion) % 3),
                           kind="histogram", v_min=0.0, v_max=2.0, n_atoms=3, **SMALL)  # fmt: skip
    assert (vm.head_config.kind, vm.head_config.v_max, vm.head_config.n_atoms) == ("histogram", 2.0, 3)
