"""What the module's panel allows, decided without Qt so that it is tested (and shared with the web app):
whether Apply is on, and why not."""

from __future__ import annotations

from dataclasses import dataclass

from .tasks import TASKS


@dataclass(frozen=True)
class ApplyState:
    enabled: bool
    reason: str  # why Apply is off, for its tooltip; "" when it is on or a run is under way


def apply_state(task: str, *, has_volume: bool, has_segment: bool, unsupported: str | None = None,
                installing: bool = False, running: bool = False) -> ApplyState:
    """Apply is off on a Slicer that cannot run the engine, while the dependencies install (a second
    Apply would start a second installation), while a run is under way, and while the task lacks an
    input it needs."""
    info = TASKS[task]
    if unsupported:
        return ApplyState(False, unsupported)
    if installing:
        return ApplyState(False, "Installing the Python packages MedDiffFM needs...")
    if info.needs_volume and not has_volume:
        return ApplyState(False, "Choose an input volume.")
    if info.segment == "mask" and not has_segment:
        return ApplyState(False, "Choose a segmentation and a segment (draw one with the Segment Editor).")
    return ApplyState(not running, "")
