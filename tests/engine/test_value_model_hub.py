"""Value models are hub-ready: from_pretrained of a hub id (the download mocked at huggingface_hub's boundary),
push_to_hub with a model card (the upload mocked), AutoModel on a saved folder works fully or fails with a
sentence, and folders saved before this layout still load. Nothing here reaches the network."""

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from huggingface_hub import hub_mixin
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file
from transformers import AutoModel

from qsharp_ext import hub
from qsharp_ext.errors import UserError
from qsharp_ext.value_model import HEAD_FILE, META_FILE, ValueModel
from tests.engine.conftest import WORDS, make_causal_lm

IDS = torch.randint(0, len(WORDS), (2, 6))


@pytest.fixture
def saved(tokenizer, tmp_path) -> tuple[ValueModel, Path]:
    vm = ValueModel.from_reference(make_causal_lm("llama", len(tokenizer)), 2, tokenizer, kind="histogram", n_atoms=5)
    torch.nn.init.normal_(vm.head.weight)
    vm.eval().save_pretrained(tmp_path / "vm", tokenizer=tokenizer)
    return vm, tmp_path / "vm"


def assert_same_outputs(a: ValueModel, b: ValueModel) -> None:
    torch.testing.assert_close(a(IDS)[0], b.eval()(IDS)[0], rtol=0, atol=0)
    assert a.head_config == b.head_config


def test_a_hub_id_is_downloaded_with_huggingface_hub(saved, tokenizer, monkeypatch):
    vm, folder = saved
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    loaded = ValueModel.from_pretrained("someone/qsharp-vm", tokenizer=tokenizer, revision="v1", token="t")
    assert calls == [("someone/qsharp-vm", {"revision": "v1", "token": "t"})]
    assert_same_outputs(loaded, vm)


def test_hub_failures_and_missing_folders_are_one_sentence(tokenizer, tmp_path, monkeypatch):
    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub and the file is not in the cache")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(UserError, match=r"cannot download the value model 'someone/missing' from the hub \(cannot"):
        ValueModel.from_pretrained("someone/missing", tokenizer=tokenizer)
    with pytest.raises(UserError, match="not a saved value model: the folder does not exist"):
        ValueModel.from_pretrained(tmp_path / "nothing-here")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a saved value model"):
        ValueModel.from_pretrained(tmp_path / "plain")
    with pytest.raises(UserError, match="unknown hub option"):
        ValueModel.from_pretrained("someone/vm", revison="main")


class FakeHfApi:
    """huggingface_hub's HfApi at the boundary: records the repository and the files an upload would send."""

    uploads: ClassVar[list[dict]] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        FakeHfApi.uploads.append({"repo_id": repo_id, "files": files, **kwargs})
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_push_to_hub_uploads_a_loadable_folder_with_a_model_card(saved, tokenizer, tmp_path, monkeypatch):
    vm, _ = saved
    vm.training_info = {"reference_model": "tiny-llama", "reference_fingerprint": "abc123", "task": "reward_fn",
                        "rounds": [1], "metrics": {"roc_auc": 0.91, "eval_loss": 0.3}}  # fmt: skip
    monkeypatch.setattr(hub_mixin, "HfApi", FakeHfApi)
    FakeHfApi.uploads.clear()
    assert vm.push_to_hub("someone/qsharp-vm", commit_message="first").endswith("/commit/0")
    (upload,) = FakeHfApi.uploads
    assert upload["repo_id"] == "someone/qsharp-vm" and upload["commit_message"] == "first"
    files = upload["files"]
    assert {"config.json", "model.safetensors", HEAD_FILE, META_FILE, "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert "library_name: qsharp-ext" in card and 'ValueModel.from_pretrained("someone/qsharp-vm"' in card
    assert "abc123" in card and "reward_fn" in card and "| roc_auc | 0.91 |" in card and "histogram" in card
    # what was uploaded loads back as the same model, training record included
    for name, content in files.items():
        (tmp_path / "uploaded" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "uploaded" / name).write_bytes(content)
    loaded = ValueModel.from_pretrained(tmp_path / "uploaded", tokenizer=tokenizer)
    assert_same_outputs(loaded, vm)
    assert loaded.training_info == vm.training_info


def test_automodel_loads_the_whole_value_model(saved):
    vm, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qsharp_value_model" and config["backbone_config"]["model_type"] == "llama"
    loaded = AutoModel.from_pretrained(folder)
    assert isinstance(loaded, ValueModel)
    assert_same_outputs(loaded, vm)


def test_automodel_without_qsharp_ext_fails_with_a_sentence_naming_the_model_type(saved):
    _, folder = saved
    code = (
        "from transformers import AutoModel\n"
        "try:\n"
        f"    AutoModel.from_pretrained({str(folder)!r})\n"
        "except ValueError as err:\n"
        "    print(str(err).splitlines()[0])\n"
        "else:\n"
        "    print('loaded')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "qsharp_value_model" in out and "loaded" not in out


def test_folders_saved_before_this_layout_still_load(tokenizer, tmp_path):
    """Before: the backbone's own config.json beside the head (and no model card)."""
    vm = ValueModel.from_reference(make_causal_lm("gpt2", len(tokenizer)), 1, tokenizer).eval()
    old = tmp_path / "old"
    vm.backbone.save_pretrained(old)
    save_file({k: v.contiguous() for k, v in vm.head.state_dict().items()}, str(old / HEAD_FILE))
    (old / META_FILE).write_text(json.dumps(vm.head_config.__dict__))
    loaded = ValueModel.from_pretrained(old, tokenizer=tokenizer)
    assert_same_outputs(loaded, vm)
    assert loaded.training_info is None


def test_saving_again_rewrites_the_model_card(saved, tokenizer):
    vm, folder = saved
    assert "## Training" not in (folder / "README.md").read_text()
    vm.training_info = {"task": "arithmetic", "metrics": {}}
    vm.save_pretrained(folder, tokenizer=tokenizer)
    assert "- task: arithmetic" in (folder / "README.md").read_text()
