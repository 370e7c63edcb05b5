"""The README's Python quickstart runs as written (in a temporary folder), so the front page stays true."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Python quickstart"


def quickstart_blocks(text: str) -> list[str]:
    """The ```python blocks of the quickstart section (from its heading to the next `## ` heading)."""
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def test_the_quickstart_ends_within_the_first_80_lines():
    text = README.read_text(encoding="utf-8")
    blocks = quickstart_blocks(text)
    assert blocks, "the quickstart section has no ```python block"
    last_line = text[: text.index(blocks[-1]) + len(blocks[-1])].count("\n") + 1  # the closing fence
    assert last_line <= 80


@pytest.mark.slow
def test_the_python_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes its models and run folders where it runs
    namespace = {"__name__": "__main__"}
    for block in quickstart_blocks(README.read_text(encoding="utf-8")):
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    rewards = dict(re.findall(r"η (\S+): mean reward ([\d.]+)", printed))
    assert set(rewards) == {"None", "0.1"}, printed
    # π_ref scores about 0.3 and the guided policy about 0.96; 0.3 apart is many standard errors of 128 samples
    assert float(rewards["0.1"]) > float(rewards["None"]) + 0.3, printed
