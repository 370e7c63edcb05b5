"""prompt_token_ids: every prompt form a `model.generate` user holds gives the same token ids, or one sentence."""

import pytest
import torch

from qsharp_ext.errors import UserError
from qsharp_ext.prompts import prompt_token_ids
from qsharp_ext.tasks import StarGraphTask
from tests.engine.conftest import CONVERSATIONS, make_chat_tokenizer, make_tokenizer

PROMPTS = ["w1 w2 w3 w4 w5", "w7", "w9 w10 w11"]
IDS = [[1, 2, 3, 4, 5], [7], [9, 10, 11]]


@pytest.fixture
def tok():
    return make_tokenizer()


def test_a_bare_string_is_one_prompt(tok):
    assert prompt_token_ids(tok, "w1 w2 w3") == [[1, 2, 3]]  # not three one-character prompts


def test_strings_ids_and_tensors_give_the_same_ids(tok):
    assert prompt_token_ids(tok, PROMPTS) == IDS
    assert prompt_token_ids(tok, IDS) == IDS
    assert prompt_token_ids(tok, [1, 2, 3]) == [[1, 2, 3]]  # one list of ids: one prompt
    assert prompt_token_ids(tok, torch.tensor([1, 2, 3])) == [[1, 2, 3]]
    assert prompt_token_ids(tok, [torch.tensor(r) for r in IDS]) == IDS
    assert prompt_token_ids(tok, torch.tensor([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_tensors_and_batch_encodings_lose_their_padding(tok, side):
    tok.padding_side = side
    batch = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    assert prompt_token_ids(tok, batch) == IDS
    assert prompt_token_ids(tok, dict(batch)) == IDS
    assert prompt_token_ids(tok, batch["input_ids"], batch["attention_mask"]) == IDS
    assert prompt_token_ids(tok, batch["input_ids"], batch["attention_mask"].bool()) == IDS
    lists = tok(PROMPTS, padding=True, add_special_tokens=False)  # lists, not tensors
    assert prompt_token_ids(tok, lists) == IDS
    assert prompt_token_ids(tok, tok(PROMPTS, add_special_tokens=False)) == IDS  # ragged, unpadded


def test_chat_messages_are_rendered_with_the_template_and_generation_prompt():
    tok = make_chat_tokenizer()
    rendered = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in CONVERSATIONS]
    expected = [tok(text, add_special_tokens=False)["input_ids"] for text in rendered]
    assert expected[0] == [47, 40, 1, 2, 3, 45, 47, 41]  # <pad> (45) inside the prompt is a real token
    assert prompt_token_ids(tok, CONVERSATIONS) == expected
    assert prompt_token_ids(tok, CONVERSATIONS[1]) == expected[1:]  # one conversation
    assert prompt_token_ids(tok, CONVERSATIONS[0][0]) == expected[:1]  # one message
    batch = tok.apply_chat_template(
        CONVERSATIONS, add_generation_prompt=True, return_tensors="pt", padding=True, return_dict=True
    )
    assert prompt_token_ids(tok, batch) == expected
    ids = tok.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True)  # a BatchEncoding of lists
    assert prompt_token_ids(tok, ids) == expected[:1]


def test_a_pad_id_inside_an_unmasked_tensor_is_text(tok):
    assert prompt_token_ids(tok, torch.tensor([[1, tok.pad_token_id, 2]])) == [[1, tok.pad_token_id, 2]]


@pytest.mark.parametrize(
    ("prompts", "kwargs", "message"),
    [
        ([], {}, "no prompts"),
        ("", {}, "empty"),
        (torch.tensor([[45, 1, 2], [3, 4, 5]]), {}, "pad id 45 at the start or end of a row and no attention_mask"),
        (torch.tensor([[1, 2, 45], [3, 4, 5]]), {}, "pad id 45"),
        ({"input_ids": torch.tensor([[45, 1], [2, 3]])}, {}, "pad id 45"),
        (torch.tensor([[1.0, 2.0]]), {}, "tensor of token ids"),
        (torch.ones(1, 2, 3, dtype=torch.long), {}, "1-D or 2-D"),
        (torch.tensor([[1, 2, 3]]), {"attention_mask": torch.tensor([[1, 1]])}, "shape of input_ids"),
        (torch.tensor([[1, 2, 3]]), {"attention_mask": torch.tensor([[1, 0, 1]])}, "gap"),
        (torch.tensor([[1, 2, 3]]), {"attention_mask": torch.tensor([[1, 2, 1]])}, "0s and 1s"),
        (torch.tensor([[45, 2]]), {"attention_mask": torch.tensor([[0, 0]])}, "empty"),
        (PROMPTS, {"attention_mask": [[1]]}, "not with text"),
        (["w1", [1, 2]], {}, "mix"),
        ([[1, 2], ["w1"]], {}, "ints only"),
        ([[{"role": "user"}]], {}, "'role' and 'content'"),
        (CONVERSATIONS, {}, "no chat template"),
        (3.5, {}, "not float"),
        ({"input_ids": [[1]], "attention_mask": [[1]]}, {"attention_mask": [[1]]}, "given twice"),
    ],
)
def test_bad_prompts_are_one_sentence(tok, prompts, kwargs, message):
    with pytest.raises(UserError, match=message):
        prompt_token_ids(tok, prompts, **kwargs)


def test_a_word_outside_a_word_level_vocabulary_is_refused_not_padded(tok):
    with pytest.raises(
        UserError, match=r"holds 'w99', 'zzz', which the tokenizer does not know \(it would become <pad>\)"
    ):
        prompt_token_ids(tok, ["w1 w2", "w1 w99 zzz w3"])
    assert prompt_token_ids(tok, "w1 <pad> w2") == [[1, tok.pad_token_id, 2]]  # spelled out: the user's choice
    task = StarGraphTask(degree=2, path_len=5, n_labels=50, n_pretrain=10, n_posttrain=10, n_test=10, seed=0)
    prompt = task.eval_problems()[0].prompt
    assert prompt_token_ids(task.tokenizer(), prompt)  # a star-graph prompt as the task writes it
    with pytest.raises(UserError, match="'77'"):
        prompt_token_ids(task.tokenizer(), prompt.replace(prompt.split()[0], "77", 1))
