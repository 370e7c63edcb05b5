"""Finished work units of a long job kept on disk, so that a rerun after a crash or Ctrl-C does only the rest.

A store is a folder of one JSON file per finished unit plus `settings.json`, the settings its units were
computed with. Opened with other settings, the store is emptied (its units would belong to another
experiment); the job removes the folder once its own report is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from qsharp_ext.io import as_json, atomic_write_text, write_json


class UnitStore:
    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder, recorded = Path(folder), Path(folder) / "settings.json"
        settings = as_json(settings)
        if recorded.is_file() and json.loads(recorded.read_text()) != settings:
            print(f"note: {self.folder} holds units computed with other settings; they are computed again")
            shutil.rmtree(self.folder)
        if not recorded.is_file():
            write_json(recorded, settings)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def load(self, name: str) -> Any | None:
        """The unit's result, or None when it was not finished."""
        path = self._path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, name: str, result: Any) -> None:
        atomic_write_text(self._path(name), json.dumps(result, allow_nan=False))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
