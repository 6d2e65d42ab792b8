"""Peak resident memory of one piece of work in a fresh child process (Linux), shared by the speed
benchmarks: the child resets its high-water mark (VmHWM, through /proc/self/clear_refs) after its
warm-up, does the work, and prints one JSON line with the growth; the parent runs it and reads that
line."""

from __future__ import annotations

import json
import subprocess
import sys


def status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class PeakGrowth:
    """`with PeakGrowth() as peak: work()`, then `peak.mib`: the resident-memory peak during the work
    above the resident memory when it began (what the work itself needed, libraries already loaded)."""

    def __enter__(self) -> "PeakGrowth":
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: only this work's peak counts
            f.write("5")
        self.base = status_kib("VmRSS")
        self.mib = None
        return self

    def __exit__(self, *exc) -> None:
        self.mib = round((status_kib("VmHWM") - self.base) / 1024, 1)


def supported() -> bool:
    return sys.platform.startswith("linux")


def run_child(command: list[str], env: dict | None = None) -> dict:
    """Run a child that prints a JSON object as its last line of output; that object, or
    {"failed": the last line of its error output}."""
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"failed": lines[-1] if lines else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])
