"""inpaint (and the RePaint settings lesion shares): its config and command (the task: tasks/inpaint.py)."""

from __future__ import annotations

from dataclasses import dataclass

from . import Command, File, Setting, nested
from .common import ANATOMY, DEVICE, MODEL, REGION, SEED, WINDOWS, steps
from .windows import WindowConfig

REPAINT = "RePaint sampling"
LABEL = Setting(None, "the mask's label to use (default: its only non-zero label)", type=int, minimum=1)
JUMP_LENGTH = Setting(5, "RePaint jump length j (default %(default)s)", type=int, minimum=1, group=REPAINT)
RESAMPLINGS = Setting(2, "RePaint resamplings r (default %(default)s)", type=int, minimum=1, group=REPAINT)  # 1: none
ETA = Setting(1.0, "DDIM eta of RePaint's steps", cli=False)


def repaint_steps(task: str):
    return steps(task, "descending steps (default %(default)s)").field(group=REPAINT)


@dataclass(frozen=True)
class InpaintConfig:
    region: str = REGION.field()
    label: int | None = LABEL.field()
    steps: int = repaint_steps("inpaint")  # descending steps of the base schedule
    jump_length: int = JUMP_LENGTH.field()
    resamplings: int = RESAMPLINGS.field()
    eta: float = ETA.field()
    controlnet: str | None = Setting(
        None, "a lesion ControlNet: inpaint a lesion instead of healthy tissue").field()
    anatomy: str | None = ANATOMY.field()
    model: str = MODEL.field()
    windows: WindowConfig = nested(WindowConfig, WINDOWS)
    seed: int = SEED.field()
    device: str = DEVICE.field()


MASK_FILES = (
    File("input", "the CT (file or DICOM folder); never modified", positional=True),
    File("change_mask", "also write the voxels that were allowed to change (uint8, input's grid)"),
)

COMMAND = Command(
    "inpaint", "redraw a masked region (lesion removal, or lesion inpainting with a ControlNet)",
    "MedDiffFMLogic.tasks.inpaint", InpaintConfig,
    files=(MASK_FILES[0],
           File("mask", "label map of the region to redraw (any grid overlapping the CT)", required=True),
           File("output", "the CT with the region redrawn (input's grid)", short="-o", required=True),
           MASK_FILES[1]),
)
