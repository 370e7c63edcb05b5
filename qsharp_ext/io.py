"""Writing results so that a crash never leaves a half-written file: temp file, then rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from qsharp_ext.errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    """JSON with NaN/inf refused (they are not JSON): a metric that is not finite is a bug to surface."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, paths strings), for comparisons with a record."""
    return json.loads(json.dumps(value, default=str))


def record_run_settings(
    path: Path, settings: dict[str, Any], ignore: Collection[str] = (), introduced: Mapping[str, Any] | None = None
) -> None:
    """Record a run folder's settings (JSON) on first use; later, refuse to continue with other ones.

    Keys in `ignore` (output folder, device) may change between attempts. Resuming with other settings would
    silently mix two experiments in one folder. `introduced` maps settings added after some folders were
    recorded to the value those folders ran with: a record without the key counts as holding that value,
    so older folders stay resumable.
    """
    current = as_json(dict(settings))
    if not Path(path).is_file():
        atomic_write_text(path, json.dumps(current, indent=2) + "\n")
        return
    started = as_json(dict(introduced or {})) | json.loads(Path(path).read_text())
    changed = sorted(k for k in current.keys() | started.keys() if started.get(k) != current.get(k) and k not in ignore)
    if changed:
        folder, names = Path(path).parent, ", ".join(changed)
        raise UserError(f"{folder} was started with other settings ({names}); use a new --out or the same config")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `rows`, one column per key in `columns` (missing keys show as –)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
