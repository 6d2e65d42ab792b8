"""Progress reporting for long work: a bar on a terminal, JSON lines for the Slicer module, or nothing.

JSON protocol, one object per line on stdout:
  {"stage": "sampling", "step": 3, "total": 50, "message": "t=940"}   while working
  {"stage": "windows", "step": 0, "total": 0, "message": "..."}       news between stages (no steps)
  {"stage": "done", "outputs": {"image": "/path/out.nii.gz"}}          once, at the end
  {"stage": "error", "error": "what went wrong and what to do"}        once, on failure (exit code != 0)
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

PROGRESS_MODES = ("bar", "json", "none")


class Progress:
    def __init__(self, mode: str = "none", stream: IO[str] | None = None):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {PROGRESS_MODES}, not {mode!r}")
        self.mode = mode
        self._stream = stream
        self._bar = None
        self._stage = ""
        self._total = 0

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    def _emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def start(self, stage: str, total: int, message: str = "") -> None:
        """Begin a stage of `total` steps."""
        self._close_bar()
        self._stage, self._total = stage, int(total)
        if self.mode == "json":
            self._emit({"stage": stage, "step": 0, "total": self._total, "message": message})
        elif self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, desc=stage, file=sys.stderr, dynamic_ncols=True, leave=True)

    def step(self, step: int, message: str = "") -> None:
        """Report that `step` of the current stage's steps are done."""
        if self.mode == "json":
            self._emit({"stage": self._stage, "step": int(step), "total": self._total, "message": message})
        elif self._bar is not None:
            self._bar.update(int(step) - self._bar.n)
            if message:
                self._bar.set_postfix_str(message, refresh=False)

    def note(self, stage: str, message: str) -> None:
        """A one-off piece of news between stages (e.g. how many windows need the network): a JSON
        line with no steps, or a line of text above the bar."""
        self._close_bar()
        if self.mode == "json":
            self._emit({"stage": stage, "step": 0, "total": 0, "message": message})
        elif self.mode == "bar":
            print(f"{stage}: {message}", file=sys.stderr)

    def done(self, outputs: dict[str, str]) -> None:
        self._close_bar()
        if self.mode == "json":
            self._emit({"stage": "done", "outputs": outputs})

    def error(self, message: str) -> None:
        self._close_bar()
        if self.mode == "json":
            self._emit({"stage": "error", "error": message})

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


SILENT = Progress("none")
