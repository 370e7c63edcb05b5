"""Writing results so that a crash never leaves a half-written file or folder: temp file or folder, then rename.

Also the one check of an output location that every stage makes before any model loads (`check_output_folder`,
`check_output_file`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from qsharp_ext.errors import UserError


def check_output_folder(path: Path, name: str = "out") -> None:
    """One sentence unless `path` can be an output folder: not an existing file, and the nearest folder that
    exists on its way (itself, or the parent it will be created in) writable by this process."""
    path = Path(path)
    if os.path.exists(path) and not path.is_dir():
        raise UserError(f"{name} {path} is a file, not a folder: give a folder (it is created when missing)")
    _check_writable(path, name, path)


def check_output_file(path: Path, name: str = "out") -> None:
    """One sentence unless `path` can be an output file: not an existing folder, and its folder (or the nearest
    one that exists on the way to it) writable by this process."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{name} {path} is a folder: give the path of the file to write")
    _check_writable(path.parent, name, path)


def _check_writable(folder: Path, name: str, target: Path) -> None:
    existing = next(p for p in (folder, *folder.parents) if os.path.exists(p))  # "." or "/" at the latest
    if not existing.is_dir():
        raise UserError(f"{name} {target} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{name} {target} cannot be written: no permission to write in {existing}")


def _owner() -> str:
    """Who writes a temporary path: this host and process, so that a later writer can tell a leftover."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _fresh(folder: Path, name: str, create) -> tuple[object, Path]:
    """`create(path)` on a new hidden path next to `name` in `folder`; (its result, the path). Leftovers of
    earlier writers of `name` killed before their rename (kill -9, power loss) are removed first."""
    _remove_leftovers(folder, name)
    while True:
        tmp = folder / f".{name}.{_owner()}.{secrets.token_hex(4)}.tmp"
        try:
            return create(tmp), tmp
        except FileExistsError:
            continue


def _remove_leftovers(folder: Path, name: str) -> None:
    """Delete `.{name}.{host}-{pid}.*.tmp` paths of this host whose process no longer runs (another host's, or
    a live process's, are left alone: they may be being written)."""
    host = socket.gethostname()
    for path in Path(folder).glob(f".{glob.escape(name)}.{glob.escape(host)}-*.tmp"):
        pid = path.name[len(f".{name}.{host}-") :].split(".", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def make_temp_folder(folder: Path, name: str) -> Path:
    """A new hidden folder in `folder` to build `name` in before renaming it, with the user's umask's mode
    (tempfile.mkdtemp's 0700 would survive the rename)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return _fresh(Path(folder), name, lambda tmp: os.mkdir(tmp, 0o777))[1]


def write_folder(folder: Path, fill: Callable[[Path], None]) -> Path:
    """`folder`, complete or not at all: `fill(tmp)` writes into a new hidden folder beside it, which is then
    renamed into place (an empty folder already there is replaced; anything else there stops the rename)."""
    folder = Path(folder)
    tmp = make_temp_folder(folder.parent, folder.name)
    try:
        fill(tmp)
        if folder.exists():
            folder.rmdir()
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename.

    The file gets the mode a plain open() gives (0o666 less the umask), not tempfile.mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd, tmp = _fresh(path.parent, path.name, lambda tmp: os.open(tmp, flags, 0o666))
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


def dotted(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings flattened to dotted names (`{"train": {"lr": 1}}` → `{"train.lr": 1}`), so that a refusal
    names the one nested field that changed."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def record_run_settings(path: Path, settings: dict[str, Any], ignore: Collection[str] = ()) -> None:
    """Record a run folder's settings (JSON) on first use; later, refuse to continue with other ones.

    Keys in `ignore` (output folder, device) may change between attempts. Resuming with other settings would
    silently mix two experiments in one folder; a nested setting that changed is named by its dotted path.
    """
    current = as_json(dict(settings))
    if not Path(path).is_file():
        atomic_write_text(path, json.dumps(current, indent=2) + "\n")
        return
    started = dotted(json.loads(Path(path).read_text()))
    current = dotted(current)
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
