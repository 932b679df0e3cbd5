"""Where a local stack keeps its data, logs and run files, and where the shared built tools live.

All under the git-ignored `.state/`: the dev profile's stack in `.state/` itself, the others in
`.state/<profile>/`, and the tools every profile uses in `.state/tools/`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from healthcare.settings import REPO_ROOT, Settings


@dataclass(frozen=True)
class Paths:
    root: Path
    tools: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Paths:
        return cls(settings.state_dir.resolve(), settings.tools_dir.resolve())

    @property
    def bin(self) -> Path:
        return self.tools / "bin"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def stack_pid(self) -> Path:
        return self.run / "stack.pid"

    @property
    def ready_file(self) -> Path:
        return self.run / "ready"

    @property
    def setup_logs(self) -> Path:
        return self.logs / "setup"

    @property
    def stack_log(self) -> Path:
        return self.logs / "stack.log"


REPO = REPO_ROOT
VENV_BIN = Path(sys.executable).parent
