"""bench/packed_training.py at a tiny size, so that it cannot rot: it writes both files, and the tokens it
reports saved are the packing's exact count (a time is never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_writes_its_table_and_counts_the_tokens_packing_saves(tmp_path):
    args = ["--out", str(tmp_path), "--graphs", "2", "3", "--steps", "1", "--batch-size", "8", "--ref-hidden", "32"]
    args += ["--threads", "1"]
    script = ROOT / "bench" / "packed_training.py"
    result = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "packed_training.json").read_text())["rows"]
    assert [r["arm"] for r in rows] == ["one row per roll-out", "packed"]
    # G(2,3): a prompt of 3·2·2 + 4 = 16 tokens, answers of 4; two roll-outs per graph: 40 tokens, packed 24
    assert rows[0]["tokens_per_step"] == 4 * 40 and rows[1]["tokens_per_step"] == 4 * 24
    assert rows[1]["tokens_saved"] == 1 - 24 / 40 and rows[1]["speedup"] > 0
    assert "| G(2,3) | packed |" in (tmp_path / "packed_training.md").read_text()
