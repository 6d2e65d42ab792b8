"""lesion: its config and command (the task: tasks/lesion.py)."""

from __future__ import annotations

from dataclasses import dataclass

from . import Command, File, Setting, nested
from .common import ANATOMY, DEFAULT_LESION, DEVICE, MODEL, REGION, SEED, WINDOWS
from .inpaint import ETA, JUMP_LENGTH, LABEL, MASK_FILES, RESAMPLINGS, repaint_steps
from .windows import WindowConfig


@dataclass(frozen=True)
class LesionConfig:
    region: str = REGION.field()
    label: int | None = LABEL.field()
    margin_mm: float = Setting(  # how far around the mask the image may change
        3.0, "mm around the mask that may blend; farther voxels are kept bit for bit (default %(default)s)",
        type=float, minimum=0, flag="--margin").field()
    steps: int = repaint_steps("lesion")
    jump_length: int = JUMP_LENGTH.field()
    resamplings: int = RESAMPLINGS.field()
    eta: float = ETA.field()
    controlnet: str = Setting(DEFAULT_LESION, "lesion ControlNet name or card (default %(default)s)").field()
    anatomy: str | None = ANATOMY.field()
    model: str = MODEL.field()
    windows: WindowConfig = nested(WindowConfig, WINDOWS)
    seed: int = SEED.field()
    device: str = DEVICE.field()


COMMAND = Command(
    "lesion", "draw a synthetic lesion shaped by a mask (lesion ControlNet + RePaint)", "MedDiffFMLogic.tasks.lesion",
    LesionConfig,
    files=(MASK_FILES[0],
           File("mask", "label map of the lesion to draw (any grid overlapping the CT)", required=True),
           File("output", "the CT with the lesion (input's grid)", short="-o", required=True),
           MASK_FILES[1]),
)
