"""Where embedded-mode state lives: $SANDRUN_HOME, else the user's data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> Home:
        chosen = path or os.environ.get("SANDRUN_HOME") or platformdirs.user_data_dir("sandrun")
        return cls(Path(chosen).expanduser().absolute())

    @property
    def db(self) -> Path:
        return self.root / "sandrun.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def agent_lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"
