"""What every training script shares: a JSON-lines log and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path


class RunLog:
    """Prints each entry and appends it to ``path`` as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, entry: dict) -> None:
        line = json.dumps(entry)
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


class StopFlag:
    """Set by SIGINT/SIGTERM, so a run finishes its step, checkpoints and exits."""

    def __init__(self) -> None:
        self.now = False
        signal.signal(signal.SIGINT, self._set)
        signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_: object) -> None:
        self.now = True
